//! [`RedisStore`]: one cache on a Redis / Valkey deployment (the [`RawStore`] the core
//! calls). Every operation becomes per-partition commands (mostly scripts, see
//! `scripts.rs`) that the router sends as one pipeline per node.

mod reaper;
mod scan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use partcache::balance::{BalanceReport, MasterBalance};
use partcache::codec::Codec;
use partcache::expiry::{Custom, ExpiryPolicy, ExpirySettings};
use partcache::stats::StatsCounters;
use partcache::store::raw::{
    InvalidationSink, ListenerProbe, RawAction, RawCacheSpec, RawCondition, RawEvent, RawFound,
    RawKey, RawStore, RawWrite, RawWriteOutcome,
};
use partcache::{Error, LayoutMismatch, Result};
use redis::{Cmd, Value};
use tokio::sync::broadcast;
use tracing::Instrument;

use crate::batching::Batcher;
use crate::batching::puts::{self, Done, Entry, Kind, Turn, UpsertSettings};
use crate::deployment::Deployment;
use crate::feed::{Feed, parse_event};
use crate::layout::{LAYOUT_VERSION, Layout};
use crate::routing::Request;
use crate::scripts::{Script, scripts};
use scan::KeyScan;

/// Most entries one script call touches: keeps every script short, so the server is
/// never blocked for long by one cache (clear, reap, batch writes).
pub(crate) const BATCH: usize = 256;
/// Entries sampled per partition for the byte estimate of a balance report.
const BYTES_SAMPLE: usize = 16;

/// Events buffered per receiver of [`RawStore::subscribe`].
const EVENT_CAPACITY: usize = 4096;

/// One cache on a Redis deployment. See the module docs.
pub struct RedisStore {
    pub(crate) inner: Arc<StoreInner>,
    opening: OpenState,
    /// The near cache's heartbeat (see `events::heartbeat_loop`), once one is attached.
    heartbeat: OnceLock<tokio::task::JoinHandle<()>>,
}

/// Whether the store finished opening (layout check, event subscriptions, reaper).
///
/// Opening needs the server. An application that starts while its Redis is down must
/// still be able to build its caches and serve (fail-open), so an open that
/// fails with a transient error (`Unavailable`/`Timeout`) returns a store that is not
/// open yet: every operation first tries to finish opening. At most one attempt is in
/// flight at a time, and a new one starts at most every `retry_every` (the connect
/// timeout) after the previous one *started* (so that a caller that gives up on an
/// attempt, e.g. a store timeout dropping its future, cannot make the store hammer a
/// dead server); meanwhile operations answer `Error::Unavailable` at once. Once open,
/// the only cost is one atomic load per operation.
struct OpenState {
    /// Set (to the reaper) once the store is open; never unset.
    reaper: OnceLock<tokio::task::JoinHandle<()>>,
    /// Held by the attempt in flight; when the last attempt started.
    attempt: tokio::sync::Mutex<Option<Instant>>,
    retry_every: Duration,
}

pub(crate) struct StoreInner {
    deployment: Arc<Deployment>,
    /// The deployment's batching queues.
    batcher: Arc<Batcher>,
    name: String,
    layout: Layout,
    codec: Codec,
    stats: Arc<StatsCounters>,
    /// ARGV[1..=4] of every script: policy kind, duration, max-idle, budget.
    header: [String; 4],
    /// A custom expiry policy, asked for its durations at every call (see
    /// [`StoreInner::settings`]).
    custom: Option<Custom>,
    /// The batches this cache's upserts join (`coalesce/puts.rs`).
    upsert_kind: Kind,
    /// The cache's max-idle, ms: entries whose only deadline it is may keep it in
    /// their index score alone (`lua/common.lua`, lean), which the reaper reads too.
    max_idle_ms: Option<u64>,
    /// How events are published: 0 not at all, 1 `PUBLISH`, 2 `SPUBLISH`.
    publish_mode: u8,
    /// Reads need no bookkeeping: plain `MGET`, one round trip, no script.
    plain_reads: bool,
    /// Plain puts (no condition, TTL or previous value) may use `lua/put.lua`: no
    /// expiry policy, no max-idle, no budget.
    fast_puts: bool,
    /// The cache keeps the index `<P>ix` (it has a budget or a max-idle); without
    /// one, iteration, `len`, `clear` and the balance report find the entries by key
    /// scan (`keyscan.rs`).
    indexed: bool,
    /// Where the cache's channels' messages go (listeners, near cache).
    feed: Arc<Feed>,
    /// Whether the cache has listeners in this process.
    listened: ListenerProbe,
    /// Whether this process wants other processes' events (a listener asked for them,
    /// or a near cache is attached): only then does it subscribe to the cache's
    /// channels, and only while some process subscribes do writers publish (the
    /// scripts ask `PUBSUB (SHARD)NUMSUB`), so that a cache nobody listens to costs
    /// no messages at all.
    wants_feed: std::sync::atomic::AtomicBool,
    /// Whether the subscription is in place (held while subscribing).
    subscribed: tokio::sync::Mutex<bool>,
}

/// Milliseconds of `d`, rounded up so that a tiny non-zero duration is not zero.
fn millis(d: Duration) -> u128 {
    let ms = d.as_millis();
    if ms == 0 && !d.is_zero() { 1 } else { ms }
}

/// ARGV[1..=4] of every script: policy kind, duration, max-idle, budget (then the
/// event mode, this client's origin and the channel: see [`StoreInner::event_args`]).
fn header(spec: &RawCacheSpec) -> [String; 4] {
    let (kind, duration) = match &spec.expiry.custom {
        // A custom policy: kind 5, and its three durations in the duration's place,
        // asked at every call (`custom_durations`).
        Some(custom) => (5, custom_durations(custom)),
        None => {
            let (kind, duration) = match spec.expiry.policy {
                ExpiryPolicy::Eternal => (0, Duration::ZERO),
                ExpiryPolicy::Created(d) => (1, d),
                ExpiryPolicy::Modified(d) => (2, d),
                ExpiryPolicy::Accessed(d) => (3, d),
                ExpiryPolicy::Touched(d) => (4, d),
            };
            (kind, millis(duration).to_string())
        }
    };
    [
        kind.to_string(),
        duration,
        spec.expiry
            .max_idle
            .map_or_else(|| "-1".to_string(), |i| millis(i).to_string()),
        budget(spec.max_entries, spec.partitions.partitions()).to_string(),
    ]
}

/// A custom policy's durations as the scripts take them (`lua/common.lua`, settings):
/// `<creation>:<access>:<update>` in ms, -1 for `None` (eternal; unchanged).
fn custom_durations(custom: &Custom) -> String {
    let ms = |d: Option<Duration>| d.map_or_else(|| "-1".to_string(), |d| millis(d).to_string());
    let policy = &custom.0;
    format!(
        "{}:{}:{}",
        ms(policy.for_creation()),
        ms(policy.for_access()),
        ms(policy.for_update())
    )
}

/// The batch kind of upserts on a cache with `header` and event mode `mode`: caches
/// whose settings and mode are the same share batches.
fn upsert_kind(header: &[String; 4], mode: u8) -> Kind {
    Kind::Upsert(Arc::new(UpsertSettings {
        id: format!("{} {mode}", header.join(",")),
        header: header.clone(),
        mode,
    }))
}

/// The per-partition entry budget: `floor(max / P)`, at least 1, so the cache as a whole
/// never holds more than `max_entries` (when `max_entries >= P`). 0: unbounded.
pub(crate) fn budget(max_entries: Option<u64>, partitions: u16) -> u64 {
    max_entries.map_or(0, |max| (max / u64::from(partitions)).max(1))
}

fn expiry_reads_extend(expiry: &ExpirySettings) -> bool {
    expiry.reads_extend()
}

impl RedisStore {
    /// Opens (creating if needed) the cache described by `spec` on `deployment`:
    /// checks the recorded layout, subscribes to its events, starts its reaper. If the
    /// deployment is unreachable (a transient error) the store is returned anyway and
    /// finishes opening on first use once the server answers (see [`OpenState`]); any
    /// other error (a layout mismatch) is returned.
    pub(crate) async fn open(batcher: Arc<Batcher>, spec: RawCacheSpec) -> Result<RedisStore> {
        let deployment = batcher.deployment.clone();
        let publish_mode = match (spec.publish_events, deployment.router.is_cluster()) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        };
        let database = deployment.database();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let layout = Layout::new(spec.partitions.clone(), database);
        let settings = header(&spec);
        let inner = Arc::new(StoreInner {
            upsert_kind: upsert_kind(&settings, publish_mode),
            header: settings,
            custom: spec.expiry.custom.clone(),
            max_idle_ms: spec
                .expiry
                .max_idle
                .map(|i| u64::try_from(millis(i)).unwrap_or(u64::MAX)),
            publish_mode,
            plain_reads: !expiry_reads_extend(&spec.expiry) && spec.max_entries.is_none(),
            indexed: spec.max_entries.is_some() || spec.expiry.max_idle.is_some(),
            fast_puts: matches!(spec.expiry.policy, ExpiryPolicy::Eternal)
                && spec.expiry.custom.is_none()
                && spec.expiry.max_idle.is_none()
                && spec.max_entries.is_none(),
            deployment,
            batcher,
            name: spec.name.clone(),
            codec: spec.codec,
            stats: spec.stats.clone(),
            listened: spec.listened.clone(),
            wants_feed: std::sync::atomic::AtomicBool::new(false),
            subscribed: tokio::sync::Mutex::new(false),
            feed: Arc::new(Feed {
                delivery: crate::delivery::Delivery::new(events.clone()),
                events,
                listened: spec.listened.clone(),
                sink: OnceLock::new(),
                resumed: std::sync::atomic::AtomicBool::new(false),
                partitions: (0..spec.partitions.partitions()).collect(),
                sequences: (0..spec.partitions.partitions())
                    .map(|p| (layout.sequence_key(p).to_string(), layout.slot(p)))
                    .collect(),
                links: Default::default(),
            }),
            layout,
        });
        let store = RedisStore {
            opening: OpenState {
                reaper: OnceLock::new(),
                attempt: tokio::sync::Mutex::new(None),
                retry_every: inner.deployment.connect_timeout(),
            },
            heartbeat: OnceLock::new(),
            inner,
        };
        match store.ready().await {
            Ok(()) => Ok(store),
            // The deployment is unreachable: open lazily (see `OpenState`).
            Err(e) if e.is_transient() => {
                tracing::warn!(
                    cache = %store.inner.name,
                    error = %e,
                    "the cache's store is unreachable; it opens once the store answers"
                );
                Ok(store)
            }
            // A wrong layout (partition count, codec) fails `build()`.
            Err(e) => Err(e),
        }
    }

    /// Finishes opening the store if it is not open yet (see [`OpenState`]): `Ok` once
    /// it is open; the attempt's error, or `Unavailable` while another attempt is in
    /// flight or the last one is too recent.
    async fn ready(&self) -> Result<()> {
        let state = &self.opening;
        if state.reaper.get().is_some() {
            return Ok(());
        }
        let not_yet = || {
            Err(Error::Unavailable(format!(
                "cache `{}` is not open yet: {} was unreachable (retrying every {:?})",
                self.inner.name,
                self.inner.deployment.describe(),
                state.retry_every
            )))
        };
        let Ok(mut last) = state.attempt.try_lock() else {
            return not_yet();
        };
        if state.reaper.get().is_some() {
            return Ok(());
        }
        if last.is_some_and(|at| at.elapsed() < state.retry_every) {
            return not_yet();
        }
        *last = Some(Instant::now());
        self.inner.finish_open().await?;
        let _ = state.reaper.set(reaper::spawn(Arc::downgrade(&self.inner)));
        Ok(())
    }
}

impl RedisStore {
    /// The state of the batching queues of the store's deployment (shared by every
    /// cache on it): requests waiting to go in a batch, the most that ever waited, and
    /// how many were sent alone because the queues were at their limit
    /// (`max_pending_batched`, `max_pending_batched_bytes`).
    ///
    /// ```no_run
    /// # async fn demo() -> partcache::Result<()> {
    /// partcache_redis::install();
    /// let manager = partcache::CacheManager::from_url("redis://127.0.0.1:6379?max_pending_batched=1024")?;
    /// let cache = manager.cache::<u64, String>("users").build().await?;
    /// let store = cache.raw_store().and_then(|raw| raw.as_any().downcast_ref::<partcache_redis::RedisStore>());
    /// if let Some(store) = store {
    ///     println!("{:?}", store.batching_stats());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn batching_stats(&self) -> crate::BatchingStats {
        self.inner.batcher.bound.stats()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop();
    }
}

impl RedisStore {
    /// Stops the cache's work in this process: the reaper, the near cache's heartbeat
    /// and the routing of its channels' messages (the server-side subscriptions stay
    /// until the connection closes). Safe to repeat.
    fn stop(&self) {
        if let Some(reaper) = self.opening.reaper.get() {
            reaper.abort();
        }
        if let Some(heartbeat) = self.heartbeat.get() {
            heartbeat.abort();
        }
        if self
            .inner
            .wants_feed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            self.inner
                .deployment
                .subscriber()
                .forget(&self.inner.channels());
        }
    }
}

impl StoreInner {
    /// What opening needs the server for: checks the recorded layout and subscribes to
    /// the cache's events. Safe to repeat after a failure.
    async fn finish_open(&self) -> Result<()> {
        self.check_layout().await?;
        if self.wants_feed.load(std::sync::atomic::Ordering::Acquire) {
            self.start_feed().await?;
        }
        Ok(())
    }

    /// Subscribes to the cache's channels if that is not done yet (see
    /// [`StoreInner::wants_feed`]), then gives a near cache, if any, the partitions'
    /// current numbers. `Ok(false)`: subscribed before, nothing done (a reseed would
    /// make a running near cache drop its copies). Safe to repeat after a failure.
    async fn start_feed(&self) -> Result<bool> {
        if !self.publishes() {
            return Ok(false);
        }
        let mut subscribed = self.subscribed.lock().await;
        if *subscribed {
            return Ok(false);
        }
        self.deployment
            .subscribe(&self.channels(), &self.feed)
            .await?;
        *subscribed = true;
        drop(subscribed);
        crate::events::reseed(&self.deployment, &self.feed).await?;
        Ok(true)
    }

    fn channels(&self) -> Vec<(String, u16)> {
        (0..self.layout.partitions())
            .map(|p| (self.layout.channel(p).to_string(), self.layout.slot(p)))
            .collect()
    }

    /// An `FCALL` of `script` on `partition` whose arguments are the texts of the keys
    /// at `indexes` (the shape of every many-key script: get, contains, remove).
    fn keyed_script(
        &self,
        script: &'static Script,
        partition: u16,
        keys: &[RawKey],
        indexes: &[usize],
    ) -> Request {
        let mut r = self.script(
            script,
            partition,
            indexes.iter().map(|&i| keys[i].text.as_str()),
        );
        for &i in indexes {
            r.cmd.arg(&keys[i].text);
        }
        r
    }

    /// An `FCALL` of `script` on `partition` with the cache's settings; the caller
    /// appends the operation's arguments. The script declares the partition's keys
    /// and the entry key of every text in `texts` (see [`Layout::partition_keys`]).
    fn script<'t>(
        &self,
        script: &'static Script,
        partition: u16,
        texts: impl ExactSizeIterator<Item = &'t str>,
    ) -> Request {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&script.function).arg(4 + texts.len());
        for key in self.layout.partition_keys(partition) {
            cmd.arg(key);
        }
        for text in texts {
            cmd.arg(self.layout.entry_key_arg(partition, text));
        }
        match &self.custom {
            Some(custom) => {
                let [kind, _, idle, budget] = &self.header;
                cmd.arg(kind)
                    .arg(custom_durations(custom))
                    .arg(idle)
                    .arg(budget);
            }
            None => {
                cmd.arg(&self.header[..]);
            }
        }
        let events = self.event_args(&mut cmd, partition);
        Request {
            events: events.then_some(partition),
            ..Request::new(self.layout.slot(partition), cmd)
        }
    }

    /// Runs `requests` in a `partcache.redis` span naming the cache and the partition
    /// (the first one's, with how many a many-key call touches): the routing's
    /// `partcache.node` spans nest under it.
    ///
    /// Replies that return events (the cache has listeners in this process) hand them
    /// to the cache's [`Delivery`](crate::delivery::Delivery), which puts each
    /// partition's events on the channel in the order the server made them; this
    /// returns once they are there.
    async fn execute(&self, requests: Vec<Request>) -> Result<Vec<Value>> {
        let span = tracing::debug_span!(
            "partcache.redis",
            cache = %self.name,
            partition = requests.first().and_then(|r| self.layout.partition_of_slot(r.slot)),
            requests = requests.len()
        );
        if requests.iter().all(|r| r.events.is_none()) {
            return self.deployment.execute(requests).instrument(span).await;
        }
        let delivery = &self.feed.delivery;
        // Taken before sending (see `delivery.rs`); a ticket dropped unresolved (an
        // error, or this future dropped) releases the replies that wait for it.
        let deadline = self.deployment.router.deadline();
        let tickets: Vec<_> = requests
            .iter()
            .map(|r| r.events.map(|p| delivery.ticket(p, deadline)))
            .collect();
        let mut replies = self.deployment.execute(requests).instrument(span).await?;
        let mut waits = Vec::new();
        for (ticket, reply) in tickets.into_iter().zip(replies.iter_mut()) {
            if let Some(ticket) = ticket {
                waits.extend(ticket.resolve(self.take_events(reply)));
            }
        }
        if !waits.is_empty() {
            for delivered in waits {
                delivered.wait(deadline).await;
            }
        }
        Ok(replies)
    }

    /// An unconditional put that wants no previous value: the common put
    /// (`lua/put.lua`, `kind` [`Kind::Fast`]) or an upsert (`lua/upsert.lua`). Coalesced
    /// per node (`coalesce/puts.rs`) unless its events must come back in the reply
    /// (listeners in this process).
    async fn put_coalesced(
        &self,
        key: &RawKey,
        blob: Vec<u8>,
        ttl: Option<Duration>,
        kind: &Kind,
    ) -> Result<RawWriteOutcome> {
        let p = key.partition;
        let slot = self.layout.slot(p);
        let turn = if self.listened.is_listened() {
            Turn::Unknown
        } else {
            puts::turn(&self.batcher.puts, slot, kind)
        };
        let blob = match turn {
            Turn::Wait(ticket) => {
                let upsert = matches!(kind, Kind::Upsert(_));
                let entry = Entry {
                    slot,
                    prefix: self.layout.prefix(p).to_string(),
                    mode: self.publish_mode,
                    text: key.text.clone(),
                    ttl: if upsert { ttl_arg(ttl) } else { String::new() },
                    key_only: if upsert {
                        self.key_only(&blob)
                    } else {
                        Vec::new()
                    },
                    blob,
                };
                match ticket.put(entry).await? {
                    Done::Reply(reply) => return self.write_outcome(reply),
                    Done::Alone(blob) => blob,
                }
            }
            Turn::Lead(mut lead) => {
                let result = self.put_alone(key, &blob, ttl, kind).await;
                lead.finished(&result);
                return result;
            }
            Turn::Unknown => blob,
        };
        self.put_alone(key, &blob, ttl, kind).await
    }

    /// One put by itself, with the partition's keys declared.
    async fn put_alone(
        &self,
        key: &RawKey,
        blob: &[u8],
        ttl: Option<Duration>,
        kind: &Kind,
    ) -> Result<RawWriteOutcome> {
        if let Kind::Upsert(_) = kind {
            let mut r = self.script(
                &scripts().upsert,
                key.partition,
                std::iter::once(key.text.as_str()),
            );
            r.cmd
                .arg(&key.text)
                .arg(blob)
                .arg(ttl_arg(ttl))
                .arg(self.key_only(blob));
            let reply = self.execute(vec![r]).await?.pop().unwrap_or(Value::Nil);
            return self.write_outcome(reply);
        }
        self.fast_put_alone(key, blob).await
    }

    /// One common put by itself: `lua/put.lua` with the partition's keys declared.
    async fn fast_put_alone(&self, key: &RawKey, blob: &[u8]) -> Result<RawWriteOutcome> {
        let p = key.partition;
        let mut cmd = Cmd::with_capacity(13, 256 + 2 * key.text.len() + blob.len());
        cmd.arg("FCALL").arg(&scripts().put.function).arg(5);
        for partition_key in self.layout.partition_keys(p) {
            cmd.arg(partition_key);
        }
        cmd.arg(self.layout.entry_key_arg(p, &key.text));
        let events = self.event_args(&mut cmd, p);
        cmd.arg(&key.text).arg(blob);
        let request = Request {
            events: events.then_some(p),
            ..Request::new(self.layout.slot(p), cmd)
        };
        let reply = self
            .execute(vec![request])
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        self.write_outcome(reply)
    }

    /// Whether the cache publishes its events (and so subscribes to them).
    fn publishes(&self) -> bool {
        self.publish_mode != 0
    }

    /// Appends a script's event arguments: the event mode, this client's origin and
    /// the partition's channel. The mode adds 3 ("and return them in the reply") while
    /// the cache has listeners in this process: a call's own events then reach them
    /// from its reply, before it returns, and the published copies, which carry this
    /// client's origin, are not forwarded a second time (`events.rs`). Without local
    /// listeners the reply carries no events at all. Returns whether it does.
    fn event_args(&self, cmd: &mut Cmd, partition: u16) -> bool {
        let listened = self.listened.is_listened();
        let mode = self.publish_mode + if listened { 3 } else { 0 };
        cmd.arg(mode)
            .arg(self.deployment.origin())
            .arg(self.layout.channel(partition));
        listened
    }

    /// Takes the events out of a script's `{result, evicted, expired, events}` reply,
    /// counting its evictions and expirations first (and leaving zeros in their place
    /// for [`StoreInner::outcome`]), so that a listener that hears an expiry finds it
    /// counted.
    fn take_events(&self, reply: &mut Value) -> Vec<(u64, RawEvent)> {
        let Value::Array(parts) = reply else {
            return Vec::new();
        };
        let [_, evicted, expired, Value::Array(events)] = parts.as_mut_slice() else {
            return Vec::new();
        };
        self.count(
            int(Some(&std::mem::replace(evicted, Value::Int(0)))),
            int(Some(&std::mem::replace(expired, Value::Int(0)))),
        );
        std::mem::take(events)
            .into_iter()
            .filter_map(|event| match event {
                Value::BulkString(payload) => parse_event(&payload),
                _ => None,
            })
            .collect()
    }

    fn count(&self, evicted: u64, expired: u64) {
        if evicted > 0 {
            self.stats.evictions.add(evicted);
        }
        if expired > 0 {
            self.stats.expirations.add(expired);
        }
    }

    /// Unpacks a script's `{result, evicted, expired, events}` reply: counts the
    /// evictions and expirations and gives back the result (its events went to the
    /// delivery in [`StoreInner::execute`]).
    fn outcome(&self, reply: Value) -> Result<Value> {
        let parts = match reply {
            Value::Array(parts) if parts.len() == 4 => parts,
            Value::ServerError(e) => {
                return Err(Error::Store(format!(
                    "script on cache `{}` failed: {} {}",
                    self.name,
                    e.code(),
                    e.details().unwrap_or("")
                )));
            }
            other => {
                return Err(Error::Store(format!(
                    "unexpected script reply on cache `{}`: {other:?}",
                    self.name
                )));
            }
        };
        let mut parts = parts.into_iter();
        let result = parts.next().unwrap_or(Value::Nil);
        let evicted = int(parts.next().as_ref());
        let expired = int(parts.next().as_ref());
        self.count(evicted, expired);
        Ok(result)
    }

    async fn check_layout(&self) -> Result<()> {
        // The meta record's key does not depend on the partition count.
        let mut request = self.script(&scripts().open, 0, std::iter::empty());
        let (meta_index, slot) = self.layout.meta_index_key();
        request.slot = slot;
        request.cmd = redis::cmd("FCALL");
        request
            .cmd
            .arg(&scripts().open.function)
            .arg(2)
            .arg(meta_index)
            .arg(format!("{}meta", meta_index.trim_end_matches("ix")))
            .arg(&self.header[..]);
        // The open function makes no events.
        self.event_args(&mut request.cmd, 0);
        request.events = None;
        request
            .cmd
            .arg(self.layout.partitions())
            .arg(self.codec.id())
            .arg(LAYOUT_VERSION)
            .arg(u8::from(self.indexed));
        let reply = self
            .execute(vec![request])
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        let recorded = self.outcome(reply)?;
        let fields: Vec<Option<u64>> = match &recorded {
            Value::Array(items) => items
                .iter()
                .map(|v| text(v).and_then(|t| t.parse().ok()))
                .collect(),
            _ => Vec::new(),
        };
        let (partitions, codec, layout, index) = match fields.as_slice() {
            [Some(p), Some(c), Some(l), i] => (*p, *c, *l, *i),
            _ => {
                return Err(Error::Store(format!(
                    "cache `{}` has an unreadable layout record: {recorded:?}",
                    self.name
                )));
            }
        };
        let mismatch = if partitions != u64::from(self.layout.partitions()) {
            LayoutMismatch::Partitions {
                stored: partitions,
                opened: u64::from(self.layout.partitions()),
            }
        } else if codec != u64::from(self.codec.id()) {
            LayoutMismatch::Codec {
                stored: codec,
                opened: u64::from(self.codec.id()),
                opened_name: self.codec.name().to_string(),
            }
        } else if layout != u64::from(LAYOUT_VERSION) {
            LayoutMismatch::Version {
                stored: layout,
                supported: u64::from(LAYOUT_VERSION),
            }
        } else if index != Some(u64::from(self.indexed)) {
            LayoutMismatch::EntryIndex {
                stored: index == Some(1),
                opened: self.indexed,
            }
        } else {
            return Ok(());
        };
        Err(Error::Mismatch {
            cache: self.name.clone(),
            mismatch,
        })
    }

    /// A read's reply (a plain `GET`/`MGET` where reads need no bookkeeping, else the
    /// `get` function's) as the value it carries.
    fn read_result(&self, reply: Value) -> Result<Value> {
        if !self.plain_reads {
            return self.outcome(reply);
        }
        if let Value::ServerError(e) = &reply {
            return Err(Error::Store(format!(
                "read on cache `{}` failed: {e:?}",
                self.name
            )));
        }
        Ok(reply)
    }

    /// A `write` (or `put`) script's reply as an outcome.
    fn write_outcome(&self, reply: Value) -> Result<RawWriteOutcome> {
        if let Value::Int(code) = reply {
            // The packed form (common.lua, write_reply): existed + 2 * applied +
            // 4 * (evicted + 65536 * expired); no events, no previous value.
            let code = u64::try_from(code)
                .map_err(|_| Error::Store(format!("unexpected write reply {code}")))?;
            let (evicted, expired) = ((code >> 2) & 0xffff, code >> 18);
            if evicted > 0 {
                self.stats.evictions.add(evicted);
            }
            if expired > 0 {
                self.stats.expirations.add(expired);
            }
            return Ok(RawWriteOutcome {
                existed: code & 1 != 0,
                applied: code & 2 != 0,
                previous: None,
            });
        }
        let Value::Array(fields) = self.outcome(reply)? else {
            return Err(Error::Store("unexpected write reply".into()));
        };
        let mut fields = fields.into_iter();
        let existed = int(fields.next().as_ref()) == 1;
        let applied = int(fields.next().as_ref()) == 1;
        let previous = fields.next().and_then(blob);
        Ok(RawWriteOutcome {
            existed,
            applied,
            previous,
        })
    }

    fn key_only(&self, blob: &[u8]) -> Vec<u8> {
        // The blob was just encoded by the core, so it splits; fall back to the whole
        // blob rather than fail a write over an event detail.
        self.codec
            .key_only_blob(blob)
            .unwrap_or_else(|_| blob.to_vec())
    }

    /// Runs one reaper step on each of `partitions`; returns, per partition, whether
    /// it had a full batch due (more may be waiting) and its earliest deadline left
    /// (ms since the epoch, server clock).
    pub(crate) async fn reap(&self, partitions: &[u16]) -> Result<Vec<(bool, Option<u64>)>> {
        let requests = partitions
            .iter()
            .map(|&p| {
                let mut r = self.script(&scripts().reap, p, std::iter::empty());
                r.cmd.arg(BATCH);
                r
            })
            .collect();
        let replies = self.execute(requests).await?;
        let mut out = Vec::with_capacity(partitions.len());
        for reply in replies {
            let Value::Array(pair) = self.outcome(reply)? else {
                return Err(Error::Store("unexpected reap reply".into()));
            };
            let earliest = match pair.get(1) {
                Some(Value::Int(i)) => u64::try_from(*i).ok(),
                other => other.and_then(text).and_then(|t| t.parse().ok()),
            };
            out.push((int(pair.first()) >= BATCH as u64, earliest));
        }
        Ok(out)
    }

    /// The earliest deadline (ms since the epoch, server clock) of every partition,
    /// `None` where nothing has one: one cheap `ZRANGE` per partition, pipelined per
    /// node, so that the reaper visits only partitions with something due. On a
    /// max-idle cache also the least recently used entry's idle deadline (its index
    /// score, microseconds of last use, plus max-idle), which entries without deadline
    /// records have (`lua/common.lua`, lean).
    pub(crate) async fn earliest_deadlines(&self) -> Result<Vec<Option<u64>>> {
        let first = |key: String, p: u16| {
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(key).arg(0).arg(0).arg("WITHSCORES");
            Request::new(self.layout.slot(p), cmd)
        };
        let mut requests = Vec::new();
        for p in 0..self.partitions() {
            let index = self.layout.index_key(p);
            requests.push(first(format!("{}dl", &index[..index.len() - 2]), p));
            if self.max_idle_ms.is_some() {
                requests.push(first(index.to_string(), p));
            }
        }
        let mut scores = Vec::with_capacity(requests.len());
        for reply in self.execute(requests).await? {
            scores.push(match reply {
                Value::ServerError(e) => {
                    return Err(Error::Store(format!("ZRANGE failed: {e:?}")));
                }
                reply => first_score(&reply),
            });
        }
        Ok(match self.max_idle_ms {
            None => scores,
            Some(idle) => scores
                .chunks(2)
                .map(|pair| {
                    let idle_deadline = pair
                        .get(1)
                        .copied()
                        .flatten()
                        .map(|used_us| (used_us / 1000).saturating_add(idle));
                    match (pair[0], idle_deadline) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                })
                .collect(),
        })
    }

    /// Reaps every partition until none has due entries left.
    pub(crate) async fn reap_all(&self) -> Result<()> {
        let mut partitions: Vec<u16> = (0..self.layout.partitions()).collect();
        while !partitions.is_empty() {
            let steps = self.reap(&partitions).await?;
            partitions = partitions
                .into_iter()
                .zip(steps)
                .filter_map(|(p, (busy, _))| busy.then_some(p))
                .collect();
        }
        Ok(())
    }

    pub(crate) fn partitions(&self) -> u16 {
        self.layout.partitions()
    }

    async fn clear_all(&self, announce: bool) -> Result<u64> {
        if !self.indexed {
            return self.clear_scanned(announce).await;
        }
        let mut partitions: Vec<u16> = (0..self.layout.partitions()).collect();
        let mut removed = 0;
        while !partitions.is_empty() {
            let requests = partitions
                .iter()
                .map(|&p| {
                    let mut r = self.script(&scripts().clear, p, std::iter::empty());
                    r.cmd.arg(BATCH).arg(if announce { "1" } else { "0" });
                    r
                })
                .collect();
            let replies = self.execute(requests).await?;
            let mut left_over = Vec::new();
            for (p, reply) in partitions.iter().zip(replies) {
                let Value::Array(pair) = self.outcome(reply)? else {
                    return Err(Error::Store("unexpected clear reply".into()));
                };
                removed += int(pair.first());
                if int(pair.get(1)) > 0 {
                    left_over.push(*p);
                }
            }
            partitions = left_over;
        }
        Ok(removed)
    }

    /// [`StoreInner::clear_all`] of a cache without an index: the entries a key scan
    /// finds, then one call per partition, which tells near caches to drop it.
    async fn clear_scanned(&self, announce: bool) -> Result<u64> {
        let clear = |p: u16, texts: &[String]| {
            let mut r = self.script(&scripts().clear, p, texts.iter().map(String::as_str));
            r.cmd.arg(BATCH).arg(if announce { "1" } else { "0" });
            for text in texts {
                r.cmd.arg(text);
            }
            r
        };
        let mut scan = KeyScan::new();
        let mut removed = 0;
        let mut last = false;
        loop {
            let requests: Vec<Request> = match scan.step(&self.deployment, &self.layout).await? {
                Some(found) => {
                    let mut groups: BTreeMap<u16, Vec<String>> = BTreeMap::new();
                    for (p, text) in found {
                        groups.entry(p).or_default().push(text);
                    }
                    groups
                        .iter()
                        .flat_map(|(&p, texts)| texts.chunks(BATCH).map(move |c| clear(p, c)))
                        .collect()
                }
                None => {
                    last = true;
                    (0..self.partitions()).map(|p| clear(p, &[])).collect()
                }
            };
            for reply in self.execute(requests).await? {
                let Value::Array(pair) = self.outcome(reply)? else {
                    return Err(Error::Store("unexpected clear reply".into()));
                };
                removed += int(pair.first());
            }
            if last {
                return Ok(removed);
            }
        }
    }

    /// The number of entries of a cache without an index, and per partition its
    /// entries and up to [`BYTES_SAMPLE`] of their texts, by key scan.
    async fn count_scanned(&self, sample: bool) -> Result<(u64, Vec<(u64, Vec<String>)>)> {
        let mut scan = KeyScan::new();
        let mut total = 0;
        let mut partitions = vec![(0u64, Vec::new()); usize::from(self.partitions())];
        while let Some(found) = scan.step(&self.deployment, &self.layout).await? {
            total += found.len() as u64;
            if sample {
                for (p, text) in found {
                    let (n, texts) = &mut partitions[usize::from(p)];
                    *n += 1;
                    if texts.len() < BYTES_SAMPLE {
                        texts.push(text);
                    }
                }
            }
        }
        Ok((total, partitions))
    }

    /// Per partition, entries and estimated blob bytes (the `stats` function's reply
    /// for an indexed cache, a key scan without an index).
    async fn partition_stats(&self) -> Result<Vec<(u64, u64)>> {
        if !self.indexed {
            let (_, partitions) = self.count_scanned(true).await?;
            let mut requests = Vec::new();
            let mut sampled = Vec::new();
            for (p, (_, texts)) in partitions.iter().enumerate() {
                if texts.is_empty() {
                    continue;
                }
                let p = u16::try_from(p).unwrap_or(u16::MAX);
                let mut cmd = Cmd::new();
                cmd.arg("MGET");
                for text in texts {
                    cmd.arg(self.layout.entry_key_arg(p, text));
                }
                requests.push(Request::new(self.layout.slot(p), cmd));
                sampled.push(usize::from(p));
            }
            let mut out: Vec<(u64, u64)> = partitions.iter().map(|(n, _)| (*n, 0)).collect();
            for (p, reply) in sampled.into_iter().zip(self.execute(requests).await?) {
                let Value::Array(values) = reply else {
                    return Err(Error::Store("unexpected sample reply".into()));
                };
                let lengths: Vec<u64> = values
                    .into_iter()
                    .filter_map(blob)
                    .map(|b| b.len() as u64)
                    .collect();
                if !lengths.is_empty() {
                    let mean = lengths.iter().sum::<u64>() as f64 / lengths.len() as f64;
                    out[p].1 = (mean * out[p].0 as f64) as u64;
                }
            }
            return Ok(out);
        }
        let requests = (0..self.partitions())
            .map(|p| {
                let mut r = self.script(&scripts().stats, p, std::iter::empty());
                r.cmd.arg(BYTES_SAMPLE);
                r
            })
            .collect();
        let mut out = Vec::new();
        for reply in self.execute(requests).await? {
            let Value::Array(pair) = self.outcome(reply)? else {
                return Err(Error::Store("unexpected stats reply".into()));
            };
            out.push((int(pair.first()), int(pair.get(1))));
        }
        Ok(out)
    }

    /// Groups `keys` (by index) by partition, keeping the caller's order inside each.
    fn by_partition<'k>(
        &self,
        keys: impl Iterator<Item = &'k RawKey>,
    ) -> Result<BTreeMap<u16, Vec<usize>>> {
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.enumerate() {
            self.check_partition(key)?;
            groups.entry(key.partition).or_default().push(i);
        }
        Ok(groups)
    }

    /// Whether `key` names a partition of this cache.
    fn check_partition(&self, key: &RawKey) -> Result<()> {
        if key.partition >= self.layout.partitions() {
            return Err(Error::Store(format!(
                "key `{}` names partition {} of a cache with {}",
                key.text,
                key.partition,
                self.layout.partitions()
            )));
        }
        Ok(())
    }

    /// One step of an iteration over `partition` from `cursor`.
    async fn scan_step(
        &self,
        partition: u16,
        cursor: &str,
    ) -> Result<(String, Vec<(String, Vec<u8>)>)> {
        let mut request = self.script(&scripts().scan, partition, std::iter::empty());
        request.cmd.arg(cursor).arg(BATCH);
        let reply = self
            .execute(vec![request])
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        let Value::Array(parts) = self.outcome(reply)? else {
            return Err(Error::Store("unexpected scan reply".into()));
        };
        let next = parts
            .first()
            .and_then(text)
            .unwrap_or_else(|| "0".to_string());
        let mut found = Vec::new();
        if let Some(Value::Array(items)) = parts.get(1) {
            for pair in items.chunks(2) {
                if let [t, Value::BulkString(blob)] = pair
                    && let Some(t) = text(t)
                {
                    found.push((t, blob.clone()));
                }
            }
        }
        Ok((next, found))
    }
}

/// The score of a `ZRANGE … WITHSCORES` reply's first member (RESP2: a flat array;
/// RESP3: an array of pairs), truncated to an integer.
fn first_score(reply: &Value) -> Option<u64> {
    let Value::Array(items) = reply else {
        return None;
    };
    let score = match items.first()? {
        Value::Array(pair) => pair.get(1)?,
        _ => items.get(1)?,
    };
    let score = match score {
        Value::Double(d) => *d,
        Value::Int(i) => *i as f64,
        other => text(other)?.parse().ok()?,
    };
    (score >= 0.0).then_some(score as u64)
}

fn int(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Int(i)) => u64::try_from(*i).unwrap_or(0),
        Some(v) => text(v).and_then(|t| t.parse().ok()).unwrap_or(0),
        None => 0,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn blob(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}

fn ttl_arg(ttl: Option<Duration>) -> String {
    ttl.map_or_else(|| "-1".to_string(), |t| millis(t).to_string())
}

impl RedisStore {
    /// [`RawStore::scan`] of a cache without an index: the entries a key scan finds,
    /// read as a `get_all` of them reads them (an access, JSR-107 §6.4).
    fn scan_keys(&self) -> BoxStream<'_, Result<Vec<u8>>> {
        struct State {
            scan: KeyScan,
            opened: bool,
            done: bool,
        }
        let start = State {
            scan: KeyScan::new(),
            opened: false,
            done: false,
        };
        let s = &self.inner;
        stream::unfold(start, move |mut state| async move {
            if state.done {
                return None;
            }
            if !state.opened {
                if let Err(e) = self.ready().await {
                    state.done = true;
                    return Some((vec![Err(e)], state));
                }
                state.opened = true;
            }
            let found = match state.scan.step(&s.deployment, &s.layout).await {
                Ok(Some(found)) => found,
                Ok(None) => return None,
                Err(e) => {
                    state.done = true;
                    return Some((vec![Err(e)], state));
                }
            };
            let keys: Vec<RawKey> = found
                .into_iter()
                .map(|(partition, text)| RawKey { text, partition })
                .collect();
            if keys.is_empty() {
                return Some((Vec::new(), state));
            }
            match self.get_all(&keys).await {
                // An entry that expired or went since the scan saw its key is left out.
                Ok(blobs) => Some((blobs.into_iter().flatten().map(Ok).collect(), state)),
                Err(e) => {
                    state.done = true;
                    Some((vec![Err(e)], state))
                }
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }
}

#[async_trait]
impl RawStore for RedisStore {
    fn describe(&self) -> String {
        self.inner.deployment.describe()
    }

    async fn get_all(&self, keys: &[RawKey]) -> Result<Vec<Option<Vec<u8>>>> {
        self.ready().await?;
        let s = &self.inner;
        if let [key] = keys {
            return Ok(vec![self.get(key).await?]);
        }
        let groups = s.by_partition(keys.iter())?;
        let requests: Vec<Request> = groups
            .iter()
            .map(|(&p, indexes)| {
                if s.plain_reads {
                    // No bookkeeping on reads: a plain MGET (all keys share the
                    // partition's slot), which replicas may serve.
                    let mut cmd = Cmd::new();
                    cmd.arg("MGET");
                    for &i in indexes {
                        cmd.arg(s.layout.entry_key_arg(p, &keys[i].text));
                    }
                    Request {
                        read_only: true,
                        ..Request::new(s.layout.slot(p), cmd)
                    }
                } else {
                    s.keyed_script(&scripts().get, p, keys, indexes)
                }
            })
            .collect();
        let replies = s.execute(requests).await?;
        let mut out = vec![None; keys.len()];
        for (indexes, reply) in groups.values().zip(replies) {
            let Value::Array(values) = s.read_result(reply)? else {
                return Err(Error::Store("unexpected read reply".into()));
            };
            for (&i, value) in indexes.iter().zip(values) {
                out[i] = blob(value);
            }
        }
        Ok(out)
    }

    async fn get(&self, key: &RawKey) -> Result<Option<Vec<u8>>> {
        self.ready().await?;
        let s = &self.inner;
        // The common case, one key: no grouping, and a plain `GET` where reads
        // need no bookkeeping (a bulk reply, not an array).
        s.check_partition(key)?;
        let p = key.partition;
        if s.plain_reads && !s.deployment.router.is_cluster() {
            let key = s.layout.entry_key(p, &key.text);
            let reply = crate::batching::reads::get(&s.batcher.reads, key).await?;
            return Ok(blob(s.read_result(reply)?));
        }
        let request = if s.plain_reads {
            let mut cmd = Cmd::with_capacity(2, 8 + key.text.len() + 48);
            cmd.arg("GET").arg(s.layout.entry_key_arg(p, &key.text));
            Request {
                read_only: true,
                ..Request::new(s.layout.slot(p), cmd)
            }
        } else {
            s.keyed_script(&scripts().get, p, std::slice::from_ref(key), &[0])
        };
        let reply = s.execute(vec![request]).await?.pop().unwrap_or(Value::Nil);
        match s.read_result(reply)? {
            // The function's reply: the blobs of the texts it was given.
            Value::Array(values) if !s.plain_reads => Ok(values.into_iter().next().and_then(blob)),
            // `GET`'s.
            value if s.plain_reads => Ok(blob(value)),
            other => Err(Error::Store(format!("unexpected read reply: {other:?}"))),
        }
    }

    async fn peek(&self, key: &RawKey) -> Result<Option<Vec<u8>>> {
        self.ready().await?;
        let s = &self.inner;
        s.check_partition(key)?;
        // The entry key alone: a plain `GET` moves no deadline and no LRU order. An
        // entry Redis expired reads as absent; the write that follows cleans up.
        let mut cmd = Cmd::new();
        cmd.arg("GET")
            .arg(s.layout.entry_key_arg(key.partition, &key.text));
        let request = Request::new(s.layout.slot(key.partition), cmd);
        match s.execute(vec![request]).await?.pop().unwrap_or(Value::Nil) {
            Value::ServerError(e) => Err(Error::Store(format!(
                "read on cache `{}` failed: {e:?}",
                s.name
            ))),
            reply => Ok(blob(reply)),
        }
    }

    async fn touch(&self, key: &RawKey) -> Result<()> {
        // Where reads keep no bookkeeping (no expiry they move, no LRU order), an
        // access changes nothing: no round trip.
        if self.inner.plain_reads {
            return Ok(());
        }
        self.get(key).await.map(drop)
    }

    async fn contains_all(&self, keys: &[RawKey]) -> Result<Vec<bool>> {
        self.ready().await?;
        let s = &self.inner;
        let groups = s.by_partition(keys.iter())?;
        let requests: Vec<Request> = groups
            .iter()
            .map(|(&p, indexes)| s.keyed_script(&scripts().contains, p, keys, indexes))
            .collect();
        let replies = s.execute(requests).await?;
        let mut out = vec![false; keys.len()];
        for (indexes, reply) in groups.values().zip(replies) {
            let Value::Array(values) = s.outcome(reply)? else {
                return Err(Error::Store("unexpected contains reply".into()));
            };
            for (&i, value) in indexes.iter().zip(values) {
                out[i] = int(Some(&value)) == 1;
            }
        }
        Ok(out)
    }

    async fn write(&self, key: &RawKey, write: RawWrite) -> Result<RawWriteOutcome> {
        self.ready().await?;
        let s = &self.inner;
        s.check_partition(key)?;
        if let (true, RawCondition::Always, RawAction::Put { ttl: None, .. }, false) = (
            s.fast_puts,
            &write.condition,
            &write.action,
            write.want_previous,
        ) {
            let RawAction::Put { blob, .. } = write.action else {
                return Err(Error::Store("unreachable write action".into()));
            };
            return s.put_coalesced(key, blob, None, &Kind::Fast).await;
        }
        // Coalesced upserts share one set of settings per batch; a custom policy's
        // durations are asked per call, so its puts go by themselves.
        if let (RawCondition::Always, RawAction::Put { .. }, false, None) = (
            &write.condition,
            &write.action,
            write.want_previous,
            &s.custom,
        ) {
            let RawAction::Put { blob, ttl } = write.action else {
                return Err(Error::Store("unreachable write action".into()));
            };
            return s.put_coalesced(key, blob, ttl, &s.upsert_kind).await;
        }
        let mut r = s.script(
            &scripts().write,
            key.partition,
            std::iter::once(key.text.as_str()),
        );
        let (condition, expected) = match &write.condition {
            RawCondition::Always => ("0", &[][..]),
            RawCondition::IfAbsent => ("1", &[][..]),
            RawCondition::IfPresent => ("2", &[][..]),
            RawCondition::IfEquals(bytes) => ("3", bytes.as_slice()),
        };
        r.cmd.arg(&key.text).arg(condition).arg(expected);
        match &write.action {
            RawAction::Put { blob, ttl } => {
                r.cmd
                    .arg("1")
                    .arg(blob.as_slice())
                    .arg(ttl_arg(*ttl))
                    .arg(if write.want_previous { "1" } else { "0" })
                    .arg(s.key_only(blob));
            }
            RawAction::Remove => {
                r.cmd
                    .arg("2")
                    .arg("")
                    .arg("-1")
                    .arg(if write.want_previous { "1" } else { "0" })
                    .arg("");
            }
        }
        let reply = s.execute(vec![r]).await?.pop().unwrap_or(Value::Nil);
        s.write_outcome(reply)
    }

    async fn put_all(&self, entries: Vec<(RawKey, Vec<u8>)>, ttl: Option<Duration>) -> Result<u64> {
        self.ready().await?;
        let s = &self.inner;
        let groups = s.by_partition(entries.iter().map(|(k, _)| k))?;
        let ttl = ttl_arg(ttl);
        let mut requests = Vec::new();
        for (&p, indexes) in &groups {
            for chunk in indexes.chunks(BATCH) {
                let texts = chunk.iter().map(|&i| entries[i].0.text.as_str());
                let mut r = s.script(&scripts().put_many, p, texts);
                r.cmd.arg(&ttl);
                for &i in chunk {
                    let (key, blob) = &entries[i];
                    r.cmd
                        .arg(&key.text)
                        .arg(blob.as_slice())
                        .arg(s.key_only(blob));
                }
                requests.push(r);
            }
        }
        let mut stored = 0;
        for reply in s.execute(requests).await? {
            stored += int(Some(&s.outcome(reply)?));
        }
        Ok(stored)
    }

    async fn remove_all(&self, keys: &[RawKey]) -> Result<u64> {
        self.ready().await?;
        let s = &self.inner;
        let groups = s.by_partition(keys.iter())?;
        let mut requests = Vec::new();
        for (&p, indexes) in &groups {
            for chunk in indexes.chunks(BATCH) {
                requests.push(s.keyed_script(&scripts().remove_many, p, keys, chunk));
            }
        }
        let mut removed = 0;
        for reply in s.execute(requests).await? {
            removed += int(Some(&s.outcome(reply)?));
        }
        Ok(removed)
    }

    async fn remove_everything(&self) -> Result<u64> {
        self.ready().await?;
        self.inner.clear_all(true).await
    }

    async fn clear(&self) -> Result<()> {
        self.ready().await?;
        self.inner.clear_all(false).await.map(|_| ())
    }

    fn scan(&self) -> BoxStream<'_, Result<Vec<u8>>> {
        if !self.inner.indexed {
            return self.scan_keys();
        }
        struct State {
            partition: u16,
            cursor: String,
            seen: HashSet<String>,
            done: bool,
            opened: bool,
        }
        let start = State {
            partition: 0,
            cursor: "0".to_string(),
            seen: HashSet::new(),
            done: false,
            opened: false,
        };
        let store = self;
        let s = &self.inner;
        stream::unfold(start, move |mut state| async move {
            if state.done || state.partition >= s.partitions() {
                return None;
            }
            if !state.opened {
                if let Err(e) = store.ready().await {
                    state.done = true;
                    return Some((vec![Err(e)], state));
                }
                state.opened = true;
            }
            match s.scan_step(state.partition, &state.cursor).await {
                Err(e) => {
                    state.done = true;
                    Some((vec![Err(e)], state))
                }
                Ok((next, found)) => {
                    // ZSCAN may return a member twice while the index rehashes: the
                    // per-partition set of seen keys keeps every entry to once.
                    let blobs: Vec<Result<Vec<u8>>> = found
                        .into_iter()
                        .filter(|(t, _)| state.seen.insert(t.clone()))
                        .map(|(_, b)| Ok(b))
                        .collect();
                    if next == "0" {
                        state.partition += 1;
                        state.seen.clear();
                    }
                    state.cursor = next;
                    Some((blobs, state))
                }
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }

    async fn len(&self) -> Result<u64> {
        self.ready().await?;
        let s = &self.inner;
        if !s.indexed {
            return Ok(s.count_scanned(false).await?.0);
        }
        let requests = (0..s.partitions())
            .map(|p| {
                let mut cmd = redis::cmd("ZCARD");
                cmd.arg(s.layout.index_key(p));
                Request {
                    read_only: true,
                    ..Request::new(s.layout.slot(p), cmd)
                }
            })
            .collect();
        let mut total = 0;
        for reply in s.execute(requests).await? {
            if let Value::ServerError(e) = &reply {
                return Err(Error::Store(format!("ZCARD failed: {e:?}")));
            }
            total += int(Some(&reply));
        }
        Ok(total)
    }

    async fn get_all_with_deadlines(&self, keys: &[RawKey]) -> Result<Vec<Option<RawFound>>> {
        self.ready().await?;
        let s = &self.inner;
        let groups = s.by_partition(keys.iter())?;
        let requests: Vec<Request> = groups
            .iter()
            .map(|(&p, indexes)| s.keyed_script(&scripts().near_get, p, keys, indexes))
            .collect();
        let replies = s.execute(requests).await?;
        let mut out = vec![None; keys.len()];
        for (indexes, reply) in groups.values().zip(replies) {
            let Value::Array(values) = s.outcome(reply)? else {
                return Err(Error::Store("unexpected near read reply".into()));
            };
            for (&i, value) in indexes.iter().zip(values) {
                if let Value::Array(pair) = value {
                    let mut pair = pair.into_iter();
                    if let Some(blob) = pair.next().and_then(blob) {
                        // PTTL: -1 when the entry has no deadline.
                        let remaining = match pair.next() {
                            Some(Value::Int(ms)) => u64::try_from(ms).ok(),
                            _ => None,
                        };
                        out[i] = Some(RawFound {
                            blob,
                            remaining: remaining.map(Duration::from_millis),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    async fn attach_invalidation_sink(
        &self,
        sink: Arc<dyn InvalidationSink>,
        heartbeat: Duration,
    ) -> Result<()> {
        let s = &self.inner;
        if !s.publishes() {
            return Err(Error::Config(format!(
                "cache `{}` does not publish events (`publish_events(false)`): a near cache needs them",
                s.name
            )));
        }
        if s.feed.sink.set(sink).is_err() {
            return Err(Error::Config(format!(
                "cache `{}` already has a near cache",
                s.name
            )));
        }
        s.wants_feed
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self
            .heartbeat
            .set(tokio::spawn(crate::events::heartbeat_loop(
                Arc::downgrade(&s.deployment),
                Arc::downgrade(&s.feed),
                heartbeat,
            )));
        if self.opening.reaper.get().is_some() {
            // Open already: subscribe if no listener did yet, and the near cache
            // starts from the current numbers. Should this fail, the next heartbeat
            // finds the partitions lost and wakes the resubscription, which retries.
            let started = match s.start_feed().await {
                Ok(true) => Ok(()),
                // Subscribed for a listener before: the new near cache needs the
                // numbers all the same.
                Ok(false) => crate::events::reseed(&s.deployment, &s.feed).await,
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                tracing::warn!(cache = %s.name, error = %e, "near cache not started yet");
            }
        } else if let Err(e) = self.ready().await {
            // Opening (which starts the near cache) happens on first use.
            tracing::warn!(cache = %s.name, error = %e, "near cache not started yet");
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<RawEvent> {
        self.inner.feed.events.subscribe()
    }

    async fn listen(&self) -> Result<()> {
        let s = &self.inner;
        if !s.publishes() {
            // `publish_events(false)`: no process publishes, there is nothing to hear.
            return Ok(());
        }
        s.wants_feed
            .store(true, std::sync::atomic::Ordering::Release);
        if self.opening.reaper.get().is_some() {
            s.start_feed().await.map(|_| ())
        } else {
            // Opening subscribes, now that the feed is wanted.
            self.ready().await
        }
    }

    async fn close(&self) -> Result<()> {
        self.stop();
        Ok(())
    }

    async fn destroy(&self) -> Result<()> {
        self.ready().await?;
        let s = &self.inner;
        // The entries (and a `clear` message, so other processes' near caches drop
        // their copies), then each partition's bookkeeping, then the layout record.
        // The sequence keys stay: a near cache elsewhere must never see a partition's
        // numbers go back (it would take new messages for old ones).
        s.clear_all(false).await?;
        let mut requests: Vec<Request> = (0..s.layout.partitions())
            .map(|p| {
                let [index, deadlines, fixed, _sequence] = s.layout.partition_keys(p);
                let mut cmd = redis::cmd("DEL");
                cmd.arg(index).arg(deadlines).arg(fixed);
                Request::new(s.layout.slot(p), cmd)
            })
            .collect();
        let (meta_index, slot) = s.layout.meta_index_key();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(meta_index)
            .arg(format!("{}meta", meta_index.trim_end_matches("ix")));
        requests.push(Request::new(slot, cmd));
        for reply in s.execute(requests).await? {
            if let Value::ServerError(e) = &reply {
                return Err(Error::Store(format!(
                    "destroying cache `{}` failed: {e:?}",
                    s.name
                )));
            }
        }
        self.stop();
        Ok(())
    }

    async fn run_pending_tasks(&self) -> Result<()> {
        self.ready().await?;
        self.inner.reap_all().await
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn balance_report(&self) -> Result<BalanceReport> {
        self.ready().await?;
        let s = &self.inner;
        let map = s.deployment.slot_map().await?;
        let stats = s.partition_stats().await?;
        let mut rows: HashMap<String, MasterBalance> = map
            .masters()
            .iter()
            .map(|m| {
                (
                    m.clone(),
                    MasterBalance {
                        master: m.clone(),
                        partitions: 0,
                        entries: 0,
                        bytes: 0,
                    },
                )
            })
            .collect();
        for (p, (entries, bytes)) in (0..s.partitions()).zip(stats) {
            let master = map
                .master(s.layout.slot(p))
                .unwrap_or("(unserved)")
                .to_string();
            let row = rows.entry(master.clone()).or_insert_with(|| MasterBalance {
                master,
                partitions: 0,
                entries: 0,
                bytes: 0,
            });
            row.partitions += 1;
            row.entries += entries;
            row.bytes += bytes;
        }
        let mut masters: Vec<MasterBalance> = rows.into_values().collect();
        masters.sort_by(|a, b| a.master.cmp(&b.master));
        Ok(BalanceReport {
            cache: s.name.clone(),
            partitions: s.partitions(),
            masters,
        })
    }
    fn breakers(&self) -> Vec<partcache::stats::BreakerStats> {
        self.inner.deployment.breakers()
    }
}
