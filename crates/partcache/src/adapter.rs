//! What the adapters over a [`Cache`](crate::Cache) share: failing open
//! ([`FailOpen`]) and counting what they did ([`AdapterCounters`], snapshot
//! [`AdapterStats`]).
//!
//! An adapter (a tower layer, an HTTP response cache, an ORM query cache, the caching
//! attributes) puts a cache in front of something that can answer without it: a
//! service, an origin, a database, the annotated function. The cache must then never
//! be why a request fails, nor why it is slow: a store call that errors or does not
//! answer within a timeout is given up, logged with `tracing`, counted, and the caller
//! carries on as if there were no cache. [`FailOpen::call`] is that rule, once.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//!
//! use partcache::CacheManager;
//! use partcache::adapter::{AdapterCounters, FailOpen};
//!
//! let manager = CacheManager::from_url("memory://")?;
//! let squares = manager.cache::<u64, u64>("squares").build().await?;
//! let counters = AdapterCounters::default();
//!
//! // Per call: where it is made, then the store call itself.
//! let site = FailOpen::new("my-adapter", squares.name())
//!     .timeout(Duration::from_millis(100))
//!     .counters(&counters);
//! let square = match site.call("get", squares.get(&12)).await {
//!     Some(Some(hit)) => *hit,
//!     // A miss, or the store failed (logged and counted): compute it.
//!     Some(None) | None => 144,
//! };
//! assert_eq!(square, 144);
//! assert_eq!(counters.snapshot().store_errors, 0);
//! # Ok::<(), partcache::Error>(()) }).unwrap();
//! ```

use std::future::Future;
use std::time::Duration;

use crate::stats::Counter;

/// Where an adapter calls the store, and what it does when the store fails: built on
/// the stack per call (a few words, no allocation), then [`FailOpen::call`].
///
/// A failure is logged at `warn` with the fields `adapter`, `cache`, `operation` and
/// `error` (or `timeout`), and counted in the [`AdapterCounters`] given (if any) as a
/// `store_error` or a `store_timeout`. The [`Cache`](crate::Cache) itself also counts
/// store errors in its own [`CacheStats::store_errors`](crate::CacheStats::store_errors).
#[derive(Debug, Clone, Copy)]
#[must_use = "a FailOpen does nothing until `call` runs a store call through it"]
pub struct FailOpen<'a> {
    adapter: &'static str,
    cache: &'a str,
    timeout: Option<Duration>,
    counters: Option<&'a AdapterCounters>,
}

impl<'a> FailOpen<'a> {
    /// Store calls of `adapter` (its name in the log: a crate such as
    /// `"partcache-tower"`, or the annotated function) on the cache named `cache`. No
    /// timeout and no counters until [`timeout`](Self::timeout) and
    /// [`counters`](Self::counters) set them.
    #[inline]
    pub const fn new(adapter: &'static str, cache: &'a str) -> Self {
        FailOpen {
            adapter,
            cache,
            timeout: None,
            counters: None,
        }
    }

    /// Gives up on a call that has not answered after `timeout` (counted as a
    /// `store_timeout`). Without it a call runs as long as the store lets it (the
    /// store's own response timeout, if it has one).
    ///
    /// A call that answers in place (the embedded store) completes on its first poll
    /// and never starts the timer: the timeout costs it one clock read.
    #[inline]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Like [`timeout`](Self::timeout), or no timeout for `None`.
    #[inline]
    pub const fn timeout_opt(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Counts failures in `counters` (`store_errors`, `store_timeouts`).
    #[inline]
    pub const fn counters(mut self, counters: &'a AdapterCounters) -> Self {
        self.counters = Some(counters);
        self
    }

    /// Runs the store call `call` (named `operation` in the log: `"get"`, `"put"`,
    /// ...). Returns its value, or `None` when it failed or timed out: the caller then
    /// carries on without the cache. The failure is logged and counted here, never
    /// returned.
    ///
    /// Costs nothing beyond the call itself (and, with a timeout, tokio's timer) when
    /// the call succeeds: no allocation, nothing formatted.
    ///
    /// # Panics
    ///
    /// With a timeout, outside a tokio runtime with its timer enabled (as
    /// [`tokio::time::timeout`]).
    #[inline]
    pub async fn call<T>(
        self,
        operation: &'static str,
        call: impl Future<Output = crate::Result<T>>,
    ) -> Option<T> {
        let result = match self.timeout {
            None => call.await,
            Some(timeout) => match tokio::time::timeout(timeout, call).await {
                Ok(result) => result,
                Err(_) => {
                    self.timed_out(operation, timeout);
                    return None;
                }
            },
        };
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.failed(operation, &error);
                None
            }
        }
    }

    /// Logs and counts a store error: the caller carries on without the cache.
    ///
    /// [`call`](Self::call) does this itself; for a store call whose error the adapter
    /// sees otherwise (a loader's result carrying a store error, say).
    #[cold]
    pub fn failed(&self, operation: &'static str, error: &crate::Error) {
        if let Some(counters) = self.counters {
            counters.store_errors.incr();
        }
        tracing::warn!(
            adapter = self.adapter,
            cache = self.cache,
            operation,
            %error,
            "cache store failed; carrying on without the cache"
        );
    }

    /// Logs and counts the failure of a store call the adapter did not run through
    /// [`call`](Self::call) (a lease's, [`HeldLease::failure`](crate::HeldLease::failure)):
    /// an [`Error::Timeout`](crate::Error::Timeout) as a `store_timeout`, any other error
    /// as a `store_error`.
    #[cold]
    pub fn failed_or_timed_out(&self, operation: &'static str, error: &crate::Error) {
        match error {
            crate::Error::Timeout(timeout) => self.timed_out(operation, *timeout),
            other => self.failed(operation, other),
        }
    }

    #[cold]
    fn timed_out(&self, operation: &'static str, timeout: Duration) {
        if let Some(counters) = self.counters {
            counters.store_timeouts.incr();
        }
        tracing::warn!(
            adapter = self.adapter,
            cache = self.cache,
            operation,
            ?timeout,
            "cache store timed out; carrying on without the cache"
        );
    }
}

/// The live counters an adapter keeps of what it did, shared by its clones; read them
/// with [`snapshot`](Self::snapshot).
///
/// Each is a [`Counter`]: relaxed atomic adds striped over cache-line-padded cells, so
/// requests on different cores do not contend on one line. An adapter counts what is
/// specific to it in counters of its own, beside these.
#[derive(Default)]
#[non_exhaustive]
pub struct AdapterCounters {
    /// Requests answered from the cache.
    pub hits: Counter,
    /// Requests whose key was not in the cache.
    pub misses: Counter,
    /// Requests that did not use the cache (declined by the adapter's rules, or the
    /// store failed).
    pub bypasses: Counter,
    /// Misses answered with a concurrent miss's result (the source was not called).
    pub coalesced: Counter,
    /// Results written to the cache.
    pub stored: Counter,
    /// Results the adapter's rules declined to store.
    pub not_stored: Counter,
    /// Store calls that failed; the request was served without the cache.
    pub store_errors: Counter,
    /// Store calls that exceeded the adapter's store timeout; served without the
    /// cache too.
    pub store_timeouts: Counter,
}

impl std::fmt::Debug for AdapterCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.snapshot().fmt(f)
    }
}

impl AdapterCounters {
    /// What the counters hold now (each read once; they keep moving).
    pub fn snapshot(&self) -> AdapterStats {
        AdapterStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            bypasses: self.bypasses.get(),
            coalesced: self.coalesced.get(),
            stored: self.stored.get(),
            not_stored: self.not_stored.get(),
            store_errors: self.store_errors.get(),
            store_timeouts: self.store_timeouts.get(),
        }
    }
}

/// A snapshot of [`AdapterCounters`]: what every adapter counts. An adapter's own
/// statistics embed it (flattened when serialised) beside what is specific to it.
///
/// Serialises as a flat object a stats endpoint can publish as it is:
///
/// ```
/// let json = serde_json::to_value(partcache::adapter::AdapterStats::default()).unwrap();
/// assert_eq!(
///     json,
///     serde_json::json!({
///         "hits": 0, "misses": 0, "bypasses": 0, "coalesced": 0,
///         "stored": 0, "not_stored": 0, "store_errors": 0, "store_timeouts": 0,
///     })
/// );
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct AdapterStats {
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests whose key was not in the cache (the source was called, or a
    /// concurrent miss's result shared: see `coalesced`).
    pub misses: u64,
    /// Requests that did not use the cache (declined by the adapter's rules, or the
    /// store failed).
    pub bypasses: u64,
    /// Misses answered with a concurrent miss's result (the source was not called).
    pub coalesced: u64,
    /// Results written to the cache.
    pub stored: u64,
    /// Results the adapter's rules declined to store.
    pub not_stored: u64,
    /// Store calls that failed; the request was served without the cache (fail-open).
    pub store_errors: u64,
    /// Store calls that exceeded the store timeout (fail-open too).
    pub store_timeouts: u64,
}

impl AdapterStats {
    /// Hits over hits and misses, 0.0 before the first lookup.
    pub fn hit_ratio(&self) -> f64 {
        let lookups = self.hits + self.misses;
        if lookups == 0 {
            0.0
        } else {
            self.hits as f64 / lookups as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::pending;

    use super::*;
    use crate::Error;

    #[tokio::test]
    async fn a_store_call_that_answers_is_passed_through_and_nothing_is_counted() {
        let counters = AdapterCounters::default();
        let site = FailOpen::new("test", "c")
            .timeout(Duration::from_secs(5))
            .counters(&counters);
        assert_eq!(site.call("get", async { Ok(7) }).await, Some(7));
        assert_eq!(counters.snapshot(), AdapterStats::default());
    }

    #[tokio::test]
    async fn a_store_error_is_none_and_counted_as_a_store_error() {
        let counters = AdapterCounters::default();
        let site = FailOpen::new("test", "c").counters(&counters);
        let failing = async { Err::<u8, _>(Error::Unavailable("down".into())) };
        assert_eq!(site.call("get", failing).await, None);
        let stats = counters.snapshot();
        assert_eq!((stats.store_errors, stats.store_timeouts), (1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_call_past_the_timeout_is_none_and_counted_as_a_timeout() {
        let counters = AdapterCounters::default();
        let site = FailOpen::new("test", "c")
            .timeout(Duration::from_millis(50))
            .counters(&counters);
        let hanging = pending::<crate::Result<u8>>();
        assert_eq!(site.call("put", hanging).await, None);
        let stats = counters.snapshot();
        assert_eq!((stats.store_errors, stats.store_timeouts), (0, 1));
    }

    #[tokio::test]
    async fn without_counters_a_failure_is_only_logged() {
        let site = FailOpen::new("test", "c").timeout_opt(None);
        let failing = async { Err::<u8, _>(Error::Unavailable("down".into())) };
        assert_eq!(site.call("evict", failing).await, None);
    }

    #[test]
    fn adapter_stats_serialise_flat_with_a_hit_ratio_method() {
        let counters = AdapterCounters::default();
        counters.hits.add(3);
        counters.misses.incr();
        let stats = counters.snapshot();
        assert_eq!(stats.hit_ratio(), 0.75);
        let json = serde_json::to_value(stats).unwrap();
        assert_eq!(json["hits"], 3);
        assert_eq!(json["misses"], 1);
        assert_eq!(json.as_object().map(|o| o.len()), Some(8));
    }
}
