//! [`CachingTransaction`]: a transaction whose version bumps wait for its commit.

use std::sync::Arc;

use parking_lot::Mutex;
use sea_orm::{DatabaseTransaction, DbErr, TransactionSession};

use crate::delegate::caching_connection_impls;
use crate::guard::mark_before_write;
use crate::plan::WritePlan;
use crate::query_cache::QueryCache;
use crate::scope::{CacheAware, CacheScope, Pending, TxState};

/// A transaction on a [`CachingConnection`](crate::CachingConnection).
///
/// - Writes are recorded, not bumped: other connections keep being served the
///   committed state, which is what they can read from the database.
/// - [`commit`](TransactionSession::commit) bumps every version the transaction's
///   writes call for (a nested transaction hands them to its parent instead); by
///   default it first marks them, and rolls back instead of committing when that
///   fails (see [`UnreachableStore`](crate::UnreachableStore));
///   [`rollback`](TransactionSession::rollback), or dropping the transaction, discards
///   them: nothing changed, nothing is invalidated.
/// - Cached reads inside the transaction bypass the cache for tables it, a
///   transaction enclosing it, or a transaction nested in it (a savepoint, open or
///   released) wrote (read-your-writes), and otherwise are served from the cache but never stored
///   into it: the transaction's snapshot may be older than the versions just read.
#[derive(Debug)]
pub struct CachingTransaction {
    tx: DatabaseTransaction,
    cache: QueryCache,
    state: TxState,
}

impl CachingTransaction {
    pub(crate) fn new(
        tx: DatabaseTransaction,
        cache: QueryCache,
        ancestors: Vec<Arc<Mutex<Pending>>>,
    ) -> Self {
        CachingTransaction {
            tx,
            cache,
            state: TxState {
                own: Arc::new(Mutex::new(Pending::default())),
                ancestors,
            },
        }
    }

    /// The wrapped transaction (writes through it invalidate nothing).
    pub fn inner(&self) -> &DatabaseTransaction {
        &self.tx
    }

    /// Records what a write planned, then runs it: the bumps wait for the commit. The
    /// record comes first so a write cancelled mid-flight is still owed.
    async fn around_write<T>(
        &self,
        plan: WritePlan,
        run: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, DbErr> {
        if !plan.is_empty() {
            self.state.record(plan);
        }
        run.await
    }

    /// A transaction begun inside this one: nested, it sees this one's writes.
    fn adopt(&self, tx: DatabaseTransaction) -> CachingTransaction {
        let mut ancestors = self.state.ancestors.clone();
        ancestors.push(self.state.own.clone());
        CachingTransaction::new(tx, self.cache.clone(), ancestors)
    }
}

impl CacheAware for CachingTransaction {
    fn cache_scope(&self) -> CacheScope<'_> {
        CacheScope {
            cache: &self.cache,
            tx: Some(&self.state),
        }
    }
}

// `ConnectionTrait` and `TransactionTrait`, shared with `CachingConnection`.
caching_connection_impls!(CachingTransaction, tx, CachingTransaction);

#[async_trait::async_trait]
impl TransactionSession for CachingTransaction {
    async fn commit(self) -> Result<(), DbErr> {
        let CachingTransaction { tx, cache, state } = self;
        let pending = std::mem::take(&mut *state.own.lock());
        if let Some(parent) = state.ancestors.last() {
            let result = tx.commit().await;
            parent.lock().merge(pending);
            return result;
        }
        if pending.keys.is_empty() {
            return tx.commit().await;
        }
        let keys: Vec<String> = pending.keys.into_iter().collect();
        let marker = match mark_before_write(&cache, &keys).await {
            Ok(marker) => marker,
            Err(refused) => {
                // Nothing of the transaction reaches the database.
                tx.rollback().await?;
                return Err(refused);
            }
        };
        let result = tx.commit().await;
        // On a commit error the outcome is unknown (the commit may have reached the
        // database): bump anyway, a spurious miss is cheap.
        cache.inner.versions.bump_after(keys, marker).await;
        result
    }

    async fn rollback(self) -> Result<(), DbErr> {
        // The pending bumps are dropped with `self`.
        self.tx.rollback().await
    }
}
