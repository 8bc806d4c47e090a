//! [`CachingTransaction`]: a transaction whose version bumps wait for its commit.

use std::collections::{BTreeSet, HashSet};
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, ExecResult, IsolationLevel,
    QueryResult, Statement, StatementBuilder, TransactionError, TransactionOptions,
    TransactionSession, TransactionTrait,
};

use crate::audit::write_effect;
use crate::connection::{CacheAware, CacheScope, WritePlan, plan_write, run_transaction};
use crate::query_cache::QueryCache;
use crate::sql::raw_effect;

/// The bumps a transaction owes the store, applied at its commit.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    keys: BTreeSet<String>,
    tables: HashSet<String>,
    everything: bool,
}

impl Pending {
    fn absorb(&mut self, plan: WritePlan) {
        self.keys.extend(plan.keys);
        self.tables.extend(plan.tables);
        self.everything |= plan.everything;
    }

    fn merge(&mut self, other: Pending) {
        self.keys.extend(other.keys);
        self.tables.extend(other.tables);
        self.everything |= other.everything;
    }
}

/// What a transaction (and its enclosing ones, for a nested transaction) has written.
#[derive(Debug)]
pub struct TxState {
    own: Arc<Mutex<Pending>>,
    /// Enclosing transactions, outermost first: their writes are visible here too.
    ancestors: Vec<Arc<Mutex<Pending>>>,
}

impl TxState {
    /// Whether this transaction or an enclosing one wrote any of `tables` (or something
    /// the connection could not attribute to tables).
    pub(crate) fn wrote_any(&self, tables: &[String]) -> bool {
        self.ancestors
            .iter()
            .chain(std::iter::once(&self.own))
            .any(|pending| {
                let pending = pending.lock();
                pending.everything || tables.iter().any(|t| pending.tables.contains(t))
            })
    }
}

/// A transaction on a [`CachingConnection`](crate::CachingConnection).
///
/// - Writes are recorded, not bumped: other connections keep being served the
///   committed state, which is what they can read from the database.
/// - [`commit`](TransactionSession::commit) bumps every version the transaction's
///   writes call for (a nested transaction hands them to its parent instead);
///   [`rollback`](TransactionSession::rollback), or dropping the transaction, discards
///   them: nothing changed, nothing is invalidated.
/// - Cached reads inside the transaction bypass the cache for tables it wrote
///   (read-your-writes), and otherwise are served from the cache but never stored
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

    fn record(&self, plan: WritePlan) {
        if !plan.is_empty() {
            self.state.own.lock().absorb(plan);
        }
    }

    fn nested(&self, tx: DatabaseTransaction) -> CachingTransaction {
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

#[async_trait::async_trait]
impl ConnectionTrait for CachingTransaction {
    fn get_database_backend(&self) -> DbBackend {
        self.tx.get_database_backend()
    }

    async fn execute_raw(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        self.record(plan_write(&self.cache, &stmt, raw_effect(&stmt.sql)).await);
        self.tx.execute_raw(stmt).await
    }

    async fn execute<S: StatementBuilder>(&self, stmt: &S) -> Result<ExecResult, DbErr> {
        let built = self.get_database_backend().build(stmt);
        self.record(plan_write(&self.cache, &built, write_effect(stmt, &built)).await);
        self.tx.execute_raw(built).await
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        let stmt = Statement::from_string(self.get_database_backend(), sql);
        self.record(plan_write(&self.cache, &stmt, raw_effect(sql)).await);
        self.tx.execute_unprepared(sql).await
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        self.record(plan_write(&self.cache, &stmt, raw_effect(&stmt.sql)).await);
        self.tx.query_one_raw(stmt).await
    }

    async fn query_one<S: StatementBuilder>(&self, stmt: &S) -> Result<Option<QueryResult>, DbErr> {
        let built = self.get_database_backend().build(stmt);
        self.record(plan_write(&self.cache, &built, write_effect(stmt, &built)).await);
        self.tx.query_one_raw(built).await
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        self.record(plan_write(&self.cache, &stmt, raw_effect(&stmt.sql)).await);
        self.tx.query_all_raw(stmt).await
    }

    async fn query_all<S: StatementBuilder>(&self, stmt: &S) -> Result<Vec<QueryResult>, DbErr> {
        let built = self.get_database_backend().build(stmt);
        self.record(plan_write(&self.cache, &built, write_effect(stmt, &built)).await);
        self.tx.query_all_raw(built).await
    }

    fn support_returning(&self) -> bool {
        self.tx.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.tx.is_mock_connection()
    }
}

#[async_trait::async_trait]
impl TransactionSession for CachingTransaction {
    async fn commit(self) -> Result<(), DbErr> {
        let CachingTransaction { tx, cache, state } = self;
        let result = tx.commit().await;
        // On a commit error the outcome is unknown (the commit may have reached the
        // database): bump anyway, a spurious miss is cheap.
        let pending = std::mem::take(&mut *state.own.lock());
        match state.ancestors.last() {
            Some(parent) => parent.lock().merge(pending),
            None => {
                if !pending.keys.is_empty() {
                    cache.inner.versions.bump(pending.keys).await;
                }
            }
        }
        result
    }

    async fn rollback(self) -> Result<(), DbErr> {
        // The pending bumps are dropped with `self`.
        self.tx.rollback().await
    }
}

#[async_trait::async_trait]
impl TransactionTrait for CachingTransaction {
    type Transaction = CachingTransaction;

    async fn begin(&self) -> Result<CachingTransaction, DbErr> {
        Ok(self.nested(self.tx.begin().await?))
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<CachingTransaction, DbErr> {
        Ok(self.nested(
            self.tx
                .begin_with_config(isolation_level, access_mode)
                .await?,
        ))
    }

    async fn begin_with_options(
        &self,
        options: TransactionOptions,
    ) -> Result<CachingTransaction, DbErr> {
        Ok(self.nested(self.tx.begin_with_options(options).await?))
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c CachingTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let tx = self.begin().await.map_err(TransactionError::Connection)?;
        run_transaction(tx, callback).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(
                &'c CachingTransaction,
            ) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        let tx = self
            .begin_with_config(isolation_level, access_mode)
            .await
            .map_err(TransactionError::Connection)?;
        run_transaction(tx, callback).await
    }
}
