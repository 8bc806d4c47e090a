//! What a [`QueryCache`](crate::QueryCache) counts: what every partcache adapter counts
//! ([`AdapterCounters`]) and the version bumps of its writes.

use partcache::adapter::{AdapterCounters, AdapterStats};
use partcache::stats::Counter;

/// The live counters of a query cache, shared by its clones and its entity caches.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) cache: AdapterCounters,
    pub(crate) bumps: Counter,
    pub(crate) bump_failures: Counter,
}

impl Counters {
    /// A snapshot of every counter.
    pub(crate) fn snapshot(&self) -> QueryCacheStats {
        QueryCacheStats {
            cache: self.cache.snapshot(),
            bumps: self.bumps.get(),
            bump_failures: self.bump_failures.get(),
        }
    }
}

/// What a [`QueryCache`](crate::QueryCache) (and the [`EntityCache`](crate::EntityCache)s
/// over it) did since it was built, counted in this process only: what every partcache
/// adapter counts ([`AdapterStats`]) and the version bumps of writes.
///
/// In `cache`:
///
/// - `hits`: results and rows served from the cache, cached absences of rows included.
///   A read that waited for another task's load of the same result counts as a hit
///   (`coalesced` stays 0: the cache shares the load without telling which waited).
/// - `misses`: results and rows loaded from the database because the cache had none,
///   including entity lookups that found no row (the absence is then cached).
/// - `stored`: loaded results handed to the cache to keep (one per miss outside a
///   transaction).
/// - `bypasses`: reads that went to the database without the cache: inside a
///   transaction that wrote a table they read, statements that cannot be audited or
///   that lock rows, while a write to a table they read is running, and store failures.
/// - `store_errors`: store calls that failed; the query ran against the database
///   (fail-open, logged). `store_timeouts` and `not_stored` stay 0: this adapter sets
///   no store timeout of its own and never declines to store a loaded result.
///
/// Serialises as one flat object, ready for a stats endpoint:
///
/// ```
/// let json = serde_json::to_value(partcache_sea_orm::QueryCacheStats::default()).unwrap();
/// assert_eq!(
///     json,
///     serde_json::json!({
///         "hits": 0, "misses": 0, "bypasses": 0, "coalesced": 0,
///         "stored": 0, "not_stored": 0, "store_errors": 0, "store_timeouts": 0,
///         "bumps": 0, "bump_failures": 0,
///     })
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[non_exhaustive]
pub struct QueryCacheStats {
    /// Lookups, loads and store failures, as every partcache adapter counts them.
    #[serde(flatten)]
    pub cache: AdapterStats,
    /// Version bumps written.
    pub bumps: u64,
    /// Version bumps that failed (logged, retried until they land; see
    /// [`QueryCache`](crate::QueryCache) on failing open).
    pub bump_failures: u64,
}
