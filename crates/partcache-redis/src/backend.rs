//! The [`BackendFactory`] behind `partcache_redis::install()`, and [`RedisBackend`], one
//! deployment (standalone server or cluster) that opens caches.

use std::sync::Arc;

use async_trait::async_trait;
use partcache::Result;
use partcache::store::raw::{BackendFactory, RawCacheSpec, RawStore, RemoteBackend};

use crate::batching::Batcher;
use crate::deployment::Deployment;
use crate::store::RedisStore;
use crate::url::DeploymentUrl;

/// Serves the `redis`, `rediss`, `valkey`, `valkeys`, `redis-cluster` and
/// `valkey-cluster` schemes. Registered by [`crate::install`].
#[derive(Debug, Default, Clone, Copy)]
pub struct RedisBackendFactory;

/// The schemes [`RedisBackendFactory`] serves.
pub const SCHEMES: &[&str] = &[
    "redis",
    "rediss",
    "valkey",
    "valkeys",
    "redis-cluster",
    "valkey-cluster",
];

impl BackendFactory for RedisBackendFactory {
    fn schemes(&self) -> &'static [&'static str] {
        SCHEMES
    }

    fn connect(&self, url: &str) -> Result<Arc<dyn RemoteBackend>> {
        Ok(Arc::new(RedisBackend::new(crate::url::parse(url)?)))
    }
}

/// One Redis / Valkey deployment. Connects lazily: nothing touches the network before
/// the first cache is opened.
pub struct RedisBackend {
    /// The deployment's batching queues, which hold the deployment itself.
    batcher: Arc<Batcher>,
}

impl RedisBackend {
    /// A backend for a parsed URL, whose settings may be changed in code first (a
    /// password from a secret store, TLS material from memory). Give it to
    /// [`CacheManager::with_backend`](partcache::CacheManager::with_backend): no
    /// `install()` is needed then. Does no I/O.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::time::Duration;
    ///
    /// let mut url = partcache_redis::url::parse("redis://10.0.0.1:6379?partitions=64")?;
    /// url.password = Some("from-the-secret-store".into());
    /// url.response_timeout = Duration::from_millis(250);
    /// let backend = partcache_redis::RedisBackend::new(url);
    /// let manager = partcache::CacheManager::with_backend(Arc::new(backend));
    /// assert!(!manager.is_local());
    /// # Ok::<(), partcache::Error>(())
    /// ```
    pub fn new(url: DeploymentUrl) -> RedisBackend {
        RedisBackend {
            batcher: Batcher::new(Arc::new(Deployment::new(url))),
        }
    }

    /// The deployment (a joined store reads its members' slot maps).
    pub(crate) fn deployment(&self) -> &Arc<Deployment> {
        &self.batcher.deployment
    }
}

#[async_trait]
impl RemoteBackend for RedisBackend {
    fn describe(&self) -> String {
        self.deployment().describe()
    }

    /// Opens the cache; if the deployment is unreachable (a transient error), the
    /// store is returned anyway and finishes opening on first use once the server
    /// answers (see `store::OpenState`); other errors (a layout mismatch) fail.
    async fn open(&self, spec: RawCacheSpec) -> Result<Arc<dyn RawStore>> {
        crate::events::start_resubscriber(self.deployment());
        Ok(Arc::new(
            RedisStore::open(self.batcher.clone(), spec).await?,
        ))
    }

    fn default_partitions(&self) -> u16 {
        self.deployment()
            .url
            .partitions
            .unwrap_or(partcache::partition::DEFAULT_PARTITIONS)
    }

    fn default_lease_ttl(&self) -> Option<std::time::Duration> {
        self.deployment().url.lease_ttl
    }
}

impl std::fmt::Debug for RedisBackend {
    // Not the URL: it may hold a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend").finish_non_exhaustive()
    }
}
