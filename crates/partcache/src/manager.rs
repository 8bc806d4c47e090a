//! [`CacheManager`]: named caches over one backend chosen by URL.

use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::any_cache::AnyCache;
use crate::cache::{Cache, CacheInner, CacheKey, CacheValue, LocalChecks};
use crate::codec::Codec;
use crate::config::{
    CacheConfig, DEFAULT_EVENT_CAPACITY, DEFAULT_LEASE_TTL, DEFAULT_MAX_VALUE_BYTES, ManagerConfig,
    NearCache,
};
use crate::error::{Error, Result};
use crate::event::EventSender;
use crate::expiry::{Custom, CustomExpiry, ExpiryPolicy, ExpirySettings};
use crate::flight::Flights;
use crate::loader::{CacheLoader, CacheWriter};
use crate::partition::{HashingPolicy, PartitionMap};
use crate::stats::StatsCounters;
use crate::store::Store;
use crate::store::encoded::{EncodedConfig, EncodedStore};
use crate::store::local::{LocalConfig, LocalStore, Weigher};
use crate::store::near::NearStore;
use crate::store::raw::{ListenerProbe, RawCacheSpec, RemoteBackend, backend_for};

/// The environment variable [`CacheManager::from_env`] reads.
pub const URL_ENV: &str = "PARTCACHE_URL";

/// Key-lock stripes for caches with a writer: enough that unrelated keys rarely wait
/// on each other, few enough to cost nothing.
const KEY_LOCK_STRIPES: usize = 256;

enum Backend {
    Memory,
    Remote(Arc<dyn RemoteBackend>),
}

struct OpenCache {
    /// Tells this build of the cache from a later one of the same name.
    id: u64,
    config: CacheConfig,
    handle: Box<dyn Any + Send + Sync>,
    /// The same cache, typeless, for [`CacheManager::caches`].
    any: Arc<dyn AnyCache>,
    /// Destroys the cache (typeless), for [`CacheManager::destroy_cache`].
    destroy: Box<dyn Fn() -> futures::future::BoxFuture<'static, Result<()>> + Send + Sync>,
}

/// Ids of [`OpenCache`]s.
static NEXT_OPEN_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct ManagerInner {
    url: String,
    backend: Backend,
    config: ManagerConfig,
    open: Mutex<HashMap<String, OpenCache>>,
}

/// Named caches over one backend, chosen by URL: `memory://` (embedded, the default) or
/// a remote scheme registered by a backend crate (`redis://`, `redis-cluster://`, ...).
/// Cheap to clone.
///
/// ```
/// # tokio_test_block_on(async {
/// use partcache::{CacheManager, ExpiryPolicy};
/// use std::time::Duration;
///
/// let manager = CacheManager::from_url("memory://")?;
/// let users = manager
///     .cache::<u64, String>("users")
///     .expiry(ExpiryPolicy::Accessed(Duration::from_secs(300)))
///     .max_entries(100_000)
///     .build()
///     .await?;
/// users.put(7, "alice".to_string()).await?;
/// assert_eq!(users.get(&7).await?.as_deref().map(String::as_str), Some("alice"));
/// # Ok::<(), partcache::Error>(()) });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct CacheManager {
    inner: Arc<ManagerInner>,
}

impl std::fmt::Debug for CacheManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheManager")
            .field("url", &crate::mask_url(&self.inner.url))
            .finish_non_exhaustive()
    }
}

fn scheme_of(url: &str) -> Result<&str> {
    let (scheme, _) = url.split_once("://").ok_or_else(|| {
        Error::Config(format!(
            "cache URL `{}` has no scheme (expected e.g. `memory://` or `redis://host:6379`)",
            crate::mask_url(url)
        ))
    })?;
    if scheme.is_empty() {
        return Err(Error::Config(format!(
            "cache URL `{}` has an empty scheme",
            crate::mask_url(url)
        )));
    }
    Ok(scheme)
}

fn memory_backend(url: &str) -> Result<Backend> {
    let rest = &url["memory://".len()..];
    let (host, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !host.is_empty() && host != "/" {
        let url = crate::mask_url(url);
        let host = url["memory://".len()..]
            .split(['?', '/'])
            .next()
            .unwrap_or("");
        return Err(Error::Config(format!(
            "`memory://` takes no host, got `{host}` in `{url}`"
        )));
    }
    if let Some(param) = query.split('&').find(|p| !p.is_empty()) {
        let url = crate::mask_url(url);
        return Err(Error::Config(format!(
            "unknown parameter `{param}` in `{url}`: `memory://` takes no parameters (configure caches with the builder or a config file)"
        )));
    }
    Ok(Backend::Memory)
}

/// `$PARTCACHE_URL`, `None` when it is unset.
fn url_from_env() -> Result<Option<String>> {
    url_from_var(std::env::var(URL_ENV))
}

/// The URL a read of `$PARTCACHE_URL` gives. The value is left out of the error: it
/// may hold a password.
fn url_from_var(read: std::result::Result<String, std::env::VarError>) -> Result<Option<String>> {
    match read {
        Ok(url) => Ok(Some(url)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::Config(format!(
            "`{URL_ENV}` is set but is not valid Unicode: set it to a backend URL (`redis://host:6379`, `memory://`) or unset it"
        ))),
    }
}

impl CacheManager {
    /// A manager over the backend `url` names. Does no I/O: remote backends connect
    /// when the first cache is built. Unknown schemes and bad parameters are
    /// [`Error::Config`] errors naming the bad part; an unknown scheme's error lists the
    /// registered schemes and the nearest one (and asks for `partcache_redis::install()`
    /// only when no Redis scheme is registered).
    pub fn from_url(url: &str) -> Result<Self> {
        Self::with_config(url, ManagerConfig::default())
    }

    /// A manager over `$PARTCACHE_URL`, or `memory://` when it is unset. A value that
    /// is not valid Unicode is an [`Error::Config`] naming the variable (not a silent
    /// `memory://`, which would give each process a private cache).
    pub fn from_env() -> Result<Self> {
        let url = url_from_env()?.unwrap_or_else(|| "memory://".to_string());
        Self::from_url(&url)
    }

    /// A manager from a TOML configuration (see [`crate::config`]). `$PARTCACHE_URL`
    /// overrides the file's `url`; set but not valid Unicode, it is an
    /// [`Error::Config`], as for [`CacheManager::from_env`].
    pub fn from_config_str(toml: &str) -> Result<Self> {
        let config = ManagerConfig::from_toml(toml)?;
        let url = url_from_env()?
            .or_else(|| config.url.clone())
            .unwrap_or_else(|| "memory://".to_string());
        Self::with_config(&url, config)
    }

    /// [`CacheManager::from_config_str`] on a file's contents.
    pub fn from_config_file(path: impl AsRef<std::path::Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Self::from_config_str(&text)
    }

    /// A manager over a backend value built in code rather than named by a URL: a
    /// deployment with settings a URL cannot carry (a TLS configuration from memory,
    /// say), or a backend of the user's own. [`CacheManager::url`] is then the
    /// backend's [`describe`](RemoteBackend::describe). Does no I/O, like
    /// [`CacheManager::from_url`]; no registration (`install()`) is needed.
    ///
    /// `partcache_redis::RedisBackend::new` builds a Redis / Valkey backend from a
    /// parsed URL whose settings can be changed in code first; its page has an example.
    pub fn with_backend(backend: Arc<dyn RemoteBackend>) -> Self {
        Self::with_backend_and_config(backend, ManagerConfig::default())
    }

    /// [`CacheManager::with_backend`], with per-cache settings from a configuration (see
    /// [`crate::config`]; its `url` is ignored: the backend is given).
    pub fn with_backend_and_config(backend: Arc<dyn RemoteBackend>, config: ManagerConfig) -> Self {
        CacheManager {
            inner: Arc::new(ManagerInner {
                url: backend.describe(),
                backend: Backend::Remote(backend),
                config,
                open: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub(crate) fn with_config(url: &str, config: ManagerConfig) -> Result<Self> {
        let url = url.trim();
        let backend = match scheme_of(url)? {
            "memory" => memory_backend(url)?,
            scheme => Backend::Remote(backend_for(scheme)?.connect(url)?),
        };
        Ok(CacheManager {
            inner: Arc::new(ManagerInner {
                url: url.to_string(),
                backend,
                config,
                open: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The backend URL, as given: with its credentials, if any (print
    /// [`mask_url`](crate::mask_url) of it, as this manager's `Debug` does).
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// Whether `other` is a clone of this manager (and so shares its caches).
    pub fn is_same_manager(&self, other: &CacheManager) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// `true` on the embedded store.
    pub fn is_local(&self) -> bool {
        matches!(self.inner.backend, Backend::Memory)
    }

    /// Starts building (or reopening) the cache `name`, with the configuration's
    /// settings for it (see [`crate::config`]) as the starting point; the builder's
    /// methods override them. Cheap: no I/O until [`CacheBuilder::build`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use partcache::{CacheManager, ExpiryPolicy};
    ///
    /// let manager = CacheManager::from_config_str(r#"
    ///     [caches.sessions]
    ///     expiry = { policy = "accessed", duration = "30m" }
    /// "#)?;
    /// // The file's expiry, and a bound set in code.
    /// let sessions = manager.cache::<String, u64>("sessions").max_entries(10_000).build().await?;
    /// sessions.put("s1".into(), 7).await?;
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub fn cache<K: CacheKey, V: CacheValue>(&self, name: &str) -> CacheBuilder<K, V> {
        let config = self
            .inner
            .config
            .caches
            .get(name)
            .cloned()
            .unwrap_or_default();
        CacheBuilder {
            manager: self.clone(),
            name: name.to_string(),
            config,
            loader: None,
            read_through: true,
            custom_expiry: None,
            writer: None,
            weigher: None,
            _types: PhantomData,
        }
    }

    /// Names of the caches built so far.
    pub fn cache_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.open.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// Every cache built so far, sorted by name, whatever their key and value types
    /// (for dashboards and exporters; see [`AnyCache`]). Caches that adapters open for
    /// themselves (HTTP responses, ORM results) are included.
    pub fn caches(&self) -> Vec<Arc<dyn AnyCache>> {
        let open = self.inner.open.lock();
        let mut caches: Vec<_> = open.values().map(|open| open.any.clone()).collect();
        drop(open);
        caches.sort_by(|a, b| a.name().cmp(b.name()));
        caches
    }

    /// Pushes every cache's statistics to the `metrics` facade
    /// ([`Cache::publish_metrics`]); call it periodically, or before each scrape.
    pub fn publish_metrics(&self) {
        for cache in self.caches() {
            cache.publish_metrics();
        }
    }

    /// Destroys the cache `name` (JSR-107 §4.1.2 `CacheManager.destroyCache`): removes
    /// its entries and every record the store keeps for it (on a Redis store its layout
    /// record too, so that it can be built again with other settings), for every
    /// process; closes it in this process ([`Cache::close`]: further calls on it fail
    /// with [`Error::Closed`]) and forgets it here. Other processes' handles are not
    /// closed: a write through one recreates the entry.
    ///
    /// A cache not built in this process is opened with this manager's settings for
    /// `name` (its configuration file's, or the defaults) to be destroyed: a store that
    /// recorded another layout (partition count, codec) answers [`Error::Mismatch`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let cache = manager.cache::<u32, u32>("destroy-doc").build().await?;
    /// cache.put(1, 1).await?;
    /// manager.destroy_cache("destroy-doc").await?;
    /// assert!(cache.is_closed());
    /// let again = manager.cache::<u32, u32>("destroy-doc").build().await?;
    /// assert_eq!(again.len().await?, 0);
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub async fn destroy_cache(&self, name: &str) -> Result<()> {
        let destroy = self
            .inner
            .open
            .lock()
            .get(name)
            .map(|open| (open.destroy)());
        if let Some(destroy) = destroy {
            return destroy.await;
        }
        match &self.inner.backend {
            // Nothing outlives the process on the embedded store.
            Backend::Memory => Ok(()),
            Backend::Remote(_) => {
                // Any key and value types do: the store holds bytes.
                let cache = self.cache::<String, Vec<u8>>(name).build().await?;
                cache.destroy().await
            }
        }
    }

    /// An already built cache, if `name` was built with these types.
    pub fn get_cache<K: CacheKey, V: CacheValue>(&self, name: &str) -> Option<Cache<K, V>> {
        self.inner
            .open
            .lock()
            .get(name)
            .and_then(|open| open.handle.downcast_ref::<Cache<K, V>>().cloned())
    }
}

/// Builds one cache; one method per setting. Obtained from [`CacheManager::cache`].
pub struct CacheBuilder<K, V> {
    manager: CacheManager,
    name: String,
    config: CacheConfig,
    loader: Option<Arc<dyn CacheLoader<K, V>>>,
    read_through: bool,
    custom_expiry: Option<Arc<dyn CustomExpiry>>,
    writer: Option<Arc<dyn CacheWriter<K, V>>>,
    weigher: Option<Weigher<K, V>>,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: CacheKey, V: CacheValue> CacheBuilder<K, V> {
    /// The expiry policy (default: eternal). A duration longer than
    /// [`crate::expiry::LONGEST_DEADLINE`] (such as `Duration::MAX`) sets no deadline:
    /// the policy is then eternal.
    pub fn expiry(mut self, policy: ExpiryPolicy) -> Self {
        self.config.expiry = Some(policy);
        self
    }

    /// A custom expiry policy (JCache's `ExpiryPolicy` interface), which replaces
    /// [`CacheBuilder::expiry`]: see [`CustomExpiry`]. It works on every store, and
    /// every store asks it only what an operation needs, as JSR-107 §6.4's table says
    /// (a creation's duration for a new entry, an access's for a read of a present
    /// one, an update's for a write of a present entry, nothing for a miss, a removal
    /// or `contains_key`), once per entry. Only the server knows which one applies on
    /// a Redis store: a call there first goes without durations, and one that needs a
    /// duration goes again with it (a second round trip, for such caches only). Like
    /// the loader, it is not part of the cache's settings: reopening the cache returns
    /// it as built. A cache with one cannot have a near cache (an access may move its
    /// deadline).
    pub fn expiry_policy(mut self, policy: impl CustomExpiry) -> Self {
        self.custom_expiry = Some(Arc::new(policy));
        self
    }

    /// Expire entries neither read nor written for this long (combines with the policy).
    /// One longer than [`crate::expiry::LONGEST_DEADLINE`] (such as `Duration::MAX`) is
    /// no max-idle.
    pub fn max_idle(mut self, idle: Duration) -> Self {
        self.config.max_idle = Some(idle);
        self
    }

    /// Evict (least recently used first) beyond this many entries. On a partitioned
    /// store the budget is split evenly over partitions.
    pub fn max_entries(mut self, max: u64) -> Self {
        self.config.max_entries = Some(max);
        self
    }

    /// Local store only (a remote store refuses it at build): evict beyond
    /// `max_weight` total weight, weighing entries with `weigher` (instead of
    /// `max_entries`).
    pub fn weigher(
        mut self,
        max_weight: u64,
        weigher: impl Fn(&K, &V) -> u32 + Send + Sync + 'static,
    ) -> Self {
        self.config.max_weight = Some(max_weight);
        self.weigher = Some(Arc::new(weigher));
        self
    }

    /// The value codec for remote stores (default: postcard).
    pub fn codec(mut self, codec: Codec) -> Self {
        self.config.codec = Some(codec);
        self
    }

    /// Number of partitions on a partitioned store (default 231, at least 3), fixed for
    /// the cache's life.
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.config.partitions = Some(partitions);
        self
    }

    /// Custom hashing rules: regexes with a named group `tag`, tried in order, anchored
    /// at the key's start; a key no rule matches is rejected. A store that several
    /// processes share records the rules: a process opening the cache with other ones
    /// is refused ([`crate::LayoutMismatch::Hashing`]).
    pub fn hashing_rules<I, S>(mut self, rules: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.hashing_rules = Some(rules.into_iter().map(Into::into).collect());
        self
    }

    /// Largest encoded entry accepted (default 16 MiB). Checked on every store: on the
    /// local store only when set explicitly, since measuring costs an encoding.
    pub fn max_value_bytes(mut self, limit: usize) -> Self {
        self.config.max_value_bytes = Some(limit);
        self
    }

    /// Events buffered per subscriber (default 1024, at most
    /// [`crate::config::MAX_EVENT_CAPACITY`]: the buffer is allocated when the cache is
    /// built; `build()` refuses a larger one with [`Error::Config`]).
    pub fn event_capacity(mut self, capacity: usize) -> Self {
        self.config.event_capacity = Some(capacity);
        self
    }

    /// Publish events to other processes on remote stores (default: on).
    pub fn publish_events(mut self, publish: bool) -> Self {
        self.config.publish_events = Some(publish);
        self
    }

    /// A near cache: a local copy of decoded values in front of a remote store, kept
    /// coherent by the store's invalidation feed (see [`NearCache`] for the guarantee
    /// and where it applies). A configuration error on `memory://`, with an expiry that
    /// reads extend (`Accessed`, `Touched`, `max_idle`), and with
    /// `publish_events(false)`.
    pub fn near_cache(mut self, near: NearCache) -> Self {
        self.config.near_cache = Some(near);
        self
    }

    /// How long a load's lease lasts on a remote store (default 5 s, see
    /// [`crate::config::DEFAULT_LEASE_TTL`]; ignored on `memory://`).
    ///
    /// On a store shared by several processes, the first caller (of any process) to
    /// miss a key while loading it (`get_or_load`, `get_with`, a read-through `get`)
    /// takes the key's lease and runs the loader; callers of other processes wait for
    /// its value instead of loading too, and a write or removal of the key by anyone
    /// while it loads invalidates the lease, so the loaded (by then stale) value is
    /// not stored. The lease bounds both sides: waiters wait at most this long for a
    /// holder that died, and a load that takes longer still returns its value but does
    /// not store it. Choose it above your slowest load. Zero turns leases off: each
    /// process then loads a missing key once for itself, as on `memory://`. A lease
    /// lasts at most an hour: a longer time is taken as an hour.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let users = manager
    ///     .cache::<u64, String>("users-lease")
    ///     .lease_ttl(Duration::from_secs(2))
    ///     .build()
    ///     .await?;
    /// assert_eq!(users.get_with(&1, |id| async move { format!("user {id}") }).await?.as_str(), "user 1");
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.config.lease_ttl = Some(ttl);
        self
    }

    /// A read-through loader for misses of `get`, `get_all` and entry processors, and
    /// for [`Cache::load_all`].
    pub fn loader(mut self, loader: impl CacheLoader<K, V>) -> Self {
        self.loader = Some(Arc::new(loader));
        self
    }

    /// Whether misses load through the loader (default: on). Off, only
    /// [`Cache::load_all`] calls the loader (JCache's `setReadThrough(false)`).
    pub fn read_through(mut self, read_through: bool) -> Self {
        self.read_through = read_through;
        self
    }

    /// A write-through writer called before every change.
    pub fn writer(mut self, writer: impl CacheWriter<K, V>) -> Self {
        self.writer = Some(Arc::new(writer));
        self
    }

    /// Builds the cache, or returns the already built one of that name.
    ///
    /// **Who waits, and what it costs.** On `memory://` nothing leaves the process. On a
    /// remote store the first build of a name in this process makes one round trip
    /// that records (or checks) the cache's layout in the store and loads the server
    /// functions if a node lacks them; a store that cannot be reached does not fail the
    /// build: the cache opens lazily, and its calls fail with a transient error until
    /// the store answers. Tasks that build the same name at once each wait for their
    /// own round trip; the first to finish registers the cache and the others get that
    /// handle. A rebuild of a name already built returns the handle at once (no I/O).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use partcache::{CacheManager, Error};
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let a = manager.cache::<u64, String>("users").max_entries(1_000).build().await?;
    /// let b = manager.cache::<u64, String>("users").max_entries(1_000).build().await?;
    /// a.put(1, "ada".to_string()).await?;
    /// assert_eq!(b.get(&1).await?.as_deref().map(String::as_str), Some("ada")); // one cache
    /// // Other settings for a name already built are a mistake, not a second cache.
    /// let other = manager.cache::<u64, String>("users").max_entries(5).build().await;
    /// assert!(matches!(other, Err(Error::Config(_))));
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for settings that contradict each other or the store (a near
    /// cache on `memory://`, a weigher or a `max_weight` on a remote store, fewer than
    /// 3 partitions),
    /// for a name already built with other types or settings, and for a store that
    /// refuses the connection for good (wrong password, TLS to a plain-text server).
    /// [`Error::Mismatch`] for a store that holds the cache with another layout
    /// (partition count, codec).
    pub async fn build(self) -> Result<Cache<K, V>> {
        let manager = self.manager.inner.clone();
        let mut config = self.config.or(&manager.config.defaults);
        config.validate(&self.name)?;
        let expiry = ExpirySettings {
            custom: self.custom_expiry.clone().map(Custom),
            ..config.expiry_settings()
        };
        config.near_cache = near_cache_for(
            &self.name,
            &config,
            &expiry,
            self.config.near_cache.is_some(),
            matches!(manager.backend, Backend::Memory),
        )?;
        if let Some(open) = manager.open.lock().get(&self.name) {
            return reopen(&self.name, open, &config);
        }
        let stats = Arc::new(StatsCounters::named(&self.name));
        let events = EventSender::new(config.event_capacity.unwrap_or(DEFAULT_EVENT_CAPACITY));
        let hashing = config.hashing_policy()?;
        let (store, encoded, local_checks, local): (Arc<dyn Store<K, V>>, _, _, _) =
            match &manager.backend {
                Backend::Memory => {
                    let store = Arc::new(LocalStore::new(LocalConfig {
                        expiry: expiry.clone(),
                        max_entries: config.max_entries,
                        weigher: self.weigher,
                        max_weight: config.max_weight,
                        stats: stats.clone(),
                        events,
                    })?);
                    let checks = LocalChecks {
                        hashing: matches!(hashing, HashingPolicy::Custom(_)).then_some(hashing),
                        max_value_bytes: config.max_value_bytes,
                        codec: config.codec.unwrap_or_default(),
                    };
                    let checks = (checks.hashing.is_some() || checks.max_value_bytes.is_some())
                        .then_some(checks);
                    (store.clone(), None, checks, Some(store))
                }
                Backend::Remote(backend) => {
                    check_no_weight_bound(&self.name, &config, self.weigher.is_some(), &**backend)?;
                    let partitions = PartitionMap::new(
                        &self.name,
                        config
                            .partitions
                            .unwrap_or_else(|| backend.default_partitions()),
                    )?;
                    let codec = config.codec.unwrap_or_default();
                    let raw = backend
                        .open(RawCacheSpec {
                            name: self.name.clone(),
                            partitions: partitions.clone(),
                            hashing: hashing.clone(),
                            expiry: expiry.clone(),
                            max_entries: config.max_entries,
                            codec,
                            publish_events: config.publish_events.unwrap_or(true),
                            stats: stats.clone(),
                            listened: {
                                let events = events.clone();
                                ListenerProbe::new(move || events.is_listened())
                            },
                        })
                        .await?;
                    let encoded = EncodedStore::new(
                        raw,
                        EncodedConfig {
                            name: self.name.clone(),
                            codec,
                            partitions,
                            hashing,
                            max_value_bytes: Some(
                                config.max_value_bytes.unwrap_or(DEFAULT_MAX_VALUE_BYTES),
                            ),
                            stats: stats.clone(),
                            events,
                        },
                    );
                    // The near cache wraps the encoded store; `encoded` stays the encoded
                    // store itself, for the raw store and its reports.
                    let store: Arc<dyn Store<K, V>> = match config.near_cache {
                        Some(near) => NearStore::new(encoded.clone(), near).await?,
                        None => encoded.clone(),
                    };
                    (store, Some(encoded), None, None)
                }
            };
        let id = NEXT_OPEN_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key_locks = self.writer.as_ref().map(|_| {
            (0..KEY_LOCK_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect::<Vec<_>>()
                .into_boxed_slice()
        });
        let cache = Cache {
            inner: Arc::new(CacheInner {
                name: self.name.clone(),
                store,
                local,
                encoded,
                stats,
                loader: self.loader,
                read_through: self.read_through,
                writer: self.writer,
                flights: Arc::new(Flights::new()),
                lease_ttl: config
                    .lease_ttl
                    .or(match &manager.backend {
                        // One process: the lease only keeps a load's value out after a
                        // removal (`LocalStore::lease`).
                        Backend::Memory => None,
                        Backend::Remote(backend) => backend.default_lease_ttl(),
                    })
                    .unwrap_or(DEFAULT_LEASE_TTL),
                key_locks,
                local_checks,
                closed: std::sync::atomic::AtomicBool::new(false),
                release: Some(release(&manager, &self.name, id)),
            }),
        };
        let mut open = manager.open.lock();
        // Another task may have built the same cache while this one awaited the store.
        if let Some(existing) = open.get(&self.name) {
            return reopen(&self.name, existing, &config);
        }
        let destroyed = cache.clone();
        open.insert(
            self.name,
            OpenCache {
                id,
                config,
                handle: Box::new(cache.clone()),
                any: Arc::new(cache.clone()),
                destroy: Box::new(move || {
                    let cache = destroyed.clone();
                    Box::pin(async move { cache.destroy().await })
                }),
            },
        );
        Ok(cache)
    }
}

/// What a cache calls when it is closed: takes the build `id` of `name` out of
/// `manager`'s open caches (a later build of the same name stays).
fn release(manager: &Arc<ManagerInner>, name: &str, id: u64) -> Box<dyn Fn() + Send + Sync> {
    let manager = Arc::downgrade(manager);
    let name = name.to_string();
    Box::new(move || {
        if let Some(manager) = manager.upgrade() {
            let mut open = manager.open.lock();
            if open.get(&name).is_some_and(|o| o.id == id) {
                open.remove(&name);
            }
        }
    })
}

/// The near cache `config` (already merged with the defaults) gets, or the error that
/// forbids it. `own`: the cache's own settings asked for it (not only `[defaults]`): a
/// near cache that cannot work is then an error, while one from the defaults is left
/// out for this cache.
/// Refuses a weight bound on a remote store: its entries are bounded by count only
/// (`max_entries`), so a weigher or a `max_weight` (set in code, in the cache's section
/// of a configuration file or in its `[defaults]`) would be ignored.
fn check_no_weight_bound(
    name: &str,
    config: &CacheConfig,
    has_weigher: bool,
    backend: &dyn RemoteBackend,
) -> Result<()> {
    if has_weigher {
        return Err(Error::Config(format!(
            "cache `{name}`: a weigher works on the local store only; use `max_entries` on {}",
            backend.describe()
        )));
    }
    if let Some(max_weight) = config.max_weight {
        return Err(Error::Config(format!(
            "cache `{name}`: `max_weight = {max_weight}` bounds the local store only (with a weigher); {} has no weight bound: remove it (from `[defaults]` too) and use `max_entries`",
            backend.describe()
        )));
    }
    Ok(())
}

fn near_cache_for(
    name: &str,
    config: &CacheConfig,
    expiry: &ExpirySettings,
    own: bool,
    local_backend: bool,
) -> Result<Option<NearCache>> {
    let Some(near) = config.near_cache else {
        return Ok(None);
    };
    let reason = if local_backend {
        if !own {
            return Ok(None);
        }
        return Err(Error::Config(format!(
            "cache `{name}`: a near cache is pointless on `memory://`: the local store already keeps decoded values in this process (remove `near_cache`)"
        )));
    } else if expiry.reads_extend() {
        "its reads extend the store's expiry (an `accessed` or `touched` policy, a custom policy, or `max_idle`), and a local hit cannot slide the store's deadline without the round trip a near cache exists to avoid"
    } else if config.publish_events == Some(false) {
        "it has `publish_events = false`, and the event channel is the near cache's invalidation feed"
    } else {
        return Ok(Some(near));
    };
    if own {
        return Err(Error::Config(format!(
            "cache `{name}` cannot have a near cache: {reason}"
        )));
    }
    tracing::debug!(cache = %name, "the default near cache is skipped: {reason}");
    Ok(None)
}

fn reopen<K: CacheKey, V: CacheValue>(
    name: &str,
    open: &OpenCache,
    config: &CacheConfig,
) -> Result<Cache<K, V>> {
    let cache = open
        .handle
        .downcast_ref::<Cache<K, V>>()
        .cloned()
        .ok_or_else(|| {
            Error::Config(format!(
                "cache `{name}` is already open with other key/value types than {} / {}",
                std::any::type_name::<K>(),
                std::any::type_name::<V>()
            ))
        })?;
    if open.config != *config {
        return Err(Error::Config(format!(
            "cache `{name}` is already open with other settings ({:?}); requested {:?}",
            open.config, config
        )));
    }
    Ok(cache)
}

impl<K, V> std::fmt::Debug for CacheBuilder<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A password in a URL is never printed: not in the errors of a bad URL, nor in a
    /// manager's `Debug` (before, both quoted the URL as given).
    #[test]
    fn passwords_in_urls_are_never_printed() {
        for url in [
            "app:hunter2@localhost:6379",
            "://app:hunter2@x",
            "memory://app:hunter2@somehost",
            "memory://app:hunter2@h?max_entries=5",
        ] {
            match CacheManager::from_url(url) {
                Err(Error::Config(message)) => {
                    assert!(!message.contains("hunter2"), "{url}: {message}")
                }
                other => panic!("{url}: expected a config error, got {other:?}"),
            }
        }
        let manager = CacheManager {
            inner: Arc::new(ManagerInner {
                url: "redis://app:hunter2@h:6379".to_string(),
                backend: Backend::Memory,
                config: ManagerConfig::default(),
                open: Mutex::new(HashMap::new()),
            }),
        };
        let shown = format!("{manager:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("app:***@h:6379"),
            "{shown}"
        );
    }

    #[test]
    fn bad_urls_are_config_errors_that_name_the_bad_part() {
        let cases = [
            ("localhost:6379", "no scheme"),
            ("://x", "empty scheme"),
            ("memcached://h:11211", "`memcached`"),
            ("redis://127.0.0.1:6379", "partcache_redis::install()"),
            ("memory://somehost", "`somehost`"),
            ("memory://?max_entries=5", "`max_entries=5`"),
        ];
        for (url, expected) in cases {
            match CacheManager::from_url(url) {
                Err(Error::Config(message)) => {
                    assert!(message.contains(expected), "{url}: {message}")
                }
                other => panic!("{url}: expected a config error, got {other:?}"),
            }
        }
        assert!(CacheManager::from_url("memory://").unwrap().is_local());
        assert!(CacheManager::from_url(" memory:// ").is_ok());
    }

    #[tokio::test]
    async fn config_file_settings_apply_to_the_named_cache() {
        let manager = CacheManager::with_config(
            "memory://",
            ManagerConfig::from_toml("[caches.tiny]\nmax_entries = 2\n").unwrap(),
        )
        .unwrap();
        let tiny = manager.cache::<u32, u32>("tiny").build().await.unwrap();
        for i in 0..10 {
            tiny.put(i, i).await.unwrap();
        }
        tiny.run_pending_tasks().await.unwrap();
        assert!(tiny.len().await.unwrap() <= 2);
        assert_eq!(manager.cache_names(), ["tiny"]);
        assert!(manager.get_cache::<u32, u32>("tiny").is_some());
        assert!(manager.get_cache::<u32, String>("tiny").is_none());
    }

    #[tokio::test]
    async fn an_event_capacity_beyond_the_maximum_is_a_config_error_at_build() {
        let manager = CacheManager::from_url("memory://").unwrap();
        for capacity in [crate::config::MAX_EVENT_CAPACITY + 1, usize::MAX] {
            // Run in a task: a panic at build (the channel's own limit) is reported as
            // what it is, not as this test's failure to build.
            let built = tokio::spawn(
                manager
                    .cache::<u32, u32>("events")
                    .event_capacity(capacity)
                    .build(),
            )
            .await
            .expect("build returns");
            match built {
                Err(Error::Config(message)) => {
                    assert!(message.contains("event_capacity"), "{message}")
                }
                other => panic!("event_capacity {capacity}: {:?}", other.map(drop)),
            }
        }
        let small = manager.cache::<u32, u32>("events").event_capacity(64);
        assert!(small.build().await.is_ok());
    }

    #[tokio::test]
    async fn invalid_cache_settings_fail_the_build_with_the_setting_named() {
        let manager = CacheManager::from_url("memory://").unwrap();
        let err = manager
            .cache::<u32, u32>("c")
            .partitions(2)
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("partitions"), "{err}");
        let err = manager
            .cache::<u32, u32>("c")
            .max_entries(5)
            .weigher(10, |_, _| 1)
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("weigher"), "{err}");
        let err = manager
            .cache::<u32, u32>("c")
            .hashing_rules(["(unclosed"])
            .build()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }

    /// A remote store that is never reached: the settings are refused before it is.
    struct UnreachedBackend;

    #[async_trait::async_trait]
    impl RemoteBackend for UnreachedBackend {
        fn describe(&self) -> String {
            "a remote store".into()
        }

        async fn open(
            &self,
            _spec: crate::store::raw::RawCacheSpec,
        ) -> Result<Arc<dyn crate::store::raw::RawStore>> {
            Err(Error::Store(
                "opened despite settings it cannot honour".into(),
            ))
        }
    }

    #[tokio::test]
    async fn max_weight_without_a_weigher_from_a_file_is_refused_on_memory() {
        let manager = CacheManager::from_config_str("[caches.w]\nmax_weight = 100\n").unwrap();
        let err = manager.cache::<u32, u32>("w").build().await.unwrap_err();
        assert!(
            matches!(err, Error::Config(ref m) if m.contains("max_weight")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn max_weight_from_a_file_or_its_defaults_is_refused_on_a_remote_store() {
        for toml in [
            "[caches.w]\nmax_weight = 100\n",
            "[defaults]\nmax_weight = 100\n",
        ] {
            let manager = CacheManager::with_backend_and_config(
                Arc::new(UnreachedBackend),
                ManagerConfig::from_toml(toml).unwrap(),
            );
            match manager.cache::<u32, u32>("w").build().await {
                Err(Error::Config(m)) => {
                    assert!(m.contains("max_weight") && m.contains("max_entries"), "{m}")
                }
                Err(e) => panic!("{toml}: {e}"),
                Ok(_) => panic!("{toml}: built, `max_weight` ignored"),
            }
        }
        let weighed = CacheManager::with_backend(Arc::new(UnreachedBackend))
            .cache::<u32, u32>("w")
            .weigher(100, |_, _| 1)
            .build()
            .await;
        assert!(
            matches!(weighed, Err(Error::Config(ref m)) if m.contains("weigher")),
            "{weighed:?}"
        );
    }

    /// `from_env` and `from_config_str` read `$PARTCACHE_URL` through `url_from_var`
    /// (this process's environment is left alone: setting it needs `unsafe`).
    #[test]
    #[cfg(unix)]
    fn a_partcache_url_that_is_not_unicode_is_an_error_naming_the_variable() {
        let raw = std::os::unix::ffi::OsStringExt::from_vec(b"redis://h\xff:6379".to_vec());
        match url_from_var(Err(std::env::VarError::NotUnicode(raw))) {
            Err(Error::Config(m)) => assert!(m.contains(URL_ENV), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            url_from_var(Err(std::env::VarError::NotPresent)).unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_weigher_bounds_the_total_weight() {
        let manager = CacheManager::from_url("memory://").unwrap();
        let cache = manager
            .cache::<u32, String>("weighed")
            .weigher(100, |_, v: &String| v.len() as u32)
            .build()
            .await
            .unwrap();
        for i in 0..50 {
            cache.put(i, "x".repeat(10)).await.unwrap();
        }
        cache.run_pending_tasks().await.unwrap();
        let total: usize = futures::StreamExt::collect::<Vec<_>>(cache.entries())
            .await
            .into_iter()
            .map(|e| e.unwrap().1.len())
            .sum();
        assert!(total <= 100, "total weight {total} exceeds 100");
        assert!(cache.stats().evictions >= 40);
    }
}
