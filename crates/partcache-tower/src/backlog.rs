//! A bound on the work a cache layer leaves running after it answered: store writes,
//! index updates, background refreshes.
//!
//! Each such job is admitted by a [`Backlog`] before it starts and holds an
//! [`Admitted`] until it ends. A job that would take the backlog past its count or
//! byte limit is not started: the layer answers its request as usual and simply does
//! not store (or refresh), and the backlog counts it as dropped. A flood of unique
//! keys therefore costs at most the limits in memory and tasks, never an error for a
//! client.
//!
//! ```
//! use std::sync::Arc;
//! use partcache_tower::backlog::Backlog;
//!
//! let backlog = Arc::new(Backlog::new("example", 2, 1024));
//! let first = backlog.admit(600).expect("fits");
//! assert!(backlog.admit(600).is_none()); // 1 200 bytes would exceed 1 024
//! let second = backlog.admit(10).expect("fits");
//! assert!(backlog.admit(0).is_none()); // a third job exceeds the count
//! assert_eq!((backlog.pending(), backlog.pending_bytes(), backlog.dropped()), (2, 610, 2));
//! drop((first, second));
//! assert_eq!(backlog.pending(), 0);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Default most background jobs a layer keeps pending.
pub const DEFAULT_MAX_PENDING: usize = 4096;

/// Default most bytes the pending background jobs of a layer hold (64 MiB).
pub const DEFAULT_MAX_PENDING_BYTES: usize = 64 * 1024 * 1024;

/// The name of the metrics counter of dropped background jobs (label `cache`).
pub const DROPPED_METRIC: &str = "partcache_background_dropped_total";

/// Counts and bounds the background jobs of one layer (see the [module](self) docs).
#[derive(Debug)]
pub struct Backlog {
    max_pending: usize,
    max_bytes: usize,
    pending: AtomicUsize,
    bytes: AtomicUsize,
    dropped: AtomicU64,
    dropped_metric: metrics::Counter,
}

impl Backlog {
    /// A backlog of at most `max_pending` jobs holding at most `max_bytes` together;
    /// drops are also counted in the [`DROPPED_METRIC`] counter labelled
    /// `cache = name`.
    pub fn new(name: &str, max_pending: usize, max_bytes: usize) -> Self {
        Backlog {
            max_pending,
            max_bytes,
            pending: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            dropped: AtomicU64::new(0),
            dropped_metric: metrics::counter!(DROPPED_METRIC, "cache" => name.to_string()),
        }
    }

    /// Admits a job holding `bytes`, or counts it as dropped and returns `None` when
    /// it does not fit. The job is pending until the returned value is dropped.
    pub fn admit(self: &Arc<Self>, bytes: usize) -> Option<Admitted> {
        let fits_count = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_pending).then_some(n + 1)
            })
            .is_ok();
        let fits_bytes = fits_count
            && self
                .bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                    b.checked_add(bytes).filter(|&t| t <= self.max_bytes)
                })
                .is_ok();
        if fits_bytes {
            return Some(Admitted {
                backlog: self.clone(),
                bytes,
            });
        }
        if fits_count {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.dropped_metric.increment(1);
        None
    }

    /// Jobs admitted and not finished.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Bytes the pending jobs hold.
    pub fn pending_bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Jobs not started because they did not fit.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The three figures above as one value, for an adapter's statistics.
    pub fn stats(&self) -> BacklogStats {
        BacklogStats {
            pending_stores: self.pending() as u64,
            pending_store_bytes: self.pending_bytes() as u64,
            stores_dropped: self.dropped(),
        }
    }
}

/// A snapshot of a [`Backlog`] ([`Backlog::stats`]), in the terms of the cache layers
/// that use it: their pending jobs are store writes (and refreshes). Adapters' own
/// statistics embed it flattened, so it serialises as three fields of theirs:
///
/// ```
/// let json = serde_json::to_value(partcache_tower::backlog::BacklogStats::default()).unwrap();
/// assert_eq!(
///     json,
///     serde_json::json!({ "pending_stores": 0, "pending_store_bytes": 0, "stores_dropped": 0 })
/// );
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct BacklogStats {
    /// Jobs (store writes, refreshes) running now, after their responses were returned.
    pub pending_stores: u64,
    /// Bytes the pending jobs hold (as the layer's weigher counts them).
    pub pending_store_bytes: u64,
    /// Jobs not started because the backlog was at its limit: responses returned as
    /// usual but not stored (or not refreshed).
    pub stores_dropped: u64,
}

/// A job admitted by a [`Backlog`]; dropping it ends the job.
#[derive(Debug)]
pub struct Admitted {
    backlog: Arc<Backlog>,
    bytes: usize,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.backlog.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.backlog.pending.fetch_sub(1, Ordering::AcqRel);
    }
}
