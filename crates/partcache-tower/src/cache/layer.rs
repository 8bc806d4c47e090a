//! [`CacheLayer`] and its builder.

use std::sync::Arc;
use std::time::Duration;

use partcache::adapter::AdapterCounters;
use partcache::{Cache, CacheKey, CacheValue};
use tower_layer::Layer;

use super::policy::StoreAll;
use super::service::CacheService;
use super::shared::{Shared, Weigher};
use super::stats::LayerStats;
use crate::backlog::{Backlog, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES};
use partcache::flight::Flights;

/// Store calls slower than this fail open by default: long enough for a healthy
/// remote store under load, short enough that an outage adds little latency.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(250);

/// A tower [`Layer`] that caches its service's responses in a [`partcache::Cache`].
///
/// Per request: the key extractor derives a key (or declines: the request bypasses the
/// cache); a hit is answered from the cache without calling the service; concurrent
/// misses of one key call the service once and share its response; a response the
/// predicate accepts is stored (without delaying the caller). A store that errors or
/// does not answer within the store timeout never fails a request: the service is
/// called, the error is logged with `tracing` and counted ([`CacheLayer::stats`]).
///
/// Cheap to clone (one `Arc`); all clones and the services they make share the cache,
/// the in-flight misses and the counters.
pub struct CacheLayer<E, K, V, P = StoreAll> {
    shared: Arc<Shared<E, K, V, P>>,
}

impl<E, K, V, P> Clone for CacheLayer<E, K, V, P> {
    fn clone(&self) -> Self {
        CacheLayer {
            shared: self.shared.clone(),
        }
    }
}

impl<E, K, V, P> std::fmt::Debug for CacheLayer<E, K, V, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayer")
            .field("cache", &self.shared.cache)
            .field("store_timeout", &self.shared.store_timeout)
            .finish_non_exhaustive()
    }
}

impl<E, K: CacheKey, V: CacheValue> CacheLayer<E, K, V, StoreAll> {
    /// A layer with the default settings: every response is stored, store timeout
    /// [`DEFAULT_STORE_TIMEOUT`].
    pub fn new(cache: Cache<K, V>, extractor: E) -> Self {
        Self::builder(cache, extractor).build()
    }

    /// A builder, one method per setting.
    pub fn builder(cache: Cache<K, V>, extractor: E) -> CacheLayerBuilder<E, K, V, StoreAll> {
        CacheLayerBuilder {
            cache,
            extractor,
            predicate: StoreAll,
            store_timeout: DEFAULT_STORE_TIMEOUT,
            max_pending: DEFAULT_MAX_PENDING,
            max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
            weigher: Arc::new(|_: &V| std::mem::size_of::<V>()),
        }
    }
}

impl<E, K, V, P> CacheLayer<E, K, V, P> {
    /// A snapshot of the counters (hits, misses, coalesced misses, store errors, ...).
    pub fn stats(&self) -> LayerStats {
        LayerStats {
            cache: self.shared.counters.snapshot(),
            backlog: self.shared.backlog.stats(),
        }
    }

    /// Removes `key`'s entry and detaches a miss of it still in progress, so a response
    /// computed before this call is not stored after it. Returns whether an entry was
    /// removed. Errors are the store's (no fail-open here: the caller asked for it).
    pub async fn invalidate(&self, key: &K) -> partcache::Result<bool>
    where
        K: CacheKey,
        V: CacheValue,
    {
        self.shared.flights.cancel(key);
        Ok(self.shared.cache.get_and_remove(key).await?.is_some())
    }

    /// The cache the layer stores into.
    pub fn cache(&self) -> &Cache<K, V> {
        &self.shared.cache
    }
}

impl<S, E, K, V, P> Layer<S> for CacheLayer<E, K, V, P> {
    type Service = CacheService<S, E, K, V, P>;

    fn layer(&self, inner: S) -> Self::Service {
        CacheService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// Builds a [`CacheLayer`]; obtained from [`CacheLayer::builder`].
pub struct CacheLayerBuilder<E, K, V, P> {
    cache: Cache<K, V>,
    extractor: E,
    predicate: P,
    store_timeout: Duration,
    max_pending: usize,
    max_pending_bytes: usize,
    weigher: Weigher<V>,
}

impl<E, K: CacheKey, V: CacheValue, P> CacheLayerBuilder<E, K, V, P> {
    /// Stores only the responses `predicate` accepts (default: all). A closure
    /// `Fn(&Response) -> bool` or any [`StorePredicate`](super::StorePredicate).
    pub fn store_when<P2>(self, predicate: P2) -> CacheLayerBuilder<E, K, V, P2> {
        CacheLayerBuilder {
            cache: self.cache,
            extractor: self.extractor,
            predicate,
            store_timeout: self.store_timeout,
            max_pending: self.max_pending,
            max_pending_bytes: self.max_pending_bytes,
            weigher: self.weigher,
        }
    }

    /// Most store writes left running after their responses were returned (default
    /// [`DEFAULT_MAX_PENDING`](crate::backlog::DEFAULT_MAX_PENDING)). A response that
    /// finds the limit reached is returned as usual but not stored, and counted in
    /// [`BacklogStats::stores_dropped`](crate::backlog::BacklogStats::stores_dropped) (and the
    /// [`DROPPED_METRIC`](crate::backlog::DROPPED_METRIC) counter): a flood of
    /// unique keys costs at most this many tasks. On the local store writes finish
    /// before the response is returned, so only concurrent requests count.
    pub fn max_pending_stores(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }

    /// Most bytes the pending store writes hold together (default
    /// [`DEFAULT_MAX_PENDING_BYTES`](crate::backlog::DEFAULT_MAX_PENDING_BYTES)), as
    /// the [`pending_weigher`](Self::pending_weigher) counts them.
    pub fn max_pending_store_bytes(mut self, max: usize) -> Self {
        self.max_pending_bytes = max;
        self
    }

    /// How many bytes a stored value holds (default: its inline size,
    /// `size_of::<V>()`, which leaves out what it points to; give a weigher when
    /// values own large buffers).
    pub fn pending_weigher(
        mut self,
        weigher: impl Fn(&V) -> usize + Send + Sync + 'static,
    ) -> Self {
        self.weigher = Arc::new(weigher);
        self
    }

    /// How long a store read or write may take before the layer gives up on it and
    /// calls the service (default [`DEFAULT_STORE_TIMEOUT`]).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.store_timeout = timeout;
        self
    }

    /// The layer.
    pub fn build(self) -> CacheLayer<E, K, V, P> {
        let backlog = Arc::new(Backlog::new(
            self.cache.name(),
            self.max_pending,
            self.max_pending_bytes,
        ));
        CacheLayer {
            shared: Arc::new(Shared {
                local: self.cache.is_local(),
                backlog,
                weigher: self.weigher,
                cache: self.cache,
                extractor: self.extractor,
                predicate: self.predicate,
                store_timeout: self.store_timeout,
                flights: Arc::new(Flights::new()),
                counters: AdapterCounters::default(),
            }),
        }
    }
}

impl<E, K, V, P> std::fmt::Debug for CacheLayerBuilder<E, K, V, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheLayerBuilder")
            .field("store_timeout", &self.store_timeout)
            .field("max_pending", &self.max_pending)
            .field("max_pending_bytes", &self.max_pending_bytes)
            .finish_non_exhaustive()
    }
}
