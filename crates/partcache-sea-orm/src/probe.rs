//! A connection that runs nothing: it records the statement a sea-orm executor would
//! send, with its audit, so a cached query learns its SQL, bound values and tables from
//! the same code path sea-orm uses, for every select shape (`Select`, `Selector`,
//! `SelectTwo`, paginators, counts) without reaching into sea-orm's private fields.
//!
//! The probe's methods complete on their first poll, so an executor future run against
//! it completes in one poll too; the statement is handed back through a thread-local
//! slot read right after that poll, on the same thread.

use std::cell::RefCell;

use futures::FutureExt;
use parking_lot::Mutex;
use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement, StatementBuilder,
};

use std::sync::Arc;

use crate::audit::read_tables;
use crate::catalog::Reader;

/// What the probe saw.
pub(crate) struct Captured {
    /// The statement, exactly as it would have been sent (for `remember`, the key).
    pub(crate) stmt: Statement,
    /// The tables it reads, views expanded (for `remember`, those its caller named);
    /// `None` when it cannot be cached (no statement object, a part that cannot be
    /// audited, a lock, or a write).
    pub(crate) reads: Option<Arc<Vec<String>>>,
}

/// A do-nothing connection for one backend.
pub(crate) struct Probe(DbBackend);

static PROBES: [Probe; 3] = [
    Probe(DbBackend::MySql),
    Probe(DbBackend::Postgres),
    Probe(DbBackend::Sqlite),
];

/// Probes for backends added after this crate was written (`DbBackend` is
/// non-exhaustive): one per backend, created on first use and kept for the process.
static OTHER_PROBES: Mutex<Vec<&'static Probe>> = Mutex::new(Vec::new());

/// The probe for `backend`.
pub(crate) fn probe(backend: DbBackend) -> &'static Probe {
    match backend {
        DbBackend::MySql => &PROBES[0],
        DbBackend::Postgres => &PROBES[1],
        DbBackend::Sqlite => &PROBES[2],
        other => {
            let mut others = OTHER_PROBES.lock();
            if let Some(found) = others.iter().find(|p| p.0 == other) {
                return found;
            }
            let made: &'static Probe = Box::leak(Box::new(Probe(other)));
            others.push(made);
            made
        }
    }
}

thread_local! {
    static CAPTURED: RefCell<Option<Captured>> = const { RefCell::new(None) };
    /// The reader of the query cache the captured select runs through.
    static READER: RefCell<Option<Arc<Reader>>> = const { RefCell::new(None) };
}

/// Runs `run` (an executor future over a [`Probe`]) and returns the statement it sent,
/// with the tables `reader` finds it reading. `None` if it sent none or did not
/// complete at once (neither happens with sea-orm 2.0's executors; the caller reports
/// it as an error rather than guess).
pub(crate) fn capture<F: Future>(reader: &Arc<Reader>, run: F) -> Option<Captured> {
    CAPTURED.with(|c| c.borrow_mut().take());
    READER.with(|r| *r.borrow_mut() = Some(reader.clone()));
    let done = run.now_or_never();
    READER.with(|r| r.borrow_mut().take());
    done?;
    CAPTURED.with(|c| c.borrow_mut().take())
}

fn record(stmt: Statement, reads: Option<Arc<Vec<String>>>) {
    CAPTURED.with(|c| *c.borrow_mut() = Some(Captured { stmt, reads }));
}

fn not_a_read() -> DbErr {
    DbErr::Custom("partcache-sea-orm: a cached query tried to write".into())
}

impl Probe {
    /// Records `stmt` as this backend builds it, with the tables it reads (the reader's
    /// memo answers for SQL seen before, without running the statement audit again); a
    /// locking read is recorded as not cacheable.
    fn capture<S: StatementBuilder>(&self, stmt: &S) {
        let built = self.0.build(stmt);
        let reads = if self.0 == DbBackend::Sqlite && locks(stmt) {
            None
        } else {
            READER.with(|r| r.borrow().clone()).and_then(|reader| {
                reader.reads(&built.sql, built.db_backend, || read_tables(stmt, &built))
            })
        };
        record(built, reads);
    }
}

/// Whether a select locks rows (`lock_exclusive`, `lock_shared`, `lock_with_*`).
/// SQLite has no row locks, so sea-query leaves the clause out of SQLite's SQL, where
/// the SQL reader would see it; it is in PostgreSQL's. A locking read asks for the
/// database's current rows under a lock, never for a cached copy, on every backend.
fn locks<S: StatementBuilder>(stmt: &S) -> bool {
    let sql = DbBackend::Postgres.build(stmt).sql;
    [
        " FOR UPDATE",
        " FOR SHARE",
        " FOR NO KEY UPDATE",
        " FOR KEY SHARE",
    ]
    .iter()
    .any(|clause| sql.contains(clause))
}

#[async_trait::async_trait]
impl ConnectionTrait for Probe {
    fn get_database_backend(&self) -> DbBackend {
        self.0
    }

    async fn execute_raw(&self, _stmt: Statement) -> Result<ExecResult, DbErr> {
        Err(not_a_read())
    }

    async fn execute_unprepared(&self, _sql: &str) -> Result<ExecResult, DbErr> {
        Err(not_a_read())
    }

    async fn query_one_raw(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        record(stmt, None);
        Ok(None)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        record(stmt, None);
        Ok(Vec::new())
    }

    async fn query_one<S: StatementBuilder>(&self, stmt: &S) -> Result<Option<QueryResult>, DbErr> {
        self.capture(stmt);
        Ok(None)
    }

    async fn query_all<S: StatementBuilder>(&self, stmt: &S) -> Result<Vec<QueryResult>, DbErr> {
        self.capture(stmt);
        Ok(Vec::new())
    }
}
