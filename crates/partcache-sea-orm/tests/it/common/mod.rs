//! The invalidation suite, written against a `CacheManager` and a database URL so the
//! same functions run on SQLite and PostgreSQL, and (later) on a Redis store.
#![allow(dead_code)]

mod affinity;
pub(crate) mod entities;
mod locking;
pub(crate) mod proxy;
mod raw;
mod reads;
mod views;
mod writes;

pub(crate) use affinity::*;
pub(crate) use locking::*;
pub(crate) use raw::*;
pub(crate) use reads::*;
pub(crate) use views::*;
pub(crate) use writes::*;

use entities::{category, product, typed};
use partcache::CacheManager;
use partcache_sea_orm::{
    CachingConnection, EntityCache, QueryCache, QueryCacheExt, QueryCacheStats, cached_query,
};
use sea_orm::sea_query::{Expr, TableCreateStatement};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, Database, EntityTrait,
    IntoActiveModel, JsonValue, ModelTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    Schema, TransactionSession, TransactionTrait,
};

/// Two connections (standing in for two processes) on one database, each with its own
/// `QueryCache` over one shared manager and namespace.
pub(crate) struct Env {
    pub a: CachingConnection,
    pub b: CachingConnection,
    pub qa: QueryCache,
    pub qb: QueryCache,
    pub ea: EntityCache,
    pub eb: EntityCache,
}

/// A fresh SQLite database file at `path` in WAL mode (readers are not blocked by a
/// writer's open transaction), as a connection URL.
pub(crate) async fn sqlite_wal_url(path: &std::path::Path) -> String {
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let db = Database::connect(&url).await.expect("connect");
    db.execute_unprepared("PRAGMA journal_mode=WAL")
        .await
        .expect("wal");
    db.close().await.expect("close");
    url
}

pub(crate) async fn env(manager: &CacheManager, url: &str, ns: &str) -> Env {
    let qa = QueryCache::new(manager, ns).await.expect("query cache a");
    let qb = QueryCache::new(manager, ns).await.expect("query cache b");
    env_with(qa, qb, url).await
}

/// [`env`] with the two query caches given (e.g. on two managers, as two processes
/// with their own store connections).
pub(crate) async fn env_with(qa: QueryCache, qb: QueryCache, url: &str) -> Env {
    let a = CachingConnection::new(Database::connect(url).await.expect("connect a"), qa.clone());
    let b = CachingConnection::new(Database::connect(url).await.expect("connect b"), qb.clone());
    let schema = Schema::new(a.get_database_backend());
    let tables: [TableCreateStatement; 3] = [
        schema.create_table_from_entity(category::Entity),
        schema.create_table_from_entity(product::Entity),
        schema.create_table_from_entity(typed::Entity),
    ];
    for table in &tables {
        a.execute(table).await.expect("create table");
    }
    category::Entity::insert_many([
        category::ActiveModel {
            id: Set(1),
            name: Set("pens".into()),
        },
        category::ActiveModel {
            id: Set(2),
            name: Set("paper".into()),
        },
    ])
    .exec(&a)
    .await
    .expect("seed categories");
    product::Entity::insert_many((1..=6).map(|i| product::ActiveModel {
        id: Set(i),
        name: Set(format!("p{i}")),
        price: Set(i * 2),
        category_id: Set(1 + i % 2),
    }))
    .exec(&a)
    .await
    .expect("seed products");
    Env {
        ea: EntityCache::new(&qa),
        eb: EntityCache::new(&qb),
        a,
        b,
        qa,
        qb,
    }
}

fn cheap() -> sea_orm::Select<product::Entity> {
    product::Entity::find()
        .filter(product::Column::Price.lt(100))
        .order_by_asc(product::Column::Id)
}

fn hits(stats: QueryCacheStats) -> u64 {
    stats.cache.hits
}

/// Caches `cheap()` through `b` and checks that a second read is a hit.
async fn warm(env: &Env) -> Vec<product::Model> {
    let first = cheap()
        .cached(&env.qb)
        .all(&env.b)
        .await
        .expect("first read");
    let before = hits(env.qb.stats());
    let second = cheap()
        .cached(&env.qb)
        .all(&env.b)
        .await
        .expect("second read");
    assert_eq!(
        hits(env.qb.stats()),
        before + 1,
        "second read must be a hit"
    );
    assert_eq!(first, second);
    first
}

/// Reads `cheap()` through `b`'s cache and asserts it equals the database.
async fn assert_fresh(env: &Env) -> Vec<product::Model> {
    let cached = cheap()
        .cached(&env.qb)
        .all(&env.b)
        .await
        .expect("cached read");
    let truth = cheap().all(env.b.inner()).await.expect("uncached read");
    assert_eq!(cached, truth, "cached result differs from the database");
    cached
}

/// Inserts a product through `db`.
async fn insert_product(db: &impl ConnectionTrait, id: i32, name: &str, price: i32, category: i32) {
    product::ActiveModel {
        id: Set(id),
        name: Set(name.into()),
        price: Set(price),
        category_id: Set(category),
    }
    .insert(db)
    .await
    .unwrap();
}

/// Sets product `id`'s price through `db` (a connection or a transaction).
async fn set_price(
    db: &impl ConnectionTrait,
    id: i32,
    price: i32,
) -> Result<product::Model, sea_orm::DbErr> {
    product::ActiveModel {
        id: Set(id),
        price: Set(price),
        ..Default::default()
    }
    .update(db)
    .await
}

pub(crate) async fn active_model_insert_invalidates(env: Env) {
    let before = warm(&env).await;
    insert_product(&env.a, 50, "new", 1, 1).await;
    let after = assert_fresh(&env).await;
    assert_eq!(after.len(), before.len() + 1);
}

pub(crate) async fn active_model_update_invalidates(env: Env) {
    warm(&env).await;
    let p = product::Entity::find_by_id(1)
        .one(&env.a)
        .await
        .unwrap()
        .unwrap();
    let mut am = p.into_active_model();
    am.price = Set(99);
    am.update(&env.a).await.unwrap();
    let after = assert_fresh(&env).await;
    assert_eq!(after[0].price, 99);
}

pub(crate) async fn active_model_delete_invalidates(env: Env) {
    let before = warm(&env).await;
    let p = product::Entity::find_by_id(2)
        .one(&env.a)
        .await
        .unwrap()
        .unwrap();
    p.delete(&env.a).await.unwrap();
    let after = assert_fresh(&env).await;
    assert_eq!(after.len(), before.len() - 1);
}

pub(crate) async fn insert_many_invalidates(env: Env) {
    let before = warm(&env).await;
    product::Entity::insert_many((60..63).map(|i| product::ActiveModel {
        id: Set(i),
        name: Set("bulk".into()),
        price: Set(3),
        category_id: Set(2),
    }))
    .exec(&env.a)
    .await
    .unwrap();
    assert_eq!(assert_fresh(&env).await.len(), before.len() + 3);
}

pub(crate) async fn update_many_invalidates(env: Env) {
    warm(&env).await;
    product::Entity::update_many()
        .col_expr(product::Column::Price, Expr::value(7))
        .filter(product::Column::CategoryId.eq(1))
        .exec(&env.a)
        .await
        .unwrap();
    let after = assert_fresh(&env).await;
    assert!(
        after
            .iter()
            .filter(|p| p.category_id == 1)
            .all(|p| p.price == 7)
    );
}

pub(crate) async fn delete_many_invalidates(env: Env) {
    warm(&env).await;
    product::Entity::delete_many()
        .filter(product::Column::CategoryId.eq(2))
        .exec(&env.a)
        .await
        .unwrap();
    let after = assert_fresh(&env).await;
    assert!(after.iter().all(|p| p.category_id != 2));
}

pub(crate) async fn raw_sql_write_invalidates(env: Env) {
    warm(&env).await;
    env.a
        .execute_unprepared("UPDATE product SET price = 42 WHERE id = 3")
        .await
        .unwrap();
    let after = assert_fresh(&env).await;
    assert_eq!(after.iter().find(|p| p.id == 3).map(|p| p.price), Some(42));
    // A raw statement through `execute_raw` with a bound value.
    let backend = env.a.get_database_backend();
    let sql = match backend {
        sea_orm::DbBackend::Postgres => "UPDATE product SET price = $1 WHERE id = 4",
        _ => "UPDATE product SET price = ? WHERE id = 4",
    };
    env.a
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            backend,
            sql,
            [43.into()],
        ))
        .await
        .unwrap();
    let after = assert_fresh(&env).await;
    assert_eq!(after.iter().find(|p| p.id == 4).map(|p| p.price), Some(43));
}

pub(crate) async fn unparsed_raw_sql_bumps_everything(env: Env) {
    warm(&env).await;
    // Not understood by the best-effort parser (a data-modifying CTE / SQLite's UPSERT
    // via a CTE): the epoch is bumped, so every cached result misses.
    let sql = "WITH x AS (SELECT 1) UPDATE product SET price = 77 WHERE id = 5";
    env.a.execute_unprepared(sql).await.unwrap();
    let misses = env.qb.stats().cache.misses;
    let after = assert_fresh(&env).await;
    assert_eq!(env.qb.stats().cache.misses, misses + 1);
    assert_eq!(after.iter().find(|p| p.id == 5).map(|p| p.price), Some(77));
}

pub(crate) async fn commit_invalidates_after_commit_only(env: Env) {
    let before = warm(&env).await;
    let tx = env.a.begin().await.unwrap();
    set_price(&tx, 1, 55).await.unwrap();
    // Not yet committed: the other connection still sees (and is served) the old state.
    let h = hits(env.qb.stats());
    let during = cheap().cached(&env.qb).all(&env.b).await;
    // SQLite may refuse a concurrent read while a write transaction holds the lock only
    // in rollback-journal mode; in WAL mode (the default for these tests) it reads.
    if let Ok(during) = during {
        assert_eq!(during, before);
        assert_eq!(hits(env.qb.stats()), h + 1);
    }
    tx.commit().await.unwrap();
    let after = assert_fresh(&env).await;
    assert_eq!(after[0].price, 55);
}

pub(crate) async fn rollback_keeps_cached_results(env: Env) {
    let before = warm(&env).await;
    let tx = env.a.begin().await.unwrap();
    set_price(&tx, 1, 66).await.unwrap();
    product::Entity::delete_many().exec(&tx).await.unwrap();
    tx.rollback().await.unwrap();
    let h = hits(env.qb.stats());
    let after = cheap().cached(&env.qb).all(&env.b).await.unwrap();
    assert_eq!(hits(env.qb.stats()), h + 1, "rollback must not invalidate");
    assert_eq!(after, before);
    assert_eq!(after, cheap().all(env.b.inner()).await.unwrap());
}

pub(crate) async fn reads_inside_a_transaction_see_its_writes(env: Env) {
    warm(&env).await;
    // Also cache the same query through `a`'s query cache.
    cheap().cached(&env.qa).all(&env.a).await.unwrap();
    let tx = env.a.begin().await.unwrap();
    set_price(&tx, 2, 88).await.unwrap();
    let inside = cheap().cached(&env.qa).all(&tx).await.unwrap();
    assert_eq!(inside.iter().find(|p| p.id == 2).map(|p| p.price), Some(88));
    let row = env
        .ea
        .find_by_id::<product::Entity, _>(&tx, 2)
        .await
        .unwrap();
    assert_eq!(row.map(|p| p.price), Some(88));
    // A table the transaction did not write is still served from the cache.
    // (Warmed through `b`: on SQLite, `a`'s only pooled connection is the transaction's.)
    category::Entity::find()
        .cached(&env.qb)
        .all(&env.b)
        .await
        .unwrap();
    let h = hits(env.qa.stats());
    category::Entity::find()
        .cached(&env.qa)
        .all(&tx)
        .await
        .unwrap();
    assert_eq!(hits(env.qa.stats()), h + 1);
    tx.commit().await.unwrap();
    let after = assert_fresh(&env).await;
    assert_eq!(after.iter().find(|p| p.id == 2).map(|p| p.price), Some(88));
}

pub(crate) async fn nested_transactions(env: Env) {
    warm(&env).await;
    let outer = env.a.begin().await.unwrap();
    let inner = outer.begin().await.unwrap();
    set_price(&inner, 3, 31).await.unwrap();
    inner.commit().await.unwrap();
    let inner2 = outer.begin().await.unwrap();
    category::ActiveModel {
        id: Set(1),
        name: Set("rolled back".into()),
    }
    .update(&inner2)
    .await
    .unwrap();
    inner2.rollback().await.unwrap();
    outer.commit().await.unwrap();
    let after = assert_fresh(&env).await;
    assert_eq!(after.iter().find(|p| p.id == 3).map(|p| p.price), Some(31));
}

pub(crate) async fn transaction_closure_commits_and_rolls_back(env: Env) {
    warm(&env).await;
    let result: Result<(), sea_orm::TransactionError<sea_orm::DbErr>> = env
        .a
        .transaction(|tx| {
            Box::pin(async move {
                set_price(tx, 6, 61).await?;
                Err(sea_orm::DbErr::Custom("abort".into()))
            })
        })
        .await;
    assert!(result.is_err());
    let h = hits(env.qb.stats());
    assert_fresh(&env).await;
    assert_eq!(
        hits(env.qb.stats()),
        h + 1,
        "a rolled back closure must not invalidate"
    );
    env.a
        .transaction::<_, _, sea_orm::DbErr>(|tx| {
            Box::pin(async move {
                set_price(tx, 6, 62).await?;
                Ok(())
            })
        })
        .await
        .unwrap();
    let after = assert_fresh(&env).await;
    assert_eq!(after.iter().find(|p| p.id == 6).map(|p| p.price), Some(62));
}

fn joined() -> sea_orm::SelectTwo<product::Entity, category::Entity> {
    product::Entity::find()
        .find_also_related(category::Entity)
        .order_by_asc(product::Column::Id)
}

pub(crate) async fn join_invalidated_by_write_to_second_table(env: Env) {
    let first = joined().cached(&env.qb).all(&env.b).await.unwrap();
    let h = hits(env.qb.stats());
    assert_eq!(joined().cached(&env.qb).all(&env.b).await.unwrap(), first);
    assert_eq!(hits(env.qb.stats()), h + 1);
    category::ActiveModel {
        id: Set(1),
        name: Set("renamed".into()),
    }
    .update(&env.a)
    .await
    .unwrap();
    let after = joined().cached(&env.qb).all(&env.b).await.unwrap();
    assert_eq!(after, joined().all(env.b.inner()).await.unwrap());
    assert!(
        after
            .iter()
            .any(|(_, c)| c.as_ref().is_some_and(|c| c.name == "renamed"))
    );
    // SelectTwoMany (find_with_related), the same rule.
    let many = || {
        category::Entity::find()
            .find_with_related(product::Entity)
            .order_by_asc(category::Column::Id)
    };
    let m1 = many().cached(&env.qb).all(&env.b).await.unwrap();
    product::ActiveModel {
        id: Set(1),
        name: Set("renamed product".into()),
        ..Default::default()
    }
    .update(&env.a)
    .await
    .unwrap();
    let m2 = many().cached(&env.qb).all(&env.b).await.unwrap();
    assert_ne!(m1, m2);
    assert_eq!(m2, many().all(env.b.inner()).await.unwrap());
}

pub(crate) async fn shapes_count_paginate_json_tuple(env: Env) {
    let q = &env.qb;
    let db = &env.b;
    let count = cheap().cached(q).count(db).await.unwrap();
    assert_eq!(count, cheap().count(db.inner()).await.unwrap());
    let one = cheap().cached(q).one(db).await.unwrap();
    assert_eq!(one, cheap().one(db.inner()).await.unwrap());
    // Learnt from the select's own statement object and recorded from its selector,
    // the statement is the same: one cached result serves both.
    let h = q.stats().cache.hits;
    let via_selector = cheap()
        .into_model::<product::Model>()
        .cached(q)
        .one(db)
        .await
        .unwrap();
    assert_eq!((via_selector, q.stats().cache.hits), (one, h + 1));
    let json: Vec<JsonValue> = cheap().into_json().cached(q).all(db).await.unwrap();
    assert_eq!(json, cheap().into_json().all(db.inner()).await.unwrap());
    let tuples: Vec<(i32, String)> = cheap()
        .select_only()
        .column(product::Column::Id)
        .column(product::Column::Name)
        .into_tuple()
        .cached(q)
        .all(db)
        .await
        .unwrap();
    assert_eq!(tuples.len() as u64, count);
    let pages = cheap().cached(q).paginate(db, 4);
    assert_eq!(pages.num_items().await.unwrap(), count);
    assert_eq!(pages.num_pages().await.unwrap(), count.div_ceil(4));
    let page1 = pages.fetch_page(1).await.unwrap();
    assert_eq!(
        page1,
        cheap().paginate(db.inner(), 4).fetch_page(1).await.unwrap()
    );
    product::Entity::delete_by_id(6).exec(&env.a).await.unwrap();
    assert_eq!(cheap().cached(q).count(db).await.unwrap(), count - 1);
    let pages = cheap().cached(q).paginate(db, 4);
    assert_eq!(pages.num_items().await.unwrap(), count - 1);
    assert_eq!(
        pages.fetch_page(1).await.unwrap(),
        cheap().paginate(db.inner(), 4).fetch_page(1).await.unwrap()
    );
}

/// Reads `cheap()` through `b`'s cache, tagged "catalog".
async fn read_tagged(env: &Env) -> Vec<product::Model> {
    cheap()
        .cached(&env.qb)
        .tags(["catalog"])
        .all(&env.b)
        .await
        .unwrap()
}

pub(crate) async fn tags_and_explicit_invalidation(env: Env) {
    let q = &env.qb;
    read_tagged(&env).await;
    let m = q.stats().cache.misses;
    read_tagged(&env).await;
    assert_eq!(q.stats().cache.misses, m);
    env.qa.invalidate_tags(["catalog"]).await;
    read_tagged(&env).await;
    assert_eq!(q.stats().cache.misses, m + 1);
    env.qa.invalidate_table("PRODUCT").await;
    read_tagged(&env).await;
    assert_eq!(q.stats().cache.misses, m + 2);
    env.qa.invalidate_all().await;
    read_tagged(&env).await;
    assert_eq!(q.stats().cache.misses, m + 3);
}

pub(crate) async fn cached_query_macro_is_invalidated(env: Env) {
    async fn total(qc: &QueryCache, db: &CachingConnection) -> i64 {
        let total = cached_query!(qc, db, key = "total", tables = [product::Entity], async {
            let rows = product::Entity::find().all(db).await?;
            Ok(rows.iter().map(|p| i64::from(p.price)).sum::<i64>())
        })
        .await
        .unwrap();
        *total
    }
    let t1 = total(&env.qb, &env.b).await;
    assert_eq!(total(&env.qb, &env.b).await, t1);
    set_price(&env.a, 1, 1000).await.unwrap();
    assert_eq!(total(&env.qb, &env.b).await, t1 - 2 + 1000);
}

/// The stale-set race across processes: `a` reads the products, `b` (another
/// connection and query cache, as another process) writes one and returns, and only
/// then does `a`'s query finish and store its result. That result was stored under
/// the table versions it was read under, which `b`'s write moved on, so no process
/// ever finds it: every later read sees the write. (The version-keyed design needs no
/// lease for this; the keys do the work.)
pub(crate) async fn a_result_read_before_another_process_write_is_never_served(env: Env) {
    async fn total(qc: &QueryCache, db: &CachingConnection) -> i64 {
        let total = cached_query!(
            qc,
            db,
            key = "race-total",
            tables = [product::Entity],
            async {
                let rows = product::Entity::find().all(db).await?;
                Ok(rows.iter().map(|p| i64::from(p.price)).sum::<i64>())
            }
        )
        .await
        .unwrap();
        *total
    }
    /// The slow query's key, read without pausing.
    async fn slow_total(qc: &QueryCache, db: &CachingConnection) -> i64 {
        let total = cached_query!(
            qc,
            db,
            key = "race-slow",
            tables = [product::Entity],
            async {
                let rows = product::Entity::find().all(db).await?;
                Ok(rows.iter().map(|p| i64::from(p.price)).sum::<i64>())
            }
        )
        .await
        .unwrap();
        *total
    }
    let before = total(&env.qb, &env.b).await;
    // A fresh key, so that `a` misses and runs the slow query below.
    let (read, written) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
    let (qa, a) = (&env.qa, &env.a);
    let slow = async {
        let total = cached_query!(
            qa,
            a,
            key = "race-slow",
            tables = [product::Entity],
            async {
                let rows = product::Entity::find().all(a).await?;
                read.notify_one();
                written.notified().await;
                Ok(rows.iter().map(|p| i64::from(p.price)).sum::<i64>())
            }
        )
        .await
        .unwrap();
        *total
    };
    let write = async {
        read.notified().await;
        set_price(&env.b, 1, 1000).await.unwrap();
        written.notify_one();
    };
    let (stale, ()) = tokio::join!(slow, write);
    assert_eq!(stale, before, "`a` read before the write");
    let after = before - 2 + 1000;
    assert_eq!(slow_total(&env.qa, &env.a).await, after, "process a");
    assert_eq!(slow_total(&env.qb, &env.b).await, after, "process b");
}

/// Product `id` through `b`'s entity cache.
async fn cached_product(env: &Env, id: i32) -> Option<product::Model> {
    env.eb
        .find_by_id::<product::Entity, _>(&env.b, id)
        .await
        .unwrap()
}

pub(crate) async fn entity_cache_is_invalidated_per_row(env: Env) {
    let p1 = cached_product(&env, 1).await.unwrap();
    let p2 = cached_product(&env, 2).await.unwrap();
    let h = env.qb.stats().cache.hits;
    assert_eq!(cached_product(&env, 1).await.as_ref(), Some(&p1));
    assert_eq!(cached_product(&env, 2).await.as_ref(), Some(&p2));
    assert_eq!(env.qb.stats().cache.hits, h + 2);
    // A single-row update through the other connection: row 1 misses, row 2 still hits.
    set_price(&env.a, 1, 501).await.unwrap();
    let h = env.qb.stats().cache.hits;
    assert_eq!(cached_product(&env, 1).await.map(|p| p.price), Some(501));
    assert_eq!(cached_product(&env, 2).await.as_ref(), Some(&p2));
    assert_eq!(env.qb.stats().cache.hits, h + 1, "only row 2 is a hit");
    // An update_many filtered on the key, with an i64 literal: still that row only.
    product::Entity::update_many()
        .col_expr(product::Column::Price, Expr::value(502))
        .filter(product::Column::Id.eq(1i64))
        .exec(&env.a)
        .await
        .unwrap();
    assert_eq!(cached_product(&env, 1).await.map(|p| p.price), Some(502));
    // A bulk write: every row of the table misses.
    product::Entity::update_many()
        .col_expr(product::Column::Price, Expr::value(7))
        .filter(product::Column::Name.ne("x"))
        .exec(&env.a)
        .await
        .unwrap();
    let m = env.qb.stats().cache.misses;
    assert_eq!(cached_product(&env, 2).await.map(|p| p.price), Some(7));
    assert_eq!(env.qb.stats().cache.misses, m + 1);
    // Delete of a row: it is gone from the cache too; missing rows are not cached.
    product::Entity::delete_by_id(2).exec(&env.a).await.unwrap();
    assert_eq!(cached_product(&env, 2).await, None);
    insert_product(&env.a, 2, "back", 1, 1).await;
    assert_eq!(
        cached_product(&env, 2).await.map(|p| p.name),
        Some("back".into())
    );
    // Raw SQL on the table: a bulk write.
    env.a
        .execute_unprepared("UPDATE product SET name = 'raw' WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(
        cached_product(&env, 2).await.map(|p| p.name),
        Some("raw".into())
    );
}

/// The load failures counted by the entity caches of `product` (the core statistics
/// a dashboard shows for them).
fn product_entity_load_failures(manager: &CacheManager) -> u64 {
    manager
        .caches()
        .iter()
        .filter(|cache| cache.name().starts_with("orm:entities:product:"))
        .map(|cache| cache.stats().load_failures)
        .sum()
}

pub(crate) async fn entity_cache_row_not_found_is_a_miss_then_a_cached_absence(env: Env) {
    let manager = env.qb.manager().clone();
    let failures = product_entity_load_failures(&manager);
    let s0 = env.qb.stats();
    assert_eq!(cached_product(&env, 999).await, None);
    let s1 = env.qb.stats();
    assert_eq!(
        (
            s1.cache.misses - s0.cache.misses,
            s1.cache.hits - s0.cache.hits,
            s1.cache.bypasses - s0.cache.bypasses
        ),
        (1, 0, 0),
        "a row not found is a miss"
    );
    assert_eq!(cached_product(&env, 999).await, None);
    let s2 = env.qb.stats();
    assert_eq!(
        (
            s2.cache.misses - s1.cache.misses,
            s2.cache.hits - s1.cache.hits
        ),
        (0, 1),
        "the absence is cached: the second lookup is a hit"
    );
    assert_eq!(
        product_entity_load_failures(&manager),
        failures,
        "a row not found is not a failed load"
    );
    // An insert of that key through the other connection makes the absence stale.
    insert_product(&env.a, 999, "late", 1, 1).await;
    assert_eq!(
        cached_product(&env, 999).await.map(|p| p.name),
        Some("late".into())
    );
    let s3 = env.qb.stats();
    assert_eq!(
        (
            s3.cache.misses - s2.cache.misses,
            s3.cache.hits - s2.cache.hits
        ),
        (1, 0)
    );
    assert_eq!(
        cached_product(&env, 999).await.map(|p| p.name),
        Some("late".into())
    );
    assert_eq!(env.qb.stats().cache.hits, s3.cache.hits + 1);
    // A failing database call is what a load failure is: the error reaches the caller.
    env.a
        .execute_unprepared("ALTER TABLE product RENAME TO product_gone")
        .await
        .unwrap();
    assert!(
        env.eb
            .find_by_id::<product::Entity, _>(&env.b, 12345)
            .await
            .is_err()
    );
    env.a
        .execute_unprepared("ALTER TABLE product_gone RENAME TO product")
        .await
        .unwrap();
    assert_eq!(product_entity_load_failures(&manager), failures + 1);
    // The caches say what they hold.
    cheap().cached(&env.qb).all(&env.b).await.unwrap();
    let names = manager.cache_names();
    for prefix in ["orm:entities:product:", "orm:rows:Vec<product::Model>:"] {
        assert!(
            names.iter().any(|name| name.starts_with(prefix)),
            "no cache named {prefix}…: {names:?}"
        );
    }
}

fn typed_rows() -> Vec<typed::ActiveModel> {
    use chrono::{NaiveDate, TimeZone, Utc};
    use rust_decimal::Decimal;
    use std::str::FromStr;
    let day = NaiveDate::from_ymd_opt(2024, 2, 29).unwrap();
    let at = day.and_hms_micro_opt(23, 59, 58, 123_456).unwrap();
    vec![
        typed::ActiveModel {
            id: Set(1),
            maybe_int: Set(None),
            big: Set(i64::MAX),
            flag: Set(true),
            ratio: Set(0.1),
            amount: Set(Decimal::from_str("12345.678900").unwrap()),
            maybe_amount: Set(None),
            day: Set(day),
            at: Set(at),
            at_utc: Set(Utc.timestamp_opt(1_700_000_000, 5_000).unwrap()),
            maybe_at: Set(None),
            doc: Set(serde_json::json!({"a": [1, 2.5, null, "x"], "b": {"c": true}})),
            maybe_doc: Set(None),
            blob: Set(vec![0, 1, 2, 255, 0]),
            maybe_blob: Set(None),
            note: Set(None),
        },
        typed::ActiveModel {
            id: Set(2),
            maybe_int: Set(Some(-7)),
            big: Set(i64::MIN),
            flag: Set(false),
            ratio: Set(-1.5e-9),
            amount: Set(Decimal::from_str("-0.000001").unwrap()),
            maybe_amount: Set(Some(Decimal::from_str("1.5").unwrap())),
            day: Set(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()),
            at: Set(at),
            at_utc: Set(Utc.timestamp_opt(0, 0).unwrap()),
            maybe_at: Set(Some(at)),
            doc: Set(serde_json::json!([])),
            maybe_doc: Set(Some(serde_json::json!({"unicode": "é\"\\"}))),
            blob: Set(Vec::new()),
            maybe_blob: Set(Some(vec![7; 33])),
            note: Set(Some("it's \"quoted\"".into())),
        },
    ]
}

pub(crate) async fn cached_results_equal_the_database_field_for_field(env: Env) {
    typed::Entity::insert_many(typed_rows())
        .exec(&env.a)
        .await
        .unwrap();
    let q = || typed::Entity::find().order_by_asc(typed::Column::Id);
    let truth = q().all(env.b.inner()).await.unwrap();
    let miss = q().cached(&env.qb).all(&env.b).await.unwrap();
    let hit = q().cached(&env.qb).all(&env.b).await.unwrap();
    assert_eq!(miss, truth);
    assert_eq!(hit, truth);
    assert_eq!(truth.len(), 2);
    assert_eq!(truth[0].maybe_int, None);
    assert_eq!(truth[1].maybe_blob.as_deref(), Some(&[7u8; 33][..]));
    // Through the other process's cache and the entity cache too.
    assert_eq!(q().cached(&env.qa).all(&env.a).await.unwrap(), truth);
    for row in &truth {
        // Twice: the first read fills the entity cache, the second is served from it.
        for read in ["miss", "hit"] {
            assert_eq!(
                env.eb
                    .find_by_id::<typed::Entity, _>(&env.b, row.id)
                    .await
                    .unwrap()
                    .as_ref(),
                Some(row),
                "{read}"
            );
        }
    }
    // Filtering on a JSON-valued bind and NULLs keys correctly.
    let nulls = typed::Entity::find()
        .filter(typed::Column::Note.is_null())
        .cached(&env.qb)
        .all(&env.b)
        .await
        .unwrap();
    assert_eq!(
        nulls,
        typed::Entity::find()
            .filter(typed::Column::Note.is_null())
            .all(env.b.inner())
            .await
            .unwrap()
    );
}

/// Every suite function, by name, for runners that iterate (the PostgreSQL test).
pub(crate) type SuiteFn =
    fn(Env) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        pub(crate) fn all_tests() -> Vec<(&'static str, SuiteFn)> {
            vec![$((stringify!($name), (|env| Box::pin($name(env))) as SuiteFn)),*]
        }
    };
}

/// Calls the macro `$runner` with the name of every suite function: the one list, for
/// `all_tests` here and for runners that want one `#[test]` each (the SQLite tests,
/// which reach it through `#[macro_use] mod common`).
macro_rules! with_suite_fns {
    ($runner:ident) => {
        $runner!(
            active_model_insert_invalidates,
            active_model_update_invalidates,
            active_model_delete_invalidates,
            insert_many_invalidates,
            update_many_invalidates,
            delete_many_invalidates,
            raw_sql_write_invalidates,
            unparsed_raw_sql_bumps_everything,
            commit_invalidates_after_commit_only,
            rollback_keeps_cached_results,
            reads_inside_a_transaction_see_its_writes,
            nested_transactions,
            transaction_closure_commits_and_rolls_back,
            join_invalidated_by_write_to_second_table,
            shapes_count_paginate_json_tuple,
            tags_and_explicit_invalidation,
            cached_query_macro_is_invalidated,
            entity_cache_is_invalidated_per_row,
            entity_cache_row_not_found_is_a_miss_then_a_cached_absence,
            cached_results_equal_the_database_field_for_field,
            tables_read_outside_where_invalidate,
            locking_reads_reach_the_database,
            raw_sql_cannot_hide_a_write,
            raw_update_binding_the_key_as_text_or_float_invalidates_the_row,
            views_are_invalidated_by_writes_to_their_base_tables,
            a_result_read_before_another_process_write_is_never_served,
            update_from_another_table_invalidates_every_row,
            a_parenthesized_join_is_invalidated_by_its_first_table,
            a_transaction_reads_what_its_savepoint_wrote,
            two_entities_over_one_table_keyed_differently_invalidate_each_other,
        );
    };
}

with_suite_fns!(suite);
