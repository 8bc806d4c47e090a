//! A writer cut off from the store while the readers keep theirs: its connection to
//! Redis runs through a TCP proxy that the test cuts. By default the write is refused
//! before it runs (nothing changes, nothing is stale); with
//! `UnreachableStore::RetryAfterWrite` it runs and its invalidation lands once the
//! store is reachable again. On SQLite and on PostgreSQL.

use crate::common;

use std::time::{Duration, Instant};

use common::entities::product;
use common::proxy::Proxy;
use partcache::CacheManager;
use partcache_integration_tests::postgres::PostgresServer;
use partcache_integration_tests::{Flavor, RedisServer, ServerOptions};
use partcache_sea_orm::{QueryCache, QueryCacheExt, UnreachableStore};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, EntityTrait, QueryOrder, TransactionSession,
    TransactionTrait,
};

struct Stores {
    _server: RedisServer,
    proxy: Proxy,
    writer: CacheManager,
    readers: CacheManager,
}

async fn stores() -> Stores {
    let server =
        tokio::task::spawn_blocking(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .await
            .expect("harness thread")
            .expect("start redis");
    partcache_redis::install();
    let upstream = server.addr().parse().expect("server address");
    let proxy = Proxy::start(upstream).await;
    let timeouts = "connect_timeout=300ms&response_timeout=300ms";
    let writer =
        CacheManager::from_url(&format!("redis://{}?{timeouts}", proxy.addr())).expect("writer");
    let readers = CacheManager::from_url(&format!("{}?{timeouts}", server.url())).expect("readers");
    Stores {
        _server: server,
        proxy,
        writer,
        readers,
    }
}

fn cheap() -> sea_orm::Select<product::Entity> {
    product::Entity::find().order_by_asc(product::Column::Id)
}

async fn price_in_db(env: &common::Env, id: i32) -> i32 {
    product::Entity::find_by_id(id)
        .one(env.b.inner())
        .await
        .unwrap()
        .map(|p| p.price)
        .unwrap_or(-1)
}

/// Reads through the readers' cache and compares with the database.
async fn fresh(env: &common::Env) -> bool {
    use partcache_sea_orm::QueryCacheExt;
    let cached = cheap().cached(&env.qb).all(&env.b).await.unwrap();
    cached == cheap().all(env.b.inner()).await.unwrap()
}

async fn set_price(
    db: &impl sea_orm::ConnectionTrait,
    price: i32,
) -> Result<product::Model, sea_orm::DbErr> {
    product::ActiveModel {
        id: Set(1),
        price: Set(price),
        ..Default::default()
    }
    .update(db)
    .await
}

async fn warm(env: &common::Env) {
    use partcache_sea_orm::QueryCacheExt;
    cheap().cached(&env.qb).all(&env.b).await.unwrap();
    let hits = env.qb.stats().cache.hits;
    cheap().cached(&env.qb).all(&env.b).await.unwrap();
    assert_eq!(env.qb.stats().cache.hits, hits + 1);
    assert!(fresh(env).await);
}

async fn refuses_writes_it_cannot_invalidate(url: &str) {
    let s = stores().await;
    let qa = QueryCache::new(&s.writer, "cut")
        .await
        .expect("writer cache");
    let qb = QueryCache::new(&s.readers, "cut")
        .await
        .expect("reader cache");
    let env = common::env_with(qa, qb, url).await;
    warm(&env).await;
    let before = price_in_db(&env, 1).await;

    s.proxy.cut();
    // A cached read on the cut-off side fails open: it runs against the database, and
    // the store error is counted.
    let errors = env.qa.stats().cache.store_errors;
    let read = cheap()
        .cached(&env.qa)
        .all(&env.a)
        .await
        .expect("fails open");
    assert_eq!(read, cheap().all(env.a.inner()).await.unwrap());
    let stats = env.qa.stats();
    assert!(stats.cache.store_errors > errors, "{stats:?}");
    let refused = set_price(&env.a, 701).await;
    assert!(
        refused.is_err(),
        "a write whose invalidation cannot be delivered must be refused"
    );
    assert_eq!(
        price_in_db(&env, 1).await,
        before,
        "a refused write changes nothing"
    );
    assert!(fresh(&env).await);
    // A transaction's commit: refused and rolled back.
    let tx = env.a.begin().await.unwrap();
    set_price(&tx, 702).await.unwrap();
    assert!(tx.commit().await.is_err());
    assert_eq!(price_in_db(&env, 1).await, before);
    assert!(fresh(&env).await);

    // Once the store is reachable again, writes go through and invalidate.
    s.proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match set_price(&env.a, 703).await {
            Ok(_) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for the writer's store connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the writer never reached the store again: {e}"),
        }
    }
    assert_eq!(price_in_db(&env, 1).await, 703);
    assert!(fresh(&env).await);
}

async fn retries_after_the_write_when_asked(url: &str) {
    let s = stores().await;
    let qa = QueryCache::builder(&s.writer)
        .namespace("cut-retry")
        .on_unreachable_store(UnreachableStore::RetryAfterWrite)
        .build()
        .await
        .expect("writer cache");
    let qb = QueryCache::new(&s.readers, "cut-retry")
        .await
        .expect("reader cache");
    let env = common::env_with(qa, qb, url).await;
    warm(&env).await;

    s.proxy.cut();
    set_price(&env.a, 801).await.expect("the write runs");
    assert_eq!(price_in_db(&env, 1).await, 801);
    assert!(env.qa.stats().bump_failures > 0);
    // The readers' cache is stale now (the stated exposure of this mode) until the
    // background retry reaches the store.
    s.proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !fresh(&env).await {
        assert!(
            Instant::now() < deadline,
            "the retried invalidation never landed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_cut_off_from_the_store_on_sqlite() {
    for refuse in [true, false] {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = common::sqlite_wal_url(&dir.path().join("db.sqlite")).await;
        if refuse {
            refuses_writes_it_cannot_invalidate(&url).await;
        } else {
            retries_after_the_write_when_asked(&url).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_cut_off_from_the_store_on_postgres() {
    let Some(server) = tokio::task::spawn_blocking(PostgresServer::start_or_skip)
        .await
        .expect("harness thread")
    else {
        return;
    };
    let url = server.create_database("cut_refuse").expect("createdb");
    refuses_writes_it_cannot_invalidate(&url).await;
    let url = server.create_database("cut_retry").expect("createdb");
    retries_after_the_write_when_asked(&url).await;
}
