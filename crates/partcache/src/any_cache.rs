//! [`AnyCache`]: a built cache seen without its key and value types, for dashboards,
//! exporters and admin pages that list every cache of a [`crate::CacheManager`].
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use partcache::CacheManager;
//!
//! let manager = CacheManager::from_url("memory://")?;
//! let users = manager.cache::<u64, String>("users").build().await?;
//! let sessions = manager.cache::<String, Vec<u8>>("sessions").build().await?;
//! users.put(1, "alice".to_string()).await?;
//! assert!(users.get(&1).await?.is_some());
//!
//! for cache in manager.caches() {
//!     // `users`, then `sessions`: whatever their types.
//!     println!("{}: {} entries, hit ratio {:.2}", cache.name(), cache.len().await?, cache.stats().hit_ratio());
//! }
//! manager.publish_metrics(); // every cache's statistics to the `metrics` facade
//! # let _ = sessions;
//! # Ok::<(), partcache::Error>(()) }).unwrap();
//! ```

use futures::future::BoxFuture;

use crate::balance::BalanceReport;
use crate::cache::{Cache, CacheKey, CacheValue};
use crate::error::Result;
use crate::stats::CacheStats;

/// A cache whatever its key and value types: its name, statistics and size. Obtained
/// from [`crate::CacheManager::caches`]; every [`Cache`] is one.
///
/// Only reads: to change entries, use the typed [`Cache`]
/// ([`crate::CacheManager::get_cache`]).
pub trait AnyCache: Send + Sync {
    /// The cache's name.
    fn name(&self) -> &str;

    /// A snapshot of its statistics (this process's view, as [`Cache::stats`]).
    fn stats(&self) -> CacheStats;

    /// Pushes its statistics to the `metrics` facade ([`Cache::publish_metrics`]).
    fn publish_metrics(&self);

    /// Describes the store behind it ([`Cache::store_description`]).
    fn store_description(&self) -> String;

    /// `true` on the embedded store ([`Cache::is_local`]).
    fn is_local(&self) -> bool;

    /// Its partition count, on partitioned remote stores.
    fn partitions(&self) -> Option<u16>;

    /// Number of entries ([`Cache::len`]: approximate on a Redis store, one round trip
    /// per master there).
    fn len(&self) -> BoxFuture<'_, Result<u64>>;

    /// `len() == 0` ([`Cache::is_empty`]).
    fn is_empty(&self) -> BoxFuture<'_, Result<bool>>;

    /// Partitions, entries and bytes per master ([`Cache::balance_report`]); an
    /// [`crate::Error::Config`] on stores that do not partition.
    fn balance_report(&self) -> BoxFuture<'_, Result<BalanceReport>>;

    /// The circuit breakers of the store's nodes (none on the embedded store; see
    /// [`crate::store::raw::RawStore::breakers`]).
    fn breakers(&self) -> Vec<crate::stats::BreakerStats> {
        Vec::new()
    }
}

impl<K: CacheKey, V: CacheValue> AnyCache for Cache<K, V> {
    fn name(&self) -> &str {
        Cache::name(self)
    }

    fn stats(&self) -> CacheStats {
        Cache::stats(self)
    }

    fn publish_metrics(&self) {
        Cache::publish_metrics(self)
    }

    fn store_description(&self) -> String {
        Cache::store_description(self)
    }

    fn is_local(&self) -> bool {
        Cache::is_local(self)
    }

    fn partitions(&self) -> Option<u16> {
        self.partition_map().map(|map| map.partitions())
    }

    fn len(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(Cache::len(self))
    }

    fn is_empty(&self) -> BoxFuture<'_, Result<bool>> {
        Box::pin(Cache::is_empty(self))
    }

    fn balance_report(&self) -> BoxFuture<'_, Result<BalanceReport>> {
        Box::pin(Cache::balance_report(self))
    }

    fn breakers(&self) -> Vec<crate::stats::BreakerStats> {
        self.raw_store()
            .map(|raw| raw.breakers())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use crate::{CacheManager, Error};

    #[tokio::test]
    async fn a_manager_lists_every_cache_by_name_whatever_its_types() {
        let manager = CacheManager::from_url("memory://").unwrap();
        let users = manager.cache::<u64, String>("users").build().await.unwrap();
        let blobs = manager
            .cache::<String, Vec<u8>>("blobs")
            .build()
            .await
            .unwrap();
        users.put(1, "alice".to_string()).await.unwrap();
        users.put(2, "bob".to_string()).await.unwrap();
        assert!(users.get(&1).await.unwrap().is_some());
        assert!(blobs.get(&"x".to_string()).await.unwrap().is_none());

        let caches = manager.caches();
        let names: Vec<&str> = caches.iter().map(|c| c.name()).collect();
        assert_eq!(names, ["blobs", "users"]);
        let (blobs_any, users_any) = (&caches[0], &caches[1]);
        assert_eq!(users_any.len().await.unwrap(), 2);
        assert!(!users_any.is_empty().await.unwrap());
        assert!(blobs_any.is_empty().await.unwrap());
        assert_eq!((users_any.stats().hits, users_any.stats().puts), (1, 2));
        assert_eq!(blobs_any.stats().misses, 1);
        assert!(users_any.is_local());
        assert_eq!(users_any.partitions(), None);
        assert!(matches!(
            users_any.balance_report().await,
            Err(Error::Config(_))
        ));
    }
}
