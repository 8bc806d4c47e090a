//! Raw SQL whose reading depends on the backend's lexical rules, and raw calls of
//! functions that write: each must invalidate what it changes.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use super::{Env, assert_fresh, warm};

/// Runs `sql` through `a`, then checks `b`'s cached read against the database and that
/// product 1 now has `price`.
async fn write_then_check(env: &Env, sql: &str, price: i32) {
    warm(env).await;
    env.a
        .execute_unprepared(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let after = assert_fresh(env).await;
    assert_eq!(
        after.iter().find(|p| p.id == 1).map(|p| p.price),
        Some(price),
        "{sql}"
    );
}

pub(crate) async fn raw_sql_cannot_hide_a_write(env: Env) {
    match env.a.get_database_backend() {
        DbBackend::Postgres => {
            // An escape string whose `\'` a standard-string reader takes for its end.
            write_then_check(
                &env,
                r"SELECT E'it\'s'; UPDATE product SET price = 51 WHERE id = 1",
                51,
            )
            .await;
            // PostgreSQL comments nest: read flat, the comment ends early and the rest
            // looks like a string that swallows the UPDATE.
            let nested = "SELECT 1 /* /* */ ' */; UPDATE product SET price = 52 WHERE id = 1; -- '";
            write_then_check(&env, nested, 52).await;
            // Dollar quotes hold quotes and semicolons.
            let dollar = "SELECT $q$ it's; $$ $q$; UPDATE product SET price = 53 WHERE id = 1";
            write_then_check(&env, dollar, 53).await;
            // A function that writes, called from a select.
            env.a
                .execute_unprepared(
                    "CREATE FUNCTION reprice() RETURNS integer LANGUAGE sql AS \
                     $$ UPDATE product SET price = 54 WHERE id = 1; SELECT 1 $$",
                )
                .await
                .unwrap();
            write_then_check(&env, "SELECT reprice()", 54).await;
            // The same through a raw query that returns rows.
            env.a
                .execute_unprepared("CREATE FUNCTION reprice2() RETURNS integer LANGUAGE sql AS $$ UPDATE product SET price = 55 WHERE id = 1; SELECT 1 $$")
                .await
                .unwrap();
            warm(&env).await;
            let stmt = Statement::from_string(DbBackend::Postgres, "SELECT reprice2() AS r");
            env.a.query_all_raw(stmt).await.unwrap();
            let after = assert_fresh(&env).await;
            assert_eq!(after.iter().find(|p| p.id == 1).map(|p| p.price), Some(55));
        }
        _ => {
            // SQLite comments do not nest: the UPDATE after the first `*/` runs.
            let flat = "/* /* */ UPDATE product SET price = 61 WHERE id = 1; /* */";
            write_then_check(&env, flat, 61).await;
            // A string with a backslash (an escape on other servers, not here).
            let backslash = r"SELECT 'a\'; UPDATE product SET price = 62 WHERE id = 1; -- '";
            write_then_check(&env, backslash, 62).await;
            // A bracketed identifier holding a semicolon.
            let bracket = "SELECT 1 AS [x;y]; UPDATE product SET price = 63 WHERE id = 1";
            write_then_check(&env, bracket, 63).await;
        }
    }
}
