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
