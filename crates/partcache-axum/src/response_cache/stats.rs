//! Counters of what a [`ResponseCache`](crate::ResponseCache) did.

use std::sync::atomic::{AtomicU64, Ordering};

use partcache_tower::backlog::Backlog;

/// A snapshot of a response cache's counters
/// ([`ResponseCache::stats`](crate::ResponseCache::stats)), serialisable as it is for a
/// stats endpoint ([`ResponseCache::stats_route`](crate::ResponseCache::stats_route)
/// serves it):
///
/// ```
/// let stats = partcache_axum::ResponseCacheStats::default();
/// let json = serde_json::to_value(stats).unwrap();
/// assert_eq!(json["hits"], 0);
/// assert_eq!(json["stores_dropped"], 0);
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
    /// Responses served fresh from the cache (`x-cache: HIT`), including those
    /// refreshed by a 304 from the origin.
    pub hits: u64,
    /// Stale responses served (`x-cache: STALE`): within `stale-while-revalidate`, or
    /// within `stale-if-error` when the origin failed.
    pub stale: u64,
    /// Lookups that found nothing usable (`x-cache: MISS`), including those then
    /// answered with a concurrent miss's response (also in `coalesced`). A stale
    /// entry revalidated is not a miss (see `revalidations`).
    pub misses: u64,
    /// Requests that did not use the cache (`x-cache: BYPASS`): unsafe or unlisted
    /// methods, bypassed routes, `Range`, unkeyed headers, store failures.
    pub bypasses: u64,
    /// Misses answered with a concurrent miss's response (the origin was not called).
    pub coalesced: u64,
    /// Conditional requests sent to the origin to revalidate a stale response.
    pub revalidations: u64,
    /// Revalidations the origin answered with 304 (the stored body was reused).
    pub not_modified: u64,
    /// Responses written to the store.
    pub stored: u64,
    /// Origin responses not stored (not storable, or larger than the body limit).
    pub not_stored: u64,
    /// Store calls that failed; the request was served by the origin (fail-open).
    pub store_errors: u64,
    /// Store calls that exceeded the store timeout (fail-open too).
    pub store_timeouts: u64,
    /// Entries removed by purges and by unsafe requests' invalidations.
    pub invalidated: u64,
    /// Store writes and stale-while-revalidate refreshes running now, after their
    /// responses were sent.
    pub pending_stores: u64,
    /// Bytes (bodies, headers, keys) the pending store writes hold.
    pub pending_store_bytes: u64,
    /// Storable responses not stored, and refreshes not made, because the pending
    /// work was at its limit (`max_pending_stores`, `max_pending_store_bytes`).
    pub stores_dropped: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) stale: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) bypasses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) revalidations: AtomicU64,
    pub(crate) not_modified: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) not_stored: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) store_timeouts: AtomicU64,
    pub(crate) invalidated: AtomicU64,
}

pub(crate) fn incr(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, backlog: &Backlog) -> ResponseCacheStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ResponseCacheStats {
            hits: get(&self.hits),
            stale: get(&self.stale),
            misses: get(&self.misses),
            bypasses: get(&self.bypasses),
            coalesced: get(&self.coalesced),
            revalidations: get(&self.revalidations),
            not_modified: get(&self.not_modified),
            stored: get(&self.stored),
            not_stored: get(&self.not_stored),
            store_errors: get(&self.store_errors),
            store_timeouts: get(&self.store_timeouts),
            invalidated: get(&self.invalidated),
            pending_stores: backlog.pending() as u64,
            pending_store_bytes: backlog.pending_bytes() as u64,
            stores_dropped: backlog.dropped(),
        }
    }
}
