//! The catalog of a [`QueryCache`](crate::QueryCache) and the memo of the tables each
//! cached select reads, so a hit does not read its SQL again.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use sea_orm::DbBackend;

use crate::catalog::Catalog;
use crate::key::normalize_table;
use crate::sql::read_tables;

/// The most selects whose tables are remembered; past it the memo starts over.
const MEMO_CAPACITY: usize = 4096;

type Memo = HashMap<String, Option<Arc<Vec<String>>>>;

/// The catalog and the memo of a [`QueryCache`](crate::QueryCache).
#[derive(Default)]
pub(crate) struct Reader {
    catalog: RwLock<Arc<Catalog>>,
    /// Per backend (MySQL, PostgreSQL, SQLite): SQL text to the tables it reads.
    memo: [RwLock<Memo>; 3],
}

fn memo_index(backend: DbBackend) -> Option<usize> {
    match backend {
        DbBackend::MySql => Some(0),
        DbBackend::Postgres => Some(1),
        DbBackend::Sqlite => Some(2),
        _ => None,
    }
}

impl Reader {
    pub(crate) fn new(catalog: Catalog) -> Self {
        let mut catalog = catalog;
        catalog.close();
        Reader {
            catalog: RwLock::new(Arc::new(catalog)),
            memo: Default::default(),
        }
    }

    pub(crate) fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().clone()
    }

    /// Changes the catalog and forgets every remembered answer.
    pub(crate) fn update(&self, change: impl FnOnce(&mut Catalog)) {
        let mut guard = self.catalog.write();
        let mut next = Catalog::clone(&guard);
        change(&mut next);
        next.close();
        *guard = Arc::new(next);
        for memo in &self.memo {
            memo.write().clear();
        }
    }

    /// The tables the select `sql` reads (the SQL reader's answer, merged with the
    /// statement audit's, which `audit` runs), or `None` when it cannot be cached. An
    /// answer is remembered per SQL text: the same text names the same tables, so a
    /// select seen before is neither scanned nor audited again.
    pub(crate) fn reads(
        &self,
        sql: &str,
        backend: DbBackend,
        audit: impl FnOnce() -> Option<Vec<String>>,
    ) -> Option<Arc<Vec<String>>> {
        let slot = memo_index(backend);
        if let Some(slot) = slot
            && let Some(found) = self.memo[slot].read().get(sql)
        {
            return found.clone();
        }
        let catalog = self.catalog();
        let answer = read_tables(sql, backend, &catalog).and_then(|mut tables| {
            tables.extend(audit()?);
            catalog.expand(&mut tables)?;
            tables.sort();
            tables.dedup();
            Some(Arc::new(tables))
        });
        if let Some(slot) = slot {
            let mut memo = self.memo[slot].write();
            if memo.len() >= MEMO_CAPACITY {
                memo.clear();
            }
            memo.insert(sql.to_string(), answer.clone());
        }
        answer
    }

    /// `tables` (named by a caller) with the base tables of views added; `None` when
    /// one is a view whose definition could not be read.
    pub(crate) fn expand(&self, tables: &[String]) -> Option<Vec<String>> {
        let mut tables: Vec<String> = tables.iter().map(|t| normalize_table(t)).collect();
        self.catalog().expand(&mut tables)?;
        tables.sort();
        tables.dedup();
        Some(tables)
    }
}
