//! The byte-level SPI that remote stores (Redis, Valkey) implement, and the registry
//! that maps URL schemes to them.
//!
//! A remote store never sees typed keys or values: the core gives it each key's
//! canonical text ([`crate::key_text`]) and the partition that text hashes to
//! ([`crate::partition`]), and values as blobs already encoded with the cache's codec
//! (the blob carries the key too, so iteration and events can be decoded). Routing a
//! partition to a node, atomicity, expiry and eviction are the store's job.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use parking_lot::RwLock;
use tokio::sync::broadcast;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::event::EventKind;
use crate::expiry::ExpirySettings;
use crate::partition::{HashingPolicy, PartitionMap};
use crate::stats::StatsCounters;

use super::spi::LeasedPut;

/// A key as a remote store sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawKey {
    /// The key's canonical text (unique within the cache).
    pub text: String,
    /// The partition the text hashes to under the cache's hashing policy.
    pub partition: u16,
}

/// When a raw write applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawCondition {
    /// Always.
    Always,
    /// Only when the key has no live entry.
    IfAbsent,
    /// Only when the key has a live entry.
    IfPresent,
    /// Only when the stored blob equals these bytes.
    IfEquals(Vec<u8>),
}

/// What a raw write does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawAction {
    /// Store the blob, with an optional per-entry TTL on top of the expiry policy.
    Put {
        /// The encoded entry.
        blob: Vec<u8>,
        /// Per-entry time to live.
        ttl: Option<Duration>,
    },
    /// Remove the entry.
    Remove,
}

/// One conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawWrite {
    /// When it applies.
    pub condition: RawCondition,
    /// What it does.
    pub action: RawAction,
    /// Whether to send back the previous blob.
    pub want_previous: bool,
}

/// What [`RawStore::lease`] found for a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawLease {
    /// The key's blob (read as a get reads it).
    Hit(Vec<u8>),
    /// No value; the caller holds the lease.
    Granted,
    /// No value; another caller holds the lease for at most `remaining` more.
    Held {
        /// The lease's time left.
        remaining: Duration,
    },
    /// No value; the holder just ended its lease without one (see
    /// [`crate::store::Lease::Released`]).
    Released,
    /// The store keeps no leases.
    Unsupported,
}

/// What a raw write found and did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawWriteOutcome {
    /// The key had a live entry before.
    pub existed: bool,
    /// The condition held and the action was applied.
    pub applied: bool,
    /// The previous blob, when asked for and present.
    pub previous: Option<Vec<u8>>,
}

/// An event as a remote store publishes it, to every process attached to the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    /// What happened.
    pub kind: EventKind,
    /// The blob of the new value (`Created`, `Updated`) or of the value that went away.
    ///
    /// It may also be a *key-only* blob ([`Codec::key_only_blob`]): the blob cut after
    /// its key. Stores send these when the value is already gone, as for an entry the
    /// server itself expired before the store's reaper saw it; listeners then get the
    /// event with no value.
    pub blob: Vec<u8>,
}

/// A blob found by [`RawStore::get_all_with_deadlines`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFound {
    /// The encoded entry.
    pub blob: Vec<u8>,
    /// How long the entry had left on the store when it was read (`None`: no deadline).
    pub remaining: Option<Duration>,
}

/// How a remote store tells a near cache (`store::near`) what to drop. See
/// `docs/ARCHITECTURE.md`, "Near cache", for the guarantee this makes possible.
///
/// Every partition has a *feed*: the messages the store publishes for that partition,
/// numbered 1, 2, 3, … by the store in the same atomic step as the change they report.
/// A store calls these methods synchronously as it receives messages (never from
/// inside a call the near cache made), and quickly: they only drop local entries.
///
/// * [`entry_changed`](Self::entry_changed) / [`partition_cleared`](Self::partition_cleared):
///   message `seq` of a partition's feed.
/// * [`lost`](Self::lost): messages of these partitions may have been (or be about to be)
///   lost: a connection broke, a subscription was dropped, a failover. The near cache
///   drops their entries and serves none of them until [`resumed`](Self::resumed).
/// * [`resumed`](Self::resumed): the feed is live again (subscription confirmed) and
///   these are the partitions' current sequence numbers, read after that confirmation.
/// * [`vouched`](Self::vouched): every message the store published on these partitions
///   before the instant `at` has been delivered (e.g. a PING sent at `at` on the
///   subscription connection came back, after everything queued before it). The near
///   cache serves a partition's entries only while its latest vouch is recent enough.
pub trait InvalidationSink: Send + Sync + 'static {
    /// Message `seq` of `partition`: the entry whose blob (or key-only blob) is `blob`
    /// changed (written, removed, expired or evicted).
    fn entry_changed(&self, partition: u16, seq: u64, blob: &[u8]);
    /// Message `seq` of `partition`: every entry of the partition was dropped.
    fn partition_cleared(&self, partition: u16, seq: u64);
    /// Messages of `partitions` may have been lost.
    fn lost(&self, partitions: &[u16]);
    /// The feeds of `partitions` are live again; `seqs[i]` is `partitions[i]`'s
    /// current sequence number (0: nothing published yet); `at` was taken before the
    /// sequence numbers were read.
    fn resumed(&self, partitions: &[u16], seqs: &[u64], at: std::time::Instant);
    /// Everything published on `partitions` before `at` has been delivered.
    fn vouched(&self, partitions: &[u16], at: std::time::Instant);
}

/// Tells a remote store whether anybody in this process listens to a cache's events
/// right now (a store may then skip work that only serves local listeners, such as
/// waiting for a write's own events before returning).
#[derive(Clone)]
pub struct ListenerProbe(Arc<dyn Fn() -> bool + Send + Sync>);

impl ListenerProbe {
    /// A probe that asks `listened`.
    pub fn new(listened: impl Fn() -> bool + Send + Sync + 'static) -> ListenerProbe {
        ListenerProbe(Arc::new(listened))
    }

    /// A probe that always answers yes.
    pub fn always() -> ListenerProbe {
        ListenerProbe::new(|| true)
    }

    /// Whether anybody listens now.
    #[inline]
    pub fn is_listened(&self) -> bool {
        (self.0)()
    }
}

impl std::fmt::Debug for ListenerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ListenerProbe")
            .field(&self.is_listened())
            .finish()
    }
}

/// Everything a remote store needs to open one cache.
#[derive(Clone, Debug)]
pub struct RawCacheSpec {
    /// The cache's name (unique within a manager; namespaced in the store).
    pub name: String,
    /// The cache's partitions and their hash tags.
    pub partitions: PartitionMap,
    /// How keys are hashed to partitions (recorded beside the data by stores several
    /// processes share: processes with other rules would split a key between two
    /// partitions).
    pub hashing: HashingPolicy,
    /// Expiry policy and max-idle.
    pub expiry: ExpirySettings,
    /// Entry budget; stores may split it per partition (and must document it).
    pub max_entries: Option<u64>,
    /// The codec (recorded beside the data so a reopen with another codec is an error).
    pub codec: Codec,
    /// Whether to publish events to other processes.
    pub publish_events: bool,
    /// Shared statistics (the store counts evictions, expirations, store errors).
    pub stats: Arc<StatsCounters>,
    /// Whether the cache has listeners in this process.
    pub listened: ListenerProbe,
}

/// A remote store of one cache. See the module docs.
#[async_trait]
#[allow(clippy::len_without_is_empty)] // `len` is an approximate count, not a collection's size
pub trait RawStore: Send + Sync + 'static {
    /// A short description (`redis-cluster 127.0.0.1:7000`).
    fn describe(&self) -> String;
    /// Reads many keys (each an access for expiry); results in the order of `keys`.
    async fn get_all(&self, keys: &[RawKey]) -> Result<Vec<Option<Vec<u8>>>>;
    /// Reads one key (an access for expiry): what [`RawStore::get_all`] does for one
    /// key, which a store may do with less work (the common `get`).
    async fn get(&self, key: &RawKey) -> Result<Option<Vec<u8>>> {
        Ok(self
            .get_all(std::slice::from_ref(key))
            .await?
            .pop()
            .flatten())
    }
    /// Reads one key *without* it counting as an access (the read behind an entry
    /// processor, which decides afterwards whether it was one). The default is
    /// [`RawStore::get`]: stores whose reads move deadlines or LRU order override it.
    async fn peek(&self, key: &RawKey) -> Result<Option<Vec<u8>>> {
        self.get(key).await
    }
    /// Counts an access of one key without reading it back (an entry processor that
    /// only read the value [`RawStore::peek`] gave). The default is [`RawStore::get`];
    /// a store whose reads move nothing may do nothing.
    async fn touch(&self, key: &RawKey) -> Result<()> {
        self.get(key).await.map(drop)
    }
    /// Whether each key has a live entry, without counting as an access.
    async fn contains_all(&self, keys: &[RawKey]) -> Result<Vec<bool>>;
    /// A conditional write, atomic for that key. Not an access for expiry, but when an
    /// [`RawCondition::IfEquals`] finds another value (see [`crate::store::Store::write`]).
    async fn write(&self, key: &RawKey, write: RawWrite) -> Result<RawWriteOutcome>;
    /// Stores many entries (atomic per partition at most); returns how many were
    /// stored (an entry whose creation expiry is zero is not).
    async fn put_all(&self, entries: Vec<(RawKey, Vec<u8>)>, ttl: Option<Duration>) -> Result<u64>;
    /// Removes many keys; returns how many entries were removed.
    async fn remove_all(&self, keys: &[RawKey]) -> Result<u64>;
    /// Removes every entry with a `Removed` event each; returns how many.
    async fn remove_everything(&self) -> Result<u64>;
    /// Drops every entry without events.
    async fn clear(&self) -> Result<()>;
    /// Every live entry's blob, each an access for expiry. Weakly consistent.
    fn scan(&self) -> BoxStream<'_, Result<Vec<u8>>>;
    /// Approximate number of entries.
    async fn len(&self) -> Result<u64>;
    /// Whether a read is a plain key read, cheaper than [`RawStore::lease`] (see
    /// [`crate::store::Store::plain_reads`]). The default: no.
    fn plain_reads(&self) -> bool {
        false
    }
    /// Reads one key and, when it has no value and no live lease, grants its lease to
    /// `token` for `ttl`, atomically (see [`crate::store::Store::lease`], and `waited`
    /// there). The default keeps no leases.
    async fn lease(
        &self,
        _key: &RawKey,
        _token: &str,
        _ttl: Duration,
        _waited: bool,
    ) -> Result<RawLease> {
        Ok(RawLease::Unsupported)
    }
    /// Stores `blob` under the lease `token` if it is still valid, and ends the lease
    /// (see [`crate::store::Store::put_leased`]).
    async fn put_leased(
        &self,
        _key: &RawKey,
        _token: &str,
        _blob: Vec<u8>,
        _ttl: Option<Duration>,
    ) -> Result<LeasedPut> {
        Ok(LeasedPut::Unsupported)
    }
    /// Ends the lease `token` on `key` without storing anything.
    async fn release_lease(&self, _key: &RawKey, _token: &str) -> Result<()> {
        Ok(())
    }
    /// Events of every process attached to the cache. A call's own events are on the
    /// channel by the time the call returns; while nobody in this process listens
    /// (see [`ListenerProbe`]) the core does not wait for them, so a store may leave
    /// them out then.
    fn subscribe(&self) -> broadcast::Receiver<RawEvent>;
    /// Makes sure the events of other processes reach [`RawStore::subscribe`] from
    /// now on: a remote store need not receive them while nobody in this process asks
    /// (and its writers need not publish while no process listens). Returns once they
    /// do. The default does nothing (a store that always receives them).
    async fn listen(&self) -> Result<()> {
        Ok(())
    }
    /// Runs pending housekeeping now (e.g. reclaiming expired entries).
    async fn run_pending_tasks(&self) -> Result<()> {
        Ok(())
    }
    /// Stops what the store runs in this process for the cache (subscriptions, reaper,
    /// heartbeats); the data stays. No call follows. The default does nothing.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
    /// Removes the cache's data and its layout record from the deployment (for every
    /// process), then closes as [`RawStore::close`] does. The default removes every
    /// entry without events and closes.
    async fn destroy(&self) -> Result<()> {
        self.clear().await?;
        self.close().await
    }
    /// The store as `Any`, so its backend crate can reach backend-specific reports
    /// (such as a cluster's balance report) from a [`crate::Cache`].
    fn as_any(&self) -> &dyn std::any::Any;
    /// Reads many keys for a near cache: like [`RawStore::get_all`], and with each
    /// found blob the time it has left on the store (`None`: no deadline), measured
    /// when the store read it. Stores whose entries never expire may keep this
    /// default, which reports no deadlines.
    async fn get_all_with_deadlines(&self, keys: &[RawKey]) -> Result<Vec<Option<RawFound>>> {
        Ok(self
            .get_all(keys)
            .await?
            .into_iter()
            .map(|blob| {
                blob.map(|blob| RawFound {
                    blob,
                    remaining: None,
                })
            })
            .collect())
    }
    /// Attaches a near cache's [`InvalidationSink`]: from then on the store reports
    /// every change of the cache by any process, with per-partition sequence numbers,
    /// and vouches for its feed (see the trait) at least every `heartbeat`. Stores
    /// without an invalidation feed keep this default, an [`Error::Config`]; a near
    /// cache cannot be built on them.
    async fn attach_invalidation_sink(
        &self,
        sink: Arc<dyn InvalidationSink>,
        heartbeat: Duration,
    ) -> Result<()> {
        drop((sink, heartbeat));
        Err(Error::Config(format!(
            "{} has no invalidation feed: a near cache cannot be put in front of it",
            self.describe()
        )))
    }
    /// Partitions, entries and bytes per master. Stores that do not spread a cache over
    /// several masters keep this default, an [`Error::Config`] saying so.
    async fn balance_report(&self) -> Result<crate::balance::BalanceReport> {
        Err(Error::Config(format!(
            "{} does not partition caches over masters: no balance report",
            self.describe()
        )))
    }
    /// The circuit breakers of the nodes the store talks to (see
    /// [`crate::stats::BreakerStats`]); stores without breakers keep this default, none.
    fn breakers(&self) -> Vec<crate::stats::BreakerStats> {
        Vec::new()
    }
}

/// A connected (or lazily connecting) remote deployment that can open caches.
#[async_trait]
pub trait RemoteBackend: Send + Sync + 'static {
    /// A short description for logs.
    fn describe(&self) -> String;
    /// Opens (creating if needed) one cache's store. Fails with [`Error::Mismatch`]
    /// when the cache exists with another layout (e.g. another partition count).
    async fn open(&self, spec: RawCacheSpec) -> Result<Arc<dyn RawStore>>;
    /// The partition count to use when the URL and the cache config say nothing.
    fn default_partitions(&self) -> u16 {
        crate::partition::DEFAULT_PARTITIONS
    }
    /// The lease time to live to use when the cache config says nothing (a URL
    /// parameter); `None`: [`crate::config::DEFAULT_LEASE_TTL`].
    fn default_lease_ttl(&self) -> Option<Duration> {
        None
    }
}

tokio::task_local! {
    /// When the cache call running in this task started (see [`call_started`]).
    static CALL_STARTED: std::time::Instant;
}

/// Runs `call` (a raw store call) as part of a cache call that started at `started`,
/// before its values were encoded: a store that bounds its calls by a timeout counts
/// from there (see [`call_started`]).
pub async fn started_at<F: std::future::Future>(started: std::time::Instant, call: F) -> F::Output {
    CALL_STARTED.scope(started, call).await
}

/// When the cache call that the current raw store call is part of started (encoding
/// included), if it was run through [`started_at`]; `None` for calls of the store's
/// own (background tasks). A store whose calls have a timeout measures it from here, so
/// that the timeout covers the whole call.
pub fn call_started() -> Option<std::time::Instant> {
    CALL_STARTED.try_with(|started| *started).ok()
}

/// Makes a [`RemoteBackend`] from a URL. Registered with [`register_backend`].
pub trait BackendFactory: Send + Sync + 'static {
    /// The URL schemes it serves (`redis`, `rediss`, `redis-cluster`, ...).
    fn schemes(&self) -> &'static [&'static str];
    /// Parses the URL (whole, as given) and returns a backend. Must not block; it may
    /// connect lazily.
    fn connect(&self, url: &str) -> Result<Arc<dyn RemoteBackend>>;
}

type Registry = RwLock<HashMap<&'static str, Arc<dyn BackendFactory>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Makes `factory`'s schemes available to [`crate::CacheManager::from_url`]. Backend
/// crates call this from their `install()` function; registering a scheme again
/// replaces the earlier factory.
pub fn register_backend(factory: Arc<dyn BackendFactory>) {
    let mut map = registry().write();
    for scheme in factory.schemes() {
        map.insert(scheme, factory.clone());
    }
}

/// The factory registered for `scheme`. An unknown scheme's error lists the schemes
/// there are, suggests the nearest one, and says to install the Redis backend only
/// when the scheme is a Redis one and no Redis scheme is registered.
pub(crate) fn backend_for(scheme: &str) -> Result<Arc<dyn BackendFactory>> {
    let registry = registry().read();
    if let Some(factory) = registry.get(scheme) {
        return Ok(factory.clone());
    }
    let mut known: Vec<&str> = registry.keys().copied().collect();
    known.push("memory");
    known.sort_unstable();
    let redis_like = |s: &str| s.starts_with("redis") || s.starts_with("valkey");
    let mut message = format!(
        "unknown cache URL scheme `{scheme}`: the known schemes are {}",
        known
            .iter()
            .map(|s| format!("`{s}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if let Some(nearest) = known
        .iter()
        .map(|s| (edit_distance(scheme, s), *s))
        .filter(|(d, _)| *d <= 2)
        .min()
    {
        message.push_str(&format!(" (did you mean `{}`?)", nearest.1));
    } else if redis_like(scheme) && !known.iter().any(|s| redis_like(s)) {
        message.push_str(
            " (add the `partcache-redis` crate and call `partcache_redis::install()` at start-up)",
        );
    }
    Err(Error::Config(message))
}

/// Levenshtein distance of `a` and `b` (for "did you mean").
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;

    impl BackendFactory for Fake {
        fn schemes(&self) -> &'static [&'static str] {
            &["fakedb", "fakedb-cluster"]
        }
        fn connect(&self, _url: &str) -> Result<Arc<dyn RemoteBackend>> {
            Err(Error::Config("fake".into()))
        }
    }

    fn unknown(scheme: &str) -> String {
        match backend_for(scheme) {
            Err(Error::Config(message)) => message,
            Err(other) => panic!("{scheme}: expected a config error, got {other}"),
            Ok(_) => panic!("{scheme}: expected an error"),
        }
    }

    #[test]
    fn an_unknown_scheme_lists_the_registered_ones_and_suggests_the_nearest() {
        register_backend(Arc::new(Fake));
        let message = unknown("fakedb-clustr");
        assert!(message.contains("`fakedb`, `fakedb-cluster`"), "{message}");
        assert!(message.contains("`memory`"), "{message}");
        assert!(
            message.contains("did you mean `fakedb-cluster`?"),
            "{message}"
        );
        let message = unknown("zzz");
        assert!(!message.contains("did you mean"), "{message}");
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("redis-clustr", "redis-cluster"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
