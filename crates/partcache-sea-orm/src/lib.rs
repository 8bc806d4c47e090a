//! # partcache-sea-orm
//!
//! A query cache and an entity cache for [sea-orm](https://www.sea-ql.org/SeaORM/),
//! over any partcache store (in-process, Redis, Redis Cluster), invalidated by writes:
//! a cached result is never served after a write to a table it read, in any process
//! sharing the store (Hibernate's query cache and update-timestamps rule).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use partcache::CacheManager;
//! use partcache_sea_orm::{CachingConnection, EntityCache, QueryCache, QueryCacheExt};
//! use sea_orm::{entity::prelude::*, ActiveValue::Set, ConnectionTrait, Database, Schema};
//!
//! mod product {
//!     use sea_orm::entity::prelude::*;
//!     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
//!     #[sea_orm(table_name = "product")]
//!     pub struct Model {
//!         #[sea_orm(primary_key)]
//!         pub id: i32,
//!         pub name: String,
//!         pub price: i32,
//!     }
//!     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
//!     pub enum Relation {}
//!     impl ActiveModelBehavior for ActiveModel {}
//! }
//!
//! let manager = CacheManager::from_url("memory://")?;
//! let query_cache = QueryCache::new(&manager, "shop").await?;
//! let db = CachingConnection::new(Database::connect("sqlite::memory:").await?, query_cache.clone());
//! let schema = Schema::new(db.get_database_backend());
//! db.execute(&schema.create_table_from_entity(product::Entity)).await?;
//! product::ActiveModel { id: Set(1), name: Set("pen".into()), price: Set(3) }.insert(&db).await?;
//!
//! let cheap = || product::Entity::find().filter(product::Column::Price.lt(10));
//! assert_eq!(cheap().cached(&query_cache).all(&db).await?.len(), 1); // miss: runs SQL
//! assert_eq!(cheap().cached(&query_cache).all(&db).await?.len(), 1); // hit
//!
//! // A write through the connection invalidates every cached query over `product`.
//! product::ActiveModel { id: Set(1), price: Set(12), ..Default::default() }.update(&db).await?;
//! assert!(cheap().cached(&query_cache).all(&db).await?.is_empty());
//!
//! // Second-level cache by primary key, invalidated per row.
//! let entities = EntityCache::new(&query_cache);
//! let pen = entities.find_by_id::<product::Entity, _>(&db, 1).await?;
//! assert_eq!(pen.map(|p| p.price), Some(12));
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! # How it works
//!
//! - **Reads.** [`QueryCacheExt::cached`] binds a select ([`sea_orm::Select`],
//!   [`sea_orm::Selector`] from `into_model`/`into_partial_model`/`into_json`/
//!   `into_tuple`, [`sea_orm::SelectTwo`], [`sea_orm::SelectTwoMany`]) to a
//!   [`QueryCache`]; its `one`/`all`/`count`/`paginate` return what sea-orm's do. The
//!   statement is obtained from sea-orm's own executor (run against a connection that
//!   records instead of executing). Its tables are those sea-query's statement audit
//!   (`AuditTrait`) names, merged with those the crate's SQL reader finds anywhere in
//!   the statement text (subqueries in `HAVING`, `ORDER BY`, `JOIN … ON`, custom
//!   expressions), plus the base tables of views. A select that cannot be fully
//!   audited, or that locks rows, is not cached.
//! - **Keys** ([`key`](crate) module): namespace, backend, shape (`all`, `one`,
//!   `count`, page), SQL, every bound value in a canonical, typed, length-prefixed
//!   encoding, and the *version token* of every table read (plus the global epoch and
//!   any tags). A result is only ever found under the versions it was read under, so a
//!   result whose tables moved is a miss by construction. Versions are read *before*
//!   the query runs: a write racing with the read bumps after its commit, so the racing
//!   result lands under versions that are already outdated.
//! - **Writes.** [`CachingConnection`] implements `ConnectionTrait` and
//!   `TransactionTrait`; every statement that reaches it (ActiveModel saves,
//!   `insert_many`/`update_many`/`delete_many`, raw `execute`) bumps the versions of the
//!   tables it writes, taken from the statement audit and the SQL text (raw SQL is
//!   read as its backend reads it; anything unclear, or a call of a function not
//!   known read-only, bumps the global epoch). By default the versions are marked
//!   before the write and a write that cannot be marked is refused
//!   ([`UnreachableStore`]).
//! - **Transactions.** [`CachingTransaction`] buffers bumps until commit, drops them
//!   on rollback, bypasses the cache for tables it wrote (read-your-writes), and never
//!   stores results read inside it.
//! - **Versions** are random 64-bit tokens compared for equality, kept in the same
//!   store (a `Cache<String, u64>`, bumped with `invoke`), so every process agrees;
//!   see [`versions`] for why tokens and not counters, and what a
//!   Redis failover can and cannot do.
//! - **Entity cache.** [`EntityCache::find_by_id`] keys each row by its table's
//!   row-set version and its own row version; single-row writes bump the row,
//!   bulk writes the row set.
//! - **Declarative caching** of whole repository functions: [`cached_query!`] (or
//!   [`QueryCache::remember`]). `partcache`'s `#[cacheable]` caches by arguments only
//!   and knows nothing of table writes; use it for data that does not come from tables
//!   written through the connection.
//! - **Failing open.** Store errors never fail a query. A write whose invalidation
//!   cannot reach the store is refused before it runs, by default; see
//!   [`UnreachableStore`].
//!
//! On a remote store, cached values are serialized (JSON by default, see
//! [`QueryCacheBuilder::codec`]): models need `serde::Serialize + Deserialize`
//! (sea-orm's `with-json` feature provides it for chrono, decimal and JSON fields).

#![warn(missing_docs)]

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
