//! Servers shared by the tests of the test binary (every module of `tests/it`, run
//! concurrently). They live in statics for the whole process; the harness starts every
//! server with `PR_SET_PDEATHSIG = SIGKILL`, so they die with the test process (statics
//! are never dropped).
//!
//! A test may share them only if no other test can see what it does: each uses caches
//! of its own ([`unique`] names). A test that disturbs a server (kills its clients or
//! the node, pauses it, fails over or reshards, changes its configuration or flushes
//! it) or counts server-wide figures (`INFO commandstats`, memory, `DBSIZE`) starts
//! servers of its own, e.g. [`private_cluster`].

#![allow(dead_code)]

use std::sync::OnceLock;

use partcache_integration_tests::{Flavor, RedisCluster, RedisServer, ServerOptions};

/// One standalone server per test binary.
pub(crate) fn standalone() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    })
}

/// One 3-master + 3-replica cluster per test binary.
pub(crate) fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(Flavor::Redis, 3, 1).expect("start redis cluster"))
}

/// A 3-master + 3-replica cluster of the caller's own, for a test that disturbs its
/// servers (see the module docs). Blocks while it starts: call it inside
/// `block_in_place`. It stops when the value is dropped.
pub(crate) fn private_cluster() -> RedisCluster {
    RedisCluster::start(Flavor::Redis, 3, 1).expect("start a private redis cluster")
}

/// A manager for `url`, with the Redis schemes installed.
pub(crate) fn manager(url: &str) -> partcache::CacheManager {
    partcache_redis::install();
    partcache::CacheManager::from_url(url).expect("manager")
}

/// A second standalone server per test binary (joined stores need two).
pub(crate) fn second_standalone() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    })
}

/// A `redis-joined://` URL over [`standalone`], [`second_standalone`] and [`cluster`].
/// Blocks while the servers start: call it inside `block_in_place`.
pub(crate) fn joined_url() -> String {
    partcache_redis::joined::build_url([
        standalone().url(),
        second_standalone().url(),
        cluster().seed_url(),
    ])
}

/// A cache name no other test (nor an earlier run against the same server) uses.
pub(crate) fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{label}-{}-{nanos:x}", std::process::id())
}

/// Puts 1,000 keys with a short TTL, waits until Redis expired them all, then runs the
/// reaper (`run_pending_tasks`) while a task per key puts it again, four rounds, on a
/// cache of `url` with three partitions: per key, a listener must see the first value
/// created, its expiry, then the second value created, never the second creation
/// before the expiry (the reaper's task may wait for a worker after its reply came
/// back, while the puts' tasks run). `url` should allow a long `response_timeout`: a
/// thousand concurrent calls on a loaded machine may take longer than the default.
pub(crate) async fn assert_each_keys_events_in_server_order(url: &str) {
    const KEYS: u64 = 1_000;
    const ROUNDS: u64 = 4;
    let cache: partcache::Cache<u64, u64> = manager(url)
        .cache(&unique("order"))
        .partitions(3)
        .event_capacity(4 * KEYS as usize)
        .build()
        .await
        .unwrap();
    let mut rx = cache.subscribe(partcache::EventFilter::all());
    let collector = tokio::spawn(async move {
        let mut per_key: std::collections::HashMap<u64, Vec<partcache::EventKind>> =
            std::collections::HashMap::new();
        for _ in 0..ROUNDS * KEYS * 3 {
            let event = partcache::conformance::next_event(&mut rx).await;
            per_key.entry(event.key).or_default().push(event.kind);
        }
        per_key
    });
    for round in 0..ROUNDS {
        let keys: Vec<u64> = (round * KEYS..(round + 1) * KEYS).collect();
        let ttl = std::time::Duration::from_millis(100);
        let puts = keys.chunks(50).map(|chunk| {
            let cache = cache.clone();
            let chunk = chunk.to_vec();
            tokio::spawn(async move {
                for key in chunk {
                    cache.put_with_ttl(key, key, ttl).await.unwrap();
                }
            })
        });
        for put in futures::future::join_all(puts).await {
            put.unwrap();
        }
        partcache::conformance::eventually("Redis expired every value", || async {
            cache
                .get_all(&keys)
                .await
                .unwrap()
                .iter()
                .all(Option::is_none)
        })
        .await;
        // The reaper's expirations and the replacing puts, at once.
        let reap = {
            let cache = cache.clone();
            tokio::spawn(async move { cache.run_pending_tasks().await.unwrap() })
        };
        // A task per put: many ready tasks, so that the reaper's task may wait its turn
        // after its reply came back.
        let puts = keys.iter().map(|&key| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.put(key, key + 1).await.unwrap() })
        });
        for put in futures::future::join_all(puts).await {
            put.unwrap();
        }
        reap.await.unwrap();
    }
    let per_key = collector.await.unwrap();
    use partcache::EventKind::{Created, Expired};
    let out_of_order: Vec<_> = per_key
        .iter()
        .filter(|(_, kinds)| kinds.as_slice() != [Created, Expired, Created])
        .collect();
    assert!(
        out_of_order.is_empty(),
        "{} of {} keys had their events out of order, e.g. {:?}",
        out_of_order.len(),
        per_key.len(),
        out_of_order.iter().take(3).collect::<Vec<_>>()
    );
}
