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
