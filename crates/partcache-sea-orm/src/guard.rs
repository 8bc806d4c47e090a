//! The write guard of [`UnreachableStore::RefuseWrite`]: write markers before a write,
//! and the refusal of a write whose markers cannot reach the store.

use sea_orm::DbErr;

use crate::query_cache::{QueryCache, UnreachableStore};

/// Puts write markers on `keys` when the query cache refuses writes it cannot
/// invalidate ([`UnreachableStore::RefuseWrite`]); the error refuses the write.
pub(crate) async fn mark_before_write(
    cache: &QueryCache,
    keys: &[String],
) -> Result<Option<u64>, DbErr> {
    match cache.inner.unreachable {
        UnreachableStore::RetryAfterWrite => Ok(None),
        _ => match cache.inner.versions.mark(keys).await {
            Ok(marker) => Ok(Some(marker)),
            Err(error) => {
                tracing::error!(%error, "partcache-sea-orm: write refused: its invalidation cannot reach the cache store");
                Err(DbErr::Custom(format!(
                    "partcache-sea-orm: write refused before it ran (nothing changed): the cache store is unreachable, so other processes could not be told to drop the results it would make stale ({error}); see UnreachableStore"
                )))
            }
        },
    }
}
