//! [`Cache`]: the typed handle every caller uses.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::entries::{Entries, RemoveKey};
use crate::error::{Error, Result};
use crate::event::{EventFilter, EventReceiver};
use crate::flight::{self, Flights, Kind, Loaded, Outcome, Ticket};
use crate::key_text::write_key_text;
use crate::loader::{BoxError, CacheLoader, CacheWriter, CallbackError};
use crate::partition::{HashingPolicy, PartitionMap};
use crate::stats::{CacheStats, GetTicket, StatsCounters, Stopwatch};
use crate::store::encoded::EncodedStore;
use crate::store::local::LocalStore;
use crate::store::{Action, Computed, Condition, Decision, Store, Write, WriteOutcome};

/// What a cache key must be: hashable for the local store, serializable for remote
/// stores (its canonical text decides its partition), cheap enough to clone.
pub trait CacheKey:
    Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}
impl<T> CacheKey for T where
    T: Hash + Eq + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
}

/// What a cache value must be: serializable for remote stores, shareable across tasks.
pub trait CacheValue: Serialize + DeserializeOwned + Send + Sync + 'static {}
impl<T> CacheValue for T where T: Serialize + DeserializeOwned + Send + Sync + 'static {}

pub(crate) struct CacheInner<K, V> {
    pub(crate) name: String,
    pub(crate) store: Arc<dyn Store<K, V>>,
    /// `store` itself when it is the local store: one-key reads go to it directly (no
    /// dynamic call, no `Result` to unwrap), which is most of what a local hit costs
    /// beyond moka's own lookup.
    pub(crate) local: Option<Arc<LocalStore<K, V>>>,
    pub(crate) encoded: Option<Arc<EncodedStore<K, V>>>,
    pub(crate) stats: Arc<StatsCounters>,
    pub(crate) loader: Option<Arc<dyn CacheLoader<K, V>>>,
    /// Whether misses of `get`, `get_all` and entry processors load through `loader`
    /// (JCache's `isReadThrough`); [`Cache::load_all`] uses the loader either way.
    pub(crate) read_through: bool,
    pub(crate) writer: Option<Arc<dyn CacheWriter<K, V>>>,
    pub(crate) flights: Arc<Flights<K, Outcome<V>>>,
    /// How long a load's lease lasts on a store that keeps leases ([`crate::flight`]).
    pub(crate) lease_ttl: Duration,
    pub(crate) key_locks: Option<Box<[tokio::sync::Mutex<()>]>>,
    /// Checks the local store makes that a remote store makes anyway, so that switching
    /// backends never changes what is accepted.
    pub(crate) local_checks: Option<LocalChecks>,
    /// Set by [`Cache::close`]: every call fails with [`Error::Closed`] from then on.
    pub(crate) closed: std::sync::atomic::AtomicBool,
    /// Takes the cache out of its manager when it is closed.
    pub(crate) release: Option<Box<dyn Fn() + Send + Sync>>,
}

/// Input checks for the local store: a custom hashing policy and the value size limit.
pub(crate) struct LocalChecks {
    pub(crate) hashing: Option<HashingPolicy>,
    pub(crate) max_value_bytes: Option<usize>,
    pub(crate) codec: crate::Codec,
}

/// A typed cache. Cheap to clone: clones share the same entries, statistics and events.
///
/// Every operation is atomic for its key and never across keys (on a partitioned Redis
/// store, batch operations are atomic per partition at most). Reads return values as
/// `Arc<V>`: on the local store a hit is a map lookup and a reference-count increment.
pub struct Cache<K, V> {
    pub(crate) inner: Arc<CacheInner<K, V>>,
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Cache {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .finish_non_exhaustive()
    }
}

fn put<V>(value: Arc<V>, ttl: Option<Duration>) -> Action<V> {
    Action::Put { value, ttl }
}

/// How often [`Cache::invoke`] with a writer runs its processor again when other
/// processes keep changing the entry between its read and its write.
const MAX_INVOKE_ATTEMPTS: usize = 64;

/// Whether two values are the same one (not merely equal): see
/// [`Cache::write_through_decision`].
fn same_value<V>(a: &V, b: &V) -> bool {
    std::ptr::eq(a, b)
}

/// How many loads [`Cache::load_all`] runs at once.
const LOAD_ALL_CONCURRENCY: usize = 16;

/// The key-lock stripe of `key` among `stripes`.
fn key_stripe<K: Hash>(key: &K, stripes: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % stripes as u64) as usize
}

/// The items of `items` whose index `failed` does not list (a batch writer's successes).
fn keep_unlisted<T>(items: Vec<T>, failed: &[usize]) -> Vec<T> {
    let failed: std::collections::HashSet<usize> = failed.iter().copied().collect();
    items
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains(i))
        .map(|(_, item)| item)
        .collect()
}

fn eq_fn<V: PartialEq>() -> fn(&V, &V) -> bool {
    <V as PartialEq>::eq
}

impl<K, V> Cache<K, V> {
    /// Whether [`Cache::close`] was called (on any clone), or the cache was destroyed
    /// ([`crate::CacheManager::destroy_cache`]).
    #[inline]
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl<K: CacheKey, V: CacheValue> Cache<K, V> {
    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Describes the store behind the cache (`memory`, `redis-cluster ...`).
    pub fn store_description(&self) -> String {
        self.inner.store.describe()
    }

    /// The partition map, on partitioned remote stores.
    pub fn partition_map(&self) -> Option<&PartitionMap> {
        self.inner.encoded.as_ref().map(|e| e.partition_map())
    }

    /// `true` when the cache lives in this process (the embedded store): adapters can
    /// skip remote-only precautions such as timeouts around calls.
    pub fn is_local(&self) -> bool {
        self.inner.encoded.is_none()
    }

    /// The raw store, on remote stores (for backend-specific reports such as a balance
    /// report; see the backend crate).
    pub fn raw_store(&self) -> Option<&Arc<dyn crate::store::raw::RawStore>> {
        self.inner.encoded.as_ref().map(|e| e.raw())
    }

    /// Partitions, entries and bytes per master, on stores that partition the cache over
    /// several masters (the Redis Cluster store). One round trip per master; entry and
    /// byte counts are approximate. Elsewhere an [`Error::Config`] ("not partitioned").
    pub async fn balance_report(&self) -> Result<crate::balance::BalanceReport> {
        match self.raw_store() {
            Some(raw) => raw.balance_report().await,
            None => Err(Error::Config(format!(
                "cache `{}` is on the {} store, which is not partitioned: no balance report",
                self.inner.name,
                self.inner.store.describe()
            ))),
        }
    }

    /// A span around one awaited (remote) store call, named `partcache.store` with the
    /// cache and the operation; the store's own spans (partition, node) nest inside.
    /// Near-free without a subscriber at `debug` (the callsite's interest is cached);
    /// the local store's synchronous fast paths never create one.
    fn store_span(&self, op: &'static str) -> tracing::Span {
        tracing::debug_span!("partcache.store", cache = %self.inner.name, op)
    }

    pub(crate) fn track<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            match e {
                Error::Rejected(_) => self.inner.stats.rejections.incr(),
                Error::Loader(_) | Error::Writer(_) | Error::Panicked(..) | Error::Closed(_) => {}
                _ => self.inner.stats.store_errors.incr(),
            }
        }
        result
    }

    /// [`Error::Closed`] once the cache is closed.
    #[inline]
    fn ensure_open(&self) -> Result<()> {
        if self.inner.closed.load(std::sync::atomic::Ordering::Acquire) {
            return Err(Error::Closed(self.inner.name.clone()));
        }
        Ok(())
    }

    /// Closes the cache in this process (JSR-107 §4.1.4 `Cache.close`): stops what the
    /// store runs for it here (event subscriptions, reaper, near-cache copies), takes it
    /// out of its manager (building it again opens it anew), and makes every further
    /// call on it (on every clone) fail with [`Error::Closed`]. Its listeners are
    /// removed: each [`EventReceiver`] gets the events sent before the close, then
    /// [`RecvError::Closed`](crate::event::RecvError::Closed). The data stays; other
    /// processes are not affected. Closing twice does nothing.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let cache = manager.cache::<u32, u32>("close-doc").build().await?;
    /// cache.close().await?;
    /// assert!(matches!(cache.get(&1).await, Err(partcache::Error::Closed(_))));
    /// assert!(manager.get_cache::<u32, u32>("close-doc").is_none());
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub async fn close(&self) -> Result<()> {
        if self
            .inner
            .closed
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return Ok(());
        }
        // First, so that nothing the store does while closing reaches a listener.
        self.inner.store.events().close();
        if let Some(release) = &self.inner.release {
            release();
        }
        self.inner.store.close().await
    }

    /// Removes the cache's data and records from the store, then closes it (see
    /// [`crate::CacheManager::destroy_cache`]).
    pub(crate) async fn destroy(&self) -> Result<()> {
        let first = !self
            .inner
            .closed
            .swap(true, std::sync::atomic::Ordering::AcqRel);
        // Before the data goes: destroying emits no events (JSR-107 `destroyCache`).
        self.inner.store.events().close();
        if first && let Some(release) = &self.inner.release {
            release();
        }
        self.inner.store.destroy().await
    }

    /// Applies the checks a remote store would make (see [`LocalChecks`]).
    fn check_key(&self, key: &K) -> Result<()> {
        // Counted as a remote store's refusal of the key is (`rejections`).
        self.track(self.key_refusal(key))
    }

    /// [`Cache::check_key`] uncounted, for a write, whose caller counts its outcome.
    fn key_refusal(&self, key: &K) -> Result<()> {
        if let Some(LocalChecks {
            hashing: Some(policy),
            ..
        }) = &self.inner.local_checks
        {
            let mut text = String::new();
            write_key_text(key, &mut text).map_err(|e| Error::Rejected(format!("key: {e}")))?;
            policy.tag(&text)?;
        }
        Ok(())
    }

    pub(crate) fn check_value(&self, key: &K, value: &V) -> Result<()> {
        if let Some(LocalChecks {
            max_value_bytes: Some(limit),
            codec,
            ..
        }) = &self.inner.local_checks
        {
            let size = codec.encode_entry(key, value)?.len();
            if size > *limit {
                return Err(Error::Rejected(format!(
                    "value of {size} bytes exceeds the limit of {limit} bytes for cache `{}`",
                    self.inner.name
                )));
            }
        }
        Ok(())
    }

    async fn store_write(&self, key: &K, write: Write<V>) -> Result<WriteOutcome<V>> {
        match self.inner.store.write_now(key, write) {
            Ok(outcome) => Ok(outcome),
            Err(write) => {
                self.inner
                    .store
                    .write(key, write)
                    .instrument(self.store_span("write"))
                    .await
            }
        }
    }

    /// Runs a write, with the writer called first (under a per-key lock, so the writer
    /// sees exactly the writes that then reach the cache) when one is configured.
    async fn write(&self, key: &K, write: Write<V>) -> Result<WriteOutcome<V>> {
        self.ensure_open()?;
        self.key_refusal(key)?;
        if let Action::Put { value, .. } = &write.action {
            self.check_value(key, value)?;
        }
        let Some(writer) = &self.inner.writer else {
            return self.store_write(key, write).await;
        };
        let _guard = self.lock_key(key).await;
        let holds = match &write.condition {
            Condition::Always => true,
            condition => {
                let current = self
                    .inner
                    .store
                    .get_all(std::slice::from_ref(key))
                    .await?
                    .pop()
                    .flatten();
                match condition {
                    Condition::IfAbsent => current.is_none(),
                    Condition::IfPresent => current.is_some(),
                    Condition::IfEquals(expected, eq) => current.is_some_and(|c| eq(&c, expected)),
                    Condition::Always => true,
                }
            }
        };
        if holds {
            match &write.action {
                Action::Put { value, .. } => writer.write(key, value).await,
                Action::Remove => writer.delete(key).await,
            }
            .map_err(|e| Error::writer(CallbackError(e)))?;
        }
        self.store_write(key, write).await
    }

    async fn lock_key(&self, key: &K) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        let locks = self.inner.key_locks.as_ref()?;
        Some(locks[key_stripe(key, locks.len())].lock().await)
    }

    /// The key locks of many keys, taken in stripe order (so that two batches never
    /// wait for each other in a cycle).
    async fn lock_keys<'k>(
        &self,
        keys: impl Iterator<Item = &'k K>,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>>
    where
        K: 'k,
    {
        let Some(locks) = self.inner.key_locks.as_ref() else {
            return Vec::new();
        };
        let mut stripes: Vec<usize> = keys.map(|k| key_stripe(k, locks.len())).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(locks[stripe].lock().await);
        }
        guards
    }

    /// The value for `key`, or `None`. With a read-through loader configured, a miss
    /// loads the value (once for all concurrent callers) and caches it.
    ///
    /// **Who runs, who waits.** The calling task does the lookup. On a read-through
    /// miss, the first task to miss a key runs the loader; tasks of this process that
    /// miss the same key meanwhile wait for its outcome instead of loading again.
    ///
    /// **Cost.** On the local store: one moka lookup, no serialization, no allocation,
    /// no future to await when it answers in place. On a Redis store: one round trip
    /// (batched with other reads to the same node), plus the decoding. Reading is an
    /// access for expiry: under `Accessed` or `Touched` it moves the deadline.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let users = manager.cache::<u64, String>("get-doc").build().await?;
    /// assert_eq!(users.get(&7).await?, None); // a miss, counted
    /// users.put(7, "ada".to_string()).await?;
    /// assert_eq!(users.get(&7).await?.as_deref().map(String::as_str), Some("ada"));
    /// assert_eq!((users.stats().hits, users.stats().misses), (1, 1));
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// A stored value that fails to decode is not an error: it is a miss (and a
    /// counted, logged decode error), whose load, as any miss's, replaces it. Errors are the store's ([`Error::Unavailable`],
    /// [`Error::Timeout`], [`Error::CircuitOpen`]: transient), [`Error::Closed`] on a
    /// closed cache, [`Error::Rejected`] for a key no hashing rule matches, and
    /// [`Error::Loader`] when a read-through load fails.
    pub async fn get(&self, key: &K) -> Result<Option<Arc<V>>> {
        self.ensure_open()?;
        if let Some(local) = &self.inner.local
            && self.read_through_loader().is_none()
        {
            return self.get_local(local, key);
        }
        let ticket = self.inner.stats.sample_get();
        let Some(found) = self.read_now(key) else {
            // The paths that wait run in futures of their own, on the heap: a caller's
            // future holds the whole state of `get`, and a hit answered in place should
            // not carry (and copy) the state of a store read and a load.
            return Box::pin(self.get_from_store(key, ticket)).await;
        };
        if let Err(error) = self.check_missed_key(key, &found) {
            self.inner.stats.unsample_get(ticket);
            return Err(error);
        }
        match self.count_get(ticket, found)? {
            Some(value) => Ok(Some(value)),
            None if self.read_through_loader().is_some() => Box::pin(self.load_missed(key)).await,
            None => Ok(None),
        }
    }

    /// [`Cache::get`] on a store that cannot answer in place.
    async fn get_from_store(&self, key: &K, ticket: GetTicket) -> Result<Option<Arc<V>>> {
        let found = self
            .inner
            .store
            .get_one(key)
            .instrument(self.store_span("get"))
            .await;
        if let Err(error) = self.check_missed_key(key, &found) {
            self.inner.stats.unsample_get(ticket);
            return Err(error);
        }
        match self.count_get(ticket, found)? {
            Some(value) => Ok(Some(value)),
            None => self.load_missed(key).await,
        }
    }

    /// A read-through load of a key [`Cache::get`] missed (`None` without a loader).
    async fn load_missed(&self, key: &K) -> Result<Option<Arc<V>>> {
        match self.read_through_loader() {
            Some(loader) => {
                let loader = loader.clone();
                self.load_through(key, None, move |k: K| async move { loader.load(&k).await })
                    .await
            }
            None => Ok(None),
        }
    }

    /// [`Cache::get`] without its future, when nothing in it needs to wait: the store
    /// answers in place (a local or near-cache hit) and a miss loads nothing. `None`
    /// when the caller must await `get` (nothing was read or counted then).
    #[inline]
    pub(crate) fn get_in_place(&self, key: &K) -> Option<Result<Option<Arc<V>>>> {
        if self.read_through_loader().is_some() {
            return None;
        }
        if let Err(error) = self.ensure_open() {
            return Some(Err(error));
        }
        if let Some(local) = &self.inner.local {
            return Some(self.get_local(local, key));
        }
        let ticket = self.inner.stats.sample_get();
        let Some(found) = self.read_now(key) else {
            // The caller awaits `get`, which counts and samples this get.
            self.inner.stats.unsample_get(ticket);
            return None;
        };
        if let Err(error) = self.check_missed_key(key, &found) {
            self.inner.stats.unsample_get(ticket);
            return Some(Err(error));
        }
        Some(self.count_get(ticket, found))
    }

    /// [`Cache::get`] on the local store without a read-through loader: the hit path,
    /// counted as `get` counts, without the `Result` a store read goes through (the
    /// local store has no error but a refused key's).
    #[inline(always)]
    fn get_local(&self, local: &LocalStore<K, V>, key: &K) -> Result<Option<Arc<V>>> {
        let ticket = self.inner.stats.sample_get();
        let found = local.get_value(key);
        if found.is_none()
            && self.inner.local_checks.is_some()
            && let Err(error) = self.check_key(key)
        {
            self.inner.stats.unsample_get(ticket);
            return Err(error);
        }
        self.inner.stats.end_get(ticket, found.is_some());
        Ok(found)
    }

    /// The local store's key check ([`LocalChecks`]) for a one-key read, made on a miss
    /// only: every write checks its key first, so a key that is found passed the
    /// check, and a hit builds no key text. Remote stores check while routing.
    #[inline]
    fn check_missed_key(&self, key: &K, found: &Result<Option<Arc<V>>>) -> Result<()> {
        match found {
            Ok(None) if self.inner.local_checks.is_some() => self.check_key(key),
            _ => Ok(()),
        }
    }

    /// The store's answer for `key` when it has one without awaiting (see
    /// [`Store::get_now`]), the local store's read directly.
    #[inline]
    fn read_now(&self, key: &K) -> Option<Result<Option<Arc<V>>>> {
        match &self.inner.local {
            Some(local) => Some(Ok(local.get_value(key))),
            None => self.inner.store.get_now(key),
        }
    }

    /// Counts one key's read as `get` does: an error, or a hit or a miss (and its time
    /// when it was sampled).
    #[inline]
    fn count_get(
        &self,
        ticket: GetTicket,
        found: Result<Option<Arc<V>>>,
    ) -> Result<Option<Arc<V>>> {
        let found = self.track(found)?;
        self.inner.stats.end_get(ticket, found.is_some());
        Ok(found)
    }

    /// Values for many keys, in the order of `keys` (`None` for misses). On a Redis
    /// store the keys are grouped by node and fetched concurrently, one pipeline per
    /// node; atomic per partition only. A read-through loader fills misses.
    pub async fn get_all(&self, keys: &[K]) -> Result<Vec<Option<Arc<V>>>> {
        self.ensure_open()?;
        for key in keys {
            self.check_key(key)?;
        }
        let start = Stopwatch::start();
        let found = self
            .inner
            .store
            .get_all(keys)
            .instrument(self.store_span("get_all"))
            .await;
        let mut values = self.track(found)?;
        let hits = values.iter().filter(|v| v.is_some()).count() as u64;
        let stats = &self.inner.stats;
        stats.hits.add(hits);
        stats.misses.add(keys.len() as u64 - hits);
        stats.time_get(start.elapsed());
        if let Some(loader) = self.read_through_loader() {
            for (key, slot) in keys.iter().zip(values.iter_mut()) {
                if slot.is_none() {
                    let loader = loader.clone();
                    *slot = self
                        .load_through(key, None, move |k: K| async move { loader.load(&k).await })
                        .await?;
                }
            }
        }
        Ok(values)
    }

    /// Whether `key` has an entry. Not an access (expiry is not extended) and not
    /// counted in statistics, as JCache defines `containsKey`.
    pub async fn contains_key(&self, key: &K) -> Result<bool> {
        self.ensure_open()?;
        self.check_key(key)?;
        let found = self
            .inner
            .store
            .contains_all(std::slice::from_ref(key))
            .await;
        Ok(self.track(found)?.first().copied().unwrap_or(false))
    }

    /// Stores `value` under `key` (creating or updating), after the writer if any.
    ///
    /// **Who runs, who waits.** The calling task runs the write-through writer first, if
    /// there is one (a failing writer leaves the cache unchanged), then the store's
    /// write; the call returns once the store has it and its event is on this
    /// process's event channel. A load that finishes after it never overwrites it:
    /// loaded values are stored only where the key is still absent.
    ///
    /// **Cost.** On the local store: one moka insert, no serialization. On a Redis
    /// store: the encoding and one round trip, batched with other puts to the same node
    /// while nobody in this process listens to the cache.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let users = manager.cache::<u64, String>("put-doc").build().await?;
    /// users.put(7, "ada".to_string()).await?;
    /// users.put(7, "grace".to_string()).await?; // an update
    /// assert_eq!(users.get(&7).await?.as_deref().map(String::as_str), Some("grace"));
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// The store's transient errors (on a `Timeout` the write may or may not have been
    /// applied), [`Error::Rejected`] for a value over `max_value_bytes` or a key no
    /// hashing rule matches, [`Error::Encode`], [`Error::Writer`] when the writer
    /// fails, [`Error::Closed`].
    pub async fn put(&self, key: K, value: impl Into<Arc<V>>) -> Result<()> {
        self.put_inner(key, value.into(), None).await
    }

    /// Like [`Cache::put`], with a time to live for this entry on top of the expiry
    /// policy (whichever deadline comes first wins). A zero TTL stores nothing; one
    /// longer than [`crate::expiry::LONGEST_DEADLINE`] (such as `Duration::MAX`) sets
    /// no deadline.
    pub async fn put_with_ttl(
        &self,
        key: K,
        value: impl Into<Arc<V>>,
        ttl: Duration,
    ) -> Result<()> {
        self.put_inner(key, value.into(), Some(ttl)).await
    }

    async fn put_inner(&self, key: K, value: Arc<V>, ttl: Option<Duration>) -> Result<()> {
        self.ensure_open()?;
        let start = Stopwatch::start();
        let write = Write {
            condition: Condition::Always,
            action: put(value, ttl),
            want_previous: false,
        };
        let outcome = self.write(&key, write).await;
        let outcome = self.track(outcome)?;
        if outcome.applied {
            self.inner.stats.puts.incr();
        }
        self.inner.stats.time_put(start.elapsed());
        Ok(())
    }

    /// Stores many entries. On a Redis store they are grouped by node and sent in one
    /// pipeline per node; atomic per entry only. Counts a put per entry stored (none
    /// under a zero creation expiry).
    ///
    /// With a writer, [`CacheWriter::write_all`] runs first; when it fails for some
    /// entries, exactly the others are stored and the writer's error is returned
    /// ([`Error::Writer`]): afterwards an entry is in the cache if and only if the
    /// writer wrote it.
    pub async fn put_all(&self, entries: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        self.ensure_open()?;
        let mut entries: Vec<(K, Arc<V>)> =
            entries.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        for (k, v) in &entries {
            self.check_key(k)?;
            self.check_value(k, v)?;
        }
        let start = Stopwatch::start();
        let mut failure = None;
        let _guards;
        if let Some(writer) = &self.inner.writer {
            // The keys stay locked until the store has the entries, so that the writer
            // sees the writes in the order the cache applies them (as `write` does).
            _guards = self.lock_keys(entries.iter().map(|(k, _)| k)).await;
            let batch: Vec<(&K, &V)> = entries.iter().map(|(k, v)| (k, &**v)).collect();
            let written = writer.write_all(&batch).await;
            drop(batch);
            if let Err(batch_error) = written {
                entries = keep_unlisted(entries, &batch_error.failed);
                failure = Some(Error::writer(CallbackError(batch_error.error)));
            }
        }
        if !entries.is_empty() {
            let result = self
                .inner
                .store
                .put_all(entries, None)
                .instrument(self.store_span("put_all"))
                .await;
            // Only entries actually stored count (a zero creation expiry stores nothing).
            let stored = self.track(result)?;
            self.inner.stats.puts.add(stored);
        }
        self.inner.stats.time_put(start.elapsed());
        failure.map_or(Ok(()), Err)
    }

    /// Stores `value` only if `key` has no entry; returns whether it did. A present key
    /// emits no event and counts a hit; an absent one counts a miss and a put. An entry
    /// whose stored bytes do not decode is absent, as [`Cache::get`] finds it: the
    /// value replaces it.
    pub async fn put_if_absent(&self, key: K, value: impl Into<Arc<V>>) -> Result<bool> {
        let write = Write {
            condition: Condition::IfAbsent,
            action: put(value.into(), None),
            want_previous: false,
        };
        let outcome = self.counted_write(&key, write).await?;
        Ok(outcome.applied)
    }

    /// Stores `value` and returns the previous value.
    pub async fn get_and_put(&self, key: K, value: impl Into<Arc<V>>) -> Result<Option<Arc<V>>> {
        let write = Write {
            condition: Condition::Always,
            action: put(value.into(), None),
            want_previous: true,
        };
        let outcome = self.counted_write(&key, write).await?;
        Ok(outcome.previous)
    }

    /// Removes `key`'s entry; returns whether there was one.
    pub async fn remove(&self, key: &K) -> Result<bool> {
        let start = Stopwatch::start();
        let write = Write {
            condition: Condition::Always,
            action: Action::Remove,
            want_previous: false,
        };
        let outcome = self.write(key, write).await;
        let outcome = self.track(outcome)?;
        if outcome.applied {
            self.inner.stats.removals.incr();
        }
        self.inner.stats.time_remove(start.elapsed());
        Ok(outcome.applied)
    }

    /// Removes `key`'s entry only if its value equals `expected`.
    pub async fn remove_if_equals(&self, key: &K, expected: impl Into<Arc<V>>) -> Result<bool>
    where
        V: PartialEq,
    {
        let write = Write {
            condition: Condition::IfEquals(expected.into(), eq_fn::<V>()),
            action: Action::Remove,
            want_previous: false,
        };
        let outcome = self.counted_write(key, write).await?;
        Ok(outcome.applied)
    }

    /// Removes `key`'s entry and returns its value.
    pub async fn get_and_remove(&self, key: &K) -> Result<Option<Arc<V>>> {
        let write = Write {
            condition: Condition::Always,
            action: Action::Remove,
            want_previous: true,
        };
        let outcome = self.counted_write(key, write).await?;
        Ok(outcome.previous)
    }

    /// Replaces the value only if `key` has an entry; returns whether it did.
    pub async fn replace(&self, key: K, value: impl Into<Arc<V>>) -> Result<bool> {
        let write = Write {
            condition: Condition::IfPresent,
            action: put(value.into(), None),
            want_previous: false,
        };
        let outcome = self.counted_write(&key, write).await?;
        Ok(outcome.applied)
    }

    /// Replaces the value only if it equals `expected`; returns whether it did.
    pub async fn replace_if_equals(
        &self,
        key: K,
        expected: impl Into<Arc<V>>,
        value: impl Into<Arc<V>>,
    ) -> Result<bool>
    where
        V: PartialEq,
    {
        let write = Write {
            condition: Condition::IfEquals(expected.into(), eq_fn::<V>()),
            action: put(value.into(), None),
            want_previous: false,
        };
        let outcome = self.counted_write(&key, write).await?;
        Ok(outcome.applied)
    }

    /// Replaces the value if `key` has an entry and returns the previous value.
    pub async fn get_and_replace(
        &self,
        key: K,
        value: impl Into<Arc<V>>,
    ) -> Result<Option<Arc<V>>> {
        let write = Write {
            condition: Condition::IfPresent,
            action: put(value.into(), None),
            want_previous: true,
        };
        let outcome = self.counted_write(&key, write).await?;
        Ok(outcome.previous)
    }

    /// A JCache compound write (`put_if_absent`, `get_and_*`, `replace*`,
    /// `remove_if_equals`): counts a hit or a miss for what it found, and a put or a
    /// removal when it applied.
    async fn counted_write(&self, key: &K, write: Write<V>) -> Result<WriteOutcome<V>> {
        let removes = matches!(write.action, Action::Remove);
        let outcome = self.write(key, write).await;
        let outcome = self.track(outcome)?;
        self.count_lookup(outcome.existed);
        if outcome.applied {
            let stats = &self.inner.stats;
            if removes {
                stats.removals.incr()
            } else {
                stats.puts.incr()
            }
        }
        Ok(outcome)
    }

    fn count_lookup(&self, existed: bool) {
        if existed {
            self.inner.stats.hits.incr()
        } else {
            self.inner.stats.misses.incr()
        }
    }

    /// Removes the entries of `keys` (one `Removed` event each); returns how many there
    /// were. Atomic per key only.
    ///
    /// With a writer, [`CacheWriter::delete_all`] runs first; when it fails for some
    /// keys, exactly the others are removed and the writer's error is returned
    /// ([`Error::Writer`]).
    pub async fn remove_all_keys(&self, keys: &[K]) -> Result<u64> {
        self.ensure_open()?;
        for key in keys {
            self.check_key(key)?;
        }
        let start = Stopwatch::start();
        let Some(writer) = &self.inner.writer else {
            let removed = self.inner.store.remove_all(keys).await;
            let removed = self.track(removed)?;
            self.inner.stats.removals.add(removed);
            self.inner.stats.time_remove(start.elapsed());
            return Ok(removed);
        };
        let _guards = self.lock_keys(keys.iter()).await;
        let batch: Vec<&K> = keys.iter().collect();
        let (keys, failure) = match writer.delete_all(&batch).await {
            Ok(()) => (keys.to_vec(), None),
            Err(batch_error) => (
                keep_unlisted(keys.to_vec(), &batch_error.failed),
                Some(Error::writer(CallbackError(batch_error.error))),
            ),
        };
        let mut removed = 0;
        if !keys.is_empty() {
            let result = self.inner.store.remove_all(&keys).await;
            removed = self.track(result)?;
            self.inner.stats.removals.add(removed);
        }
        self.inner.stats.time_remove(start.elapsed());
        failure.map_or(Ok(removed), Err)
    }

    /// Removes every entry, with a `Removed` event (and a writer `delete`) per entry;
    /// returns how many. See [`Cache::clear`] for the silent variant.
    pub async fn remove_all(&self) -> Result<u64> {
        self.ensure_open()?;
        if self.inner.writer.is_some() {
            let keys: Vec<K> = self
                .keys()
                .filter_map(|k| async move { k.ok() })
                .collect()
                .await;
            return self.remove_all_keys(&keys).await;
        }
        let removed = self.inner.store.remove_everything().await;
        let removed = self.track(removed)?;
        self.inner.stats.removals.add(removed);
        Ok(removed)
    }

    /// Drops every entry: no events, no statistics, no writer calls (JCache `clear`).
    pub async fn clear(&self) -> Result<()> {
        self.ensure_open()?;
        let result = self.inner.store.clear().await;
        self.track(result)
    }

    /// Runs `processor` on `key`'s entry atomically and returns what it returns. The
    /// processor sees the current value and may set or remove it; only its net effect
    /// is applied (set then remove of an absent key does nothing). On a remote store it
    /// may run more than once when other writers change the entry meanwhile, so it
    /// should have no side effects besides the entry. A panicking processor leaves the
    /// entry unchanged and returns [`Error::Panicked`].
    ///
    /// As JCache's `invoke` (JSR-107 §9.3): it counts a hit when the key has an entry and
    /// a miss when not, whether or not the processor reads the value; a set counts a
    /// put and a removal a removal. With a read-through loader, a processor that reads
    /// the value of an absent key gets it loaded ([`MutableEntry::value`]); kept, it is
    /// stored as a load (no put counted). Only reading a present value is an access for
    /// expiry; a set is a creation or an update.
    ///
    /// With a writer, a processor's set or removal is written through before the cache
    /// changes (JSR-107 §9.3), under the key's lock: the processor runs on the current
    /// value, the writer is called with its decision, then the decision is applied if
    /// the entry is still what the processor saw (else everything runs again, so the
    /// writer may see a decision that did not reach the cache when another process
    /// changed the entry meanwhile). A failing writer fails the call and changes
    /// nothing. A loaded value kept as it is is not written through. A removal of a
    /// key the cache does not hold is written through all the same (the system of
    /// record may hold it, as for [`Cache::remove`]), unless it undoes the processor's
    /// own set or load.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let counters = partcache::CacheManager::from_url("memory://")?
    ///     .cache::<String, u64>("invoke-doc")
    ///     .build()
    ///     .await?;
    /// let key = "visits".to_string();
    /// let n = counters
    ///     .invoke(&key, |entry| {
    ///         let next = entry.value().copied().unwrap_or(0) + 1;
    ///         entry.set_value(next);
    ///         next
    ///     })
    ///     .await?;
    /// assert_eq!(n, 1);
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub async fn invoke<R, F>(&self, key: &K, mut processor: F) -> Result<R>
    where
        F: FnMut(&mut MutableEntry<'_, V>) -> R + Send,
        R: Send,
    {
        self.ensure_open()?;
        self.check_key(key)?;
        let writer = self.inner.writer.clone();
        let _guard = self.lock_key(key).await;
        // Set once the loader ran for this call: the processor then sees its value (or
        // nothing) and may not ask again.
        let mut loaded: Option<Option<Arc<V>>> = None;
        let mut first_found = None;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut result = None;
            let mut found = false;
            let mut wants_load = false;
            let mut stores_load = false;
            // With a writer: the change to write through, and the value it was decided on.
            let mut deferred: Option<(Decision<V>, Option<Arc<V>>)> = None;
            let through = writer.is_some();
            let can_load = self.read_through_loader().is_some() && loaded.is_none();
            let load = loaded.clone().flatten();
            let computed = {
                let mut run = |current: Option<&Arc<V>>| {
                    found = current.is_some();
                    let mut entry = MutableEntry {
                        current,
                        loaded: if current.is_none() {
                            load.as_ref()
                        } else {
                            None
                        },
                        can_load,
                        change: None,
                        deletes: false,
                        read: false,
                        load_seen: false,
                        wants_load: false,
                    };
                    result = Some(processor(&mut entry));
                    wants_load = entry.wants_load;
                    stores_load = false;
                    if wants_load {
                        // Run again once the value is loaded (outside the store's lock).
                        return Decision::Keep;
                    }
                    deferred = None;
                    let decision = match entry.change {
                        None if entry.load_seen => match entry.loaded {
                            Some(value) => {
                                stores_load = true;
                                Decision::Put(value.clone(), None)
                            }
                            None => Decision::Keep,
                        },
                        None if entry.read && current.is_some() => Decision::Access,
                        None => Decision::Keep,
                        Some(Some((v, ttl))) => Decision::Put(v, ttl),
                        Some(None) if current.is_some() => Decision::Remove,
                        // The system of record may hold the key the cache does not:
                        // the removal is written through all the same (JSR-107 §9.3,
                        // as `remove` does); the cache has nothing to remove.
                        Some(None) if through && entry.deletes => Decision::Remove,
                        Some(None) => Decision::Keep,
                    };
                    match decision {
                        Decision::Put(..) | Decision::Remove if through && !stores_load => {
                            deferred = Some((decision, current.cloned()));
                            Decision::Keep
                        }
                        decision => decision,
                    }
                };
                self.inner
                    .store
                    .compute(key, &mut run)
                    .instrument(self.store_span("invoke"))
                    .await
            };
            let computed = self.track(computed)?;
            let found = *first_found.get_or_insert(found);
            if wants_load {
                loaded = Some(self.load_value(key).await?);
                continue;
            }
            let computed = match (deferred, &writer) {
                (Some((decision, seen)), Some(writer)) => {
                    match self
                        .write_through_decision(key, writer, decision, seen)
                        .await
                    {
                        Ok(Some(computed)) => computed,
                        // The entry changed since the processor saw it: run it again.
                        Ok(None) if attempts < MAX_INVOKE_ATTEMPTS => continue,
                        Ok(None) => {
                            return Err(Error::Store(format!(
                                "entry processor on cache `{}` gave up after {MAX_INVOKE_ATTEMPTS} attempts: the entry kept changing",
                                self.inner.name
                            )));
                        }
                        Err(e) => {
                            self.count_lookup(found);
                            return Err(e);
                        }
                    }
                }
                _ => computed,
            };
            self.count_lookup(found);
            match computed {
                // A loaded value kept as it is: a load, not a put (JSR-107 §12.4).
                Computed::Created if stores_load => {}
                Computed::Created | Computed::Updated => self.inner.stats.puts.incr(),
                Computed::Removed => self.inner.stats.removals.incr(),
                Computed::Unchanged => {}
            }
            return result.ok_or_else(|| Error::Store("entry processor did not run".into()));
        }
    }

    /// Writes an entry processor's set or removal through `writer`, then applies it if
    /// the entry is still `seen` (the value the processor saw). `None`: it was not.
    async fn write_through_decision(
        &self,
        key: &K,
        writer: &Arc<dyn CacheWriter<K, V>>,
        decision: Decision<V>,
        seen: Option<Arc<V>>,
    ) -> Result<Option<Computed>> {
        let existed = seen.is_some();
        if !existed && matches!(decision, Decision::Remove) {
            // A removal of a key the cache does not hold, written through for the
            // system of record: the cache has nothing to remove, unless another process
            // created the entry meanwhile (then the processor runs again on it).
            writer
                .delete(key)
                .await
                .map_err(|e| Error::writer(CallbackError(e)))?;
            let present = self
                .inner
                .store
                .contains_all(std::slice::from_ref(key))
                .await;
            let present = self.track(present)?;
            return Ok((!present.first().copied().unwrap_or(false)).then_some(Computed::Unchanged));
        }
        let action = match decision {
            Decision::Put(value, ttl) => {
                self.check_value(key, &value)?;
                writer
                    .write(key, &value)
                    .await
                    .map_err(|e| Error::writer(CallbackError(e)))?;
                put(value, ttl)
            }
            Decision::Remove => {
                writer
                    .delete(key)
                    .await
                    .map_err(|e| Error::writer(CallbackError(e)))?;
                Action::Remove
            }
            Decision::Keep | Decision::Access => return Ok(Some(Computed::Unchanged)),
        };
        let removes = matches!(action, Action::Remove);
        let condition = match seen {
            // The very value the processor saw: the local store compares the shared
            // value's address, a remote store its encoded bytes.
            Some(seen) => Condition::IfEquals(seen, same_value::<V>),
            None => Condition::IfAbsent,
        };
        let write = Write {
            condition,
            action,
            want_previous: false,
        };
        let outcome = self.store_write(key, write).await;
        let outcome = self.track(outcome)?;
        // An update or a removal applies whenever its condition holds; a creation may
        // also not apply when the creation expiry is zero (then the key stays absent).
        let held = outcome.applied || (!existed && !outcome.existed);
        Ok(held.then_some(match (outcome.applied, removes, existed) {
            (false, _, _) => Computed::Unchanged,
            (true, true, _) => Computed::Removed,
            (true, false, true) => Computed::Updated,
            (true, false, false) => Computed::Created,
        }))
    }

    /// Runs `processor` on the entry of each of `keys`, as [`Cache::invoke`] does for one
    /// (atomic per key, never across keys), and returns one result per key, in the order
    /// of `keys`. An error on one key (a panicking processor, a failed load, a store
    /// error) is that key's result only; the other keys are processed all the same
    /// (JSR-107 §9.3: `invokeAll` returns an `EntryProcessorResult` per key). The
    /// processor gets the key beside the entry.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stock = partcache::CacheManager::from_url("memory://")?
    ///     .cache::<String, u32>("invoke-all-doc")
    ///     .build()
    ///     .await?;
    /// stock.put("apples".to_string(), 3).await?;
    /// let keys = ["apples".to_string(), "pears".to_string()];
    /// let left = stock
    ///     .invoke_all(&keys, |_key, entry| {
    ///         let n = entry.value().copied().unwrap_or(0).saturating_sub(1);
    ///         entry.set_value(n);
    ///         n
    ///     })
    ///     .await;
    /// assert_eq!(left.into_iter().map(Result::unwrap).collect::<Vec<_>>(), [2, 0]);
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub async fn invoke_all<R, F>(&self, keys: &[K], mut processor: F) -> Vec<Result<R>>
    where
        F: FnMut(&K, &mut MutableEntry<'_, V>) -> R + Send,
        R: Send,
    {
        let mut results = Vec::with_capacity(keys.len());
        for key in keys {
            results.push(self.invoke(key, |entry| processor(key, entry)).await);
        }
        results
    }

    /// Loads `keys` through the cache's loader, whether or not reads go through it
    /// (JSR-107 §9.2 `loadAll`): keys that have an entry are skipped unless
    /// `replace_existing`. Returns, once every load is done, one result per key in the
    /// order of `keys`: `Ok(true)` when a value was loaded and stored, `Ok(false)` when
    /// the key was skipped or the loader had no value, the loader's error
    /// ([`Error::Loader`]) or the store's for that key only. A loaded value is a load,
    /// not a put, and is not written through. Without a loader every key is `Ok(false)`.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use partcache::{BoxError, CacheLoader};
    ///
    /// struct Squares;
    /// #[async_trait::async_trait]
    /// impl CacheLoader<u64, u64> for Squares {
    ///     async fn load(&self, n: &u64) -> Result<Option<u64>, BoxError> {
    ///         Ok(Some(n * n))
    ///     }
    /// }
    /// let squares = partcache::CacheManager::from_url("memory://")?
    ///     .cache::<u64, u64>("load-all-doc")
    ///     .loader(Squares)
    ///     .build()
    ///     .await?;
    /// squares.put(2, 0).await?;
    /// let loaded = squares.load_all(&[1, 2, 3], false).await?;
    /// assert_eq!(loaded.into_iter().map(Result::unwrap).collect::<Vec<_>>(), [true, false, true]);
    /// assert_eq!(squares.get(&2).await?.as_deref(), Some(&0));
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub async fn load_all(&self, keys: &[K], replace_existing: bool) -> Result<Vec<Result<bool>>> {
        self.ensure_open()?;
        for key in keys {
            self.check_key(key)?;
        }
        if self.inner.loader.is_none() {
            return Ok(vec![Ok(false); keys.len()]);
        }
        let present = if replace_existing {
            vec![false; keys.len()]
        } else {
            let found = self.inner.store.contains_all(keys).await;
            self.track(found)?
        };
        let loads = keys.iter().zip(present).map(|(key, present)| async move {
            if present {
                return Ok(false);
            }
            let Some(value) = self.load_value(key).await? else {
                return Ok(false);
            };
            self.check_value(key, &value)?;
            let write = Write {
                // `replace_existing`: an update of a present entry (JSR-107 §6.4: the
                // update expiry applies); otherwise only an absent key is filled.
                condition: if replace_existing {
                    Condition::Always
                } else {
                    Condition::IfAbsent
                },
                action: put(value, None),
                want_previous: false,
            };
            let outcome = self.store_write(key, write).await;
            Ok(self.track(outcome)?.applied)
        });
        // A bounded number of loads at a time: a large batch must not open as many
        // connections to the system of record.
        Ok(futures::stream::iter(loads)
            .buffered(LOAD_ALL_CONCURRENCY)
            .collect()
            .await)
    }

    /// Every entry, as a stream (JCache's iterator). Weakly consistent; on the local
    /// store a snapshot. Each entry returned counts a hit and is an access for expiry;
    /// [`Entries::remove`] removes the entry returned last (a removal, with its event and
    /// writer call), as JCache's `Iterator::remove` does.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use futures::StreamExt;
    ///
    /// let cache = partcache::CacheManager::from_url("memory://")?
    ///     .cache::<u32, String>("entries-doc")
    ///     .build()
    ///     .await?;
    /// cache.put_all([(1, "one".to_string()), (2, "two".to_string())]).await?;
    /// let mut entries = cache.entries();
    /// while let Some(entry) = entries.next().await {
    ///     let (key, _value) = entry?;
    ///     if key == 1 {
    ///         entries.remove().await?;
    ///     }
    /// }
    /// assert_eq!(cache.len().await?, 1);
    /// assert_eq!((cache.stats().hits, cache.stats().removals), (2, 1));
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub fn entries(&self) -> Entries<'_, K, V> {
        Entries::new(self, &self.inner.stats, self.stream_entries())
    }

    /// The store's entries, or a lone [`Error::Closed`] once the cache is closed.
    fn stream_entries(&self) -> BoxStream<'_, Result<(K, Arc<V>)>> {
        match self.ensure_open() {
            Ok(()) => self.inner.store.entries(),
            Err(closed) => futures::stream::once(async { Err(closed) }).boxed(),
        }
    }

    /// Every key, as a stream. Not JCache's iterator: counts nothing (see
    /// [`Cache::entries`] for that).
    pub fn keys(&self) -> BoxStream<'_, Result<K>> {
        self.stream_entries().map(|e| e.map(|(k, _)| k)).boxed()
    }

    /// Number of entries; approximate on a Redis store and under concurrent writes.
    /// An entry past its deadline is never counted. Cost: on the embedded store, a
    /// count kept by moka under `Eternal` and `Modified` (without max-idle or a custom
    /// policy), else one pass over the entries; on Redis, see the store's docs.
    pub async fn len(&self) -> Result<u64> {
        self.ensure_open()?;
        let len = self.inner.store.len().await;
        self.track(len)
    }

    /// `len() == 0`.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// The cached value for `key`, or the one `load` returns, cached. Concurrent misses
    /// of one key call `load` once; the others wait for its outcome (single-flight). A
    /// failing or panicking `load` returns an error to every waiter and caches nothing.
    ///
    /// **Who runs, who waits.** The first task of this process to miss the key runs
    /// `load`; the others of this process wait for it. On a Redis store shared by
    /// several processes, that task first takes the key's lease: if a task of another
    /// process holds it, this one waits for that process's value instead of loading
    /// (asking again after pauses of 2 ms doubling to 20 ms, for at most the lease's
    /// time to live, [`crate::CacheBuilder::lease_ttl`]); so one process in the
    /// whole deployment runs `load`. A write or removal of the key (in any process)
    /// while `load` runs wins: the loaded value is returned to the waiters but not
    /// stored over the newer state (counted in [`crate::CacheStats::stale_sets_prevented`]).
    /// A lease holder that dies leaves the key to the next caller after the lease's
    /// time to live. An unreachable store (a transient error: [`Error::Unavailable`],
    /// [`Error::Timeout`], [`Error::CircuitOpen`]) does not fail the call: each process
    /// then loads once for its callers and returns the value uncached.
    ///
    /// **Cost.** On `memory://` a hit costs what [`Cache::get`] does, and a miss adds
    /// `load` and one [`Cache::put`]. On a Redis store a hit costs what [`Cache::get`]
    /// does; a miss adds one function call that reads the key again and takes its
    /// lease, `load`, and one write. (On a cache whose reads are function calls anyway,
    /// for an access expiry or an entry budget, the read and the lease are one call,
    /// which tasks of this process asking for one key at once share.) With a near
    /// cache, a near hit costs what [`Cache::get`]'s does, and a near miss reads the
    /// store (filling the near copy) before taking the lease.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let users = manager.cache::<u64, String>("get-or-load-doc").build().await?;
    /// let load = |id: u64| async move { Ok::<_, std::io::Error>(format!("user {id}")) };
    /// let first = users.get_or_load(&7, load).await?; // loads
    /// let again = users.get_or_load(&7, load).await?; // a hit: `load` not called
    /// assert_eq!((first.as_str(), again.as_str()), ("user 7", "user 7"));
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Loader`] with `load`'s error (or [`Error::Panicked`]), and the
    /// non-transient errors of [`Cache::get`] ([`Error::Closed`], [`Error::Rejected`]).
    pub async fn get_or_load<F, Fut, E>(&self, key: &K, load: F) -> Result<Arc<V>>
    where
        F: FnOnce(K) -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Into<BoxError>,
    {
        self.get_or_load_inner(key, None, load).await
    }

    /// Like [`Cache::get_or_load`], caching a loaded value with a per-entry time to live
    /// (as [`Cache::put_with_ttl`]) in the same single write.
    pub async fn get_or_load_with_ttl<F, Fut, E>(
        &self,
        key: &K,
        ttl: Duration,
        load: F,
    ) -> Result<Arc<V>>
    where
        F: FnOnce(K) -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Into<BoxError>,
    {
        self.get_or_load_inner(key, Some(ttl), load).await
    }

    async fn get_or_load_inner<F, Fut, E>(
        &self,
        key: &K,
        ttl: Option<Duration>,
        load: F,
    ) -> Result<Arc<V>>
    where
        F: FnOnce(K) -> Fut,
        Fut: Future<Output = Result<V, E>>,
        E: Into<BoxError>,
    {
        // A remote store with leases, no near cache (whose reads fill its local copies)
        // and reads that are scripts anyway: one round trip reads the key and, on a
        // miss, takes its lease (the flight's leader's), instead of a read and then a
        // lease. Where a read is a plain key read, hits keep it (they are the common
        // case) and only a miss pays the lease call.
        let remote_only = self.inner.encoded.as_ref().is_some_and(|encoded| {
            std::ptr::addr_eq(Arc::as_ptr(&self.inner.store), Arc::as_ptr(encoded))
        });
        if remote_only && !self.inner.lease_ttl.is_zero() && !self.inner.store.plain_reads() {
            self.ensure_open()?;
            if let Some(Ok(Some(value))) = self.inner.store.get_now(key) {
                self.inner.stats.hits.incr();
                return Ok(value);
            }
            let loaded = self
                .flight_load(key, ttl, false, move |k| async move {
                    load(k).await.map(Some).map_err(Into::into)
                })
                .await?;
            // Every caller counts what the leader's read found.
            match loaded.hit {
                true => self.inner.stats.hits.incr(),
                false => self.inner.stats.misses.incr(),
            }
            return loaded
                .value
                .ok_or_else(|| Error::Store("loader returned no value".into()));
        }
        match self.get(key).await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            // Fail open: a store that cannot be reached does not keep the caller from
            // its value; the load below is the flight's (once per process), and its
            // store write fails and is logged.
            Err(error) if error.is_transient() => {
                tracing::debug!(cache = %self.inner.name, %error, "store unreachable; loading without it");
            }
            Err(error) => return Err(error),
        }
        let value = self
            .load_through(key, ttl, move |k| async move {
                load(k).await.map(Some).map_err(Into::into)
            })
            .await?;
        value.ok_or_else(|| Error::Store("loader returned no value".into()))
    }

    /// Like [`Cache::get_or_load`] for an infallible `init`.
    pub async fn get_with<F, Fut>(&self, key: &K, init: F) -> Result<Arc<V>>
    where
        F: FnOnce(K) -> Fut,
        Fut: Future<Output = V>,
    {
        self.get_or_load(
            key,
            move |k| async move { Ok::<V, BoxError>(init(k).await) },
        )
        .await
    }

    /// The loader, when misses read through it.
    fn read_through_loader(&self) -> Option<&Arc<dyn CacheLoader<K, V>>> {
        self.inner
            .loader
            .as_ref()
            .filter(|_| self.inner.read_through)
    }

    /// Stores a value the loader gave: a load, so neither a put in the statistics nor a
    /// writer call (JSR-107 §9.2, §12.4: the value comes from the system of record).
    /// Only if the key is still absent: a value written meanwhile is newer.
    pub(crate) async fn store_load(
        &self,
        key: &K,
        value: Arc<V>,
        ttl: Option<Duration>,
    ) -> Result<()> {
        // Every write checks its key: a one-key read trusts a key it finds.
        self.check_key(key)?;
        self.check_value(key, &value)?;
        let write = Write {
            condition: Condition::IfAbsent,
            action: put(value, ttl),
            want_previous: false,
        };
        let outcome = self.store_write(key, write).await;
        self.track(outcome).map(drop)
    }

    /// The read-through loader's value for `key`, without storing it (once for all
    /// concurrent callers, as [`Cache::get`]'s loads).
    async fn load_value(&self, key: &K) -> Result<Option<Arc<V>>> {
        let Some(loader) = self.inner.loader.clone() else {
            return Ok(None);
        };
        self.inner
            .flights
            .run(key, || async {
                let start = Stopwatch::start();
                let loaded = loader.load(key).await;
                self.inner.stats.time_load(start.elapsed());
                match loaded {
                    Ok(value) => {
                        self.inner.stats.load_successes.incr();
                        Ok(Loaded::by_loader(value.map(Arc::new)))
                    }
                    Err(e) => {
                        self.inner.stats.load_failures.incr();
                        Err(Error::loader(CallbackError(e)))
                    }
                }
            })
            .await
            .map(|loaded| loaded.value)
            .inspect_err(|e| {
                if matches!(e, Error::Panicked(..)) {
                    self.inner.stats.load_failures.incr();
                }
            })
    }

    /// The lease of a missing `key`, for the leader of an adapter's own flight (see
    /// [`crate::flight`]): on a store several processes share, waits while another
    /// process holds it (at most the lease's time to live) and returns that process's
    /// value if it stored one ([`HeldLease::hit`]); else this process loads, and hands
    /// the value to [`HeldLease::store`] (or, without one, calls
    /// [`HeldLease::release`]). A lease dropped unused (an error, a panic, a request
    /// future dropped mid-way) ends at once, so other processes never wait out its time
    /// to live for a load that stopped. On `memory://` the lease is this process's
    /// alone: nobody waits for it, and it keeps the value out if the key is removed (or
    /// the cache cleared) meanwhile. Never fails: without leases (`lease_ttl` 0) or when
    /// the store cannot be reached, the lease says so ([`HeldLease::is_unleased`]) and
    /// the loaded value is stored as without leases.
    ///
    /// Who waits: the caller, for one store call, or while another process loads (at
    /// most the lease time). Cost: one store call; a waiter asks again after pauses of
    /// 2 ms doubling to 20 ms.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let users = manager.cache::<u64, String>("lease-doc").build().await?;
    /// let lease = users.lease(&7).await;
    /// assert!(lease.hit().is_none() && lease.is_leased());
    /// assert!(lease.store(std::sync::Arc::new("ada".to_string()), None).await);
    /// assert_eq!(users.get(&7).await?.as_deref().map(String::as_str), Some("ada"));
    ///
    /// // A removal while the value loads keeps the (older) value out.
    /// let lease = users.lease(&8).await;
    /// users.remove(&8).await?;
    /// assert!(!lease.store(std::sync::Arc::new("bob".to_string()), None).await);
    /// assert_eq!(users.get(&8).await?, None);
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub async fn lease(&self, key: &K) -> HeldLease<K, V> {
        self.take_lease(key, None).await
    }

    /// [`Cache::lease`] whose every store call gives up after `each_call`: a store that
    /// does not answer (frozen, or refusing writes while it answers reads) costs a
    /// caller at most `each_call` per ask, then the lease fails open as when the store
    /// cannot be reached ([`HeldLease::failure`] says
    /// [`Error::Timeout`](crate::Error::Timeout)), and what that ask may still have been
    /// granted is ended at once. Waiting for another process's load is not a store call:
    /// it still lasts at most the lease time. What adapters with a store timeout use.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let users = manager.cache::<u64, String>("lease-within-doc").build().await?;
    /// let lease = users.lease_within(&7, Duration::from_millis(250)).await;
    /// assert!(lease.failure().is_none() && lease.is_leased());
    /// lease.release().await;
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub async fn lease_within(&self, key: &K, each_call: Duration) -> HeldLease<K, V> {
        self.take_lease(key, Some(each_call)).await
    }

    async fn take_lease(&self, key: &K, each_ask: Option<Duration>) -> HeldLease<K, V> {
        let (store, name) = (&*self.inner.store, &self.inner.name);
        let taken = flight::take(store, name, key, self.inner.lease_ttl, each_ask).await;
        let taken = match (taken, each_ask) {
            (Ok(Ticket(Kind::Unanswered(token))), Some(limit)) => {
                // The ask that timed out may have been granted all the same: end it
                // (a release of a lease not held changes nothing).
                drop(HeldLease {
                    cache: self.clone(),
                    key: key.clone(),
                    ticket: Ticket(Kind::Leased(token)),
                    failed: None,
                    armed: true,
                });
                Err(Error::Timeout(limit))
            }
            (taken, _) => taken,
        };
        let (ticket, failed) = match taken {
            Ok(ticket) => (ticket, None),
            Err(error) => {
                // Fail open: the store is down or refused; load as without leases.
                tracing::debug!(cache = %name, %error, "lease not taken; loading without one");
                let failed = self.track(Err::<(), _>(error)).err();
                (Ticket(Kind::Unleased), failed)
            }
        };
        HeldLease {
            cache: self.clone(),
            key: key.clone(),
            ticket,
            failed,
            armed: true,
        }
    }

    /// Stores a value loaded under `ticket` ([`HeldLease::store`]).
    async fn store_leased(
        &self,
        key: &K,
        ticket: &Ticket<V>,
        value: Arc<V>,
        ttl: Option<Duration>,
    ) -> bool {
        let stored = match &ticket.0 {
            Kind::Leased(token) => {
                let put = match self.check_value(key, &value) {
                    Ok(()) => {
                        let (store, name) = (&*self.inner.store, &self.inner.name);
                        let put =
                            flight::put(store, &self.inner.stats, name, key, token, value, ttl);
                        self.track(put.await)
                    }
                    Err(error) => Err(error),
                };
                // A put that failed (a value the store refuses, a lost connection) left
                // the lease held: end it, or every other process waits out its time.
                if put.is_err() {
                    self.release_lease(key, ticket).await;
                }
                put
            }
            Kind::Unleased | Kind::Unsupported => {
                self.store_load(key, value, ttl).await.map(|()| true)
            }
            // (`Unanswered` never leaves `take_lease`: storing nothing is the safe side.)
            Kind::Hit(_) | Kind::Unprotected | Kind::Unanswered(_) => Ok(false),
        };
        stored.unwrap_or_else(|error| {
            tracing::warn!(cache = %self.inner.name, %error, "loaded value could not be cached");
            false
        })
    }

    /// Ends the lease of a load that stores nothing ([`HeldLease::release`]).
    async fn release_lease(&self, key: &K, ticket: &Ticket<V>) {
        let released = flight::release(&*self.inner.store, key, ticket).await;
        if let Err(error) = self.track(released) {
            // The lease then ends with its time to live.
            tracing::debug!(cache = %self.inner.name, %error, "lease not released");
        }
    }

    /// Loads a missing value once for all concurrent callers, caches it, returns it:
    /// once per process (the flight), and on a store shared by several processes once
    /// for all of them (the key's lease, [`crate::flight`]). The caller read the key
    /// already (and counted it).
    async fn load_through<F, Fut>(
        &self,
        key: &K,
        ttl: Option<Duration>,
        load: F,
    ) -> Result<Option<Arc<V>>>
    where
        F: FnOnce(K) -> Fut,
        Fut: Future<Output = Result<Option<V>, BoxError>>,
    {
        let loaded = self.flight_load(key, ttl, true, load).await?;
        Ok(loaded.value)
    }

    /// [`Cache::load_through`]'s flight. `read`: whether the caller read the key
    /// already; if not, the leader's lease call is the read (one round trip for the
    /// read and the lease), or, on a store without leases, a read of its own.
    async fn flight_load<F, Fut>(
        &self,
        key: &K,
        ttl: Option<Duration>,
        read: bool,
        load: F,
    ) -> Outcome<V>
    where
        F: FnOnce(K) -> Fut,
        Fut: Future<Output = Result<Option<V>, BoxError>>,
    {
        self.inner
            .flights
            .run(key, || async {
                // A caller that lost the race to a finished flight finds the value here.
                if let Some(Ok(Some(v))) = self.inner.store.get_now(key) {
                    return Ok(Loaded::found(v));
                }
                let mut lease = self.lease(key).await;
                if let Some(value) = lease.hit() {
                    return Ok(Loaded::found(value.clone()));
                }
                // Where the lease call was the read, its error is the read's: a
                // transient one fails open (as `get_or_load` does on its read), any
                // other (an invalid key, a closed cache) is the caller's.
                if !read
                    && let Some(error) = lease.failed.take_if(|e| !e.is_transient())
                {
                    return Err(error);
                }
                if !read && matches!(lease.ticket.0, Kind::Unsupported) {
                    match self.inner.store.get_one(key).await {
                        Ok(Some(value)) => return Ok(Loaded::found(value)),
                        Ok(None) => {}
                        // Fail open, as `get_or_load` does on its read.
                        Err(error) if error.is_transient() => {
                            tracing::debug!(cache = %self.inner.name, %error, "store unreachable; loading without it");
                        }
                        Err(error) => return Err(error),
                    }
                }
                let start = Stopwatch::start();
                let loaded = load(key.clone()).await;
                self.inner.stats.time_load(start.elapsed());
                match loaded {
                    Ok(Some(value)) => {
                        self.inner.stats.load_successes.incr();
                        let value = Arc::new(value);
                        // A cache that cannot store the value still serves it.
                        lease.store(value.clone(), ttl).await;
                        Ok(Loaded::by_loader(Some(value)))
                    }
                    // No value to store: `lease` ends as it drops.
                    Ok(None) => {
                        self.inner.stats.load_successes.incr();
                        Ok(Loaded::by_loader(None))
                    }
                    Err(e) => {
                        self.inner.stats.load_failures.incr();
                        Err(Error::loader(CallbackError(e)))
                    }
                }
            })
            .await
            .inspect_err(|e| {
                if matches!(e, Error::Panicked(..)) {
                    self.inner.stats.load_failures.incr();
                }
            })
    }

    /// Events that pass `filter`, from now on: this process's own at once (an event of
    /// a call is delivered before the call returns). On a Redis store they include
    /// writes by every process attached to the cache, delivered asynchronously: the
    /// store starts receiving them when the first listener appears (writers publish
    /// only while some process listens, as Redisson's do), which takes a round trip;
    /// [`Cache::listen`] returns once that is done.
    ///
    /// On a closed cache the receiver is closed at once: its first `recv` returns
    /// [`RecvError::Closed`](crate::event::RecvError::Closed) (as it does for a receiver
    /// subscribed before the close, once the events sent before are taken).
    /// [`Cache::listen`] returns [`Error::Closed`] instead.
    pub fn subscribe(&self, filter: EventFilter<K, V>) -> EventReceiver<K, V> {
        let receiver = self.inner.store.events().subscribe(filter);
        if self.is_closed() {
            return receiver;
        }
        if let Some(raw) = self.raw_store()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let raw = raw.clone();
            let name = self.inner.name.clone();
            runtime.spawn(async move {
                if let Err(error) = raw.listen().await {
                    tracing::warn!(cache = %name, %error, "cannot receive other processes' events yet");
                }
            });
        }
        receiver
    }

    /// [`Cache::subscribe`], returning once events of other processes reach the
    /// receiver (on a remote store: the subscription to the cache's channels is
    /// confirmed). Use it where a listener must not miss a write that another process
    /// makes after this returns.
    pub async fn listen(&self, filter: EventFilter<K, V>) -> Result<EventReceiver<K, V>> {
        self.ensure_open()?;
        let receiver = self.inner.store.events().subscribe(filter);
        if let Some(raw) = self.raw_store() {
            raw.listen().await?;
        }
        Ok(receiver)
    }

    /// A snapshot of the statistics.
    pub fn stats(&self) -> CacheStats {
        self.inner.stats.snapshot()
    }

    /// Sets the statistics back to zero.
    pub fn reset_stats(&self) {
        self.inner.stats.reset();
    }

    /// Pushes the statistics to the `metrics` facade, labelled with the cache's name.
    pub fn publish_metrics(&self) {
        self.stats().publish(&self.inner.name);
    }

    /// Runs the store's pending housekeeping now (the local store applies evictions and
    /// expiry notifications lazily). Useful in tests and before reading statistics.
    pub async fn run_pending_tasks(&self) -> Result<()> {
        self.ensure_open()?;
        let result = self.inner.store.run_pending_tasks().await;
        self.track(result)
    }
}

/// The entry an entry processor sees in [`Cache::invoke`].
#[derive(Debug)]
pub struct MutableEntry<'a, V> {
    current: Option<&'a Arc<V>>,
    /// The read-through loader's value for an absent key, once loaded.
    loaded: Option<&'a Arc<V>>,
    /// Reading an absent value may ask for a load.
    can_load: bool,
    /// `None`: untouched; `Some(Some((v, ttl)))`: set; `Some(None)`: removed.
    change: Option<Option<(Arc<V>, Option<Duration>)>>,
    /// The last removal undid no creation or load of this processor's own, so it is
    /// written through even when the cache has no entry.
    deletes: bool,
    read: bool,
    /// The processor read the loaded value.
    load_seen: bool,
    /// The processor read an absent value that the loader may provide.
    wants_load: bool,
}

impl<V> MutableEntry<'_, V> {
    /// Whether the entry exists (after this processor's own changes, and after a
    /// read-through load).
    pub fn exists(&self) -> bool {
        match &self.change {
            Some(change) => change.is_some(),
            None => self.current.is_some() || self.load_seen,
        }
    }

    /// The entry's value (after this processor's own changes). Counts as a read: an
    /// access for expiry when the entry is present. On an absent key of a cache with a
    /// read-through loader, the value the loader gives (JSR-107 §9.3); kept as it is,
    /// it is stored.
    pub fn value(&mut self) -> Option<&V> {
        self.read = true;
        if let Some(change) = &self.change {
            return change.as_ref().map(|(v, _)| &**v);
        }
        match (self.current, self.loaded) {
            (Some(v), _) => Some(&**v),
            (None, Some(v)) => {
                self.load_seen = true;
                Some(&**v)
            }
            (None, None) => {
                if self.can_load {
                    self.wants_load = true;
                }
                None
            }
        }
    }

    /// Sets the value.
    pub fn set_value(&mut self, value: impl Into<Arc<V>>) {
        self.change = Some(Some((value.into(), None)));
    }

    /// Sets the value with a per-entry time to live on top of the expiry policy (as
    /// [`Cache::put_with_ttl`]).
    pub fn set_value_with_ttl(&mut self, value: impl Into<Arc<V>>, ttl: Duration) {
        self.change = Some(Some((value.into(), Some(ttl))));
    }

    /// Removes the entry (of a loaded value: nothing is stored).
    pub fn remove(&mut self) {
        let undoes_own = self.current.is_none()
            && (matches!(self.change, Some(Some(_))) || (self.change.is_none() && self.load_seen));
        self.deletes = !undoes_own;
        self.change = Some(None);
    }
}

impl<K: CacheKey, V: CacheValue> RemoveKey<K> for Cache<K, V> {
    fn remove_key<'a>(&'a self, key: &'a K) -> futures::future::BoxFuture<'a, Result<bool>> {
        Box::pin(self.remove(key))
    }
}

/// A missing key's lease, held by this process's leader of a flight
/// ([`Cache::lease`]): the value another process stored meanwhile
/// ([`HeldLease::hit`]), or the right to load it and store it under the lease
/// ([`HeldLease::store`]).
///
/// Dropped without [`HeldLease::store`] or [`HeldLease::release`] (an error, a panic,
/// a response that may not be stored, a future dropped mid-way: a client that went
/// away), it ends the lease at once, on a task of its own (a drop cannot wait), so
/// other processes waiting for the key go on at once instead of waiting out the
/// lease's time to live.
#[must_use = "a lease dropped unused ends at once: store under it or release it"]
#[derive(Debug)]
pub struct HeldLease<K: CacheKey, V: CacheValue> {
    cache: Cache<K, V>,
    key: K,
    ticket: Ticket<V>,
    /// The store's error when the lease could not be asked for (counted already).
    failed: Option<Error>,
    /// Whether the lease still needs ending when this drops.
    armed: bool,
}

impl<K: CacheKey, V: CacheValue> HeldLease<K, V> {
    /// The value another process stored while this one waited: serve it, load nothing.
    pub fn hit(&self) -> Option<&Arc<V>> {
        self.ticket.hit()
    }

    /// Whether this process holds the key's lease: its store write is refused if any
    /// process writes or removes the key before it.
    pub fn is_leased(&self) -> bool {
        self.ticket.is_leased()
    }

    /// Whether the store keeps no lease for this load (`lease_ttl` 0, or the store
    /// failed): [`HeldLease::store`] stores as a load without leases does.
    pub fn is_unleased(&self) -> bool {
        self.ticket.is_unleased()
    }

    /// The key this lease is for.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// The store's error when the lease could not be asked for (the lease then fails
    /// open: [`HeldLease::is_unleased`]), already counted in the cache's
    /// [`CacheStats::store_errors`]; for an adapter that counts its own store failures.
    pub fn failure(&self) -> Option<&Error> {
        self.failed.as_ref()
    }

    /// Stores a value loaded under this lease: under the lease, which the store
    /// refuses when a write or removal of the key (by any process) voided it meanwhile
    /// (counted in [`CacheStats::stale_sets_prevented`]); without a lease, only if the
    /// key is still absent; after waiting a lease time in vain, or on a hit, not at
    /// all. A load, not a put (JSR-107 §9.2): not counted as a put, no writer call.
    /// Returns whether the value was stored; a store that fails is logged, not
    /// returned (the caller has its value), and ends the lease.
    ///
    /// Who waits: the caller, for one store call. Dropped before it ends, the lease
    /// ends too: a put already sent then either landed or is refused.
    pub async fn store(mut self, value: Arc<V>, ttl: Option<Duration>) -> bool {
        let stored = self
            .cache
            .store_leased(&self.key, &self.ticket, value, ttl)
            .await;
        self.armed = false;
        stored
    }

    /// Ends the lease of a load that found no value, failed, or may not be stored, so
    /// that the next caller, in any process, leads at once. Does nothing without one.
    pub async fn release(mut self) {
        self.cache.release_lease(&self.key, &self.ticket).await;
        self.armed = false;
    }
}

impl<K: CacheKey, V: CacheValue> Drop for HeldLease<K, V> {
    fn drop(&mut self) {
        if !self.armed || !self.ticket.is_leased() {
            return;
        }
        // Not awaited: a drop cannot wait, and nobody needs to.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let ticket = std::mem::replace(&mut self.ticket, Ticket(Kind::Unsupported));
        let cache = self.cache.clone();
        let key = self.key.clone();
        runtime.spawn(async move { cache.release_lease(&key, &ticket).await });
    }
}
