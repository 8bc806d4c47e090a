//! The state every clone of a [`CacheLayer`](super::CacheLayer) and of its services
//! shares. Below the layer and the service: both import it, it imports neither.

use std::sync::Arc;
use std::time::Duration;

use partcache::adapter::{AdapterCounters, FailOpen};
use partcache::flight::Flights;
use partcache::{Cache, CacheKey, CacheValue};

use crate::backlog::Backlog;

/// The adapter's name in the log lines of a store call it failed open on.
const ADAPTER: &str = "partcache-tower";

/// What every clone of a layer and of its services shares.
pub(crate) struct Shared<E, K, V, P> {
    pub(crate) cache: Cache<K, V>,
    pub(crate) extractor: E,
    pub(crate) predicate: P,
    pub(crate) store_timeout: Duration,
    pub(crate) flights: Arc<Flights<K, Arc<V>>>,
    pub(crate) counters: AdapterCounters,
    /// Bounds the store writes still running after their response was returned.
    pub(crate) backlog: Arc<Backlog>,
    /// The bytes a pending write of a value holds, for the backlog's byte limit.
    pub(crate) weigher: Weigher<V>,
    /// The store answers without I/O: writes run before the response is returned.
    pub(crate) local: bool,
}

/// How many bytes a value holds ([`CacheLayerBuilder::pending_weigher`](super::CacheLayerBuilder::pending_weigher)).
pub(crate) type Weigher<V> = Arc<dyn Fn(&V) -> usize + Send + Sync>;

impl<E, K: CacheKey, V: CacheValue, P> Shared<E, K, V, P> {
    /// Store calls fail open: the cache is never why a request fails or waits past
    /// the store timeout.
    #[inline]
    pub(crate) fn fail_open(&self) -> FailOpen<'_> {
        FailOpen::new(ADAPTER, self.cache.name())
            .timeout(self.store_timeout)
            .counters(&self.counters)
    }
}
