//! The version bumps a write statement calls for, worked out before it runs.

use sea_orm::{DbBackend, Statement, StatementBuilder};

use crate::audit::write_effect;
use crate::key::{row_id, value_kind};
use crate::query_cache::QueryCache;
use crate::sql::{RawEffect, is_pure_insert, raw_effect, row_target};
use crate::versions::Version;

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
/// changes no existing row (the entity cache's cached absences are checked against the
/// table's query version, which every write bumps); an `UPDATE`/`DELETE` whose
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

/// The plan of a statement that arrives as SQL (read best-effort from the text).
pub(crate) async fn plan_raw(cache: &QueryCache, stmt: &Statement) -> WritePlan {
    let effect = raw_effect(&stmt.sql, stmt.db_backend, &cache.inner.reader.catalog());
    plan_write(cache, stmt, effect).await
}

/// Builds a statement object for `backend` and plans it from the object's audit.
pub(crate) async fn plan_built<S: StatementBuilder>(
    cache: &QueryCache,
    backend: DbBackend,
    stmt: &S,
) -> (Statement, WritePlan) {
    let built = backend.build(stmt);
    let effect = write_effect(stmt, &built, &cache.inner.reader.catalog());
    let plan = plan_write(cache, &built, effect).await;
    (built, plan)
}
