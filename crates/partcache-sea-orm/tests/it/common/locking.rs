//! Locking reads (`lock_exclusive`, `lock_shared`, raw `FOR UPDATE`/`FOR SHARE`) always
//! reach the database and store nothing.

use partcache_sea_orm::QueryCacheExt;
use sea_orm::{
    ConnectionTrait, DbBackend, QuerySelect, Statement, TransactionSession, TransactionTrait,
};

use super::{Env, cheap, warm};

fn price_of_1(rows: &[super::entities::product::Model]) -> Option<i32> {
    rows.iter().find(|p| p.id == 1).map(|p| p.price)
}

pub(crate) async fn locking_reads_reach_the_database(env: Env) {
    warm(&env).await;
    // A write the caching connection does not see: the cached result is now stale on
    // purpose, so any locking read served from the cache would show it.
    env.b
        .inner()
        .execute_unprepared("UPDATE product SET price = 77 WHERE id = 1")
        .await
        .unwrap();
    let hits = env.qb.stats().cache.hits;
    let tx = env.b.begin().await.unwrap();
    let exclusive = cheap()
        .lock_exclusive()
        .cached(&env.qb)
        .all(&tx)
        .await
        .unwrap();
    let shared = cheap()
        .lock_shared()
        .cached(&env.qb)
        .all(&tx)
        .await
        .unwrap();
    let truth = cheap().all(tx.inner()).await.unwrap();
    assert_eq!(exclusive, truth, "lock_exclusive served from the cache");
    assert_eq!(shared, truth, "lock_shared served from the cache");
    assert_eq!(price_of_1(&truth), Some(77));
    if env.b.get_database_backend() == DbBackend::Postgres {
        for lock in ["FOR UPDATE", "FOR SHARE", "FOR NO KEY UPDATE"] {
            let sql = format!("SELECT price FROM product WHERE id = 1 {lock}");
            let row = tx
                .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
                .await
                .unwrap()
                .expect("row 1");
            assert_eq!(row.try_get::<i32>("", "price").unwrap(), 77, "{lock}");
        }
    }
    tx.commit().await.unwrap();
    // Outside a transaction too, and nothing is stored: never a hit.
    for _ in 0..2 {
        let rows = cheap()
            .lock_exclusive()
            .cached(&env.qb)
            .all(&env.b)
            .await
            .unwrap();
        assert_eq!(price_of_1(&rows), Some(77));
    }
    assert_eq!(
        env.qb.stats().cache.hits,
        hits,
        "a locking read was served from the cache"
    );
}
