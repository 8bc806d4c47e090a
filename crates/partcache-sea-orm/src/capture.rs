//! How a cached select learns its statement (SQL, bound values) and the tables it
//! reads, from sea-orm's public API.
//!
//! - **From the statement object** (`learn`): [`Select`](sea_orm::Select),
//!   [`SelectTwo`](sea_orm::SelectTwo) and [`SelectTwoMany`](sea_orm::SelectTwoMany)
//!   hand theirs out through [`QueryTrait::as_query`](sea_orm::QueryTrait::as_query);
//!   it is built for the connection's backend (what
//!   [`QueryTrait::build`](sea_orm::QueryTrait::build) does) and audited for its
//!   tables. Their `all` and `one` take this path (`one` adds `LIMIT 1`, as sea-orm's
//!   `one` does).
//! - **Through the recording connection** (`probe.rs`) where sea-orm keeps the
//!   statement to itself: a [`Selector`](sea_orm::Selector) (`into_model`,
//!   `into_partial_model`, `into_json`, `into_tuple`) exposes only the built SQL
//!   ([`Selector::into_statement`](sea_orm::Selector::into_statement)), not the
//!   statement object the audit needs, and its `one` adds its `LIMIT` privately; a
//!   count and the pages of a paginator are statements sea-orm's `Paginator` builds
//!   privately. There, sea-orm's own executor runs against a connection that records
//!   what it is sent instead of running it.

use std::sync::Arc;

use sea_orm::{DbBackend, Statement, StatementBuilder};

use crate::audit::read_tables;
use crate::reader::Reader;

/// A cached select's statement and the tables it reads.
pub(crate) struct Captured {
    /// The statement, exactly as it is sent (for `remember`, the key).
    pub(crate) stmt: Statement,
    /// The tables it reads, views expanded (for `remember`, those its caller named);
    /// `None` when it cannot be cached (no statement object, a part that cannot be
    /// audited, a lock, or a write).
    pub(crate) reads: Option<Arc<Vec<String>>>,
}

/// Builds `stmt` for `backend` and finds the tables it reads (the reader's memo answers
/// for SQL seen before, without running the statement audit again); a locking read is
/// not cacheable.
pub(crate) fn learn<S: StatementBuilder>(
    reader: &Reader,
    backend: DbBackend,
    stmt: &S,
) -> Captured {
    let built = backend.build(stmt);
    let reads = if backend == DbBackend::Sqlite && locks(stmt) {
        None
    } else {
        reader.reads(&built.sql, built.db_backend, || read_tables(stmt, &built))
    };
    Captured { stmt: built, reads }
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
