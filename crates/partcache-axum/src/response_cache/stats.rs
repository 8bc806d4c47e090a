//! Counters of what a [`ResponseCache`](crate::ResponseCache) did: those every
//! partcache adapter keeps ([`AdapterCounters`]) and those of HTTP caching.

use partcache::adapter::{AdapterCounters, AdapterStats};
use partcache::stats::Counter;
use partcache_tower::backlog::{Backlog, BacklogStats};

/// A snapshot of a response cache's counters
/// ([`ResponseCache::stats`](crate::ResponseCache::stats)), serialisable as it is for a
/// stats endpoint ([`ResponseCache::stats_route`](crate::ResponseCache::stats_route)
/// serves it):
///
/// ```
/// let stats = partcache_axum::ResponseCacheStats::default();
/// assert_eq!(
///     serde_json::to_value(stats).unwrap(),
///     serde_json::json!({
///         "hits": 0, "misses": 0, "bypasses": 0, "coalesced": 0,
///         "stored": 0, "not_stored": 0, "store_errors": 0, "store_timeouts": 0,
///         "stale": 0, "revalidations": 0, "not_modified": 0, "invalidated": 0,
///         "refreshes_abandoned": 0,
///         "pending_stores": 0, "pending_store_bytes": 0, "stores_dropped": 0,
///     })
/// );
/// ```
///
/// **These count requests, not store operations.** The
/// [`CacheStats`](partcache::CacheStats) of the cache holding the responses
/// ([`ResponseCache::responses`](crate::ResponseCache::responses)) count store reads,
/// and one request can make several: a lookup reads the primary key and, when it holds
/// a `Vary` index, the variant key (a hit on a varying resource is two store hits, a
/// vary-miss a store hit and a store miss); a `HEAD` reads the `GET` entry first; a
/// miss that calls the origin reads its key again just before on a remote store (and on
/// the embedded store when a write finished since its first read), as does a
/// `stale-while-revalidate` refresh; storing a varying response updates the Vary index
/// with an entry processor, a store hit or miss (JSR-107 counts `invoke` as an access).
/// So the store's `hits + misses` is at least this `hits + misses` (but for
/// `only-if-cached` requests that may not use the cache, a `504` counted as a miss
/// with no read), equal only for non-varying `GET`s on the embedded store; on Redis a
/// `MISS` is usually two store misses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct ResponseCacheStats {
    /// What every partcache adapter counts, here per request:
    /// [`hits`](AdapterStats::hits) are responses served fresh from the cache
    /// (`x-cache: HIT`, including those refreshed by a 304 from the origin);
    /// [`misses`](AdapterStats::misses) the lookups that found nothing usable
    /// (`x-cache: MISS`), including those then answered with a concurrent miss's
    /// response (also in [`coalesced`](AdapterStats::coalesced)), but not a stale entry
    /// revalidated (see `revalidations`); [`bypasses`](AdapterStats::bypasses) the
    /// requests that did not use the cache (`x-cache: BYPASS`: unsafe or unlisted
    /// methods, bypassed routes, `Range`, unkeyed headers, store failures);
    /// [`stored`](AdapterStats::stored) and [`not_stored`](AdapterStats::not_stored)
    /// the origin responses written to the store or not (not storable, or over the
    /// body limit); [`store_errors`](AdapterStats::store_errors) and
    /// [`store_timeouts`](AdapterStats::store_timeouts) the store calls that failed or
    /// outlasted the store timeout, the request then served by the origin (fail-open).
    #[serde(flatten)]
    pub cache: AdapterStats,
    /// Stale responses served (`x-cache: STALE`): within `stale-while-revalidate`, or
    /// within `stale-if-error` when the origin failed.
    pub stale: u64,
    /// Conditional requests sent to the origin to revalidate a stale response.
    pub revalidations: u64,
    /// Revalidations the origin answered with 304 (the stored body was reused).
    pub not_modified: u64,
    /// Entries removed by purges and by unsafe requests' invalidations.
    pub invalidated: u64,
    /// Background refreshes (`stale-while-revalidate`) given up on after the refresh
    /// timeout ([`ResponseCacheBuilder::refresh_timeout`](crate::ResponseCacheBuilder::refresh_timeout)).
    pub refreshes_abandoned: u64,
    /// Store writes and stale-while-revalidate refreshes running now, after their
    /// responses were sent (`pending_stores`, `pending_store_bytes`), and storable
    /// responses not stored, or refreshes not made, because that pending work was at
    /// its limit (`stores_dropped`; `max_pending_stores`, `max_pending_store_bytes`).
    #[serde(flatten)]
    pub backlog: BacklogStats,
}

/// The live counters behind [`ResponseCacheStats`].
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) cache: AdapterCounters,
    pub(crate) stale: Counter,
    pub(crate) revalidations: Counter,
    pub(crate) not_modified: Counter,
    pub(crate) invalidated: Counter,
    pub(crate) refreshes_abandoned: Counter,
}

impl Counters {
    pub(crate) fn snapshot(&self, backlog: &Backlog) -> ResponseCacheStats {
        ResponseCacheStats {
            cache: self.cache.snapshot(),
            stale: self.stale.get(),
            revalidations: self.revalidations.get(),
            not_modified: self.not_modified.get(),
            invalidated: self.invalidated.get(),
            refreshes_abandoned: self.refreshes_abandoned.get(),
            backlog: backlog.stats(),
        }
    }
}
