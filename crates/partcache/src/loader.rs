//! Read-through loading and write-through writing.
//!
//! A [`CacheLoader`] fills misses of `get`/`get_all` (read-through); a [`CacheWriter`] is
//! called *before* every mutation reaches the store (write-through), so a failing
//! writer fails the call and leaves the cache unchanged, and nothing a caller wrote is
//! lost when the cache itself is down (the writer ran first).

use async_trait::async_trait;

/// The error type loaders and writers return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Loads values for keys the cache does not hold (read-through).
#[async_trait]
pub trait CacheLoader<K, V>: Send + Sync + 'static {
    /// The value for `key`, or `None` when there is none (nothing is cached then).
    async fn load(&self, key: &K) -> Result<Option<V>, BoxError>;
}

/// Writes through to the system of record before the cache changes.
#[async_trait]
pub trait CacheWriter<K, V>: Send + Sync + 'static {
    /// Called before `key` is set to `value` in the cache.
    async fn write(&self, key: &K, value: &V) -> Result<(), BoxError>;
    /// Called before `key` is removed from the cache.
    async fn delete(&self, key: &K) -> Result<(), BoxError>;
}

/// The error a [`BoxError`] becomes inside [`crate::Error`].
#[derive(Debug)]
pub(crate) struct CallbackError(pub(crate) BoxError);

impl std::fmt::Display for CallbackError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for CallbackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}
