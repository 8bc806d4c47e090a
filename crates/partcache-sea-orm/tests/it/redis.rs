//! The invalidation suite with its caches and table versions on a real Redis Cluster
//! (3 masters + 3 replicas) and SQLite as the database: the two `CachingConnection`s of
//! every suite function share the cluster the way two processes would.

use crate::common;

use partcache::CacheManager;
use partcache_integration_tests::{Flavor, RedisCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalidation_suite_on_a_redis_cluster() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(Flavor::Redis, 3, 1))
        .await
        .expect("harness thread")
        .expect("start a 3+3 cluster");
    partcache_redis::install();
    let manager = CacheManager::from_url(&cluster.seed_url()).expect("manager");
    let dir = tempfile::tempdir().expect("temp dir");
    for (i, (name, test)) in common::all_tests().into_iter().enumerate() {
        let path = dir.path().join(format!("suite_{i}.sqlite"));
        let url = common::sqlite_wal_url(&path).await;
        let env = common::env(&manager, &url, name).await;
        eprintln!("redis cluster: {name}");
        test(env).await;
    }
}
