//! Raw single-row writes that bind the primary key with another type than the entity
//! declares: the database converts it (SQLite's type affinity, PostgreSQL's implicit
//! numeric casts), so the entity cache must drop the row too.

use sea_orm::sea_query::Value;
use sea_orm::{ConnectionTrait, DbBackend, EntityTrait, Statement};

use super::entities::product;
use super::{Env, cached_product};

pub(crate) async fn raw_update_binding_the_key_as_text_or_float_invalidates_the_row(env: Env) {
    let backend = env.a.get_database_backend();
    let placeholder = if backend == DbBackend::Postgres {
        "$1"
    } else {
        "?"
    };
    let cases: [(Value, i32); 2] = [("1".into(), 901), (1.0f64.into(), 902)];
    let mut changed = 0;
    for (key, price) in cases {
        for id in [1, 2] {
            cached_product(&env, id).await;
        }
        let sql = format!("UPDATE product SET price = {price} WHERE id = {placeholder}");
        let kind = format!("{key:?}");
        let result = env
            .a
            .execute_raw(Statement::from_sql_and_values(backend, &sql, [key]))
            .await;
        // PostgreSQL has no `integer = text` operator: the text bind fails there.
        if backend == DbBackend::Sqlite || kind.contains("Double") {
            result.unwrap_or_else(|e| panic!("{kind}: {e}"));
        }
        for id in [1, 2] {
            let truth = product::Entity::find_by_id(id)
                .one(env.b.inner())
                .await
                .unwrap();
            assert_eq!(
                cached_product(&env, id).await,
                truth,
                "row {id} after a {kind} key bind"
            );
            if id == 1 && truth.map(|p| p.price) == Some(price) {
                changed += 1;
            }
        }
    }
    let expected = if backend == DbBackend::Sqlite { 2 } else { 1 };
    assert_eq!(changed, expected, "the writes must have changed row 1");
}
