//! The invalidation suite on SQLite (a temporary database file per test, WAL mode so a
//! second connection can read while a transaction writes) and the in-process store.

use crate::common;

use partcache::CacheManager;

async fn env(name: &str) -> (common::Env, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = common::sqlite_wal_url(&dir.path().join("db.sqlite")).await;
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

with_suite_fns!(sqlite_tests);

#[test]
fn suite_list_matches_the_sqlite_tests() {
    assert_eq!(common::all_tests().len(), 30);
}
