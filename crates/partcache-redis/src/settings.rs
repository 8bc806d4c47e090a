//! Settings of the deployment's mechanisms that its URL sets and that live above the
//! wire level: the bounds of the batching queues (`max_pending_batched`,
//! `max_pending_batched_bytes`). They sit here, beside the URL, so that parsing a URL
//! needs nothing of the batching itself.

/// Default most requests waiting in a deployment's batching queues
/// (`max_pending_batched`).
pub const DEFAULT_MAX_PENDING_BATCHED: usize = 4096;

/// Default most bytes (keys and values) the requests waiting in a deployment's
/// batching queues hold together (`max_pending_batched_bytes`, 16 MiB).
pub const DEFAULT_MAX_PENDING_BATCHED_BYTES: usize = 16 * 1024 * 1024;

/// The bound on a deployment's batching queues (URL parameters `max_pending_batched`
/// and `max_pending_batched_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchingSettings {
    /// Most requests waiting to go in a batch.
    pub max_pending: usize,
    /// Most bytes (keys and values) they hold together.
    pub max_pending_bytes: usize,
}

impl Default for BatchingSettings {
    fn default() -> Self {
        BatchingSettings {
            max_pending: DEFAULT_MAX_PENDING_BATCHED,
            max_pending_bytes: DEFAULT_MAX_PENDING_BATCHED_BYTES,
        }
    }
}
