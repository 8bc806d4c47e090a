//! [`CachingConnection`]: a `DatabaseConnection` whose every write bumps the versions
//! of the tables it wrote, so cached results that read them miss from then on.

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, Statement};

use crate::delegate::caching_connection_impls;
use crate::key::{row_id, value_kind};
use crate::query_cache::{QueryCache, UnreachableStore};
use crate::sql::{RawEffect, is_pure_insert, row_target};
use crate::transaction::{CachingTransaction, TxState};
use crate::versions::Version;

/// A connection a cached query can run on: a [`CachingConnection`] or a
/// [`CachingTransaction`]. Sealed: what it exposes is crate-private.
pub trait CacheAware: ConnectionTrait + Send + Sync {
    /// Where this connection's writes go and which transaction it is in.
    #[doc(hidden)]
    fn cache_scope(&self) -> CacheScope<'_>;
}

/// The query cache and (inside a transaction) the transaction's pending writes.
#[doc(hidden)]
pub struct CacheScope<'a> {
    pub(crate) cache: &'a QueryCache,
    pub(crate) tx: Option<&'a TxState>,
}

/// The version bumps one write statement calls for.
#[derive(Debug, Default)]
pub(crate) struct WritePlan {
    /// Version keys to bump.
    pub(crate) keys: Vec<String>,
    /// Tables written (for read-your-writes inside a transaction).
    pub(crate) tables: Vec<String>,
    /// Tables unknown: treat every table as written.
    pub(crate) everything: bool,
}

impl WritePlan {
    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Works out which versions `stmt` must bump, given what it does (`effect`).
///
/// Every write bumps its tables' query versions. For the entity cache: a pure `INSERT`
/// changes no existing row (missing rows are never cached); an `UPDATE`/`DELETE` whose
/// `WHERE` pins every primary-key column of a table the entity cache knows bumps that
/// one row; anything else bumps the table's row set.
pub(crate) async fn plan_write(
    cache: &QueryCache,
    stmt: &Statement,
    effect: RawEffect,
) -> WritePlan {
    let versions = &cache.inner.versions;
    let tables = match effect {
        RawEffect::Read => return WritePlan::default(),
        RawEffect::Unknown => {
            return WritePlan {
                keys: vec![versions.key(&Version::Epoch)],
                tables: Vec::new(),
                everything: true,
            };
        }
        RawEffect::Writes(tables) => tables,
    };
    let mut keys = Vec::with_capacity(tables.len() * 2);
    for table in &tables {
        keys.push(versions.key(&Version::Table(table.clone())));
    }
    let single = tables.len() == 1;
    if !(single && is_pure_insert(&stmt.sql, stmt.db_backend)) {
        for table in &tables {
            let row = match single
                .then(|| row_target(&stmt.sql, stmt.db_backend))
                .flatten()
            {
                Some((target, pairs)) if &target == table => {
                    single_row(cache, table, stmt, &pairs).await
                }
                _ => None,
            };
            keys.push(versions.key(&match row {
                Some(id) => Version::Row(table.clone(), id),
                None => Version::Rows(table.clone()),
            }));
        }
    }
    WritePlan {
        keys,
        tables,
        everything: false,
    }
}

/// The row identity of a `WHERE` that pins every primary-key column of `table`.
async fn single_row(
    cache: &QueryCache,
    table: &str,
    stmt: &Statement,
    pairs: &[(String, usize)],
) -> Option<String> {
    let pk = cache.primary_key_columns(table).await?;
    let values = &stmt.values.as_ref()?.0;
    let mut key_pairs = Vec::with_capacity(pk.len());
    for (column, kind) in &pk {
        let mut matching = pairs.iter().filter(|(c, _)| c == column);
        let (_, index) = matching.next()?;
        if matching.next().is_some() {
            return None;
        }
        let value = values.get(*index)?;
        if value_kind(value) != *kind {
            // Bound with another type than the entity's key: the database may convert
            // it to the key of any row.
            return None;
        }
        key_pairs.push((column.clone(), value));
    }
    Some(row_id(&mut key_pairs))
}

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

/// A [`DatabaseConnection`] that invalidates a [`QueryCache`] on every write.
///
/// Everything sea-orm writes with goes through [`ConnectionTrait`]: ActiveModel
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
/// [`UnreachableStore`]), so no reader serves or stores a result while it runs, and are
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

    /// Wraps `db` and learns the base tables of its views
    /// ([`QueryCache::refresh_views`]), so selects over views are invalidated by writes
    /// to their tables from the start. Fails when the catalog cannot be read.
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
caching_connection_impls!(CachingConnection, db);
