//! [`Cache`]: the typed handle every caller uses.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{BoxStream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::event::{EventFilter, EventReceiver};
use crate::key_text::write_key_text;
use crate::loader::{BoxError, CacheLoader, CacheWriter, CallbackError};
use crate::partition::{HashingPolicy, PartitionMap};
use crate::single_flight::SingleFlight;
use crate::stats::{CacheStats, StatsCounters};
use crate::store::encoded::EncodedStore;
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
    pub(crate) encoded: Option<Arc<EncodedStore<K, V>>>,
    pub(crate) stats: Arc<StatsCounters>,
    pub(crate) loader: Option<Arc<dyn CacheLoader<K, V>>>,
    pub(crate) writer: Option<Arc<dyn CacheWriter<K, V>>>,
    pub(crate) flights: SingleFlight<K, V>,
    pub(crate) key_locks: Option<Box<[tokio::sync::Mutex<()>]>>,
    /// Checks the local store makes that a remote store makes anyway, so that switching
    /// backends never changes what is accepted.
    pub(crate) local_checks: Option<LocalChecks>,
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

fn eq_fn<V: PartialEq>() -> fn(&V, &V) -> bool {
    <V as PartialEq>::eq
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

    fn track<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(e) = &result {
            match e {
                Error::Rejected(_) => self.inner.stats.rejections.incr(),
                Error::Loader(_) | Error::Writer(_) | Error::Panicked(..) => {}
                _ => self.inner.stats.store_errors.incr(),
            }
        }
        result
    }

    /// Applies the checks a remote store would make (see [`LocalChecks`]).
    fn check_key(&self, key: &K) -> Result<()> {
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

    fn check_value(&self, key: &K, value: &V) -> Result<()> {
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
        self.check_key(key)?;
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
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        let index = (hasher.finish() % locks.len() as u64) as usize;
        Some(locks[index].lock().await)
    }

    /// The value for `key`, or `None`. With a read-through loader configured, a miss
    /// loads the value (once for all concurrent callers) and caches it.
    ///
    /// Cost on the local store: one moka lookup, no serialization, no allocation. On a
    /// Redis store: one round trip. A stored value that fails to decode is a miss (and a
    /// counted, logged decode error).
    pub async fn get(&self, key: &K) -> Result<Option<Arc<V>>> {
        let start = Instant::now();
        // Only the local store has checks here (remote stores check while routing), and
        // only with a custom hashing policy: an `Option` test on the hot path otherwise.
        if self.inner.local_checks.is_some() {
            self.check_key(key)?;
        }
        let found = match self.inner.store.get_now(key) {
            Some(found) => found,
            None => {
                self.inner
                    .store
                    .get_one(key)
                    .instrument(self.store_span("get"))
                    .await
            }
        };
        let found = self.track(found)?;
        let stats = &self.inner.stats;
        stats.time_get(start.elapsed());
        match found {
            Some(value) => {
                stats.hits.incr();
                Ok(Some(value))
            }
            None => {
                stats.misses.incr();
                match &self.inner.loader {
                    Some(loader) => {
                        let loader = loader.clone();
                        self.load_through(
                            key,
                            None,
                            move |k: K| async move { loader.load(&k).await },
                        )
                        .await
                    }
                    None => Ok(None),
                }
            }
        }
    }

    /// Values for many keys, in the order of `keys` (`None` for misses). On a Redis
    /// store the keys are grouped by node and fetched concurrently, one pipeline per
    /// node; atomic per partition only. A read-through loader fills misses.
    pub async fn get_all(&self, keys: &[K]) -> Result<Vec<Option<Arc<V>>>> {
        for key in keys {
            self.check_key(key)?;
        }
        let start = Instant::now();
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
        if let Some(loader) = &self.inner.loader {
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
        self.check_key(key)?;
        let found = self
            .inner
            .store
            .contains_all(std::slice::from_ref(key))
            .await;
        Ok(self.track(found)?.first().copied().unwrap_or(false))
    }

    /// Stores `value` under `key` (creating or updating), after the writer if any.
    pub async fn put(&self, key: K, value: impl Into<Arc<V>>) -> Result<()> {
        self.put_inner(key, value.into(), None).await
    }

    /// Like [`Cache::put`], with a time to live for this entry on top of the expiry
    /// policy (whichever deadline comes first wins). A zero TTL stores nothing.
    pub async fn put_with_ttl(
        &self,
        key: K,
        value: impl Into<Arc<V>>,
        ttl: Duration,
    ) -> Result<()> {
        self.put_inner(key, value.into(), Some(ttl)).await
    }

    async fn put_inner(&self, key: K, value: Arc<V>, ttl: Option<Duration>) -> Result<()> {
        let start = Instant::now();
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
    /// pipeline per node; atomic per entry only.
    pub async fn put_all(&self, entries: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let entries: Vec<(K, Arc<V>)> =
            entries.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
        for (k, v) in &entries {
            self.check_key(k)?;
            self.check_value(k, v)?;
        }
        let start = Instant::now();
        if let Some(writer) = &self.inner.writer {
            for (k, v) in &entries {
                writer
                    .write(k, v)
                    .await
                    .map_err(|e| Error::writer(CallbackError(e)))?;
            }
        }
        let count = entries.len() as u64;
        let result = self
            .inner
            .store
            .put_all(entries, None)
            .instrument(self.store_span("put_all"))
            .await;
        self.track(result)?;
        self.inner.stats.puts.add(count);
        self.inner.stats.time_put(start.elapsed());
        Ok(())
    }

    /// Stores `value` only if `key` has no entry; returns whether it did. A present key
    /// emits no event and counts a hit; an absent one counts a miss and a put.
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
        let start = Instant::now();
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
    pub async fn remove_all_keys(&self, keys: &[K]) -> Result<u64> {
        for key in keys {
            self.check_key(key)?;
        }
        if let Some(writer) = &self.inner.writer {
            for key in keys {
                writer
                    .delete(key)
                    .await
                    .map_err(|e| Error::writer(CallbackError(e)))?;
            }
        }
        let removed = self.inner.store.remove_all(keys).await;
        let removed = self.track(removed)?;
        self.inner.stats.removals.add(removed);
        Ok(removed)
    }

    /// Removes every entry, with a `Removed` event (and a writer `delete`) per entry;
    /// returns how many. See [`Cache::clear`] for the silent variant.
    pub async fn remove_all(&self) -> Result<u64> {
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
    /// A writer, if configured, is not called for entry processors.
    pub async fn invoke<R, F>(&self, key: &K, mut processor: F) -> Result<R>
    where
        F: FnMut(&mut MutableEntry<'_, V>) -> R + Send,
        R: Send,
    {
        self.check_key(key)?;
        let mut result = None;
        let mut read = None;
        let computed = {
            let mut run = |current: Option<&Arc<V>>| {
                let mut entry = MutableEntry {
                    current,
                    change: None,
                    read: false,
                };
                result = Some(processor(&mut entry));
                read = entry.read.then_some(current.is_some());
                match entry.change {
                    None => Decision::Keep,
                    Some(Some((v, ttl))) => Decision::Put(v, ttl),
                    Some(None) => Decision::Remove,
                }
            };
            self.inner
                .store
                .compute(key, &mut run)
                .instrument(self.store_span("invoke"))
                .await
        };
        let computed = self.track(computed)?;
        if let Some(hit) = read {
            self.count_lookup(hit);
        }
        match computed {
            Computed::Created | Computed::Updated => self.inner.stats.puts.incr(),
            Computed::Removed => self.inner.stats.removals.incr(),
            Computed::Unchanged => {}
        }
        result.ok_or_else(|| Error::Store("entry processor did not run".into()))
    }

    /// Every entry, as a stream. Weakly consistent; on the local store a snapshot.
    pub fn entries(&self) -> BoxStream<'_, Result<(K, Arc<V>)>> {
        self.inner.store.entries()
    }

    /// Every key, as a stream.
    pub fn keys(&self) -> BoxStream<'_, Result<K>> {
        self.inner
            .store
            .entries()
            .map(|e| e.map(|(k, _)| k))
            .boxed()
    }

    /// Number of entries; approximate on a Redis store and under concurrent writes.
    pub async fn len(&self) -> Result<u64> {
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
        if let Some(value) = self.get(key).await? {
            return Ok(value);
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

    /// Loads a missing value once for all concurrent callers, caches it, returns it.
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
        self.inner
            .flights
            .run(key, || async {
                // A caller that lost the race to a finished flight finds the value here.
                if let Some(Ok(Some(v))) = self.inner.store.get_now(key) {
                    return Ok(Some(v));
                }
                let start = Instant::now();
                let loaded = load(key.clone()).await;
                self.inner.stats.time_load(start.elapsed());
                match loaded {
                    Ok(Some(value)) => {
                        self.inner.stats.load_successes.incr();
                        let value = Arc::new(value);
                        // A cache that cannot store the value still serves it.
                        if let Err(error) = self.put_inner(key.clone(), value.clone(), ttl).await {
                            tracing::warn!(cache = %self.inner.name, %error, "loaded value could not be cached");
                        }
                        Ok(Some(value))
                    }
                    Ok(None) => {
                        self.inner.stats.load_successes.incr();
                        Ok(None)
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
    pub fn subscribe(&self, filter: EventFilter<K, V>) -> EventReceiver<K, V> {
        let receiver = self.inner.store.events().subscribe(filter);
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
        let result = self.inner.store.run_pending_tasks().await;
        self.track(result)
    }
}

/// The entry an entry processor sees in [`Cache::invoke`].
pub struct MutableEntry<'a, V> {
    current: Option<&'a Arc<V>>,
    /// `None`: untouched; `Some(Some((v, ttl)))`: set; `Some(None)`: removed.
    change: Option<Option<(Arc<V>, Option<Duration>)>>,
    read: bool,
}

impl<V> MutableEntry<'_, V> {
    /// Whether the entry exists (after this processor's own changes).
    pub fn exists(&self) -> bool {
        match &self.change {
            Some(change) => change.is_some(),
            None => self.current.is_some(),
        }
    }

    /// The entry's value (after this processor's own changes). Counts as a read.
    pub fn value(&mut self) -> Option<&V> {
        self.read = true;
        match &self.change {
            Some(change) => change.as_ref().map(|(v, _)| &**v),
            None => self.current.map(|v| &**v),
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

    /// Removes the entry.
    pub fn remove(&mut self) {
        self.change = Some(None);
    }
}
