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
///
/// The batch forms ([`CacheWriter::write_all`], [`CacheWriter::delete_all`]) serve
/// `put_all` and `remove_all_keys`. They may succeed for some entries and fail for
/// others: a [`BatchError`] says which failed, and the cache then applies exactly the
/// others (JSR-107 §9.4: `writeAll`/`deleteAll` leave the failed entries in their
/// collection). Afterwards, for every key, written by the writer ⇔ changed in the
/// cache. The defaults call [`CacheWriter::write`] / [`CacheWriter::delete`] per
/// entry and stop at the first failure.
#[async_trait]
pub trait CacheWriter<K, V>: Send + Sync + 'static
where
    K: Sync,
    V: Sync,
{
    /// Called before `key` is set to `value` in the cache.
    async fn write(&self, key: &K, value: &V) -> Result<(), BoxError>;
    /// Called before `key` is removed from the cache.
    async fn delete(&self, key: &K) -> Result<(), BoxError>;

    /// Called before `entries` are stored by `put_all`. On failure, the error names the
    /// entries (by index into `entries`) that were *not* written; the cache stores the
    /// others only.
    async fn write_all(&self, entries: &[(&K, &V)]) -> Result<(), BatchError> {
        for (i, (key, value)) in entries.iter().enumerate() {
            if let Err(error) = self.write(key, value).await {
                return Err(BatchError {
                    failed: (i..entries.len()).collect(),
                    error,
                });
            }
        }
        Ok(())
    }

    /// Called before `keys` are removed by `remove_all_keys` (or `remove_all`). On
    /// failure, the error names the keys (by index into `keys`) that were *not* deleted;
    /// the cache removes the others only.
    async fn delete_all(&self, keys: &[&K]) -> Result<(), BatchError> {
        for (i, key) in keys.iter().enumerate() {
            if let Err(error) = self.delete(key).await {
                return Err(BatchError {
                    failed: (i..keys.len()).collect(),
                    error,
                });
            }
        }
        Ok(())
    }
}

/// A batch write or delete that failed for some entries: [`CacheWriter::write_all`],
/// [`CacheWriter::delete_all`].
#[derive(Debug)]
pub struct BatchError {
    /// Indexes (into the batch) of the entries the writer did not apply. Entries not
    /// listed were applied.
    pub failed: Vec<usize>,
    /// What went wrong (returned to the caller as [`crate::Error::Writer`]).
    pub error: BoxError,
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
