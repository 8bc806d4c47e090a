//! What a [`CacheLayer`](crate::CacheLayer) counted, shared by all its clones.

use partcache::adapter::AdapterStats;

use crate::backlog::BacklogStats;

/// A snapshot of a layer's counters ([`CacheLayer::stats`](crate::CacheLayer::stats)):
/// what every partcache adapter counts ([`AdapterStats`]: hits, misses, bypasses,
/// coalesced misses, stores, store errors and timeouts) and the layer's pending store
/// writes ([`BacklogStats`]).
///
/// Serialises as one flat object, ready for a stats endpoint:
///
/// ```
/// let json = serde_json::to_value(partcache_tower::LayerStats::default()).unwrap();
/// assert_eq!(
///     json,
///     serde_json::json!({
///         "hits": 0, "misses": 0, "bypasses": 0, "coalesced": 0,
///         "stored": 0, "not_stored": 0, "store_errors": 0, "store_timeouts": 0,
///         "pending_stores": 0, "pending_store_bytes": 0, "stores_dropped": 0,
///     })
/// );
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LayerStats {
    /// Lookups and stores. `bypasses` are the requests the key extractor declined and
    /// those served without the cache because the store failed.
    #[serde(flatten)]
    pub cache: AdapterStats,
    /// Store writes still running after their responses were returned, and those not
    /// made because too many were.
    #[serde(flatten)]
    pub backlog: BacklogStats,
}
