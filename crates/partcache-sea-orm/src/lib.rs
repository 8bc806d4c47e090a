#![doc = include_str!("../docs/overview.md")]

// Imports run one way; each file uses only files of the lines above it:
//   key, catalog                 encodings; declared views and functions
//   sql, audit, reader           the tables a statement reads or writes
//   capture, probe               a cached select's statement (public API, recording)
//   stats, versions              counters; table version tokens
//   query_cache                  the caches of one namespace and their settings
//   plan, guard, delegate        what a write bumps; markers; the forwarding impls
//   scope, read                  the connection a read runs on; the read path
//   transaction, connection      the caching connection types
//   ext, entity_cache, views     the public faces
mod audit;
mod capture;
mod catalog;
mod connection;
mod delegate;
mod entity_cache;
mod ext;
mod guard;
mod key;
mod plan;
mod probe;
mod query_cache;
mod read;
mod reader;
mod scope;
mod sql;
mod stats;
mod transaction;
pub mod versions;
mod views;

pub use connection::CachingConnection;
pub use entity_cache::{EntityCache, table_of};
pub use ext::{Cached, CachedPaginator, QueryCacheExt};
pub use query_cache::{DEFAULT_TTL, QueryCache, QueryCacheBuilder, UnreachableStore};
pub use scope::{CacheAware, CacheScope, TxState};
pub use stats::QueryCacheStats;
pub use transaction::CachingTransaction;

/// Caches a repository function's result, invalidated by writes to the tables it
/// reads: `cached_query!(query_cache, db, key = .., tables = [Entity, ..], async { .. })`
/// evaluates to `Result<Arc<V>, DbErr>`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # use partcache_sea_orm::{cached_query, CachingConnection, QueryCache};
/// # use sea_orm::{entity::prelude::*, Database, DbErr, ConnectionTrait, Schema};
/// # mod product {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
/// #     #[sea_orm(table_name = "product")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32, pub price: i32 }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// # let manager = partcache::CacheManager::from_url("memory://")?;
/// # let qc = QueryCache::new(&manager, "doc").await?;
/// # let db = CachingConnection::new(Database::connect("sqlite::memory:").await?, qc.clone());
/// # db.execute(&Schema::new(db.get_database_backend()).create_table_from_entity(product::Entity)).await?;
/// async fn total_price(qc: &QueryCache, db: &CachingConnection, max: i32) -> Result<i64, DbErr> {
///     let total = cached_query!(qc, db, key = format!("total-price:{max}"), tables = [product::Entity], async {
///         let rows = product::Entity::find().filter(product::Column::Price.lt(max)).all(db).await?;
///         Ok(rows.iter().map(|p| i64::from(p.price)).sum::<i64>())
///     })
///     .await?;
///     Ok(*total)
/// }
/// assert_eq!(total_price(&qc, &db, 10).await?, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[macro_export]
macro_rules! cached_query {
    ($cache:expr, $db:expr, key = $key:expr, tables = [$($entity:ty),* $(,)?], $body:expr $(,)?) => {
        $cache.remember($db, &$key, &[$($crate::table_of::<$entity>()),*], || $body)
    };
}

/// The README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
