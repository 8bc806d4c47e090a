//! Selects over views: invalidated by writes to the views' base tables, learnt from the
//! catalog (views over views too) or declared by hand where the catalog cannot tell.

use partcache_sea_orm::QueryCacheExt;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ConnectionTrait, DbBackend, EntityTrait, QueryOrder,
};

use super::entities::{category, cheap_view, counted_view};
use super::{Env, insert_product};

async fn cheap_rows_fresh(env: &Env) -> Vec<cheap_view::Model> {
    let q = || cheap_view::Entity::find().order_by_asc(cheap_view::Column::Id);
    let cached = q().cached(&env.qb).all(&env.b).await.unwrap();
    assert_eq!(
        cached,
        q().all(env.b.inner()).await.unwrap(),
        "stale read through a view"
    );
    cached
}

async fn counted(env: &Env) -> (i64, i64) {
    let cached = counted_view::Entity::find()
        .cached(&env.qb)
        .one(&env.b)
        .await
        .unwrap();
    let truth = counted_view::Entity::find()
        .one(env.b.inner())
        .await
        .unwrap();
    assert_eq!(cached, truth, "stale read through a view");
    (
        cached.map(|c| c.n).unwrap_or(-1),
        truth.map(|c| c.n).unwrap_or(-1),
    )
}

pub(crate) async fn views_are_invalidated_by_writes_to_their_base_tables(env: Env) {
    let backend = env.a.get_database_backend();
    env.a
        .execute_unprepared(
            "CREATE VIEW product_view AS SELECT p.id, p.price, c.name AS category \
             FROM product p JOIN category c ON c.id = p.category_id",
        )
        .await
        .unwrap();
    env.a
        .execute_unprepared(
            "CREATE VIEW cheap_view AS SELECT * FROM product_view WHERE price < 100",
        )
        .await
        .unwrap();
    // A view the catalog cannot see through: it reads `product` inside a function
    // (PostgreSQL) or calls a function the reader does not know (SQLite).
    let counted_sql = match backend {
        DbBackend::Postgres => {
            env.a
                .execute_unprepared(
                    "CREATE FUNCTION product_count() RETURNS bigint LANGUAGE sql STABLE AS \
                     $$ SELECT count(*) FROM product $$",
                )
                .await
                .unwrap();
            "CREATE VIEW counted_view AS SELECT product_count() AS n"
        }
        _ => {
            "CREATE VIEW counted_view AS SELECT count(*) AS n FROM product WHERE likely(price >= 0)"
        }
    };
    env.a.execute_unprepared(counted_sql).await.unwrap();
    assert_eq!(env.qa.refresh_views(&env.a).await.unwrap(), 3);
    assert_eq!(env.qb.refresh_views(&env.b).await.unwrap(), 3);

    // Learnt: a view over a view over two tables.
    cheap_rows_fresh(&env).await;
    let hits = env.qb.stats().cache.hits;
    cheap_rows_fresh(&env).await;
    assert_eq!(
        env.qb.stats().cache.hits,
        hits + 1,
        "a select over a known view is cached"
    );
    category::ActiveModel {
        id: Set(1),
        name: Set("renamed".into()),
    }
    .update(&env.a)
    .await
    .unwrap();
    let rows = cheap_rows_fresh(&env).await;
    assert!(rows.iter().any(|r| r.category == "renamed"));
    insert_product(&env.a, 70, "new", 5, 2).await;
    assert!(cheap_rows_fresh(&env).await.iter().any(|r| r.id == 70));

    // Not answerable by the catalog: never cached until declared.
    let bypasses = env.qb.stats().cache.bypasses;
    counted(&env).await;
    assert_eq!(
        env.qb.stats().cache.bypasses,
        bypasses + 1,
        "an unknown view is not cached"
    );
    env.qb.declare_view("counted_view", ["product"]);
    counted(&env).await;
    let hits = env.qb.stats().cache.hits;
    let (before, _) = counted(&env).await;
    assert_eq!(
        env.qb.stats().cache.hits,
        hits + 1,
        "a declared view is cached"
    );
    insert_product(&env.a, 71, "newer", 6, 2).await;
    let (after, _) = counted(&env).await;
    assert_eq!(after, before + 1);
    // A declaration survives a refresh.
    env.qb.refresh_views(&env.b).await.unwrap();
    counted(&env).await;
}
