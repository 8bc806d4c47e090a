//! [`CachingConnection`]: a `DatabaseConnection` whose every write bumps the versions
//! of the tables it wrote, so cached results that read them miss from then on.

use sea_orm::{DatabaseConnection, DbErr};

use crate::delegate::caching_connection_impls;
use crate::guard::mark_before_write;
use crate::plan::WritePlan;
use crate::query_cache::QueryCache;
use crate::scope::{CacheAware, CacheScope};
use crate::transaction::CachingTransaction;

/// A [`DatabaseConnection`] that invalidates a [`QueryCache`] on every write.
///
/// Everything sea-orm writes with goes through [`ConnectionTrait`](sea_orm::ConnectionTrait): ActiveModel
/// `insert`/`update`/`save`/`delete`, `insert_many`, `update_many`, `delete_many`, and
/// raw `execute`/`execute_unprepared`. Statement objects are audited for the tables
/// they write; raw SQL is read best-effort, and SQL that is not understood bumps the
/// global epoch (every cached result misses) rather than risk a stale read. Writes the
/// database makes on its own (triggers, `ON DELETE CASCADE`) are not visible: declare
/// them with [`Cached::depends_on`](crate::Cached::depends_on) or call
/// [`QueryCache::invalidate_table`].
///
/// Outside a transaction, the versions a write will bump are first replaced by write
/// markers (by default; a write whose markers cannot be stored is refused, see
/// [`UnreachableStore`](crate::UnreachableStore)), so no reader serves or stores a result while it runs, and are
/// bumped after the statement returns, whether it succeeded or not (a failed statement
/// may still have committed, e.g. when the connection dropped after the commit).
///
/// [`begin`](sea_orm::TransactionTrait::begin) returns a [`CachingTransaction`], whose bumps wait
/// for its commit.
#[derive(Debug, Clone)]
pub struct CachingConnection {
    db: DatabaseConnection,
    cache: QueryCache,
}

impl CachingConnection {
    /// Wraps `db`; writes through it invalidate `cache`.
    pub fn new(db: DatabaseConnection, cache: QueryCache) -> Self {
        CachingConnection { db, cache }
    }

    /// Wraps `db` and learns the base tables of its views and, on PostgreSQL, its
    /// partitions and inheriting tables ([`QueryCache::refresh_views`]), so selects over
    /// views and parents are invalidated by writes to their tables from the start.
    /// Fails when the catalog cannot be read.
    pub async fn connect(db: DatabaseConnection, cache: QueryCache) -> Result<Self, DbErr> {
        cache.refresh_views(&db).await?;
        Ok(CachingConnection { db, cache })
    }

    /// The wrapped connection (writes through it invalidate nothing).
    pub fn inner(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The query cache this connection invalidates.
    pub fn query_cache(&self) -> &QueryCache {
        &self.cache
    }

    /// Runs a write between the marking of what it planned (refused when that fails,
    /// see [`UnreachableStore`]) and the bump of it, after the statement returns,
    /// whether it succeeded or not (see the type's documentation).
    async fn around_write<T>(
        &self,
        plan: WritePlan,
        run: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        if plan.is_empty() {
            return run.await;
        }
        let marker = mark_before_write(&self.cache, &plan.keys).await?;
        let result = run.await;
        self.cache
            .inner
            .versions
            .bump_after(plan.keys, marker)
            .await;
        result
    }

    /// A transaction begun here: outermost, so nothing encloses it.
    fn adopt(&self, tx: sea_orm::DatabaseTransaction) -> CachingTransaction {
        CachingTransaction::new(tx, self.cache.clone(), Vec::new())
    }
}

impl CacheAware for CachingConnection {
    fn cache_scope(&self) -> CacheScope<'_> {
        CacheScope {
            cache: &self.cache,
            tx: None,
        }
    }
}

// `ConnectionTrait` and `TransactionTrait`, shared with `CachingTransaction`.
caching_connection_impls!(CachingConnection, db, CachingTransaction);
