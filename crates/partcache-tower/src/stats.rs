//! Counters of what a [`CacheLayer`](crate::CacheLayer) did, shared by all its clones.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backlog::Backlog;

/// A snapshot of a layer's counters (see [`CacheLayer::stats`](crate::CacheLayer::stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct LayerStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests whose key was not in the cache (the service was called, or a
    /// concurrent caller's response was shared: see `coalesced`).
    pub misses: u64,
    /// Misses answered with the response of a concurrent miss of the same key.
    pub coalesced: u64,
    /// Requests the key extractor declined (sent straight to the service).
    pub bypassed: u64,
    /// Responses written to the cache.
    pub stored: u64,
    /// Responses the predicate or the conversion declined to store.
    pub not_stored: u64,
    /// Store calls that failed (the request was served by the service: fail-open).
    pub store_errors: u64,
    /// Store calls that did not finish within the store timeout (fail-open too).
    pub store_timeouts: u64,
    /// Store writes running now, after their responses were returned.
    pub pending_stores: u64,
    /// Bytes the pending store writes hold (as the layer's weigher counts them).
    pub pending_store_bytes: u64,
    /// Responses not stored because the pending writes were at their limit.
    pub stores_dropped: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) coalesced: AtomicU64,
    pub(crate) bypassed: AtomicU64,
    pub(crate) stored: AtomicU64,
    pub(crate) not_stored: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) store_timeouts: AtomicU64,
}

pub(crate) fn incr(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self, backlog: &Backlog) -> LayerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        LayerStats {
            hits: get(&self.hits),
            misses: get(&self.misses),
            coalesced: get(&self.coalesced),
            bypassed: get(&self.bypassed),
            stored: get(&self.stored),
            not_stored: get(&self.not_stored),
            store_errors: get(&self.store_errors),
            store_timeouts: get(&self.store_timeouts),
            pending_stores: backlog.pending() as u64,
            pending_store_bytes: backlog.pending_bytes() as u64,
            stores_dropped: backlog.dropped(),
        }
    }
}
