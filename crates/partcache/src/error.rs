//! The error type every partcache call returns.
//!
//! Errors are an enum a caller can match on: a store that is down is
//! [`Error::Unavailable`], a slow one [`Error::Timeout`], bytes that do not decode are
//! [`Error::Decode`] (reads turn these into misses; see `Cache::get`), a node whose
//! circuit breaker is open [`Error::CircuitOpen`], bad
//! configuration is [`Error::Config`] (a cache the store holds with another layout is
//! [`Error::Mismatch`]), and input the cache refuses (an oversized value,
//! a key no hashing rule matches) is [`Error::Rejected`].

use std::sync::Arc;
use std::time::Duration;

use crate::partition::PartitionError;

/// What went wrong in a partcache call.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store could not be reached (connection refused or lost, cluster down).
    #[error("cache store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer within the configured timeout.
    #[error("cache store timed out after {0:?}")]
    Timeout(Duration),
    /// A store node timed out repeatedly, so its circuit breaker is open: calls to it
    /// fail at once, without waiting for the node, until a probe finds it answering
    /// again (at most every `retry_in`). Transient, like [`Error::Timeout`].
    #[error(
        "cache store node {node} is not answering (circuit open; next probe within {retry_in:?})"
    )]
    CircuitOpen {
        /// The node's address.
        node: String,
        /// The breaker's probe interval: the node is probed again within it.
        retry_in: Duration,
    },
    /// Stored bytes could not be decoded into the cache's value type.
    #[error("could not decode a stored value: {0}")]
    Decode(String),
    /// A value could not be encoded with the cache's codec.
    #[error("could not encode a value: {0}")]
    Encode(String),
    /// Invalid configuration: a URL, a parameter, a cache reopened with other settings.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The store holds the cache with another layout than the one it is opened with
    /// (another partition count, codec, layout version or entry-index setting): using
    /// it would read or write it wrongly. A configuration mistake, not transient; match
    /// on [`LayoutMismatch`] to tell which setting differs.
    #[error("cache `{cache}` {mismatch}")]
    Mismatch {
        /// The cache's name.
        cache: String,
        /// What differs.
        mismatch: LayoutMismatch,
    },
    /// The cache refused the input (an oversized value, a key no hashing rule matches).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The read-through loader, the closure given to `get_or_load`, failed.
    /// The loader's own error is the [`source`](std::error::Error::source).
    #[error("loader failed: {0}")]
    Loader(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The write-through writer failed; the cache was left unchanged.
    /// The writer's own error is the [`source`](std::error::Error::source).
    #[error("writer failed: {0}")]
    Writer(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// A user callback (loader, entry processor) panicked. The cache is still usable.
    #[error("{0} panicked: {1}")]
    Panicked(&'static str, String),
    /// The store answered with something partcache did not expect (a script error, a
    /// protocol surprise). Carries the server's message.
    #[error("cache store error: {0}")]
    Store(String),
    /// The cache was closed ([`crate::Cache::close`]) or destroyed
    /// ([`crate::CacheManager::destroy_cache`]); carries its name. JCache's
    /// `IllegalStateException` on a closed cache.
    #[error("cache `{0}` is closed")]
    Closed(String),
}

/// Which recorded setting of a cache differs from the one it is opened with (see
/// [`Error::Mismatch`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutMismatch {
    /// Another partition count: every key would be looked for in another partition.
    #[error("was created with {stored} partitions, opened with {opened}")]
    Partitions {
        /// The count the store recorded.
        stored: u64,
        /// The count it was opened with.
        opened: u64,
    },
    /// Another codec: the stored bytes would not decode.
    #[error("was created with codec id {stored}, opened with `{opened_name}` (id {opened})")]
    Codec {
        /// The codec id the store recorded.
        stored: u64,
        /// The codec id it was opened with.
        opened: u64,
        /// The name of the codec it was opened with.
        opened_name: String,
    },
    /// Another version of the store's layout (written by another release).
    #[error("uses store layout version {stored}; this store reads version {supported}")]
    Version {
        /// The version the store recorded.
        stored: u64,
        /// The version this build reads and writes.
        supported: u64,
    },
    /// With and without an entry index (kept when `max_entries` or `max_idle` is set):
    /// every process must open the cache the same way.
    #[error(
        "was created {}, opened {}: every process must give it the same",
        index_phrase(*stored),
        index_phrase(*opened)
    )]
    EntryIndex {
        /// Whether the store keeps an index for it.
        stored: bool,
        /// Whether it was opened with one.
        opened: bool,
    },
    /// Other hashing rules ([`crate::partition::HashingPolicy::describe`]): a key would
    /// be looked for in another partition than the one other processes put it in.
    #[error(
        "was created with hashing {stored}, opened with hashing {opened}: every process must give it the same `hashing_rules`"
    )]
    Hashing {
        /// The rules the store recorded.
        stored: String,
        /// The rules it was opened with.
        opened: String,
    },
    /// Publishing events and not (`publish_events`): a near cache or listener of a
    /// process that publishes would never hear what a silent one writes, and a near
    /// cache would serve values overwritten long ago.
    #[error(
        "is used {}, opened {}: every process must give it the same `publish_events`",
        events_phrase(*stored),
        events_phrase(*opened)
    )]
    Events {
        /// Whether the processes using it publish events.
        stored: bool,
        /// Whether it was opened to publish them.
        opened: bool,
    },
}

fn events_phrase(publishes: bool) -> &'static str {
    if publishes {
        "publishing events (`publish_events(true)`, the default)"
    } else {
        "without events (`publish_events(false)`)"
    }
}

fn index_phrase(indexed: bool) -> &'static str {
    if indexed {
        "with an entry index (`max_entries` or `max_idle` set)"
    } else {
        "without an entry index (neither `max_entries` nor `max_idle` set)"
    }
}

impl Error {
    /// `true` for mistakes of configuration ([`Error::Config`], [`Error::Mismatch`]):
    /// retrying cannot fix them.
    pub fn is_config(&self) -> bool {
        matches!(self, Error::Config(_) | Error::Mismatch { .. })
    }

    /// `true` for errors caused by the store's availability (unavailable, timeout, or a
    /// node's open circuit breaker): the kind of error adapters fail open on.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unavailable(_) | Error::Timeout(_) | Error::CircuitOpen { .. }
        )
    }

    /// Wraps a loader's error.
    pub fn loader<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        Error::Loader(Arc::new(error))
    }

    /// Wraps a writer's error.
    pub fn writer<E: std::error::Error + Send + Sync + 'static>(error: E) -> Self {
        Error::Writer(Arc::new(error))
    }

    /// Describes a caught panic payload.
    pub(crate) fn panicked(what: &'static str, payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "non-string panic payload".to_string()
        };
        Error::Panicked(what, message)
    }
}

impl From<PartitionError> for Error {
    fn from(e: PartitionError) -> Self {
        match e {
            PartitionError::NoRuleMatches { .. } => Error::Rejected(e.to_string()),
            other => Error::Config(other.to_string()),
        }
    }
}

/// Result with a partcache [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::Error;

    #[test]
    fn loader_and_writer_errors_keep_their_source() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "row 7 is gone");
        let loader = Error::loader(io);
        let source = loader.source().map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("row 7 is gone"));
        let writer = Error::writer(std::fmt::Error);
        assert!(writer.source().is_some());
        assert!(
            Error::Timeout(std::time::Duration::from_secs(1))
                .source()
                .is_none()
        );
    }
}
