//! A connection that runs nothing: it records the statement a sea-orm executor would
//! send, with its audit, for the shapes whose statement sea-orm builds privately (a
//! `Selector`'s statement object, counts, paginator pages; see `capture.rs`). The
//! cached query then learns its SQL, bound values and tables from the same code path
//! sea-orm runs, without reaching into sea-orm's private fields.
//!
//! The probe's methods complete on their first poll, so an executor future run against
//! it completes in one poll too; the statement is handed back through a thread-local
//! slot read right after that poll, on the same thread.

use std::cell::RefCell;
use std::sync::Arc;

use futures::FutureExt;
use parking_lot::Mutex;
use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, ExecResult, QueryResult, Statement, StatementBuilder,
};

use crate::capture::{Captured, learn};
use crate::reader::Reader;

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

/// Records a statement that arrived as SQL only: with no statement object to audit, it
/// is not cached.
fn record(stmt: Statement) {
    CAPTURED.with(|c| *c.borrow_mut() = Some(Captured { stmt, reads: None }));
}

fn not_a_read() -> DbErr {
    DbErr::Custom("partcache-sea-orm: a cached query tried to write".into())
}

impl Probe {
    /// Records `stmt` as this backend builds it, with the tables it reads.
    fn capture<S: StatementBuilder>(&self, stmt: &S) {
        let learnt = READER
            .with(|r| r.borrow().clone())
            .map(|reader| learn(&reader, self.0, stmt));
        let learnt = learnt.unwrap_or_else(|| Captured {
            stmt: self.0.build(stmt),
            reads: None,
        });
        CAPTURED.with(|c| *c.borrow_mut() = Some(learnt));
    }
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
        record(stmt);
        Ok(None)
    }

    async fn query_all_raw(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        record(stmt);
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
