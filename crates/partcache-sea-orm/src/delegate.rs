//! The `ConnectionTrait` and `TransactionTrait` impls of [`CachingConnection`] and
//! [`CachingTransaction`], written once: the two differ only in the wrapped connection,
//! in what a write does with its [`WritePlan`] (`around_write`: bump after the statement,
//! or record it for the commit) and in how a begun transaction is wrapped (`adopt`).
//!
//! [`CachingConnection`]: crate::CachingConnection
//! [`CachingTransaction`]: crate::CachingTransaction

use std::pin::Pin;

use sea_orm::{TransactionError, TransactionSession};

/// Implements `ConnectionTrait` and `TransactionTrait` for `$ty`, forwarding to its
/// field `$inner` (a sea-orm connection or transaction), with `$tx` (the caching
/// transaction) as what `begin` returns. `$ty` provides `cache`,
/// `around_write(plan, future)` and `adopt(DatabaseTransaction) -> $tx`.
///
/// Every write path plans before it runs, so the plan is taken even when the statement
/// fails (a failed statement may still have changed the database).
macro_rules! caching_connection_impls {
    ($ty:ty, $inner:ident, $tx:ty) => {
        // In an anonymous const so the names imported here stay out of the caller's module.
        const _: () = {
            use ::sea_orm::{
                AccessMode, ConnectionTrait, DbBackend, DbErr, ExecResult, IsolationLevel,
                QueryResult, Statement, StatementBuilder, TransactionError, TransactionOptions,
                TransactionTrait,
            };
            use ::std::future::Future;
            use ::std::pin::Pin;
            use $crate::delegate::run_transaction;
            use $crate::plan::{plan_built, plan_raw};

            /// Keeps the trait's signatures on one line each.
            type Res<T> = Result<T, DbErr>;

            // Outside the `#[async_trait]` impl so these stay plain generic `async fn`s;
            // each trait method below is then one call naming the wrapped method it runs.
            impl $ty {
                /// Plans `stmt` from its SQL text, then runs `run(stmt)` around the plan.
                async fn write_raw<T, Fut: Future<Output = Res<T>>>(
                    &self,
                    stmt: Statement,
                    run: impl FnOnce(Statement) -> Fut,
                ) -> Res<T> {
                    let plan = plan_raw(&self.cache, &stmt).await;
                    self.around_write(plan, run(stmt)).await
                }

                /// Builds `stmt`, plans it from its audit, then runs `run(built)` around
                /// the plan.
                async fn write_built<S: StatementBuilder, T, Fut: Future<Output = Res<T>>>(
                    &self,
                    stmt: &S,
                    run: impl FnOnce(Statement) -> Fut,
                ) -> Res<T> {
                    let backend = self.get_database_backend();
                    let (built, plan) = plan_built(&self.cache, backend, stmt).await;
                    self.around_write(plan, run(built)).await
                }
            }

            #[async_trait::async_trait]
            impl ConnectionTrait for $ty {
                fn get_database_backend(&self) -> DbBackend {
                    self.$inner.get_database_backend()
                }

                async fn execute_raw(&self, stmt: Statement) -> Res<ExecResult> {
                    self.write_raw(stmt, |s| self.$inner.execute_raw(s)).await
                }

                async fn execute<S: StatementBuilder>(&self, stmt: &S) -> Res<ExecResult> {
                    self.write_built(stmt, |s| self.$inner.execute_raw(s)).await
                }

                async fn execute_unprepared(&self, sql: &str) -> Res<ExecResult> {
                    // Planned from a statement of the same text; run as the text itself.
                    let stmt = Statement::from_string(self.get_database_backend(), sql);
                    self.write_raw(stmt, |_| self.$inner.execute_unprepared(sql))
                        .await
                }

                async fn query_one_raw(&self, stmt: Statement) -> Res<Option<QueryResult>> {
                    self.write_raw(stmt, |s| self.$inner.query_one_raw(s)).await
                }

                // `INSERT/UPDATE ... RETURNING` come this way.
                async fn query_one<S: StatementBuilder>(
                    &self,
                    stmt: &S,
                ) -> Res<Option<QueryResult>> {
                    self.write_built(stmt, |s| self.$inner.query_one_raw(s))
                        .await
                }

                async fn query_all_raw(&self, stmt: Statement) -> Res<Vec<QueryResult>> {
                    self.write_raw(stmt, |s| self.$inner.query_all_raw(s)).await
                }

                async fn query_all<S: StatementBuilder>(&self, stmt: &S) -> Res<Vec<QueryResult>> {
                    self.write_built(stmt, |s| self.$inner.query_all_raw(s))
                        .await
                }

                fn support_returning(&self) -> bool {
                    self.$inner.support_returning()
                }

                fn is_mock_connection(&self) -> bool {
                    self.$inner.is_mock_connection()
                }
            }

            #[async_trait::async_trait]
            impl TransactionTrait for $ty {
                type Transaction = $tx;

                async fn begin(&self) -> Result<$tx, DbErr> {
                    Ok(self.adopt(self.$inner.begin().await?))
                }

                async fn begin_with_config(
                    &self,
                    isolation_level: Option<IsolationLevel>,
                    access_mode: Option<AccessMode>,
                ) -> Result<$tx, DbErr> {
                    let tx = self.$inner.begin_with_config(isolation_level, access_mode);
                    Ok(self.adopt(tx.await?))
                }

                async fn begin_with_options(
                    &self,
                    options: TransactionOptions,
                ) -> Result<$tx, DbErr> {
                    Ok(self.adopt(self.$inner.begin_with_options(options).await?))
                }

                async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
                where
                    F: for<'c> FnOnce(
                            &'c $tx,
                        )
                            -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
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
                            &'c $tx,
                        )
                            -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
                        + Send,
                    T: Send,
                    E: std::fmt::Display + std::fmt::Debug + Send,
                {
                    let tx = self.begin_with_config(isolation_level, access_mode);
                    let tx = tx.await.map_err(TransactionError::Connection)?;
                    run_transaction(tx, callback).await
                }
            }
        };
    };
}

pub(crate) use caching_connection_impls;

/// Runs `callback` in `tx`: commit on `Ok`, roll back on `Err` (sea-orm's rule).
pub(crate) async fn run_transaction<Tx, F, T, E>(
    tx: Tx,
    callback: F,
) -> Result<T, TransactionError<E>>
where
    Tx: TransactionSession,
    F: for<'c> FnOnce(&'c Tx) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>> + Send,
    T: Send,
    E: std::fmt::Display + std::fmt::Debug + Send,
{
    let outcome = callback(&tx).await;
    match outcome {
        Ok(value) => {
            tx.commit().await.map_err(TransactionError::Connection)?;
            Ok(value)
        }
        Err(error) => {
            tx.rollback().await.map_err(TransactionError::Connection)?;
            Err(TransactionError::Transaction(error))
        }
    }
}
