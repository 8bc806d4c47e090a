//! The `CacheLayer` scenarios (`scenarios/mod.rs`) on a real Redis Cluster of 3 masters
//! and 3 replicas, started once for this test binary; and fail-open when the Redis
//! server goes away.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use partcache::CacheManager;
use partcache_integration_tests::{Flavor, RedisCluster, RedisServer, ServerOptions};
use partcache_tower::CacheLayer;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// One 3-master + 3-replica cluster per test binary (the harness kills it with the
/// process: its servers run with `PR_SET_PDEATHSIG = SIGKILL`).
fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(Flavor::Redis, 3, 1).expect("start redis cluster"))
}

fn manager(url: &str) -> CacheManager {
    partcache_redis::install();
    CacheManager::from_url(url).expect("manager")
}

async fn cluster_manager() -> CacheManager {
    let url = tokio::task::block_in_place(|| cluster().seed_url());
    manager(&url)
}

layer_suite!(cluster_manager);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_whose_port_closed_fails_open() {
    let redis = tokio::task::block_in_place(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    });
    let manager = manager(&format!(
        "redis://{}?connect_timeout=100ms&response_timeout=100ms",
        redis.addr()
    ));
    let layer = CacheLayer::new(
        manager.cache::<u64, u64>("sq").build().await.unwrap(),
        |n: &u64| Some(*n),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(move |n: u64| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(n * n) }
        }));
    assert_eq!(service.clone().oneshot(3).await.unwrap(), 9);
    let deadline = Instant::now() + Duration::from_secs(10);
    while layer.stats().cache.stored == 0 {
        assert!(Instant::now() < deadline, "the write never finished");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(service.clone().oneshot(3).await.unwrap(), 9);
    assert_eq!(
        (calls.load(Ordering::SeqCst), layer.stats().cache.hits),
        (1, 1)
    );

    // SIGKILL: the port is closed; every call runs the service, within the store timeout.
    assert!(tokio::task::block_in_place(|| redis.kill()));
    for i in 1..=10 {
        let start = Instant::now();
        assert_eq!(service.clone().oneshot(3).await.unwrap(), 9);
        let took = start.elapsed();
        // 250 ms store timeout, plus slack for a loaded test machine.
        assert!(took < Duration::from_millis(500), "call {i} took {took:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1 + i);
    }
    let stats = layer.stats().cache;
    assert!(stats.store_errors + stats.store_timeouts >= 10, "{stats:?}");
    assert_eq!(stats.hits, 1);
}

/// A request future dropped while its service runs (a client that went away) ends its
/// key's lease at once: another instance then calls its own service straight away
/// instead of waiting out the lease's 5 s for a response nobody will store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_dropped_mid_call_ends_its_lease_for_other_instances() {
    let name = format!("dropped-lease-{}", std::process::id());
    let open = |manager: CacheManager| {
        let name = name.clone();
        async move {
            manager
                .cache::<u64, u64>(&name)
                .lease_ttl(Duration::from_secs(5))
                .build()
                .await
                .expect("cache")
        }
    };
    let a = CacheLayer::new(open(cluster_manager().await).await, |n: &u64| Some(*n));
    let b = CacheLayer::new(open(cluster_manager().await).await, |n: &u64| Some(*n));

    let (called_tx, called_rx) = tokio::sync::oneshot::channel::<()>();
    let called_tx = Arc::new(std::sync::Mutex::new(Some(called_tx)));
    let stuck = ServiceBuilder::new()
        .layer(a)
        .service(service_fn(move |_: u64| {
            if let Some(tx) = called_tx.lock().expect("lock").take() {
                let _ = tx.send(());
            }
            std::future::pending::<Result<u64, Infallible>>()
        }));
    let request = tokio::spawn(stuck.oneshot(7));
    called_rx.await.expect("instance A called its service");
    request.abort();
    let _ = request.await;

    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let quick = ServiceBuilder::new()
        .layer(b.clone())
        .service(service_fn(move |n: u64| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(n * n) }
        }));
    let started = Instant::now();
    assert_eq!(quick.oneshot(7).await.expect("response"), 49);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "instance B waited {:?} for a lease nobody would use",
        started.elapsed()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // B held the lease itself: its response is stored.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.stats().cache.stored == 0 {
        assert!(Instant::now() < deadline, "B's response was never stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The lease a miss asks for is a store call like the others: with writes paused on
/// the server (`CLIENT PAUSE … WRITE`: reads answer, the lease's ask does not), the ask
/// gives up after the store timeout and the service answers (before, the miss waited
/// for the client's own response timeout, 3 s here), counted as a store timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_ask_gives_up_after_the_store_timeout() {
    let redis = tokio::task::block_in_place(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    });
    let manager = manager(&format!("redis://{}?response_timeout=3s", redis.addr()));
    let layer = CacheLayer::builder(
        manager.cache::<u64, u64>("paused").build().await.unwrap(),
        |n: &u64| Some(*n),
    )
    .store_timeout(Duration::from_millis(200))
    .build();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(
            |n: u64| async move { Ok::<_, Infallible>(n * n) },
        ));
    // Connected, and the server's functions loaded, before the pause.
    assert_eq!(service.clone().oneshot(1).await.unwrap(), 1);
    tokio::task::block_in_place(|| redis.redis_cli(["CLIENT", "PAUSE", "2500", "WRITE"]));
    let started = Instant::now();
    assert_eq!(service.clone().oneshot(7).await.unwrap(), 49);
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(1000),
        "a miss waited {took:?} with a 200 ms store timeout"
    );
    assert_eq!(layer.stats().cache.store_timeouts, 1, "{:?}", layer.stats());
}
