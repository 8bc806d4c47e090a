//! The tables a statement reads or writes, from sea-query's statement audit
//! (`StatementBuilder::audit`, the `rbac` feature of sea-orm), merged with what the SQL
//! reader finds in the statement's text: the audit does not look into every clause
//! (`HAVING`, `ORDER BY`, `GROUP BY`, `JOIN ... ON`) nor into custom expressions, the
//! reader does; the union of the two never names fewer tables than either.

use std::panic::AssertUnwindSafe;

use sea_orm::sea_query::audit::{AccessType, QueryAccessAudit};
use sea_orm::{Statement, StatementBuilder};

use crate::catalog::Catalog;
use crate::key::normalize_table;
use crate::sql::{RawEffect, raw_effect};

/// Runs the audit of a query statement. Schema statements (built without bound values)
/// are not audited: sea-orm 2.0 leaves their audit unimplemented (a `todo` macro that panics). A panic in the
/// audit is caught and treated as "unknown" rather than taking the caller down.
fn run_audit<S: StatementBuilder + ?Sized>(
    stmt: &S,
    built: &Statement,
) -> Option<QueryAccessAudit> {
    built.values.as_ref()?;
    std::panic::catch_unwind(AssertUnwindSafe(|| stmt.audit()))
        .ok()?
        .ok()
}

fn table_of(request: &sea_orm::sea_query::audit::QueryAccessRequest) -> String {
    normalize_table(&request.schema_table.1.to_string())
}

/// The tables the audit finds a select reading, or `None` when the statement cannot be
/// cached: its audit failed, or it also writes (a data-modifying CTE). The SQL reader
/// adds what the audit misses (see [`crate::catalog::Reader::reads`]).
pub(crate) fn read_tables<S: StatementBuilder + ?Sized>(
    stmt: &S,
    built: &Statement,
) -> Option<Vec<String>> {
    let audit = run_audit(stmt, built)?;
    let mut tables = Vec::with_capacity(audit.requests.len());
    for request in &audit.requests {
        if request.access_type != AccessType::Select {
            return None;
        }
        tables.push(table_of(request));
    }
    tables.sort();
    tables.dedup();
    Some(tables)
}

/// What a statement does to tables: the statement audit merged with the SQL reader's
/// answer for its text (which also sees custom expressions and function calls).
pub(crate) fn write_effect<S: StatementBuilder + ?Sized>(
    stmt: &S,
    built: &Statement,
    catalog: &Catalog,
) -> RawEffect {
    let from_text = raw_effect(&built.sql, built.db_backend, catalog);
    let Some(audit) = run_audit(stmt, built) else {
        return from_text;
    };
    let mut written = match from_text {
        RawEffect::Unknown => return RawEffect::Unknown,
        RawEffect::Read => Vec::new(),
        RawEffect::Writes(tables) => tables,
    };
    for request in &audit.requests {
        match request.access_type {
            AccessType::Select => {}
            AccessType::Insert | AccessType::Update | AccessType::Delete => {
                written.push(table_of(request))
            }
            AccessType::Schema(_) => return RawEffect::Unknown,
        }
    }
    if catalog.expand(&mut written).is_none() {
        return RawEffect::Unknown;
    }
    RawEffect::from_written(written)
}
