//! Servers shared by the tests of one test binary. They live in statics for the whole
//! process; the harness starts every server with `PR_SET_PDEATHSIG = SIGKILL`, so they
//! die with the test process (statics are never dropped).

#![allow(dead_code)]

use std::sync::OnceLock;

use partcache_integration_tests::{Flavor, RedisCluster, RedisServer, ServerOptions};

/// One standalone server per test binary.
pub fn standalone() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    })
}

/// One 3-master + 3-replica cluster per test binary.
pub fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(Flavor::Redis, 3, 1).expect("start redis cluster"))
}

/// A manager for `url`, with the Redis schemes installed.
pub fn manager(url: &str) -> partcache::CacheManager {
    partcache_redis::install();
    partcache::CacheManager::from_url(url).expect("manager")
}

/// A second standalone server per test binary (joined stores need two).
pub fn second_standalone() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    })
}

/// A `redis-joined://` URL over [`standalone`], [`second_standalone`] and [`cluster`].
/// Blocks while the servers start: call it inside `block_in_place`.
pub fn joined_url() -> String {
    partcache_redis::joined::build_url([
        standalone().url(),
        second_standalone().url(),
        cluster().seed_url(),
    ])
}

/// A cache name no other test (nor an earlier run against the same server) uses.
pub fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{label}-{}-{nanos:x}", std::process::id())
}
