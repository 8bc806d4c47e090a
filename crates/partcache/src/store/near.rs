//! The near cache: a local copy of decoded values in front of a remote store, kept
//! coherent by the store's invalidation feed ([`InvalidationSink`]), never silently
//! stale.
//!
//! [`NearStore`] wraps the cache's [`EncodedStore`]. A read first looks in a local moka
//! cache of decoded values (`Arc<V>`, so a local hit neither decodes nor copies); a miss
//! reads the store and keeps what it found. Writes go to the store and drop the key's
//! local copy before and after. The store reports every change made by any process
//! through the sink, which drops the local copies concerned.
//!
//! # The guarantee
//!
//! The store numbers each partition's messages and periodically *vouches* for a
//! partition's feed: "every message published on it before instant `at` has been
//! delivered" (its sink call has returned). A local copy is served only if the store
//! vouched for its partition's feed within `max_staleness` of the read. So **a value
//! overwritten (acknowledged to its writer) more than `max_staleness` before a read
//! began is never served by it**: the write's message was published before the write
//! was acknowledged, hence before any vouch recent enough to let the copy be served,
//! hence delivered, hence the copy dropped. Normally the invalidation arrives within
//! milliseconds; `max_staleness` is the bound when the feed is slow or silently
//! stuck. All instants are this process's monotonic clock (`Instant`): the store
//! takes `at` in this process, so no clock synchronisation between machines is
//! involved.
//!
//! A *detected* loss drops a partition's copies at once and serves none until the
//! store reports the feed live again ([`InvalidationSink::resumed`]): a gap in the
//! sequence numbers, a broken connection or subscription, a failover, a
//! resubscription ([`InvalidationSink::lost`]), or a message whose key cannot be
//! decoded. Every partition starts in that lost state.
//!
//! # How the races are closed
//!
//! Per partition the shared `NearState` keeps an *epoch* (bumped to drop the whole
//! partition: every local copy remembers the epoch it was read under), a *changes*
//! counter (bumped on every invalidation), the last sequence number, the latest vouch
//! and the time of the latest drop.
//!
//! * **Populate vs. invalidation.** A miss snapshots the partition's `changes` and
//!   `epoch` *before* the remote read, inserts the value it read *unconfirmed*, then
//!   re-checks `changes`: unchanged, it confirms the copy; moved, it drops it. Only
//!   confirmed copies are served. The sink bumps `changes` *before* it drops the key,
//!   so (all operations sequentially consistent) either the re-check sees the bump, or
//!   the sink's drop comes after the insertion and removes it. Confirming after the
//!   re-check (instead of inserting a servable copy and removing it on a mismatch)
//!   keeps other readers from being served the copy in between.
//! * **Lookup vs. invalidation.** A reader takes the time *before* looking the key up,
//!   and the sink stamps the partition's `dropped_at` *after* dropping a copy, before
//!   any later vouch. A copy is served only if no drop was stamped since the read began:
//!   otherwise a reader that found the copy just before the drop could pair it with a
//!   vouch that the drop preceded.
//! * **Loss vs. heartbeat.** `lost` zeroes the vouch; `vouched` only ever raises a
//!   non-zero vouch, so a heartbeat in flight across a loss cannot revive a partition;
//!   only `resumed` (which also bumps the epoch, so copies read while the feed was
//!   down are never served) does.
//!
//! Writes by this process bump `changes` and drop the key before and after the remote
//! call, and never populate the local copy (another process's invalidation of a later
//! write could be delivered before ours completes).

use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::encoded::EncodedStore;
use super::raw::InvalidationSink;
use super::spi::{Computed, Lease, LeasedPut, Processor, Store, Write, WriteOutcome};
use crate::codec::Codec;
use crate::config::NearCache;
use crate::error::Result;
use crate::event::EventSender;
use crate::stats::StatsCounters;

/// A local TTL beyond this is no TTL (moka refuses TTLs over 1000 years).
const LONGEST_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// One local copy.
struct LocalEntry<V> {
    value: Arc<V>,
    partition: u16,
    /// The partition's epoch when the value was read (snapshot taken before the read).
    epoch: u64,
    /// When the entry's deadline on the store passes (measured from before the read).
    deadline: Option<Instant>,
    /// Set once the populating read re-checked that no invalidation of the partition
    /// came in meanwhile; only confirmed copies are served (see the module docs).
    confirmed: AtomicBool,
}

type LocalMap<K, V> = moka::sync::Cache<K, Arc<LocalEntry<V>>>;

/// The feed state of one partition. Its own cache line: readers of one partition do
/// not contend with the sink updating another.
#[repr(align(64))]
#[derive(Default)]
struct PartitionFeed {
    /// Bumped to drop every local copy of the partition.
    epoch: AtomicU64,
    /// Bumped on every invalidation of one of its keys (and with `epoch`).
    changes: AtomicU64,
    /// The last sequence number seen, plus one; 0: unknown (lost).
    next_seq: AtomicU64,
    /// Stamp of the latest vouch; 0: not vouched (lost, or never resumed).
    vouched_at: AtomicU64,
    /// Stamp taken after the latest drop by the sink.
    dropped_at: AtomicU64,
}

/// What the near store and its sink share: per-partition feed state, and the clock
/// base of the stamps.
pub(crate) struct NearState {
    /// Stamps are nanoseconds since `base`, plus one (0 means "none").
    base: Instant,
    max_staleness: u64,
    partitions: Box<[PartitionFeed]>,
}

impl NearState {
    fn new(partitions: u16, max_staleness: Duration) -> Self {
        NearState {
            base: Instant::now(),
            max_staleness: u64::try_from(max_staleness.as_nanos()).unwrap_or(u64::MAX),
            partitions: (0..partitions).map(|_| PartitionFeed::default()).collect(),
        }
    }

    /// `t` as a stamp. An instant before `base` counts as `base`: the state did not
    /// exist then, so every local copy was read after it, and a vouch for "everything
    /// published before `base`" says all that matters about such an instant.
    fn stamp(&self, t: Instant) -> u64 {
        let nanos = t.saturating_duration_since(self.base).as_nanos();
        u64::try_from(nanos)
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn feed(&self, partition: u16) -> Option<&PartitionFeed> {
        self.partitions.get(usize::from(partition))
    }

    /// Whether `entry` may be served by a read that began at `now` (taken before the
    /// entry was looked up). See the module docs.
    fn servable<V>(&self, entry: &LocalEntry<V>, now: Instant) -> bool {
        if !entry.confirmed.load(SeqCst) || entry.deadline.is_some_and(|d| d <= now) {
            return false;
        }
        let Some(feed) = self.feed(entry.partition) else {
            return false;
        };
        if entry.epoch != feed.epoch.load(SeqCst) {
            return false;
        }
        let now = self.stamp(now);
        // The vouch is read before `dropped_at`: a vouch the sink gave after a drop is
        // only seen together with that drop's stamp.
        let vouched = feed.vouched_at.load(SeqCst);
        vouched != 0
            && now.saturating_sub(vouched) <= self.max_staleness
            && feed.dropped_at.load(SeqCst) < now
    }

    /// Stamps a drop by the sink on `feed` (after the drop).
    fn dropped(&self, feed: &PartitionFeed) {
        feed.dropped_at
            .fetch_max(self.stamp(Instant::now()), SeqCst);
    }

    /// Drops every local copy of every partition (a clear).
    fn drop_all(&self) {
        for feed in self.partitions.iter() {
            feed.changes.fetch_add(1, SeqCst);
            feed.epoch.fetch_add(1, SeqCst);
        }
    }
}

/// A typed [`Store`] that keeps local copies of decoded values in front of an
/// [`EncodedStore`]. See the module docs for the guarantee and the costs.
pub struct NearStore<K, V> {
    encoded: Arc<EncodedStore<K, V>>,
    local: LocalMap<K, V>,
    state: Arc<NearState>,
    stats: Arc<StatsCounters>,
}

impl<K, V> NearStore<K, V>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Puts a near cache in front of `encoded`: attaches its invalidation sink to the
    /// raw store, which must then vouch for its feed every third of
    /// `config.max_staleness`. Fails (an [`crate::Error::Config`]) on a store without an
    /// invalidation feed. Serves nothing locally until the store reports its feed live
    /// ([`InvalidationSink::resumed`]).
    pub async fn new(encoded: Arc<EncodedStore<K, V>>, config: NearCache) -> Result<Arc<Self>> {
        let mut builder = moka::sync::Cache::builder().max_capacity(config.max_entries);
        if let Some(ttl) = config.ttl.filter(|ttl| *ttl <= LONGEST_TTL) {
            builder = builder.time_to_live(ttl);
        }
        let local: LocalMap<K, V> = builder.build();
        let state = Arc::new(NearState::new(
            encoded.partition_map().partitions(),
            config.max_staleness,
        ));
        let sink = Arc::new(NearSink {
            state: state.clone(),
            local: local.clone(),
            codec: encoded.codec(),
            name: encoded.name().to_string(),
        });
        encoded
            .raw()
            .attach_invalidation_sink(sink, config.max_staleness / 3)
            .await?;
        Ok(Arc::new(NearStore {
            stats: encoded.stats().clone(),
            encoded,
            local,
            state,
        }))
    }

    /// The local copy of `key`, if it may be served to a read that began at `now`.
    fn lookup(&self, key: &K, now: Instant) -> Option<Arc<V>> {
        let entry = self.local.get(key)?;
        self.state
            .servable(&entry, now)
            .then(|| entry.value.clone())
    }

    /// Keeps `value`, read from the store for `key` after `snapshot` (the partition's
    /// `changes` and `epoch`) was taken and at or after `read_start`.
    fn populate(
        &self,
        key: &K,
        partition: u16,
        (changes, epoch): (u64, u64),
        value: &Arc<V>,
        remaining: Option<Duration>,
        read_start: Instant,
    ) {
        let Some(feed) = self.state.feed(partition) else {
            return;
        };
        // A lost partition serves nothing; its next `resumed` bumps the epoch anyway.
        if feed.vouched_at.load(SeqCst) == 0 || remaining == Some(Duration::ZERO) {
            return;
        }
        let entry = Arc::new(LocalEntry {
            value: value.clone(),
            partition,
            epoch,
            // Measured from before the read, so never later than the store's deadline.
            deadline: remaining.and_then(|r| read_start.checked_add(r)),
            confirmed: AtomicBool::new(false),
        });
        self.local.insert(key.clone(), entry.clone());
        // Insert, then re-check. The sink bumps `changes` and then drops the key; with
        // sequentially consistent operations either this load sees the bump (the value
        // may predate the change: drop it), or the bump, and so the sink's drop, come
        // after the insertion above and remove it. Confirming only now keeps readers
        // from being served the copy before the re-check.
        if feed.changes.load(SeqCst) == changes {
            entry.confirmed.store(true, SeqCst);
        } else {
            self.local.invalidate(key);
        }
    }

    /// Drops `key`'s local copy around a write of this process (see the module docs).
    fn forget(&self, key: &K, partition: u16) {
        if let Some(feed) = self.state.feed(partition) {
            feed.changes.fetch_add(1, SeqCst);
        }
        self.local.invalidate(key);
    }

    fn forget_all(&self) {
        self.state.drop_all();
        self.local.invalidate_all();
    }

    fn partitions_of(&self, keys: &[K]) -> Result<Vec<u16>> {
        keys.iter()
            .map(|k| Ok(self.encoded.raw_key(k)?.partition))
            .collect()
    }
}

#[async_trait]
impl<K, V> Store<K, V> for NearStore<K, V>
where
    K: Serialize + DeserializeOwned + Hash + Eq + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn describe(&self) -> String {
        format!("{} (near cache)", self.encoded.describe())
    }

    fn events(&self) -> &EventSender<K, V> {
        self.encoded.events()
    }

    /// A local hit: one moka lookup, a few atomic loads, one clock reading, no
    /// allocation. Anything else goes to [`Store::get_all`].
    fn get_now(&self, key: &K) -> Option<Result<Option<Arc<V>>>> {
        let value = self.lookup(key, Instant::now())?;
        self.stats.near_hits.incr();
        Some(Ok(Some(value)))
    }

    async fn get_all(&self, keys: &[K]) -> Result<Vec<Option<Arc<V>>>> {
        let now = Instant::now();
        let mut values = Vec::with_capacity(keys.len());
        let mut misses = Vec::new();
        for (index, key) in keys.iter().enumerate() {
            let value = self.lookup(key, now);
            if value.is_none() {
                misses.push(index);
            }
            values.push(value);
        }
        self.stats.near_hits.add((keys.len() - misses.len()) as u64);
        self.stats.near_misses.add(misses.len() as u64);
        if misses.is_empty() {
            return Ok(values);
        }
        let raw_keys = misses
            .iter()
            .map(|&i| self.encoded.raw_key(&keys[i]))
            .collect::<Result<Vec<_>>>()?;
        // Taken before the read: see `populate`.
        let snapshots: Vec<Option<(u64, u64)>> = raw_keys
            .iter()
            .map(|k| {
                let feed = self.state.feed(k.partition)?;
                Some((feed.changes.load(SeqCst), feed.epoch.load(SeqCst)))
            })
            .collect();
        let read_start = Instant::now();
        let found = self.encoded.get_all_with_deadlines(&raw_keys).await?;
        for (((&index, raw_key), snapshot), found) in
            misses.iter().zip(&raw_keys).zip(snapshots).zip(found)
        {
            let Some((value, remaining)) = found else {
                continue;
            };
            if let Some(snapshot) = snapshot {
                self.populate(
                    &keys[index],
                    raw_key.partition,
                    snapshot,
                    &value,
                    remaining,
                    read_start,
                );
            }
            values[index] = Some(value);
        }
        Ok(values)
    }

    async fn contains_all(&self, keys: &[K]) -> Result<Vec<bool>> {
        self.encoded.contains_all(keys).await
    }

    async fn write(&self, key: &K, write: Write<V>) -> Result<WriteOutcome<V>> {
        let partition = self.encoded.raw_key(key)?.partition;
        self.forget(key, partition);
        let outcome = self.encoded.write(key, write).await;
        self.forget(key, partition);
        outcome
    }

    async fn lease(&self, key: &K, token: &str, ttl: Duration, waited: bool) -> Result<Lease<V>> {
        self.encoded.lease(key, token, ttl, waited).await
    }

    async fn put_leased(
        &self,
        key: &K,
        token: &str,
        value: Arc<V>,
        ttl: Option<Duration>,
    ) -> Result<LeasedPut> {
        let partition = self.encoded.raw_key(key)?.partition;
        self.forget(key, partition);
        let outcome = self.encoded.put_leased(key, token, value, ttl).await;
        self.forget(key, partition);
        outcome
    }

    async fn release_lease(&self, key: &K, token: &str) -> Result<()> {
        self.encoded.release_lease(key, token).await
    }

    async fn put_all(&self, entries: Vec<(K, Arc<V>)>, ttl: Option<Duration>) -> Result<u64> {
        let keys: Vec<K> = entries.iter().map(|(k, _)| k.clone()).collect();
        let partitions = self.partitions_of(&keys)?;
        for (key, &partition) in keys.iter().zip(&partitions) {
            self.forget(key, partition);
        }
        let result = self.encoded.put_all(entries, ttl).await;
        for (key, &partition) in keys.iter().zip(&partitions) {
            self.forget(key, partition);
        }
        result
    }

    async fn remove_all(&self, keys: &[K]) -> Result<u64> {
        let partitions = self.partitions_of(keys)?;
        for (key, &partition) in keys.iter().zip(&partitions) {
            self.forget(key, partition);
        }
        let result = self.encoded.remove_all(keys).await;
        for (key, &partition) in keys.iter().zip(&partitions) {
            self.forget(key, partition);
        }
        result
    }

    async fn remove_everything(&self) -> Result<u64> {
        self.forget_all();
        let result = self.encoded.remove_everything().await;
        self.forget_all();
        result
    }

    async fn clear(&self) -> Result<()> {
        self.forget_all();
        let result = self.encoded.clear().await;
        self.forget_all();
        result
    }

    async fn compute(&self, key: &K, processor: &mut Processor<'_, V>) -> Result<Computed> {
        let partition = self.encoded.raw_key(key)?.partition;
        self.forget(key, partition);
        let computed = self.encoded.compute(key, processor).await;
        self.forget(key, partition);
        computed
    }

    fn entries(&self) -> BoxStream<'_, Result<(K, Arc<V>)>> {
        self.encoded.entries()
    }

    async fn len(&self) -> Result<u64> {
        self.encoded.len().await
    }

    async fn run_pending_tasks(&self) -> Result<()> {
        self.local.run_pending_tasks();
        self.encoded.run_pending_tasks().await
    }

    async fn close(&self) -> Result<()> {
        // The store stops the feed first (no more invalidations), then the copies go.
        let result = self.encoded.close().await;
        self.forget_all();
        result
    }

    async fn destroy(&self) -> Result<()> {
        let result = self.encoded.destroy().await;
        self.forget_all();
        result
    }
}

/// What the store calls: drops local copies. Holds no reference to the store (the
/// store holds it), only the shared state and a handle on the same moka cache.
struct NearSink<K, V> {
    state: Arc<NearState>,
    local: LocalMap<K, V>,
    codec: Codec,
    name: String,
}

impl<K, V> NearSink<K, V>
where
    K: DeserializeOwned + Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn feed(&self, partition: u16) -> Option<&PartitionFeed> {
        let feed = self.state.feed(partition);
        if feed.is_none() {
            // No local copy can be in a partition the cache does not have.
            tracing::warn!(cache = %self.name, partition, "invalidation for an unknown partition ignored");
        }
        feed
    }

    /// Follows the partition's sequence numbers: a gap drops the partition; a number
    /// at or below the last one (late or duplicate) changes nothing.
    fn follow(&self, feed: &PartitionFeed, partition: u16, seq: u64) {
        let next = feed.next_seq.load(SeqCst);
        if next != 0 && seq > next {
            feed.epoch.fetch_add(1, SeqCst);
            tracing::debug!(
                cache = %self.name,
                partition,
                expected = next,
                got = seq,
                "gap in the invalidation feed; the partition's local copies are dropped"
            );
        }
        feed.next_seq.fetch_max(seq.saturating_add(1), SeqCst);
    }
}

impl<K, V> InvalidationSink for NearSink<K, V>
where
    K: DeserializeOwned + Hash + Eq + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn entry_changed(&self, partition: u16, seq: u64, blob: &[u8]) {
        let Some(feed) = self.feed(partition) else {
            return;
        };
        // Before the drop: see `NearStore::populate`.
        feed.changes.fetch_add(1, SeqCst);
        match self.codec.decode_key::<K>(blob) {
            Ok(key) => self.local.invalidate(&key),
            Err(error) => {
                feed.epoch.fetch_add(1, SeqCst);
                tracing::warn!(cache = %self.name, partition, %error, "undecodable invalidation; the partition's local copies are dropped");
            }
        }
        self.follow(feed, partition, seq);
        self.state.dropped(feed);
    }

    fn partition_cleared(&self, partition: u16, seq: u64) {
        let Some(feed) = self.feed(partition) else {
            return;
        };
        feed.changes.fetch_add(1, SeqCst);
        feed.epoch.fetch_add(1, SeqCst);
        self.follow(feed, partition, seq);
        self.state.dropped(feed);
    }

    fn lost(&self, partitions: &[u16]) {
        for &partition in partitions {
            let Some(feed) = self.feed(partition) else {
                continue;
            };
            // Unvouched first: from here on nothing of the partition is served.
            feed.vouched_at.store(0, SeqCst);
            feed.changes.fetch_add(1, SeqCst);
            feed.epoch.fetch_add(1, SeqCst);
            feed.next_seq.store(0, SeqCst);
            self.state.dropped(feed);
        }
    }

    fn resumed(&self, partitions: &[u16], seqs: &[u64], at: Instant) {
        let at = self.state.stamp(at);
        for (index, &partition) in partitions.iter().enumerate() {
            let Some(feed) = self.feed(partition) else {
                continue;
            };
            let Some(&seq) = seqs.get(index) else {
                tracing::warn!(cache = %self.name, partition, "feed resumed without a sequence number; the partition stays lost");
                continue;
            };
            feed.next_seq.store(seq.saturating_add(1), SeqCst);
            // Copies read while the feed was down may have missed messages: the new
            // epoch makes them unservable before the vouch makes the partition live.
            feed.changes.fetch_add(1, SeqCst);
            feed.epoch.fetch_add(1, SeqCst);
            self.state.dropped(feed);
            feed.vouched_at.fetch_max(at, SeqCst);
        }
    }

    fn vouched(&self, partitions: &[u16], at: Instant) {
        let at = self.state.stamp(at);
        for &partition in partitions {
            let Some(feed) = self.feed(partition) else {
                continue;
            };
            // Raises a live vouch only: a lost partition (0) waits for `resumed`, so a
            // heartbeat in flight across a loss never revives it.
            let _ = feed.vouched_at.fetch_update(SeqCst, SeqCst, |current| {
                (current != 0 && current < at).then_some(at)
            });
        }
    }
}

impl<K, V> std::fmt::Debug for NearStore<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NearStore").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Once;

    use futures::stream::{self, StreamExt};
    use parking_lot::Mutex;
    use tokio::sync::broadcast;

    use super::*;
    use crate::store::raw::{
        BackendFactory, RawAction, RawCacheSpec, RawCondition, RawEvent, RawFound, RawKey,
        RawStore, RawWrite, RawWriteOutcome, RemoteBackend, register_backend,
    };
    use crate::{Cache, CacheManager, Error, ExpiryPolicy, ManagerConfig};

    const HOUR: Duration = Duration::from_secs(3600);
    /// How long a test waits for a condition before it fails.
    const PATIENCE: Duration = Duration::from_secs(5);
    const PARTITIONS: u16 = 3;

    type Hook = Box<dyn FnOnce(&Fixture) + Send>;
    /// Key text → blob and deadline.
    type Blobs = HashMap<String, (Vec<u8>, Option<Instant>)>;

    /// A test fixture for the sink protocol, not a model of Redis: an in-process
    /// `RawStore` over a `HashMap` that keeps the sink it is given, so that a test plays
    /// the store's side of the invalidation feed by hand.
    struct Fixture {
        entries: Mutex<Blobs>,
        sink: Mutex<Option<Arc<dyn InvalidationSink>>>,
        heartbeat: Mutex<Option<Duration>>,
        /// Remote reads so far (to tell local hits from remote ones).
        reads: AtomicU64,
        /// Runs once, inside the next `get_all_with_deadlines`, after the values were
        /// read and before they are returned.
        after_read: Mutex<Option<Hook>>,
        events: broadcast::Sender<RawEvent>,
        has_feed: bool,
    }

    impl Fixture {
        fn live(&self, text: &str, now: Instant) -> Option<(Vec<u8>, Option<Instant>)> {
            self.entries
                .lock()
                .get(text)
                .filter(|(_, deadline)| deadline.is_none_or(|d| d > now))
                .cloned()
        }

        fn set(&self, text: &str, blob: Vec<u8>) {
            self.entries.lock().insert(text.to_string(), (blob, None));
        }

        fn deadline(&self, text: &str) -> Option<Instant> {
            self.entries.lock().get(text).and_then(|(_, d)| *d)
        }
    }

    #[async_trait]
    impl RawStore for Fixture {
        fn describe(&self) -> String {
            "fixture".into()
        }

        async fn get_all(&self, keys: &[RawKey]) -> Result<Vec<Option<Vec<u8>>>> {
            self.reads.fetch_add(1, SeqCst);
            let now = Instant::now();
            Ok(keys
                .iter()
                .map(|k| self.live(&k.text, now).map(|(blob, _)| blob))
                .collect())
        }

        async fn get_all_with_deadlines(&self, keys: &[RawKey]) -> Result<Vec<Option<RawFound>>> {
            self.reads.fetch_add(1, SeqCst);
            let now = Instant::now();
            let found = keys
                .iter()
                .map(|k| {
                    self.live(&k.text, now).map(|(blob, deadline)| RawFound {
                        blob,
                        remaining: deadline.map(|d| d - now),
                    })
                })
                .collect();
            let hook = self.after_read.lock().take();
            if let Some(hook) = hook {
                hook(self);
            }
            Ok(found)
        }

        async fn contains_all(&self, keys: &[RawKey]) -> Result<Vec<bool>> {
            let now = Instant::now();
            Ok(keys
                .iter()
                .map(|k| self.live(&k.text, now).is_some())
                .collect())
        }

        async fn write(&self, key: &RawKey, write: RawWrite) -> Result<RawWriteOutcome> {
            let now = Instant::now();
            let current = self.live(&key.text, now).map(|(blob, _)| blob);
            let holds = match &write.condition {
                RawCondition::Always => true,
                RawCondition::IfAbsent => current.is_none(),
                RawCondition::IfPresent => current.is_some(),
                RawCondition::IfEquals(expected) => current.as_ref() == Some(expected),
            };
            let applied = match write.action {
                RawAction::Put { blob, ttl } if holds => {
                    let deadline = ttl.and_then(|t| now.checked_add(t));
                    self.entries
                        .lock()
                        .insert(key.text.clone(), (blob, deadline));
                    true
                }
                RawAction::Remove if holds => self.entries.lock().remove(&key.text).is_some(),
                _ => false,
            };
            Ok(RawWriteOutcome {
                existed: current.is_some(),
                applied,
                previous: if write.want_previous { current } else { None },
            })
        }

        async fn put_all(
            &self,
            entries: Vec<(RawKey, Vec<u8>)>,
            ttl: Option<Duration>,
        ) -> Result<u64> {
            let deadline = ttl.and_then(|t| Instant::now().checked_add(t));
            let mut map = self.entries.lock();
            let stored = entries.len() as u64;
            for (key, blob) in entries {
                map.insert(key.text, (blob, deadline));
            }
            Ok(stored)
        }

        async fn remove_all(&self, keys: &[RawKey]) -> Result<u64> {
            let mut map = self.entries.lock();
            Ok(keys
                .iter()
                .filter(|k| map.remove(&k.text).is_some())
                .count() as u64)
        }

        async fn remove_everything(&self) -> Result<u64> {
            let mut map = self.entries.lock();
            let n = map.len() as u64;
            map.clear();
            Ok(n)
        }

        async fn clear(&self) -> Result<()> {
            self.entries.lock().clear();
            Ok(())
        }

        fn scan(&self) -> BoxStream<'_, Result<Vec<u8>>> {
            let blobs: Vec<_> = self
                .entries
                .lock()
                .values()
                .map(|(blob, _)| Ok(blob.clone()))
                .collect();
            stream::iter(blobs).boxed()
        }

        async fn len(&self) -> Result<u64> {
            Ok(self.entries.lock().len() as u64)
        }

        fn subscribe(&self) -> broadcast::Receiver<RawEvent> {
            self.events.subscribe()
        }

        fn as_any(&self) -> &dyn std::any::Any {
            self
        }

        async fn attach_invalidation_sink(
            &self,
            sink: Arc<dyn InvalidationSink>,
            heartbeat: Duration,
        ) -> Result<()> {
            if !self.has_feed {
                return Err(Error::Config(
                    "fixture has no invalidation feed: a near cache cannot be put in front of it"
                        .into(),
                ));
            }
            *self.sink.lock() = Some(sink);
            *self.heartbeat.lock() = Some(heartbeat);
            Ok(())
        }
    }

    struct FixtureBackend {
        has_feed: bool,
    }

    #[async_trait]
    impl RemoteBackend for FixtureBackend {
        fn describe(&self) -> String {
            "fixture".into()
        }

        async fn open(&self, _spec: RawCacheSpec) -> Result<Arc<dyn RawStore>> {
            Ok(Arc::new(Fixture {
                entries: Mutex::default(),
                sink: Mutex::default(),
                heartbeat: Mutex::default(),
                reads: AtomicU64::new(0),
                after_read: Mutex::default(),
                events: broadcast::channel(16).0,
                has_feed: self.has_feed,
            }))
        }
    }

    struct FixtureFactory;

    impl BackendFactory for FixtureFactory {
        fn schemes(&self) -> &'static [&'static str] {
            &["neartest"]
        }

        fn connect(&self, url: &str) -> Result<Arc<dyn RemoteBackend>> {
            Ok(Arc::new(FixtureBackend {
                has_feed: !url.ends_with("nofeed"),
            }))
        }
    }

    fn url() -> &'static str {
        static REGISTER: Once = Once::new();
        REGISTER.call_once(|| register_backend(Arc::new(FixtureFactory)));
        "neartest://"
    }

    fn manager() -> CacheManager {
        CacheManager::from_url(url()).unwrap()
    }

    async fn build(near: NearCache) -> Cache<u64, String> {
        manager()
            .cache::<u64, String>("near")
            .partitions(PARTITIONS)
            .near_cache(near)
            .build()
            .await
            .unwrap()
    }

    fn fixture(cache: &Cache<u64, String>) -> &Fixture {
        cache
            .raw_store()
            .unwrap()
            .as_any()
            .downcast_ref::<Fixture>()
            .unwrap()
    }

    fn sink(cache: &Cache<u64, String>) -> Arc<dyn InvalidationSink> {
        fixture(cache).sink.lock().clone().unwrap()
    }

    fn raw_key(cache: &Cache<u64, String>, key: u64) -> RawKey {
        cache.inner.encoded.as_ref().unwrap().raw_key(&key).unwrap()
    }

    fn all_partitions() -> Vec<u16> {
        (0..PARTITIONS).collect()
    }

    /// What the store does once its subscriptions are confirmed.
    fn resume(cache: &Cache<u64, String>, seq: u64) {
        let seqs = vec![seq; usize::from(PARTITIONS)];
        sink(cache).resumed(&all_partitions(), &seqs, Instant::now());
    }

    fn vouch(cache: &Cache<u64, String>) -> Instant {
        let at = Instant::now();
        sink(cache).vouched(&all_partitions(), at);
        at
    }

    fn blob(key: u64, value: &str) -> Vec<u8> {
        Codec::Postcard
            .encode_entry(&key, &value.to_string())
            .unwrap()
    }

    /// Gets `key`: its value, and whether it was served without a remote read.
    async fn read(cache: &Cache<u64, String>, key: u64) -> (Option<String>, bool) {
        let before = fixture(cache).reads.load(SeqCst);
        let value = cache.get(&key).await.unwrap();
        let local = fixture(cache).reads.load(SeqCst) == before;
        (value.map(|v| (*v).clone()), local)
    }

    fn some(value: &str, local: bool) -> (Option<String>, bool) {
        (Some(value.to_string()), local)
    }

    /// A key of `partition` other than those in `not`.
    fn key_in(cache: &Cache<u64, String>, partition: u16, not: &[u64]) -> u64 {
        (100..)
            .find(|k| !not.contains(k) && raw_key(cache, *k).partition == partition)
            .unwrap()
    }

    #[tokio::test]
    async fn hits_are_served_only_after_the_feed_resumed_and_counted_once() {
        let cache = build(NearCache::max_entries(100).max_staleness(HOUR)).await;
        assert!(cache.store_description().contains("near cache"));
        assert_eq!(*fixture(&cache).heartbeat.lock(), Some(HOUR / 3));
        cache.put(1, "a".to_string()).await.unwrap();
        // Every partition starts lost: nothing is kept, nothing served.
        assert_eq!(read(&cache, 1).await, some("a", false));
        assert_eq!(read(&cache, 1).await, some("a", false));
        resume(&cache, 0);
        assert_eq!(read(&cache, 1).await, some("a", false));
        assert_eq!(read(&cache, 1).await, some("a", true));
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.near_hits, stats.near_misses),
            (4, 0, 1, 3)
        );

        cache.put(3, "c".to_string()).await.unwrap();
        let values = cache.get_all(&[1, 2, 3]).await.unwrap();
        let values: Vec<_> = values.iter().map(|v| v.as_deref().cloned()).collect();
        assert_eq!(values, [Some("a".into()), None, Some("c".into())]);
        let stats = cache.stats();
        assert_eq!(
            (stats.hits, stats.misses, stats.near_hits, stats.near_misses),
            (6, 1, 2, 5)
        );
        // Key 3 was kept by `get_all`.
        assert_eq!(read(&cache, 3).await, some("c", true));
    }

    #[tokio::test]
    async fn a_lost_feed_serves_nothing_until_resumed() {
        let cache = build(NearCache::max_entries(100).max_staleness(HOUR)).await;
        resume(&cache, 0);
        cache.put(1, "a".to_string()).await.unwrap();
        assert_eq!(read(&cache, 1).await, some("a", false));
        assert_eq!(read(&cache, 1).await, some("a", true));

        sink(&cache).lost(&all_partitions());
        assert_eq!(read(&cache, 1).await, some("a", false));
        // Nothing is kept while lost, and a heartbeat cannot revive the partition.
        vouch(&cache);
        assert_eq!(read(&cache, 1).await, some("a", false));
        assert_eq!(read(&cache, 1).await, some("a", false));

        resume(&cache, 0);
        assert_eq!(read(&cache, 1).await, some("a", false));
        assert_eq!(read(&cache, 1).await, some("a", true));
    }

    #[tokio::test]
    async fn a_copy_read_while_the_feed_was_down_is_not_served_after_it_resumes() {
        let cache = build(NearCache::max_entries(100).max_staleness(HOUR)).await;
        resume(&cache, 0);
        cache.put(1, "a".to_string()).await.unwrap();
        let key = raw_key(&cache, 1);
        let sink = sink(&cache);
        sink.lost(&all_partitions());
        // While the feed is down another process writes key 1 (its message is lost),
        // and the feed resumes before the read that missed the write returns.
        *fixture(&cache).after_read.lock() = Some(Box::new(move |fixture: &Fixture| {
            fixture.set(&key.text, blob(1, "b"));
            sink.resumed(&all_partitions(), &[1; PARTITIONS as usize], Instant::now());
        }));
        assert_eq!(read(&cache, 1).await, some("a", false));
        assert_eq!(read(&cache, 1).await, some("b", false));
        assert_eq!(read(&cache, 1).await, some("b", true));
    }

    #[tokio::test]
    async fn a_read_that_found_a_copy_before_its_invalidation_does_not_serve_it() {
        let cache = build(NearCache::max_entries(100).max_staleness(HOUR)).await;
        // A second near store on the same raw store, to look inside it; the fixture
        // now feeds it.
        let encoded = cache.inner.encoded.clone().unwrap();
        let near = NearStore::new(encoded, NearCache::max_entries(100).max_staleness(HOUR))
            .await
            .unwrap();
        resume(&cache, 0);
        cache.put(1, "a".to_string()).await.unwrap();
        near.get_all(&[1]).await.unwrap();
        // A reader begins and finds the copy...
        let began = Instant::now();
        let entry = near.local.get(&1).unwrap();
        assert!(near.state.servable(&entry, began));
        // ...then the copy's invalidation and a later vouch are processed.
        sink(&cache).entry_changed(raw_key(&cache, 1).partition, 1, &blob(1, "b"));
        vouch(&cache);
        assert!(!near.state.servable(&entry, began));

        // An unconfirmed copy (its populating read not re-checked yet) is never served.
        let unconfirmed = LocalEntry {
            value: entry.value.clone(),
            partition: entry.partition,
            epoch: entry.epoch,
            deadline: None,
            confirmed: AtomicBool::new(false),
        };
        assert!(!near.state.servable(&unconfirmed, Instant::now()));
        unconfirmed.confirmed.store(true, SeqCst);
        assert!(near.state.servable(&unconfirmed, Instant::now()));
    }

    #[tokio::test]
    async fn gaps_clears_and_undecodable_messages_drop_the_partition() {
        let cache = build(NearCache::max_entries(100).max_staleness(HOUR)).await;
        resume(&cache, 5);
        let p = raw_key(&cache, 1).partition;
        let other = key_in(&cache, p, &[1]);
        let elsewhere = key_in(&cache, (p + 1) % PARTITIONS, &[]);
        for key in [1, other, elsewhere] {
            cache.put(key, "v".to_string()).await.unwrap();
            assert_eq!(read(&cache, key).await, some("v", false));
            assert_eq!(read(&cache, key).await, some("v", true));
        }
        let sink = sink(&cache);

        // In sequence: only the changed key goes.
        sink.entry_changed(p, 6, &blob(other, "w"));
        assert_eq!(read(&cache, 1).await, some("v", true));
        assert_eq!(read(&cache, other).await, some("v", false));

        // Message 7 is missing: the whole partition goes, the others stay.
        sink.entry_changed(p, 8, &blob(other, "w"));
        assert_eq!(read(&cache, 1).await, some("v", false));
        assert_eq!(read(&cache, elsewhere).await, some("v", true));
        assert_eq!(read(&cache, 1).await, some("v", true));

        // Late or duplicate messages still drop their key, not the partition; a
        // key-only blob names its key.
        sink.entry_changed(p, 7, &blob(other, "w"));
        sink.entry_changed(p, 8, &blob(other, "w"));
        let key_only = Codec::Postcard.key_only_blob(&blob(other, "w")).unwrap();
        sink.entry_changed(p, 9, &key_only);
        assert_eq!(read(&cache, 1).await, some("v", true));

        sink.entry_changed(p, 10, b"not a blob");
        assert_eq!(read(&cache, 1).await, some("v", false));
        assert_eq!(read(&cache, 1).await, some("v", true));

        sink.partition_cleared(p, 11);
        assert_eq!(read(&cache, 1).await, some("v", false));
        assert_eq!(read(&cache, elsewhere).await, some("v", true));

        // A partition the cache does not have is ignored, without a panic.
        sink.entry_changed(PARTITIONS, 1, &blob(1, "w"));
        sink.lost(&[PARTITIONS]);
        sink.resumed(&[PARTITIONS], &[], Instant::now());
        assert_eq!(read(&cache, elsewhere).await, some("v", true));
    }

    #[tokio::test]
    async fn an_invalidation_during_a_remote_read_leaves_no_stale_copy() {
        let cache = build(NearCache::max_entries(100).max_staleness(HOUR)).await;
        resume(&cache, 0);
        cache.put(1, "old".to_string()).await.unwrap();
        let key = raw_key(&cache, 1);
        let sink = sink(&cache);
        // Another process writes key 1 after the store read "old", and its
        // invalidation arrives before the read returns.
        *fixture(&cache).after_read.lock() = Some(Box::new(move |fixture: &Fixture| {
            let new = blob(1, "new");
            fixture.set(&key.text, new.clone());
            sink.entry_changed(key.partition, 1, &new);
        }));
        // The read itself returns what the store had when it read (linearizable).
        assert_eq!(read(&cache, 1).await, some("old", false));
        assert_eq!(read(&cache, 1).await, some("new", false));
        assert_eq!(read(&cache, 1).await, some("new", true));
    }

    #[tokio::test]
    async fn this_process_writes_drop_its_local_copies() {
        let cache = build(NearCache::max_entries(100).max_staleness(HOUR)).await;
        resume(&cache, 0);
        async fn cached(cache: &Cache<u64, String>, key: u64, value: &str) {
            assert_eq!(read(cache, key).await, some(value, false));
            assert_eq!(read(cache, key).await, some(value, true));
        }
        cache.put(1, "a".to_string()).await.unwrap();
        cached(&cache, 1, "a").await;
        cache.put(1, "b".to_string()).await.unwrap();
        cached(&cache, 1, "b").await;
        cache.put_all([(1, "c".to_string())]).await.unwrap();
        cached(&cache, 1, "c").await;
        cache
            .invoke(&1, |entry| entry.set_value("d".to_string()))
            .await
            .unwrap();
        cached(&cache, 1, "d").await;
        assert!(cache.replace(1, "e".to_string()).await.unwrap());
        cached(&cache, 1, "e").await;
        cache.remove_all_keys(&[1]).await.unwrap();
        assert_eq!(read(&cache, 1).await, (None, false));
        cache.put(1, "f".to_string()).await.unwrap();
        cached(&cache, 1, "f").await;
        cache.clear().await.unwrap();
        assert_eq!(read(&cache, 1).await, (None, false));
        cache.put(1, "g".to_string()).await.unwrap();
        cached(&cache, 1, "g").await;
        cache.remove_all().await.unwrap();
        assert_eq!(read(&cache, 1).await, (None, false));
    }

    /// Reads `key` (vouching before each read) until it is served locally.
    async fn until_served_locally(cache: &Cache<u64, String>, key: u64) {
        let give_up = Instant::now() + PATIENCE;
        loop {
            vouch(cache);
            if read(cache, key).await.1 {
                return;
            }
            assert!(Instant::now() < give_up, "key {key} never served locally");
        }
    }

    #[tokio::test]
    async fn without_a_recent_vouch_reads_go_to_the_store() {
        let max_staleness = Duration::from_millis(50);
        let cache = build(NearCache::max_entries(100).max_staleness(max_staleness)).await;
        cache.put(1, "a".to_string()).await.unwrap();
        resume(&cache, 0);
        until_served_locally(&cache, 1).await;

        // The store stops vouching (a stuck feed): local copies stop being served
        // once the last vouch is older than `max_staleness`.
        let last_vouch = vouch(&cache);
        loop {
            let start = Instant::now();
            let (value, local) = read(&cache, 1).await;
            assert_eq!(value.as_deref(), Some("a"));
            if !local {
                assert!(start > last_vouch + max_staleness);
                break;
            }
            assert!(
                start <= last_vouch + max_staleness,
                "served locally {:?} after the last vouch",
                start - last_vouch
            );
            assert!(start < last_vouch + PATIENCE, "still served locally");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The feed vouched again: served locally again.
        until_served_locally(&cache, 1).await;
    }

    #[tokio::test]
    async fn a_local_copy_is_not_served_past_its_deadline_on_the_store() {
        let cache = build(NearCache::max_entries(100).max_staleness(HOUR)).await;
        resume(&cache, 0);
        cache
            .put_with_ttl(1, "a".to_string(), Duration::from_secs(1))
            .await
            .unwrap();
        let expires = fixture(&cache).deadline(&raw_key(&cache, 1).text).unwrap();
        assert_eq!(read(&cache, 1).await, some("a", false));
        let mut local_hits = 0;
        loop {
            let start = Instant::now();
            let (value, local) = read(&cache, 1).await;
            if local {
                assert!(start < expires, "served locally past the store's deadline");
                local_hits += 1;
            }
            if value.is_none() {
                break;
            }
            assert!(start < expires + PATIENCE, "the entry never expired");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(local_hits > 0);
    }

    #[tokio::test]
    async fn a_local_copy_older_than_the_ttl_is_read_again() {
        let ttl = Duration::from_secs(1);
        let cache = build(NearCache::max_entries(100).ttl(ttl).max_staleness(HOUR)).await;
        resume(&cache, 0);
        cache.put(1, "a".to_string()).await.unwrap();
        assert_eq!(read(&cache, 1).await, some("a", false));
        let populated = Instant::now();
        let mut local_hits = 0;
        loop {
            let start = Instant::now();
            let (value, local) = read(&cache, 1).await;
            assert_eq!(value.as_deref(), Some("a"));
            if !local {
                break;
            }
            assert!(start < populated + ttl, "served locally past the local TTL");
            assert!(start < populated + PATIENCE, "the local copy never expired");
            local_hits += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(local_hits > 0);
    }

    fn config_error(result: Result<Cache<u64, String>>) -> String {
        match result {
            Err(Error::Config(message)) => message,
            Err(other) => panic!("expected a config error, got {other}"),
            Ok(_) => panic!("expected a config error, got a cache"),
        }
    }

    #[tokio::test]
    async fn a_near_cache_that_cannot_work_is_a_config_error() {
        let near = NearCache::max_entries(10);
        let memory = CacheManager::from_url("memory://").unwrap();
        let message = config_error(memory.cache("c").near_cache(near).build().await);
        assert!(message.contains("memory://"), "{message}");

        let remote = manager();
        for (builder, expected) in [
            (
                remote
                    .cache("accessed")
                    .expiry(ExpiryPolicy::Accessed(HOUR)),
                "extend",
            ),
            (
                remote.cache("touched").expiry(ExpiryPolicy::Touched(HOUR)),
                "extend",
            ),
            (remote.cache("idle").max_idle(HOUR), "max_idle"),
            (
                remote.cache("quiet").publish_events(false),
                "publish_events",
            ),
        ] {
            let message = config_error(builder.near_cache(near).build().await);
            assert!(message.contains(expected), "{message}");
        }

        let no_feed = CacheManager::from_url("neartest://nofeed").unwrap();
        let message = config_error(no_feed.cache("c").near_cache(near).build().await);
        assert!(message.contains("invalidation feed"), "{message}");

        let message = config_error(
            remote
                .cache("tiny")
                .near_cache(NearCache::max_entries(10).max_staleness(Duration::from_millis(5)))
                .build()
                .await,
        );
        assert!(message.contains("max_staleness"), "{message}");
    }

    #[tokio::test]
    async fn a_default_near_cache_is_left_out_where_it_cannot_work() {
        let config = ManagerConfig::from_toml(
            r#"
            [defaults]
            near_cache = { max_entries = 100, max_staleness = "1h" }
            [caches.sessions]
            expiry = { policy = "accessed", duration = "5m" }
            [caches.quiet]
            publish_events = false
            "#,
        )
        .unwrap();
        let memory = CacheManager::with_config("memory://", config.clone()).unwrap();
        let local = memory.cache::<u64, String>("c").build().await.unwrap();
        assert!(!local.store_description().contains("near"));

        let remote = CacheManager::with_config(url(), config).unwrap();
        for name in ["sessions", "quiet"] {
            let cache = remote.cache::<u64, String>(name).build().await.unwrap();
            assert!(!cache.store_description().contains("near"), "{name}");
        }
        let products = remote
            .cache::<u64, String>("products")
            .partitions(PARTITIONS)
            .build()
            .await
            .unwrap();
        assert!(products.store_description().contains("near cache"));
        resume(&products, 0);
        products.put(1, "a".to_string()).await.unwrap();
        assert_eq!(read(&products, 1).await, some("a", false));
        assert_eq!(read(&products, 1).await, some("a", true));
    }

    #[tokio::test]
    async fn reopening_with_another_near_cache_is_a_config_error() {
        let manager = manager();
        let near = NearCache::max_entries(10);
        manager
            .cache::<u64, String>("r")
            .near_cache(near)
            .build()
            .await
            .unwrap();
        assert!(
            manager
                .cache::<u64, String>("r")
                .near_cache(near)
                .build()
                .await
                .is_ok()
        );
        for other in [
            manager.cache("r").near_cache(NearCache::max_entries(11)),
            manager.cache("r"),
        ] {
            let message = config_error(other.build().await);
            assert!(message.contains("other settings"), "{message}");
        }
    }
}
