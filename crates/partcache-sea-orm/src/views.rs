//! Views: a select over a view reads the view's base tables, so it must be invalidated
//! by writes to them. Partitions and inheriting tables (PostgreSQL) likewise share rows
//! with their parents, and are learnt with the views. [`QueryCache::refresh_views`] learns them from the database's
//! catalog; [`QueryCache::declare_view`] (or [`QueryCacheBuilder::view`]) names them by
//! hand where the catalog cannot.
//!
//! [`QueryCacheBuilder::view`]: crate::QueryCacheBuilder::view

use std::collections::HashMap;

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

use crate::catalog::{Bases, Catalog};
use crate::key::normalize_table;
use crate::query_cache::QueryCache;
use crate::sql::view_reads;

/// Every view outside the system schemas.
const PG_VIEWS: &str = "SELECT c.relname::text AS view_name \
     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind = 'v' AND n.nspname NOT IN ('pg_catalog', 'information_schema')";

/// The tables and views each view's rewrite rule depends on (`pg_depend`: it sees
/// through subqueries anywhere in the definition, unlike `view_table_usage`, which also
/// hides tables the current role does not own).
const PG_VIEW_TABLES: &str = "SELECT DISTINCT v.relname::text AS view_name, t.relname::text AS base \
     FROM pg_catalog.pg_depend d \
     JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
     JOIN pg_catalog.pg_class v ON v.oid = r.ev_class \
     JOIN pg_catalog.pg_class t ON t.oid = d.refobjid \
     WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass \
       AND d.refclassid = 'pg_catalog.pg_class'::regclass \
       AND v.relkind = 'v' AND t.oid <> v.oid";

/// The functions outside `pg_catalog` each view calls: what they read is not in the
/// catalog.
const PG_VIEW_FUNCTIONS: &str = "SELECT DISTINCT v.relname::text AS view_name, p.proname::text AS base \
     FROM pg_catalog.pg_depend d \
     JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
     JOIN pg_catalog.pg_class v ON v.oid = r.ev_class \
     JOIN pg_catalog.pg_proc p ON p.oid = d.refobjid \
     JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
     WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass \
       AND d.refclassid = 'pg_catalog.pg_proc'::regclass \
       AND v.relkind = 'v' AND n.nspname <> 'pg_catalog'";

/// Partitions and inheriting tables with their direct parents (`pg_inherits`, tables
/// only: partitioned indexes have their own links).
const PG_INHERITS: &str = "SELECT c.relname::text AS view_name, p.relname::text AS base \
     FROM pg_catalog.pg_inherits i \
     JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
     JOIN pg_catalog.pg_class p ON p.oid = i.inhparent \
     WHERE c.relkind IN ('r', 'p', 'f') AND p.relkind IN ('r', 'p', 'f')";

const SQLITE_VIEWS: &str =
    "SELECT name AS view_name, sql AS base FROM sqlite_master WHERE type = 'view'";

async fn pairs<C: ConnectionTrait>(db: &C, sql: &str) -> Result<Vec<(String, String)>, DbErr> {
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?;
    rows.iter()
        .map(|row| {
            let view: String = row.try_get("", "view_name")?;
            let base: String = row.try_get("", "base").unwrap_or_default();
            Ok((view, base))
        })
        .collect()
}

/// What the catalog of a database says: its views, and its `(child, parent)`
/// inheritance links.
type Learnt = (HashMap<String, Bases>, Vec<(String, String)>);

async fn learn<C: ConnectionTrait>(db: &C, catalog: &Catalog) -> Result<Learnt, DbErr> {
    let mut learnt: HashMap<String, Bases> = HashMap::new();
    let mut inherits = Vec::new();
    match db.get_database_backend() {
        DbBackend::Postgres => {
            for (child, parent) in pairs(db, PG_INHERITS).await? {
                inherits.push((normalize_table(&child), normalize_table(&parent)));
            }
            for (view, _) in pairs(db, PG_VIEWS).await? {
                learnt.insert(normalize_table(&view), Bases::Tables(Vec::new()));
            }
            for (view, table) in pairs(db, PG_VIEW_TABLES).await? {
                if let Some(Bases::Tables(tables)) = learnt.get_mut(&normalize_table(&view)) {
                    tables.push(normalize_table(&table));
                }
            }
            for (view, function) in pairs(db, PG_VIEW_FUNCTIONS).await? {
                let view = normalize_table(&view);
                let reads = catalog
                    .function(&normalize_table(&function))
                    .map(<[String]>::to_vec);
                match (learnt.get_mut(&view), reads) {
                    (Some(Bases::Tables(tables)), Some(reads)) => tables.extend(reads),
                    (Some(bases), None) => *bases = Bases::Unknown,
                    _ => {}
                }
            }
        }
        DbBackend::Sqlite => {
            for (view, sql) in pairs(db, SQLITE_VIEWS).await? {
                let bases = match view_reads(&sql, DbBackend::Sqlite, catalog) {
                    Some(tables) => Bases::Tables(tables),
                    None => Bases::Unknown,
                };
                learnt.insert(normalize_table(&view), bases);
            }
        }
        _ => {
            return Err(DbErr::Custom(
                "partcache-sea-orm: views can only be learnt from PostgreSQL and SQLite; declare them with QueryCache::declare_view".into(),
            ));
        }
    }
    Ok((learnt, inherits))
}

impl QueryCache {
    /// Learns the base tables of every view in `db` from its catalog (PostgreSQL:
    /// `pg_depend`; SQLite: each view's SQL, read by the same reader as raw SQL), and
    /// returns how many views it knows. A select over a view is then invalidated by
    /// writes to the view's base tables, at any depth of views over views.
    ///
    /// On PostgreSQL it also learns which tables share rows (`pg_inherits`: the
    /// partitions of a partitioned table, the children of an inheriting table): a write
    /// to a partition or child then invalidates selects and entities of its ancestors,
    /// and a write to a parent those of its descendants. Partitions attached later are
    /// learnt by the next refresh, like views.
    ///
    /// A view the catalog cannot answer for (one that calls a function not declared
    /// with [`QueryCacheBuilder::read_only_function`](crate::QueryCacheBuilder::read_only_function),
    /// or whose SQL the reader does not fully understand) depends on every table:
    /// selects over it are not cached until it is declared with
    /// [`QueryCache::declare_view`]. Views created or changed later are learnt by the
    /// next refresh: call it after migrations (a
    /// [`CachingConnection::connect`](crate::CachingConnection::connect) does at start).
    /// Until a view is known, a select over it is invalidated only by writes to the view
    /// itself.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use sea_orm::{ConnectionTrait, Database};
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let qc = partcache_sea_orm::QueryCache::new(&manager, "doc").await?;
    /// let db = Database::connect("sqlite::memory:").await?;
    /// db.execute_unprepared("CREATE TABLE t (id INTEGER PRIMARY KEY); CREATE VIEW v AS SELECT id FROM t").await?;
    /// assert_eq!(qc.refresh_views(&db).await?, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub async fn refresh_views<C: ConnectionTrait>(&self, db: &C) -> Result<usize, DbErr> {
        let reader = &self.inner.reader;
        let (learnt, inherits) = learn(db, &reader.catalog()).await?;
        let mut known = 0;
        reader.update(|catalog| {
            catalog.learnt_views = learnt;
            catalog.inherits = inherits;
            known = catalog.learnt_views.len()
                + catalog
                    .declared_views
                    .keys()
                    .filter(|v| !catalog.learnt_views.contains_key(*v))
                    .count();
        });
        Ok(known)
    }

    /// Declares `view` a view over `tables` (views among them are followed), for a view
    /// the catalog cannot answer for; a declaration wins over what is learnt and
    /// survives refreshes. In-process only: every process declares its own.
    pub fn declare_view<I, S>(&self, view: &str, tables: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tables: Vec<String> = tables
            .into_iter()
            .map(|t| normalize_table(t.as_ref()))
            .collect();
        self.inner.reader.update(|catalog| {
            catalog.declared_views.insert(normalize_table(view), tables);
        });
    }
}
