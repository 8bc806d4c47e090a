//! Writes whose reach is wider than their text suggests: a write that names a second
//! table, a write inside a savepoint, a table mapped by two entities. Each must
//! invalidate every cached result it makes stale.

use partcache_sea_orm::{CacheAware, QueryCacheExt};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Statement, TransactionSession,
    TransactionTrait,
};

use super::entities::{product, product_by_name};
use super::{Env, cached_product, set_price};

/// `sql` with its `?` placeholders in the form `backend` reads.
fn placeholders(backend: DbBackend, sql: &str) -> String {
    if backend != DbBackend::Postgres {
        return sql.to_string();
    }
    let mut out = String::with_capacity(sql.len());
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// `UPDATE product ... FROM category WHERE category.id = ?` changes every product: its
/// `WHERE` pins a category, not a product row, so every cached product row is stale.
pub(crate) async fn update_from_another_table_invalidates_every_row(env: Env) {
    assert_eq!(cached_product(&env, 2).await.map(|p| p.price), Some(4));
    let backend = env.a.get_database_backend();
    let sql = "UPDATE product SET price = 0 FROM category WHERE category.id = ?";
    env.a
        .execute_raw(Statement::from_sql_and_values(
            backend,
            placeholders(backend, sql),
            [1i32.into()],
        ))
        .await
        .expect("update .. from");
    let truth = product::Entity::find_by_id(2)
        .one(env.b.inner())
        .await
        .unwrap();
    assert_eq!(
        truth.map(|p| p.price),
        Some(0),
        "the database has the new price"
    );
    assert_eq!(cached_product(&env, 2).await.map(|p| p.price), Some(0));
}

/// A parenthesized join in a custom expression (`FROM (a JOIN b ON ...)`): a write to
/// its first table invalidates the cached select.
pub(crate) async fn a_parenthesized_join_is_invalidated_by_its_first_table(env: Env) {
    let select = || {
        product::Entity::find().filter(Expr::cust(
            "EXISTS (SELECT 1 FROM (category JOIN product AS p2 ON p2.category_id = category.id) \
             WHERE p2.id = product.id AND category.name = 'inks')",
        ))
    };
    let cached = select()
        .cached(&env.qb)
        .all(&env.b)
        .await
        .expect("cached read");
    assert!(cached.is_empty());
    env.a
        .execute_unprepared("UPDATE category SET name = 'inks' WHERE id = 1")
        .await
        .expect("update");
    let truth = select().all(env.b.inner()).await.expect("read");
    assert_eq!(truth.len(), 3, "the database sees the new name");
    let cached = select()
        .cached(&env.qb)
        .all(&env.b)
        .await
        .expect("cached read");
    assert_eq!(cached, truth);
}

/// Product 1's price, read through `db` and `env.qa`'s cache.
async fn price_1(env: &Env, db: &impl CacheAware) -> Option<i32> {
    product::Entity::find_by_id(1)
        .cached(&env.qa)
        .one(db)
        .await
        .expect("cached read")
        .map(|p| p.price)
}

/// A transaction reads what its open savepoint wrote (one connection): a cached read
/// in the parent must not serve the row as it was before the savepoint's write, nor
/// after the savepoint is released.
pub(crate) async fn a_transaction_reads_what_its_savepoint_wrote(env: Env) {
    assert_eq!(price_1(&env, &env.a).await, Some(2));
    let tx = env.a.begin().await.expect("begin");
    let savepoint = tx.begin().await.expect("savepoint");
    set_price(&savepoint, 1, 0).await.expect("update");
    let truth = product::Entity::find_by_id(1)
        .one(tx.inner())
        .await
        .expect("read");
    assert_eq!(truth.map(|p| p.price), Some(0), "the parent sees the write");
    assert_eq!(
        price_1(&env, &tx).await,
        Some(0),
        "while the savepoint is open"
    );
    savepoint.commit().await.expect("release");
    assert_eq!(
        price_1(&env, &tx).await,
        Some(0),
        "after the savepoint is released"
    );
    tx.rollback().await.expect("rollback");
    assert_eq!(price_1(&env, &env.a).await, Some(2));
}

/// Two entities over one table, keyed by different columns (`product` by `id`,
/// `product_by_name` by `name`): a single-row write through one must invalidate the
/// row cached through the other.
pub(crate) async fn two_entities_over_one_table_keyed_differently_invalidate_each_other(env: Env) {
    let by_name = || {
        env.eb
            .find_by_id::<product_by_name::Entity, _>(&env.b, "p1".to_string())
    };
    assert_eq!(cached_product(&env, 1).await.map(|p| p.price), Some(2));
    assert_eq!(by_name().await.expect("read").map(|p| p.price), Some(2));
    set_price(&env.a, 1, 0).await.expect("update");
    assert_eq!(cached_product(&env, 1).await.map(|p| p.price), Some(0));
    assert_eq!(by_name().await.expect("read").map(|p| p.price), Some(0));
}
