//! What a [`QueryCache`](crate::QueryCache) counts: the counters its read and write
//! paths bump, and the snapshot a user reads.

use std::sync::atomic::{AtomicU64, Ordering};

/// An event counter.
#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn incr(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) hits: Counter,
    pub(crate) misses: Counter,
    pub(crate) bypasses: Counter,
    pub(crate) store_errors: Counter,
    pub(crate) bumps: Counter,
    pub(crate) bump_failures: Counter,
}

/// What a [`QueryCache`](crate::QueryCache) (and the [`EntityCache`](crate::EntityCache) over it) did
/// since it was built. Counted in this process only. Serialisable as it is:
///
/// ```
/// let json = serde_json::to_value(partcache_sea_orm::QueryCacheStats::default()).unwrap();
/// assert_eq!(json["bumps"], 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct QueryCacheStats {
    /// Results and rows served from the cache.
    pub hits: u64,
    /// Results and rows loaded from the database and cached, including entity lookups
    /// that found no row (the absence is cached; see
    /// [`EntityCache`](crate::EntityCache)).
    pub misses: u64,
    /// Reads that went to the database without the cache: inside a transaction that
    /// wrote a table they read, statements that cannot be audited, store failures.
    pub bypasses: u64,
    /// Store errors the cache failed open on (the query ran against the database).
    pub store_errors: u64,
    /// Version bumps written.
    pub bumps: u64,
    /// Version bumps that failed (logged; see [`QueryCache`](crate::QueryCache) on failing open).
    pub bump_failures: u64,
}

impl Counters {
    /// A snapshot of every counter.
    pub(crate) fn snapshot(&self) -> QueryCacheStats {
        QueryCacheStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            bypasses: self.bypasses.get(),
            store_errors: self.store_errors.get(),
            bumps: self.bumps.get(),
            bump_failures: self.bump_failures.get(),
        }
    }
}
