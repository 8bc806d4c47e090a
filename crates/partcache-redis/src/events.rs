//! Cache events across processes, kept flowing: scripts publish every event on the
//! partition's channel (`SPUBLISH` on a cluster: sharded pub/sub keeps a partition's
//! events on the node that owns it; `PUBLISH` on a standalone server), and every
//! process subscribes to the channels of the caches it wants events of
//! (`subscriber.rs`); pushes reach the caches' feeds through the push routes
//! (`push.rs`, `feed.rs`, which also describes the messages). On a cluster, a RESP3
//! connection to each node, apart from the data connections, is subscribed to the
//! channels of that node's partitions, so messages arrive in publication order (the
//! events of one partition in order). It is apart because the server unsubscribes a
//! shard channel on its own when the channel's slot moves, and redis-rs takes that
//! push as the reply to the oldest request in flight: on a data connection, every
//! later reply would go to the wrong request. When a subscription connection breaks
//! (failover) or the server drops a shard channel (its slot moved), every channel is
//! subscribed again on its current owner ([`resubscribe_loop`]).
//!
//! Near caches (an [`InvalidationSink`](partcache::store::raw::InvalidationSink)
//! attached to a cache's [`Feed`]) hear every
//! message synchronously, as it is read, in partition order. When a subscription may
//! have been lost they are told at once (`lost`), for the partitions it carried only:
//! each partition's subscription is recorded with the node whose connection confirmed
//! it, so a connection that breaks (or a node whose heartbeat fails) loses that node's
//! partitions (and any whose node is not known), a shard channel the server drops
//! loses its partition, and the partitions on healthy nodes keep their copies. After
//! every resubscription the lost partitions get their current numbers ([`reseed`]); a
//! heartbeat ([`heartbeat_loop`]) vouches, node by node, for the partitions whose
//! subscription the node's subscription connection still holds, by asking it for its
//! subscription count.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::future::join_all;
use partcache::{Error, Result};
use redis::Value;

use crate::deployment::Deployment;
use crate::feed::Feed;
use crate::push::Routes;
use crate::routing::Request;
use crate::subscriber::confirmed;

/// Starts the task that restores the lost subscriptions of `deployment` (once per
/// deployment; it needs a runtime).
pub(crate) fn start_resubscriber(deployment: &Arc<Deployment>) {
    deployment.resubscriber.get_or_init(|| {
        tokio::spawn(resubscribe_loop(
            Arc::downgrade(deployment),
            deployment.subscriber().lost(),
        ));
    });
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
    use std::collections::HashMap;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicBool, AtomicU64};

    use parking_lot::Mutex;
    use partcache::store::raw::{InvalidationSink, ListenerProbe};
    use tokio::sync::broadcast;

    use super::*;
    use crate::feed::FeedLinks;

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
