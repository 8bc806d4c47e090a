//! The bound on a deployment's batching queues: requests that wait for a node's
//! current call, to go in its next batch, hold their keys and values in the queue.
//! Each is admitted before it queues and holds a [`Pending`] until it is answered; a
//! request that would take the queues past their count or byte limit does not queue:
//! it is sent alone at once, as it would be without batching, and counted
//! ([`BatchingStats::sent_alone`]). Every request that queues has a caller awaiting
//! its result, so none is ever dropped; the bound keeps a flood of concurrent calls
//! from piling keys and values up in one batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::settings::BatchingSettings;

/// The name of the metrics counter of requests sent alone because the batching queues
/// were full (label `deployment`).
pub const SENT_ALONE_METRIC: &str = "partcache_redis_sent_alone_total";

/// The state of a deployment's batching queues ([`crate::RedisStore::batching_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct BatchingStats {
    /// Requests waiting to go in a batch, or in a batch on its way.
    pub pending: u64,
    /// Bytes (keys and values) they hold.
    pub pending_bytes: u64,
    /// The most requests that were ever pending at once.
    pub peak_pending: u64,
    /// The most bytes that pending requests ever held at once.
    pub peak_pending_bytes: u64,
    /// Requests sent alone because the queues were at their limit.
    pub sent_alone: u64,
}

/// Counts and bounds the requests of a deployment's batching queues (see the module
/// docs).
pub(crate) struct Bound {
    settings: BatchingSettings,
    pending: AtomicUsize,
    bytes: AtomicUsize,
    peak_pending: AtomicUsize,
    peak_bytes: AtomicUsize,
    sent_alone: AtomicU64,
    sent_alone_metric: metrics::Counter,
}

impl Bound {
    /// The bound of the deployment described as `deployment` (the metric's label).
    pub(crate) fn new(settings: BatchingSettings, deployment: &str) -> Arc<Bound> {
        Arc::new(Bound {
            settings,
            pending: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            peak_pending: AtomicUsize::new(0),
            peak_bytes: AtomicUsize::new(0),
            sent_alone: AtomicU64::new(0),
            sent_alone_metric: metrics::counter!(
                SENT_ALONE_METRIC,
                "deployment" => deployment.to_string()
            ),
        })
    }

    /// Admits a request holding `bytes` into a queue, or counts it as sent alone and
    /// returns `None` when it does not fit.
    pub(crate) fn admit(self: &Arc<Self>, bytes: usize) -> Option<Pending> {
        let max = self.settings;
        let count = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max.max_pending).then_some(n + 1)
            });
        let held = count.is_ok().then(|| {
            self.bytes
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                    b.checked_add(bytes).filter(|&t| t <= max.max_pending_bytes)
                })
        });
        match (count, held) {
            (Ok(n), Some(Ok(b))) => {
                self.peak_pending.fetch_max(n + 1, Ordering::Relaxed);
                self.peak_bytes.fetch_max(b + bytes, Ordering::Relaxed);
                Some(Pending {
                    bound: self.clone(),
                    bytes,
                })
            }
            (count, _) => {
                if count.is_ok() {
                    self.pending.fetch_sub(1, Ordering::AcqRel);
                }
                self.sent_alone.fetch_add(1, Ordering::Relaxed);
                self.sent_alone_metric.increment(1);
                None
            }
        }
    }

    pub(crate) fn stats(&self) -> BatchingStats {
        let get = |a: &AtomicUsize| a.load(Ordering::Acquire) as u64;
        BatchingStats {
            pending: get(&self.pending),
            pending_bytes: get(&self.bytes),
            peak_pending: get(&self.peak_pending),
            peak_pending_bytes: get(&self.peak_bytes),
            sent_alone: self.sent_alone.load(Ordering::Relaxed),
        }
    }
}

/// A request admitted by a [`Bound`]; dropping it (once the request is answered, or
/// its caller gave up) frees its room.
pub(crate) struct Pending {
    bound: Arc<Bound>,
    bytes: usize,
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.bound.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.bound.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_does_not_fit_is_counted_and_room_comes_back() {
        let bound = Bound::new(
            BatchingSettings {
                max_pending: 2,
                max_pending_bytes: 1000,
            },
            "test",
        );
        let first = bound.admit(600).expect("fits");
        assert!(bound.admit(600).is_none(), "1 200 bytes exceed 1 000");
        let second = bound.admit(10).expect("fits");
        assert!(bound.admit(0).is_none(), "a third exceeds the count");
        let stats = bound.stats();
        assert_eq!(
            (stats.pending, stats.pending_bytes, stats.sent_alone),
            (2, 610, 2)
        );
        drop((first, second));
        let stats = bound.stats();
        assert_eq!((stats.pending, stats.pending_bytes), (0, 0));
        assert_eq!((stats.peak_pending, stats.peak_pending_bytes), (2, 610));
        assert!(
            bound.admit(1000).is_some(),
            "a request of the whole limit fits"
        );
    }
}
