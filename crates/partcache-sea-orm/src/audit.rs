//! The tables a statement reads or writes, from sea-query's statement audit
//! (`StatementBuilder::audit`, the `rbac` feature of sea-orm), falling back to the SQL
//! text only for statements that arrive without an object.

use std::panic::AssertUnwindSafe;

use sea_orm::sea_query::audit::{AccessType, QueryAccessAudit};
use sea_orm::{Statement, StatementBuilder};

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

/// The tables a select reads, or `None` when the statement cannot be cached: its audit
/// failed, or it also writes (a data-modifying CTE).
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

/// What a statement does to tables: the statement audit when there is a statement
/// object, the SQL text otherwise (see [`crate::sql`]).
pub(crate) fn write_effect<S: StatementBuilder + ?Sized>(stmt: &S, built: &Statement) -> RawEffect {
    let Some(audit) = run_audit(stmt, built) else {
        return raw_effect(&built.sql);
    };
    let mut written = Vec::new();
    for request in &audit.requests {
        match request.access_type {
            AccessType::Select => {}
            AccessType::Insert | AccessType::Update | AccessType::Delete => {
                written.push(table_of(request))
            }
            AccessType::Schema(_) => return RawEffect::Unknown,
        }
    }
    RawEffect::from_written(written)
}
