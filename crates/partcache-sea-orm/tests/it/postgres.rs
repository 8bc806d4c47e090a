//! The invalidation suite on a real PostgreSQL server (started by the harness as an
//! unprivileged user on a free port; skipped loudly when PostgreSQL is not installed:
//! run `scripts/postgres.sh`). One server, one fresh database per suite function.

use crate::common;

use partcache::CacheManager;
use partcache_integration_tests::postgres::PostgresServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_suite_on_postgres() {
    let Some(server) = tokio::task::spawn_blocking(PostgresServer::start_or_skip)
        .await
        .expect("harness thread")
    else {
        return;
    };
    let manager = CacheManager::from_url("memory://").expect("manager");
    for (i, (name, test)) in common::all_tests().into_iter().enumerate() {
        let db = format!("suite_{i}");
        let url = server.create_database(&db).expect("createdb");
        let env = common::env(&manager, &url, name).await;
        eprintln!("postgres: {name}");
        test(env).await;
    }
}

/// A fresh database `name` on the harness's PostgreSQL server, with a
/// `CachingConnection` that learnt the catalog at start, and its query cache. `None`
/// when PostgreSQL is not installed (skipped loudly by the harness).
async fn connect(
    server: &PostgresServer,
    name: &str,
    setup: &str,
) -> (
    partcache_sea_orm::CachingConnection,
    partcache_sea_orm::QueryCache,
) {
    use sea_orm::{ConnectionTrait, Database};
    let url = server.create_database(name).expect("createdb");
    let plain = Database::connect(&url).await.expect("connect");
    plain.execute_unprepared(setup).await.expect("schema");
    let manager = CacheManager::from_url("memory://").expect("manager");
    let qc = partcache_sea_orm::QueryCache::new(&manager, name)
        .await
        .expect("query cache");
    let db = partcache_sea_orm::CachingConnection::connect(plain, qc.clone())
        .await
        .expect("caching connection");
    (db, qc)
}

async fn server() -> Option<PostgresServer> {
    tokio::task::spawn_blocking(PostgresServer::start_or_skip)
        .await
        .expect("harness thread")
}

/// `TRUNCATE category CASCADE` also empties `product`, which references it: a cached
/// select of `product` must not outlive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncate_cascade_invalidates_the_referencing_tables() {
    use crate::common::entities::product;
    use partcache_sea_orm::QueryCacheExt;
    use sea_orm::{ConnectionTrait, EntityTrait};
    let Some(server) = server().await else {
        return;
    };
    let (db, qc) = connect(
        &server,
        "truncate_cascade",
        "CREATE TABLE category (id INTEGER PRIMARY KEY, name TEXT NOT NULL);
         CREATE TABLE product (id INTEGER PRIMARY KEY, name TEXT NOT NULL, price INTEGER NOT NULL,
             category_id INTEGER NOT NULL REFERENCES category (id));
         INSERT INTO category VALUES (1, 'pens');
         INSERT INTO product VALUES (1, 'p1', 10, 1);",
    )
    .await;
    let cached = || product::Entity::find().cached(&qc).all(&db);
    assert_eq!(cached().await.expect("cached read").len(), 1);
    db.execute_unprepared("TRUNCATE category CASCADE")
        .await
        .expect("truncate");
    let truth = product::Entity::find().all(db.inner()).await.expect("read");
    assert!(truth.is_empty(), "the cascade emptied product");
    assert_eq!(cached().await.expect("cached read"), truth);
}

/// The partition `product_low` of the partitioned `product`, as an entity of its own.
mod product_low {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "product_low")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub name: String,
        pub price: i32,
        pub category_id: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The partitions of a partitioned table (and the children of an inheriting one) share
/// their rows with it: a write to a partition must invalidate the parent's cached
/// selects and entities, and a write to the parent the partition's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_their_parent_invalidate_each_other() {
    use crate::common::entities::product;
    use partcache_sea_orm::{EntityCache, QueryCacheExt};
    use sea_orm::{ConnectionTrait, EntityTrait};
    let Some(server) = server().await else {
        return;
    };
    let (db, qc) = connect(
        &server,
        "partitions",
        "CREATE TABLE product (id INTEGER NOT NULL, name TEXT NOT NULL, price INTEGER NOT NULL,
             category_id INTEGER NOT NULL) PARTITION BY RANGE (id);
         CREATE TABLE product_low PARTITION OF product FOR VALUES FROM (0) TO (100);
         CREATE TABLE product_high PARTITION OF product FOR VALUES FROM (100) TO (200);
         CREATE TABLE plain (id INTEGER PRIMARY KEY);
         INSERT INTO product VALUES (1, 'p1', 10, 1);",
    )
    .await;
    let parent = || product::Entity::find().cached(&qc).all(&db);
    let entities = EntityCache::new(&qc);
    let row_1 = || entities.find_by_id::<product::Entity, _>(&db, 1);
    assert_eq!(parent().await.expect("cached read").len(), 1);
    assert_eq!(row_1().await.expect("read").map(|p| p.price), Some(10));
    db.execute_unprepared("INSERT INTO product_low VALUES (2, 'p2', 20, 1)")
        .await
        .expect("insert into the partition");
    assert_eq!(parent().await.expect("cached read").len(), 2);
    db.execute_unprepared("UPDATE product_low SET price = 0 WHERE id = 1")
        .await
        .expect("update the partition");
    assert_eq!(row_1().await.expect("read").map(|p| p.price), Some(0));
    // The other way round: a select of the partition, a write to the parent.
    let low = || product_low::Entity::find().cached(&qc).all(&db);
    assert_eq!(low().await.expect("cached read").len(), 2);
    db.execute_unprepared("INSERT INTO product VALUES (3, 'p3', 30, 1)")
        .await
        .expect("insert into the parent");
    assert_eq!(low().await.expect("cached read").len(), 3);
    // A table outside the family keeps its cached results.
    let hits = qc.stats().cache.hits;
    db.execute_unprepared("INSERT INTO plain VALUES (1)")
        .await
        .expect("insert elsewhere");
    assert_eq!(low().await.expect("cached read").len(), 3);
    assert_eq!(qc.stats().cache.hits, hits + 1);
}
