//! `cargo bench -p partcache-sea-orm --bench orm`: cached vs uncached on SQLite and the
//! in-process store, 10 000 products joined to 100 categories.
//!
//! Prints `BENCH orm_query_hit speedup=<uncached/cached>` for a select returning 100
//! rows through a join, and `BENCH orm_entity_hit speedup=<uncached/cached>` for
//! find-by-primary-key.

use std::hint::black_box;
use std::time::{Duration, Instant};

use partcache::CacheManager;
use partcache_sea_orm::{CachingConnection, EntityCache, QueryCache, QueryCacheExt};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, Database, EntityTrait, QueryFilter, QueryOrder,
    Schema,
};

// The tests' schema, so the bench measures the entities the suite checks (the `typed`
// table is not benchmarked).
#[allow(dead_code)]
#[path = "../tests/it/common/entities.rs"]
mod entities;

use entities::{category, product};

/// Average time per call of `f`, over at least `min_iters` calls and `min_time`.
async fn time_per_call<F, Fut>(min_iters: u32, min_time: Duration, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..min_iters / 10 + 1 {
        f().await;
    }
    let start = Instant::now();
    let mut n = 0u32;
    while n < min_iters || start.elapsed() < min_time {
        f().await;
        n += 1;
    }
    start.elapsed() / n
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let manager = CacheManager::from_url("memory://").expect("manager");
    let qc = QueryCache::new(&manager, "bench")
        .await
        .expect("query cache");
    let db = CachingConnection::new(
        Database::connect("sqlite::memory:").await.expect("sqlite"),
        qc.clone(),
    );
    let schema = Schema::new(db.get_database_backend());
    db.execute(&schema.create_table_from_entity(category::Entity))
        .await
        .expect("create");
    db.execute(&schema.create_table_from_entity(product::Entity))
        .await
        .expect("create");
    category::Entity::insert_many((0..100).map(|i| category::ActiveModel {
        id: Set(i),
        name: Set(format!("category {i}")),
    }))
    .exec(&db)
    .await
    .expect("categories");
    for chunk in (0..10_000).collect::<Vec<i32>>().chunks(500) {
        product::Entity::insert_many(chunk.iter().map(|&i| product::ActiveModel {
            id: Set(i),
            name: Set(format!("product number {i}")),
            price: Set(i % 1000),
            category_id: Set(i % 100),
        }))
        .exec(&db)
        .await
        .expect("products");
    }

    let query = || {
        product::Entity::find()
            .find_also_related(category::Entity)
            .filter(product::Column::Id.gte(5_000))
            .filter(product::Column::Id.lt(5_100))
            .order_by_asc(product::Column::Id)
    };
    let rows = query().all(db.inner()).await.expect("query");
    assert_eq!(rows.len(), 100);
    assert_eq!(query().cached(&qc).all(&db).await.expect("cached"), rows);

    let min = Duration::from_millis(500);
    let uncached = time_per_call(200, min, || async {
        black_box(query().all(db.inner()).await.expect("query"));
    })
    .await;
    let cached = time_per_call(2_000, min, || async {
        black_box(query().cached(&qc).all(&db).await.expect("cached"));
    })
    .await;
    eprintln!("orm_query: uncached {uncached:?}, cached hit {cached:?} (100 joined rows)");
    println!(
        "BENCH orm_query_hit speedup={:.1}",
        uncached.as_secs_f64() / cached.as_secs_f64()
    );

    let entities = EntityCache::new(&qc);
    let mut id = 0;
    let uncached = time_per_call(2_000, min, || {
        id = (id + 7) % 1_000;
        let id = id;
        let db = &db;
        async move {
            black_box(
                product::Entity::find_by_id(id)
                    .one(db.inner())
                    .await
                    .expect("find"),
            );
        }
    })
    .await;
    for id in 0..1_000 {
        entities
            .find_by_id::<product::Entity, _>(&db, id)
            .await
            .expect("warm");
    }
    let mut id = 0;
    let cached = time_per_call(20_000, min, || {
        id = (id + 7) % 1_000;
        let id = id;
        let (entities, db) = (&entities, &db);
        async move {
            black_box(
                entities
                    .find_by_id::<product::Entity, _>(db, id)
                    .await
                    .expect("cached find"),
            );
        }
    })
    .await;
    eprintln!("orm_entity: uncached {uncached:?}, cached hit {cached:?}");
    println!(
        "BENCH orm_entity_hit speedup={:.1}",
        uncached.as_secs_f64() / cached.as_secs_f64()
    );
    let stats = qc.stats();
    assert_eq!(stats.cache.bypasses, 0, "{stats:?}");
}
