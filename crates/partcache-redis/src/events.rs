//! Cache events across processes: scripts publish every event on the partition's
//! channel (`SPUBLISH` on a cluster: sharded pub/sub keeps a partition's events on the
//! node that owns it; `PUBLISH` on a standalone server), and every process subscribes
//! to the channels of the caches it opened.
//!
//! A published message is one byte of kind (`C`reated, `U`pdated, `R`emoved,
//! e`X`pired, e`V`icted, or `Z` for "partition cleared", which only near caches hear),
//! the message's number in its partition (decimal; `<P>sq`, taken by the script in the
//! same atomic step as the change), `:`, the writing client's origin, `:`, and the
//! blob. While a cache has listeners, its scripts also return their events in the reply
//! (kind, number and blob): a call's own events reach its listeners before it returns,
//! in the order the server made them (`delivery.rs`), and the published copies with
//! this client's origin are not forwarded again. On a cluster, a RESP3 connection to each node, apart
//! from the data connections, is subscribed to the channels of that node's partitions,
//! so messages arrive in publication order (the events of one partition in order). It
//! is apart because the server unsubscribes a shard channel on
//! its own when the channel's slot moves, and redis-rs takes that push as the reply to
//! the oldest request in flight: on a data connection, every later reply would go to
//! the wrong request. When a subscription connection breaks (failover) or the server
//! drops a shard channel (its slot moved), every channel is subscribed again on its
//! current owner.
//!
//! Near caches (an [`InvalidationSink`] attached to a cache's [`Feed`]) hear every
//! message synchronously, as it is read, in partition order. When a subscription may
//! have been lost they are told at once (`lost`), for the partitions it carried only:
//! each partition's subscription is recorded with the node whose connection confirmed
//! it, so a connection that breaks (or a node whose heartbeat fails) loses that node's
//! partitions (and any whose node is not known), a shard channel the server drops
//! loses its partition, and the partitions on healthy nodes keep their copies. After
//! every resubscription the lost partitions get their current numbers (`resumed`); a
//! heartbeat vouches (`vouched`), node by node, for the partitions whose subscription
//! the node's subscription connection still holds, by asking it for its subscription
//! count.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures::future::join_all;
use parking_lot::{Mutex, RwLock};
use partcache::store::raw::{InvalidationSink, ListenerProbe, RawEvent};
use partcache::{Error, EventKind, Result};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, broadcast};

use crate::backend::Deployment;
use crate::delivery::Delivery;
use crate::routing::Request;

/// The kind byte of a published event.
pub(crate) fn kind_of(byte: u8) -> Option<EventKind> {
    Some(match byte {
        b'C' => EventKind::Created,
        b'U' => EventKind::Updated,
        b'R' => EventKind::Removed,
        b'X' => EventKind::Expired,
        b'V' => EventKind::Evicted,
        _ => return None,
    })
}

/// Parses one event returned in a script's reply (`<kind><number>:<blob>`): its number
/// in its partition and the event.
pub(crate) fn parse_event(payload: &[u8]) -> Option<(u64, RawEvent)> {
    let (&kind, rest) = payload.split_first()?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let seq = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    Some((
        seq,
        RawEvent {
            kind: kind_of(kind)?,
            blob: rest[colon + 1..].to_vec(),
        },
    ))
}

/// One published message: kind byte, number, origin, blob.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub kind: u8,
    pub seq: u64,
    pub origin: &'a [u8],
    pub blob: &'a [u8],
}

/// Parses one published message (`<kind><number>:<origin>:<blob>`).
pub(crate) fn parse_message(payload: &[u8]) -> Option<Message<'_>> {
    let (&kind, rest) = payload.split_first()?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let seq = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let rest = &rest[colon + 1..];
    let colon = rest.iter().position(|&b| b == b':')?;
    Some(Message {
        kind,
        seq,
        origin: &rest[..colon],
        blob: &rest[colon + 1..],
    })
}

/// Where the messages of one cache's channels go: its listeners, and its near cache
/// once one is attached.
pub(crate) struct Feed {
    /// The cache's event channel (listeners).
    pub events: broadcast::Sender<RawEvent>,
    /// Puts the events of each partition on `events` in the order they were made.
    pub delivery: Delivery,
    /// Whether the cache has listeners in this process.
    pub listened: ListenerProbe,
    /// The attached near cache.
    pub sink: OnceLock<Arc<dyn InvalidationSink>>,
    /// The near cache was given the current numbers since the last loss.
    pub resumed: AtomicBool,
    /// Every partition of the cache, `0..P`.
    pub partitions: Vec<u16>,
    /// Each partition's sequence key and slot.
    pub sequences: Vec<(String, u16)>,
    /// Where each partition's subscription lives, and which partitions wait for their
    /// numbers.
    pub links: FeedLinks,
}

/// Per partition of a [`Feed`]: the node whose connection holds its subscription, and
/// whether it waits for a reseed (see [`Feed::lose`], [`reseed`]).
#[derive(Default)]
pub(crate) struct FeedLinks {
    /// Partition → the node that confirmed its subscription (empty: not known).
    nodes: Mutex<Vec<String>>,
    /// Partition → the loss that made it wait for a reseed; `None`: every partition
    /// waits (the start).
    waiting: Mutex<Option<HashMap<u16, u64>>>,
    /// Numbers the losses, so that a reseed does not end a loss that came during it.
    losses: AtomicU64,
    /// One reseed at a time (see [`reseed`]).
    reseeding: tokio::sync::Mutex<()>,
}

impl Feed {
    /// Every partition's messages may be lost.
    fn lost(&self) {
        self.lose(&self.partitions);
    }

    /// The messages of `partitions` may be lost: the near cache drops them until they
    /// are reseeded.
    pub(crate) fn lose(&self, partitions: &[u16]) {
        let Some(sink) = self.sink.get() else {
            return;
        };
        if partitions.is_empty() {
            return;
        }
        let loss = self.links.losses.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut waiting = self.links.waiting.lock();
            let waiting = waiting.get_or_insert_with(|| self.all_waiting());
            for &partition in partitions {
                waiting.insert(partition, loss);
            }
            // Under the lock: a reseed ending now either sees these partitions
            // waiting, or stores its `resumed` before this.
            self.resumed.store(false, Ordering::SeqCst);
        }
        sink.lost(partitions);
    }

    fn all_waiting(&self) -> HashMap<u16, u64> {
        self.partitions.iter().map(|&p| (p, 0)).collect()
    }

    /// `partition`'s subscription was confirmed by `node` (empty: it has none now).
    pub(crate) fn subscribed_on(&self, partition: u16, node: String) {
        let mut nodes = self.links.nodes.lock();
        let index = usize::from(partition);
        if nodes.len() <= index {
            nodes.resize(self.partitions.len().max(index + 1), String::new());
        }
        nodes[index] = node;
    }

    /// The partitions whose subscription may live on `addr`'s connection: those it
    /// confirmed, and those whose node is not known.
    fn partitions_on(&self, addr: &str) -> Vec<u16> {
        let nodes = self.links.nodes.lock();
        self.partitions
            .iter()
            .copied()
            .filter(|&p| {
                nodes
                    .get(usize::from(p))
                    .is_none_or(|node| node.is_empty() || node == addr)
            })
            .collect()
    }
}

struct Route {
    slot: u16,
    partition: u16,
    feed: Arc<Feed>,
}

/// Which channel's messages go to which cache, shared with the connections' push
/// handlers. Messages are dispatched synchronously as the subscription connection
/// reads them, so the events of one partition keep their order.
pub(crate) struct Routes {
    table: RwLock<HashMap<Vec<u8>, Route>>,
    /// Wakes the resubscribe loop.
    lost: Notify,
    /// This client's origin (see `Deployment::origin`).
    origin: String,
}

impl Routes {
    pub fn new(origin: String) -> Arc<Routes> {
        Arc::new(Routes {
            table: RwLock::new(HashMap::new()),
            lost: Notify::new(),
            origin,
        })
    }

    /// Every feed with a near cache attached.
    fn sinks(&self) -> Vec<Arc<Feed>> {
        let mut feeds: Vec<Arc<Feed>> = Vec::new();
        for route in self.table.read().values() {
            if route.feed.sink.get().is_some() && !feeds.iter().any(|f| Arc::ptr_eq(f, &route.feed))
            {
                feeds.push(route.feed.clone());
            }
        }
        feeds
    }

    /// Tells every near cache that messages may be lost, and wakes the resubscribe loop.
    pub fn subscriptions_lost(&self) {
        for feed in self.sinks() {
            feed.lost();
        }
        self.lost.notify_one();
    }

    /// Tells every near cache that the messages of the partitions subscribed on `addr`
    /// may be lost, and wakes the resubscribe loop.
    pub fn node_lost(&self, addr: &str) {
        for feed in self.sinks() {
            feed.lose(&feed.partitions_on(addr));
        }
        self.lost.notify_one();
    }

    /// Wakes the resubscribe loop.
    pub fn wake(&self) {
        self.lost.notify_one();
    }

    /// Handles one push from the connection to `addr`.
    pub fn dispatch(&self, addr: &str, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                else {
                    return;
                };
                let table = self.table.read();
                let Some(route) = table.get(channel) else {
                    return;
                };
                let Some(message) = parse_message(payload) else {
                    tracing::warn!(%addr, "ignoring a malformed cache event");
                    // Whatever it was, the near cache cannot vouch for the partition.
                    if let Some(sink) = route.feed.sink.get() {
                        sink.partition_cleared(route.partition, 0);
                    }
                    return;
                };
                let sink = route.feed.sink.get();
                if message.kind == b'Z' {
                    if let Some(sink) = sink {
                        sink.partition_cleared(route.partition, message.seq);
                    }
                    return;
                }
                if let Some(sink) = sink {
                    sink.entry_changed(route.partition, message.seq, message.blob);
                }
                if message.origin == self.origin.as_bytes() {
                    // This client's own write: its listeners had the event from the
                    // script's reply, before the write returned.
                    return;
                }
                match kind_of(message.kind) {
                    // Nobody listens here right now: nothing to build.
                    Some(kind) if route.feed.listened.is_listened() => route.feed.delivery.arrived(
                        route.partition,
                        message.seq,
                        RawEvent {
                            kind,
                            blob: message.blob.to_vec(),
                        },
                    ),
                    Some(_) => {}
                    None => tracing::warn!(%addr, "ignoring a cache event of unknown kind"),
                }
            }
            PushKind::Disconnection if !self.table.read().is_empty() => {
                tracing::warn!(%addr, "connection lost; subscribing to cache events again");
                self.node_lost(addr);
            }
            PushKind::SUnsubscribe => {
                // The server dropped a shard channel we still want: its slot moved.
                let route = match push.data.first() {
                    Some(Value::BulkString(channel)) => self
                        .table
                        .read()
                        .get(channel)
                        .map(|r| (r.feed.clone(), r.partition)),
                    _ => None,
                };
                if let Some((feed, partition)) = route {
                    feed.subscribed_on(partition, String::new());
                    feed.lose(&[partition]);
                    self.lost.notify_one();
                }
            }
            _ => {}
        }
    }
}

/// The subscriptions of one deployment. See the module docs.
pub(crate) struct Subscriber {
    routes: Arc<Routes>,
    sharded: bool,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // Wakes the resubscribe loop so that it sees the deployment is gone and ends.
        self.routes.lost.notify_one();
    }
}

impl Subscriber {
    pub fn new(routes: Arc<Routes>, sharded: bool) -> Subscriber {
        Subscriber { routes, sharded }
    }

    /// Registers `feed` for `channels` (partition `i`'s channel and slot at index `i`)
    /// and returns the subscription commands to send; the caller sends them and
    /// awaits the confirmations.
    pub fn register(&self, channels: &[(String, u16)], feed: &Arc<Feed>) -> Vec<Request> {
        let mut table = self.routes.table.write();
        for (partition, (channel, slot)) in (0u16..).zip(channels) {
            table.insert(
                channel.as_bytes().to_vec(),
                Route {
                    slot: *slot,
                    partition,
                    feed: feed.clone(),
                },
            );
        }
        channels
            .iter()
            .map(|(channel, slot)| self.request(channel.as_bytes(), *slot))
            .collect()
    }

    fn request(&self, channel: &[u8], slot: u16) -> Request {
        let mut cmd = redis::cmd(if self.sharded {
            "SSUBSCRIBE"
        } else {
            "SUBSCRIBE"
        });
        cmd.arg(channel);
        Request::new(slot, cmd)
    }

    /// Stops routing `channels` (the store is gone). The server-side subscriptions
    /// stay until the connection closes; messages for them are dropped here.
    pub fn forget(&self, channels: &[(String, u16)]) {
        let mut table = self.routes.table.write();
        for (channel, _) in channels {
            table.remove(channel.as_bytes());
        }
    }

    /// Every registered channel's subscription command, with its feed and partition.
    pub fn all_requests(&self) -> Vec<(Arc<Feed>, u16, Request)> {
        self.routes
            .table
            .read()
            .iter()
            .map(|(channel, route)| {
                (
                    route.feed.clone(),
                    route.partition,
                    self.request(channel, route.slot),
                )
            })
            .collect()
    }

    /// Waits until a subscription may have been lost.
    pub fn lost(&self) -> Arc<Routes> {
        self.routes.clone()
    }
}

/// Checks that every subscription reply is a confirmation.
pub(crate) fn confirmed(replies: Vec<Value>) -> Result<()> {
    for reply in replies {
        if let Value::ServerError(e) = reply {
            return Err(Error::Store(format!(
                "cannot subscribe to cache events: {e:?}"
            )));
        }
    }
    Ok(())
}

/// Subscribes again, on their current owners, to every channel of `deployment`
/// whenever a subscription may have been lost, then gives every near cache its
/// partitions' current numbers; ends with the deployment.
pub(crate) async fn resubscribe_loop(deployment: Weak<Deployment>, routes: Arc<Routes>) {
    loop {
        // Waits without keeping the deployment alive.
        routes.lost.notified().await;
        let mut pause = Duration::from_millis(20);
        loop {
            let Some(deployment) = deployment.upgrade() else {
                return;
            };
            let entries = deployment.subscriber().all_requests();
            if entries.is_empty() {
                break;
            }
            let (targets, requests): (Vec<_>, Vec<_>) = entries
                .into_iter()
                .map(|(feed, partition, request)| ((feed, partition), request))
                .unzip();
            deployment.router.mark_stale();
            let mut result = deployment
                .execute_subscriptions_on(requests)
                .await
                .and_then(|(replies, nodes)| {
                    confirmed(replies)?;
                    for ((feed, partition), node) in targets.iter().zip(nodes) {
                        feed.subscribed_on(*partition, node);
                    }
                    Ok(())
                });
            if result.is_ok() {
                for feed in routes.sinks() {
                    if let Err(e) = reseed(&deployment, &feed).await {
                        result = Err(e);
                        break;
                    }
                }
            }
            match result {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "subscribing to cache events again failed; retrying");
                    drop(deployment);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// Reads the current number of every partition of `feed` that waits for one (after
/// their subscriptions were confirmed) and hands them to its near cache (`resumed`);
/// partitions whose feed was never lost keep their copies.
///
/// One reseed of a feed runs at a time: the opening and the resubscribe loop may
/// start one at once, and a reseed that found its partitions already resumed by
/// another would otherwise take that for a new loss and leave them lost, with nothing
/// left to resume them.
pub(crate) async fn reseed(deployment: &Deployment, feed: &Feed) -> Result<()> {
    let Some(sink) = feed.sink.get() else {
        return Ok(());
    };
    let _one_at_a_time = feed.links.reseeding.lock().await;
    let waiting: Vec<(u16, u64)> = {
        let guard = feed.links.waiting.lock();
        let waiting: Vec<(u16, u64)> = match &*guard {
            None => feed.partitions.iter().map(|&p| (p, 0)).collect(),
            Some(waiting) => {
                let mut waiting: Vec<(u16, u64)> = waiting.iter().map(|(p, l)| (*p, *l)).collect();
                waiting.sort_unstable();
                waiting
            }
        };
        if waiting.is_empty() {
            feed.resumed.store(true, Ordering::SeqCst);
            return Ok(());
        }
        waiting
    };
    let at = Instant::now();
    let requests = waiting
        .iter()
        .map(|(partition, _)| {
            let (key, slot) = feed.sequences.get(usize::from(*partition)).ok_or_else(|| {
                Error::Store(format!("no sequence key for partition {partition}"))
            })?;
            let mut cmd = redis::cmd("GET");
            cmd.arg(key);
            Ok(Request::new(*slot, cmd))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut seqs = Vec::with_capacity(waiting.len());
    for reply in deployment.execute(requests).await? {
        seqs.push(match reply {
            Value::Nil => 0,
            Value::BulkString(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|t| t.parse().ok())
                .ok_or_else(|| Error::Store("a cache's event sequence is not a number".into()))?,
            Value::Int(i) => u64::try_from(i).unwrap_or(0),
            other => {
                return Err(Error::Store(format!(
                    "cannot read a cache's event sequence: {other:?}"
                )));
            }
        });
    }
    let partitions: Vec<u16> = waiting.iter().map(|(p, _)| *p).collect();
    sink.resumed(&partitions, &seqs, at);
    // A partition lost again while this ran is not resumed: its new loss stands (it
    // still waits, for the reseed that loss asks for).
    let mut again = Vec::new();
    {
        let mut guard = feed.links.waiting.lock();
        let still = guard.get_or_insert_with(|| feed.all_waiting());
        for (partition, loss) in &waiting {
            match still.get(partition) {
                Some(now) if now == loss => {
                    still.remove(partition);
                }
                Some(_) => again.push(*partition),
                // Resumed meanwhile: not a new loss. Reseeds take turns, so this is
                // the safe answer kept for the case, not a path they take; taking it
                // for a loss would leave the partition lost with nothing waiting to
                // reseed it, and the near cache would never serve it again.
                None => {}
            }
        }
        feed.resumed.store(still.is_empty(), Ordering::SeqCst);
    }
    if !again.is_empty() {
        sink.lost(&again);
    }
    Ok(())
}

/// Vouches for `feed` every `every` while both live: asks the subscription connection
/// of every master that serves one of its partitions for its subscription counts
/// (`CLIENT INFO`). A reply proves that every message published before the request
/// was sent has been read (replies and pushes share the connection, in order) and
/// that the connection still carries subscriptions (a connection silently replaced
/// by a fresh one would carry none); anything else counts as a loss.
pub(crate) async fn heartbeat_loop(
    deployment: Weak<Deployment>,
    feed: Weak<Feed>,
    every: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let (Some(deployment), Some(feed)) = (deployment.upgrade(), feed.upgrade()) else {
            return;
        };
        let Some(sink) = feed.sink.get() else {
            continue;
        };
        let at = Instant::now();
        match vouch(&deployment, &feed).await {
            Ok(vouch) => {
                // (`vouched` leaves lost partitions lost: only `resumed` ends a loss.)
                sink.vouched(&vouch.vouched, at);
                if !vouch.failed.is_empty() {
                    for (addr, partitions) in &vouch.failed {
                        tracing::warn!(node = %addr, partitions = partitions.len(), "cache event subscriptions unconfirmed; near caches drop these partitions");
                        feed.lose(partitions);
                    }
                    deployment.subscriber().lost().wake();
                }
                if !feed.resumed.load(Ordering::SeqCst) {
                    // Attached while the store could not answer, or lost partitions
                    // not reseeded yet: the resubscribe loop subscribes (again), then
                    // starts them from the current numbers. Not a reseed from here: one
                    // that ran before the subscription is in place would take numbers
                    // that the messages published in between never follow, a loss no
                    // gap would show.
                    deployment.subscriber().lost().wake();
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cache event subscriptions unconfirmed; near caches drop their entries");
                deployment.subscriber().lost().subscriptions_lost();
            }
        }
    }
}

/// What one heartbeat found, node by node.
struct Vouch {
    /// The partitions whose node's subscription connection answered, holding its
    /// subscriptions, and confirmed their subscription.
    vouched: Vec<u16>,
    /// Per node that did not (or `(unserved)`), the partitions that may have lost
    /// messages there.
    failed: Vec<(String, Vec<u16>)>,
}

async fn vouch(deployment: &Deployment, feed: &Feed) -> Result<Vouch> {
    let map = deployment.slot_map().await?;
    // One request per master: a slot of it, and the feed's partitions it serves.
    let mut per_node: Vec<(String, u16, Vec<u16>)> = Vec::new();
    let mut unserved = Vec::new();
    for (&partition, (_, slot)) in feed.partitions.iter().zip(&feed.sequences) {
        let Some(addr) = map.master(*slot) else {
            unserved.push(partition);
            continue;
        };
        match per_node.iter_mut().find(|(a, _, _)| a == addr) {
            Some(entry) => entry.2.push(partition),
            None => per_node.push((addr.to_string(), *slot, vec![partition])),
        }
    }
    let checks = per_node.iter().map(|(addr, slot, partitions)| async move {
        let mut cmd = redis::cmd("CLIENT");
        cmd.arg("INFO");
        let reply = deployment
            .execute_subscriptions(vec![Request::new(*slot, cmd)])
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        let info = match reply {
            Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
            Value::VerbatimString { text, .. } => text,
            Value::SimpleString(t) => t,
            other => {
                return Err(Error::Store(format!(
                    "unexpected CLIENT INFO reply: {other:?}"
                )));
            }
        };
        let subscribed = subscription_count(&info);
        if subscribed < partitions.len() {
            return Err(Error::Unavailable(format!(
                "the subscription connection to {addr} holds {subscribed} channels, expected at least {}",
                partitions.len()
            )));
        }
        Ok(())
    });
    let results = join_all(checks).await;
    let nodes = feed.links.nodes.lock().clone();
    let mut vouch = Vouch {
        vouched: Vec::new(),
        failed: Vec::new(),
    };
    for ((addr, _, partitions), result) in per_node.iter().zip(results) {
        match result {
            // Only partitions subscribed on this very node: the reply proves nothing
            // for a subscription held by another connection. The others' subscription
            // was never confirmed (a subscription that timed out) or is on the node
            // their slot left: lost, until subscribed again where the slot is.
            Ok(()) => {
                let (here, elsewhere): (Vec<u16>, Vec<u16>) = partitions
                    .iter()
                    .partition(|&&p| nodes.get(usize::from(p)).is_some_and(|n| n == addr));
                vouch.vouched.extend(here);
                if !elsewhere.is_empty() {
                    vouch
                        .failed
                        .push((format!("{addr} (not subscribed there)"), elsewhere));
                }
            }
            Err(e) => {
                tracing::debug!(node = %addr, error = %e, "heartbeat failed");
                let mut lost = feed.partitions_on(addr);
                let more: Vec<u16> = partitions
                    .iter()
                    .copied()
                    .filter(|p| !lost.contains(p))
                    .collect();
                lost.extend(more);
                vouch.failed.push((addr.clone(), lost));
            }
        }
    }
    if !unserved.is_empty() {
        vouch.failed.push(("(unserved)".to_string(), unserved));
    }
    Ok(vouch)
}

/// `sub` + `ssub` of a `CLIENT INFO` line.
fn subscription_count(info: &str) -> usize {
    info.split_whitespace()
        .filter_map(|field| field.split_once('='))
        .filter(|(name, _)| *name == "sub" || *name == "ssub")
        .filter_map(|(_, n)| n.parse::<usize>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_events_parse_into_numbered_events() {
        let (seq, event) = parse_event(b"U12:a:bc").unwrap();
        assert_eq!(seq, 12);
        assert_eq!(event.kind, EventKind::Updated);
        assert_eq!(event.blob, b"a:bc");
        assert!(parse_event(b"").is_none());
        assert!(parse_event(b"Uabc").is_none());
        assert!(parse_event(b"?1:x").is_none());
    }

    #[test]
    fn published_messages_carry_their_number() {
        assert_eq!(
            parse_message(b"U42:0af3:a:b"),
            Some(Message {
                kind: b'U',
                seq: 42,
                origin: b"0af3",
                blob: b"a:b"
            })
        );
        assert_eq!(
            parse_message(b"Z7:0af3:"),
            Some(Message {
                kind: b'Z',
                seq: 7,
                origin: b"0af3",
                blob: b""
            })
        );
        assert!(parse_message(b"Uabc").is_none());
        assert!(parse_message(b"U42:abc").is_none());
        assert!(parse_message(b"U:x:abc").is_none());
        assert!(parse_message(b"").is_none());
    }

    /// A near cache's sink that keeps, per partition, whether its last word was
    /// `resumed` (live) or `lost`, and how many partitions were ever resumed.
    #[derive(Default)]
    struct Liveness(Mutex<HashMap<u16, bool>>, AtomicU64);

    impl InvalidationSink for Liveness {
        fn entry_changed(&self, _partition: u16, _seq: u64, _blob: &[u8]) {}
        fn partition_cleared(&self, _partition: u16, _seq: u64) {}
        fn lost(&self, partitions: &[u16]) {
            let mut live = self.0.lock();
            for &p in partitions {
                live.insert(p, false);
            }
        }
        fn resumed(&self, partitions: &[u16], _seqs: &[u64], _at: Instant) {
            self.1.fetch_add(partitions.len() as u64, Ordering::SeqCst);
            let mut live = self.0.lock();
            for &p in partitions {
                live.insert(p, true);
            }
        }
        fn vouched(&self, _partitions: &[u16], _at: Instant) {}
    }

    /// A real server, a deployment on it, and a feed of 4 partitions whose near cache
    /// is `live` (no subscription: nothing subscribes here).
    async fn server_and_feed() -> (
        partcache_integration_tests::RedisServer,
        Deployment,
        Arc<Liveness>,
        Feed,
    ) {
        use partcache_integration_tests::{Flavor, RedisServer, ServerOptions};

        let server = tokio::task::spawn_blocking(|| {
            RedisServer::start(Flavor::Redis, ServerOptions::default())
        })
        .await
        .expect("the start task")
        .expect("start redis-server");
        let url = crate::url::parse(&server.url()).expect("the server's URL");
        let live = Arc::new(Liveness::default());
        let partitions: Vec<u16> = (0..4).collect();
        let events = broadcast::channel(1).0;
        let feed = Feed {
            events: events.clone(),
            delivery: crate::delivery::Delivery::new(events),
            listened: ListenerProbe::always(),
            sink: OnceLock::from(live.clone() as Arc<dyn InvalidationSink>),
            resumed: AtomicBool::new(false),
            sequences: partitions.iter().map(|p| (format!("seq{p}"), 0)).collect(),
            partitions,
            links: FeedLinks::default(),
        };
        (server, Deployment::new(url), live, feed)
    }

    /// The opening and the resubscribe loop may reseed one feed at once (on a loaded
    /// machine the first heartbeat comes before the opening's reseed has ended, and
    /// wakes the loop): every partition ends live, none waits for a reseed that never
    /// comes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reseeds_at_once_leave_every_partition_live() {
        let (_server, deployment, live, feed) = server_and_feed().await;
        let partitions = feed.partitions.clone();
        // Both start before either has its numbers: a reseed awaits the server.
        let (first, second) = tokio::join!(reseed(&deployment, &feed), reseed(&deployment, &feed));
        first.expect("the first reseed");
        second.expect("the second reseed");
        // And a later loss waits for, and gets, a reseed of its own.
        feed.lose(&[3]);
        reseed(&deployment, &feed)
            .await
            .expect("a reseed after a loss");
        let live = live.0.lock().clone();
        for p in &partitions {
            assert_eq!(live.get(p), Some(&true), "partition {p} is left lost");
        }
        assert!(feed.resumed.load(Ordering::SeqCst));
    }

    /// A heartbeat never resumes a partition whose subscription is not in place (here
    /// none ever is): only the resubscribe loop reseeds, after subscribing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_heartbeat_never_resumes_a_partition_without_its_subscription() {
        let (_server, deployment, live, feed) = server_and_feed().await;
        let (deployment, feed) = (Arc::new(deployment), Arc::new(feed));
        let heartbeat = tokio::spawn(heartbeat_loop(
            Arc::downgrade(&deployment),
            Arc::downgrade(&feed),
            Duration::from_millis(5),
        ));
        // Until several heartbeats have found the subscriptions missing.
        let deadline = Instant::now() + Duration::from_secs(10);
        while feed.links.losses.load(Ordering::SeqCst) < 5 {
            assert!(Instant::now() < deadline, "the heartbeat does not run");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        heartbeat.abort();
        assert_eq!(
            live.1.load(Ordering::SeqCst),
            0,
            "partitions resumed without a subscription"
        );
    }

    #[test]
    fn subscription_counts_add_plain_and_shard_channels() {
        assert_eq!(
            subscription_count("id=3 addr=x sub=2 psub=0 ssub=5 multi=-1"),
            7
        );
        assert_eq!(subscription_count("id=3 addr=x"), 0);
    }
}
