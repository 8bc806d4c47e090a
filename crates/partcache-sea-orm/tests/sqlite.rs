//! The invalidation suite on SQLite (a temporary database file per test, WAL mode so a
//! second connection can read while a transaction writes) and the in-process store.

mod common;

use partcache::CacheManager;

async fn env(name: &str) -> (common::Env, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("db.sqlite");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    {
        // WAL: readers are not blocked by a writer's open transaction.
        use sea_orm::ConnectionTrait;
        let db = sea_orm::Database::connect(&url).await.expect("connect");
        db.execute_unprepared("PRAGMA journal_mode=WAL")
            .await
            .expect("wal");
        db.close().await.expect("close");
    }
    let manager = CacheManager::from_url("memory://").expect("manager");
    (common::env(&manager, &url, name).await, dir)
}

macro_rules! sqlite_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (env, _dir) = env(stringify!($name)).await;
                common::$name(env).await;
            }
        )*
    };
}

sqlite_tests!(
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
    cached_results_equal_the_database_field_for_field,
);

#[test]
fn suite_list_matches_the_sqlite_tests() {
    assert_eq!(common::all_tests().len(), 19);
}
