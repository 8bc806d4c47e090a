//! A typed [`Store`] over a byte-level [`RawStore`]: encodes values with the cache's
//! codec, turns keys into their canonical text and partition, and decodes what comes
//! back. A blob that does not decode is a miss plus a counted, logged decode error.

use std::marker::PhantomData;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::broadcast;

use super::raw::{RawAction, RawCondition, RawFound, RawKey, RawLease, RawStore, RawWrite};
use super::spi::{
    Action, Computed, Condition, Decision, Lease, LeasedPut, Processor, Store, Write, WriteOutcome,
};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::event::EventSender;
use crate::key_text::write_key_text;
use crate::partition::{HashingPolicy, PartitionMap};
use crate::stats::StatsCounters;

/// How often an entry processor is retried when other writers keep changing its entry.
const MAX_COMPUTE_ATTEMPTS: usize = 64;

/// What an [`EncodedStore`] needs besides the raw store.
#[derive(Debug)]
pub struct EncodedConfig<K, V> {
    /// The cache's name (for logs).
    pub name: String,
    /// The codec values are written with.
    pub codec: Codec,
    /// The cache's partitions.
    pub partitions: PartitionMap,
    /// How keys are hashed to partitions.
    pub hashing: HashingPolicy,
    /// Largest encoded entry accepted, in bytes.
    pub max_value_bytes: Option<usize>,
    /// Shared statistics.
    pub stats: Arc<StatsCounters>,
    /// Where decoded events go.
    pub events: EventSender<K, V>,
}

/// See the module docs.
///
/// Events: the raw store's events are forwarded from one receiver, drained both by a
/// background task (events of other processes) and at the end of every operation of
/// this store, so that the events an operation caused, which a remote store has
/// received by the time the operation returns, reach listeners before it returns: a
/// listener subscribed after a `put` never sees that put's event.
pub struct EncodedStore<K, V> {
    raw: Arc<dyn RawStore>,
    config: EncodedConfig<K, V>,
    events: parking_lot::Mutex<broadcast::Receiver<super::raw::RawEvent>>,
    /// Striped by key: entry processors on one key in this process take turns, so
    /// only other processes' writes make an optimistic attempt fail (16 local tasks
    /// incrementing one counter once exhausted the attempts).
    compute_locks: Box<[tokio::sync::Mutex<()>]>,
    _types: PhantomData<fn() -> (K, V)>,
}

/// Stripes of [`EncodedStore::compute_locks`].
const COMPUTE_LOCK_STRIPES: usize = 64;

impl<K, V> EncodedStore<K, V>
where
    K: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// Wraps `raw`; starts forwarding its events (decoded) while the store lives.
    pub fn new(raw: Arc<dyn RawStore>, config: EncodedConfig<K, V>) -> Arc<Self> {
        let events = parking_lot::Mutex::new(raw.subscribe());
        // A second receiver only wakes the background task; events are taken from
        // `events` alone, so each is forwarded once.
        let wake = raw.subscribe();
        let store = Arc::new(EncodedStore {
            raw,
            config,
            events,
            compute_locks: (0..COMPUTE_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            _types: PhantomData,
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(forward_events(Arc::downgrade(&store), wake));
        }
        store
    }

    /// The raw store underneath.
    pub fn raw(&self) -> &Arc<dyn RawStore> {
        &self.raw
    }

    /// The cache's partition map.
    pub fn partition_map(&self) -> &PartitionMap {
        &self.config.partitions
    }

    /// The key's canonical text and partition.
    pub fn raw_key(&self, key: &K) -> Result<RawKey> {
        // Room for most keys at once (a number, a short id): no regrowth.
        let mut text = String::with_capacity(32);
        write_key_text(key, &mut text).map_err(|e| Error::Rejected(format!("key: {e}")))?;
        let partition = self
            .config
            .partitions
            .partition_of(&self.config.hashing, &text)?;
        Ok(RawKey { text, partition })
    }

    /// The cache's name.
    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    /// The codec values are written with.
    pub(crate) fn codec(&self) -> Codec {
        self.config.codec
    }

    /// The cache's statistics.
    pub(crate) fn stats(&self) -> &Arc<StatsCounters> {
        &self.config.stats
    }

    /// Reads `keys` with [`RawStore::get_all_with_deadlines`] (for a near cache):
    /// decoded values, each with the time it had left on the store. Undecodable blobs
    /// are misses and counted decode errors; events are drained as for every operation.
    pub(crate) async fn get_all_with_deadlines(
        &self,
        keys: &[RawKey],
    ) -> Result<Vec<Option<(Arc<V>, Option<Duration>)>>> {
        let found = self.after(self.raw.get_all_with_deadlines(keys).await)?;
        if found.len() != keys.len() {
            return Err(Error::Store(format!(
                "{} answered {} results for {} keys",
                self.raw.describe(),
                found.len(),
                keys.len()
            )));
        }
        Ok(found
            .into_iter()
            .map(|found| {
                let RawFound { blob, remaining } = found?;
                Some((self.decode_value(&blob)?, remaining))
            })
            .collect())
    }

    fn raw_keys(&self, keys: &[K]) -> Result<Vec<RawKey>> {
        keys.iter().map(|k| self.raw_key(k)).collect()
    }

    fn encode(&self, key: &K, value: &V) -> Result<Vec<u8>> {
        let blob = self.config.codec.encode_entry(key, value)?;
        if let Some(limit) = self.config.max_value_bytes
            && blob.len() > limit
        {
            // Counted once, by the cache, like every other rejection.
            return Err(Error::Rejected(format!(
                "value of {} bytes exceeds the limit of {limit} bytes for cache `{}`",
                blob.len(),
                self.config.name
            )));
        }
        Ok(blob)
    }

    /// Decodes a value; a failure is logged, counted, and becomes `None`.
    fn decode_value(&self, blob: &[u8]) -> Option<Arc<V>> {
        match self.config.codec.decode_value::<V>(blob) {
            Ok(v) => Some(Arc::new(v)),
            Err(e) => {
                self.decode_failed(&e);
                None
            }
        }
    }

    /// Forwards (decoded) every raw event received so far. See the type docs.
    fn drain_events(&self) {
        let mut receiver = self.events.lock();
        loop {
            match receiver.try_recv() {
                Ok(event) => self.forward(event),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    tracing::warn!(cache = %self.config.name, lost = n, "cache event forwarder lagged behind");
                }
                Err(_) => return,
            }
        }
    }

    fn forward(&self, event: super::raw::RawEvent) {
        if !self.config.events.is_listened() {
            return;
        }
        match self.config.codec.decode_entry_or_key::<K, V>(&event.blob) {
            Ok((key, value)) => {
                self.config
                    .events
                    .emit(event.kind, || key, value.map(Arc::new), None);
            }
            Err(e) => self.decode_failed(&e),
        }
    }

    /// Drains the events `result`'s operation caused, then passes `result` on.
    fn after<T>(&self, result: Result<T>) -> Result<T> {
        // Without listeners in this process the raw store returns no events of this
        // process's calls (see `RawStore` on events), so there is nothing whose order
        // against this call matters: the background task forwards the rest. This keeps
        // a lock every call would take (and contend for) off the hot path.
        if self.config.events.is_listened() {
            self.drain_events();
        }
        result
    }

    fn decode_failed(&self, error: &Error) {
        self.config.stats.decode_errors.incr();
        tracing::warn!(cache = %self.config.name, %error, "stored value could not be decoded; treated as a miss");
    }

    /// Removes `key`'s entry if it holds bytes that do not decode, and only those very
    /// bytes (a value another process writes meanwhile stays); returns whether the key
    /// is now free for a write that wants it absent. Undecodable bytes (a value type
    /// changed between releases, a corrupted entry) read as absent, so a write that
    /// needs the key absent (`put_if_absent`, a load) must be able to replace them: kept,
    /// they would make every read a miss and every load run again, for as long as they
    /// live.
    async fn remove_undecodable(&self, key: &RawKey) -> Result<bool> {
        let Some(blob) = self.after(self.raw.peek(key).await)? else {
            // Gone since the write found it: free, the retried write decides.
            return Ok(true);
        };
        if self.decode_value(&blob).is_some() {
            return Ok(false);
        }
        self.remove_exactly(key, blob).await
    }

    /// Removes `key`'s entry only if it still holds `blob`; returns whether it did.
    async fn remove_exactly(&self, key: &RawKey, blob: Vec<u8>) -> Result<bool> {
        let removal = RawWrite {
            condition: RawCondition::IfEquals(blob),
            action: RawAction::Remove,
            want_previous: false,
        };
        let outcome = self.after(self.raw.write(key, removal).await)?;
        Ok(outcome.applied)
    }

    /// The lease of a key whose bytes (`blob`) do not decode: the bytes are removed
    /// (only if unchanged) and the lease asked for again, so that the load replacing
    /// them runs under a lease as any other miss's. If they cannot be removed (another
    /// writer came first) the caller loads without a lease, as without leases.
    async fn lease_over_undecodable(
        &self,
        key: &RawKey,
        blob: Vec<u8>,
        token: &str,
        ttl: Duration,
        waited: bool,
    ) -> Result<Lease<V>> {
        if !self.remove_exactly(key, blob).await? {
            return Ok(Lease::Unsupported);
        }
        Ok(
            match self.after(self.raw.lease(key, token, ttl, waited).await)? {
                RawLease::Hit(blob) => self
                    .decode_value(&blob)
                    .map_or(Lease::Unsupported, Lease::Hit),
                RawLease::Granted => Lease::Granted,
                RawLease::Held { remaining } => Lease::Held { remaining },
                RawLease::Released => Lease::Released,
                RawLease::Unsupported => Lease::Unsupported,
            },
        )
    }

    fn raw_write(&self, key: &K, write: Write<V>) -> Result<RawWrite> {
        let condition = match write.condition {
            Condition::Always => RawCondition::Always,
            Condition::IfAbsent => RawCondition::IfAbsent,
            Condition::IfPresent => RawCondition::IfPresent,
            Condition::IfEquals(expected, _) => {
                RawCondition::IfEquals(self.encode(key, &expected)?)
            }
        };
        let action = match write.action {
            Action::Put { value, ttl } => RawAction::Put {
                blob: self.encode(key, &value)?,
                ttl,
            },
            Action::Remove => RawAction::Remove,
        };
        Ok(RawWrite {
            condition,
            action,
            want_previous: write.want_previous,
        })
    }
}

async fn forward_events<K, V>(
    store: Weak<EncodedStore<K, V>>,
    mut wake: broadcast::Receiver<super::raw::RawEvent>,
) where
    K: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    loop {
        match wake.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
        let Some(store) = store.upgrade() else { return };
        store.drain_events();
    }
}

#[async_trait]
impl<K, V> Store<K, V> for EncodedStore<K, V>
where
    K: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
    V: Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn describe(&self) -> String {
        self.raw.describe()
    }

    fn events(&self) -> &EventSender<K, V> {
        &self.config.events
    }

    async fn get_one(&self, key: &K) -> Result<Option<Arc<V>>> {
        let raw_key = self.raw_key(key)?;
        let blob = self.after(self.raw.get(&raw_key).await)?;
        Ok(blob.and_then(|blob| self.decode_value(&blob)))
    }

    async fn get_all(&self, keys: &[K]) -> Result<Vec<Option<Arc<V>>>> {
        let raw_keys = self.raw_keys(keys)?;
        let blobs = self.after(self.raw.get_all(&raw_keys).await)?;
        Ok(blobs
            .into_iter()
            .map(|b| b.and_then(|blob| self.decode_value(&blob)))
            .collect())
    }

    async fn contains_all(&self, keys: &[K]) -> Result<Vec<bool>> {
        self.raw.contains_all(&self.raw_keys(keys)?).await
    }

    async fn write(&self, key: &K, write: Write<V>) -> Result<WriteOutcome<V>> {
        // The store's timeout covers the encoding too (see `raw::call_started`).
        let started = std::time::Instant::now();
        let raw_key = self.raw_key(key)?;
        // A write that wants the key absent may have to heal it (see
        // `remove_undecodable`): its value is kept (a shared handle, not its bytes) to
        // be sent again, and, refused, its reply carries the bytes it found, so that
        // whether they decode is known without another round trip.
        let retry = match (&write.condition, &write.action) {
            (Condition::IfAbsent, Action::Put { value, ttl }) => Some(Write {
                condition: Condition::IfAbsent,
                action: Action::Put {
                    value: value.clone(),
                    ttl: *ttl,
                },
                want_previous: true,
            }),
            _ => None,
        };
        let mut raw_write = self.raw_write(key, write)?;
        let wanted = raw_write.want_previous;
        raw_write.want_previous |= retry.is_some();
        let written = super::raw::started_at(started, self.raw.write(&raw_key, raw_write));
        let mut outcome = self.after(written.await)?;
        if let Some(retry) = retry
            && !outcome.applied
            && outcome.existed
        {
            let freed = match outcome.previous.take() {
                Some(found) if self.decode_value(&found).is_some() => false,
                Some(found) => self.remove_exactly(&raw_key, found).await?,
                None => self.remove_undecodable(&raw_key).await?,
            };
            if freed {
                let retry = self.raw_write(key, retry)?;
                outcome = self.after(self.raw.write(&raw_key, retry).await)?;
            }
        }
        let previous = outcome.previous.filter(|_| wanted);
        Ok(WriteOutcome {
            existed: outcome.existed,
            applied: outcome.applied,
            previous: previous.and_then(|blob| self.decode_value(&blob)),
        })
    }

    fn plain_reads(&self) -> bool {
        self.raw.plain_reads()
    }

    async fn lease(&self, key: &K, token: &str, ttl: Duration, waited: bool) -> Result<Lease<V>> {
        let raw_key = self.raw_key(key)?;
        Ok(
            match self.after(self.raw.lease(&raw_key, token, ttl, waited).await)? {
                RawLease::Hit(blob) => match self.decode_value(&blob) {
                    Some(value) => Lease::Hit(value),
                    // Undecodable bytes are a miss (counted by `decode_value`): the load
                    // that follows replaces them, under a lease once they are gone.
                    None => {
                        self.lease_over_undecodable(&raw_key, blob, token, ttl, waited)
                            .await?
                    }
                },
                RawLease::Granted => Lease::Granted,
                RawLease::Held { remaining } => Lease::Held { remaining },
                RawLease::Released => Lease::Released,
                RawLease::Unsupported => Lease::Unsupported,
            },
        )
    }

    async fn put_leased(
        &self,
        key: &K,
        token: &str,
        value: Arc<V>,
        ttl: Option<Duration>,
    ) -> Result<LeasedPut> {
        let started = std::time::Instant::now();
        let raw_key = self.raw_key(key)?;
        let blob = self.encode(key, &value)?;
        let put = self.raw.put_leased(&raw_key, token, blob, ttl);
        self.after(super::raw::started_at(started, put).await)
    }

    async fn release_lease(&self, key: &K, token: &str) -> Result<()> {
        self.raw.release_lease(&self.raw_key(key)?, token).await
    }

    async fn put_all(&self, entries: Vec<(K, Arc<V>)>, ttl: Option<Duration>) -> Result<u64> {
        let started = std::time::Instant::now();
        let encoded = entries
            .iter()
            .map(|(k, v)| Ok((self.raw_key(k)?, self.encode(k, v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.after(super::raw::started_at(started, self.raw.put_all(encoded, ttl)).await)
    }

    async fn remove_all(&self, keys: &[K]) -> Result<u64> {
        let raw_keys = self.raw_keys(keys)?;
        self.after(self.raw.remove_all(&raw_keys).await)
    }

    async fn remove_everything(&self) -> Result<u64> {
        self.after(self.raw.remove_everything().await)
    }

    async fn clear(&self) -> Result<()> {
        self.after(self.raw.clear().await)
    }

    async fn compute(&self, key: &K, processor: &mut Processor<'_, V>) -> Result<Computed> {
        // Optimistic concurrency: read, decide, then write on the condition that the
        // entry is still what was read. Another writer in between makes the write miss
        // its condition and the processor runs again on the new value.
        let raw_key = self.raw_key(key)?;
        let stripe =
            xxhash_rust::xxh3::xxh3_64(raw_key.text.as_bytes()) as usize % COMPUTE_LOCK_STRIPES;
        let _turn = self.compute_locks[stripe].lock().await;
        for _ in 0..MAX_COMPUTE_ATTEMPTS {
            // Not an access: the processor's decision says whether it was one.
            let current_blob = self.after(self.raw.peek(&raw_key).await)?;
            let current = current_blob
                .as_ref()
                .and_then(|blob| self.decode_value(blob));
            let decision = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                processor(current.as_ref())
            }))
            .map_err(|payload| Error::panicked("entry processor", payload))?;
            let condition = match &current_blob {
                Some(blob) => RawCondition::IfEquals(blob.clone()),
                None => RawCondition::IfAbsent,
            };
            if let Some(blob) = current_blob.as_ref().filter(|_| current.is_none())
                && matches!(decision, Decision::Put(..) | Decision::Remove)
            {
                // Bytes that do not decode were absent to the processor: what it writes
                // replaces them as a creation. Those very bytes go first (a value
                // another process wrote meanwhile stays), then the processor runs
                // again on what is there now; a removal has nothing more to remove.
                self.remove_exactly(&raw_key, blob.clone()).await?;
                if matches!(decision, Decision::Remove) {
                    return Ok(Computed::Unchanged);
                }
                continue;
            }
            let (action, computed) = match (decision, current_blob.is_some()) {
                (Decision::Access, true) => {
                    // The read the processor made, as an access (JSR-107 §6.4).
                    self.after(self.raw.touch(&raw_key).await)?;
                    return Ok(Computed::Unchanged);
                }
                (Decision::Keep | Decision::Access, _) | (Decision::Remove, false) => {
                    return Ok(Computed::Unchanged);
                }
                (Decision::Put(value, ttl), existed) => (
                    RawAction::Put {
                        blob: self.encode(key, &value)?,
                        ttl,
                    },
                    if existed {
                        Computed::Updated
                    } else {
                        Computed::Created
                    },
                ),
                (Decision::Remove, true) => (RawAction::Remove, Computed::Removed),
            };
            let outcome = self.after(
                self.raw
                    .write(
                        &raw_key,
                        RawWrite {
                            condition,
                            action,
                            want_previous: false,
                        },
                    )
                    .await,
            )?;
            if outcome.applied {
                return Ok(computed);
            }
            // A creation under a zero creation expiry stores nothing (JSR-107 §6.4:
            // the entry is expired at once); the key stayed absent, so the decision
            // held and there is nothing to run again.
            if current_blob.is_none() && !outcome.existed {
                return Ok(Computed::Unchanged);
            }
        }
        Err(Error::Store(format!(
            "entry processor on cache `{}` gave up after {MAX_COMPUTE_ATTEMPTS} attempts: the entry kept changing",
            self.config.name
        )))
    }

    fn entries(&self) -> BoxStream<'_, Result<(K, Arc<V>)>> {
        self.raw
            .scan()
            .filter_map(move |blob| async move {
                match blob {
                    Err(e) => Some(Err(e)),
                    Ok(blob) => match self.config.codec.decode_entry::<K, V>(&blob) {
                        Ok((k, v)) => Some(Ok((k, Arc::new(v)))),
                        Err(e) => {
                            self.decode_failed(&e);
                            None
                        }
                    },
                }
            })
            .boxed()
    }

    async fn len(&self) -> Result<u64> {
        self.raw.len().await
    }

    async fn run_pending_tasks(&self) -> Result<()> {
        self.after(self.raw.run_pending_tasks().await)
    }

    async fn close(&self) -> Result<()> {
        self.raw.close().await
    }

    async fn destroy(&self) -> Result<()> {
        self.raw.destroy().await
    }
}

impl<K, V> std::fmt::Debug for EncodedStore<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedStore").finish_non_exhaustive()
    }
}
