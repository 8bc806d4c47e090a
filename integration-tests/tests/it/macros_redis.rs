//! The `partcache-macros` behaviour suite on a real standalone Redis server, started once for this test
//! binary; and fail-open when Redis cannot be reached.
//!
//! The scenarios use fixed cache names (they are in the attributes), so every test gets
//! a database of its own (`redis://…/N`, the server runs with 64 databases) and the
//! scenarios run concurrently on one server without seeing each other's entries.

use crate::suite;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use partcache::CacheManager;
use partcache_integration_tests::{Flavor, RedisServer, ServerOptions};
use suite::{Catalog, Db, NotFound, Product};

const DATABASES: u32 = 64;

/// One standalone server per test binary (the harness kills it with the process: it
/// runs with `PR_SET_PDEATHSIG = SIGKILL`).
fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let options = ServerOptions::default().args(["--databases", &DATABASES.to_string()]);
        RedisServer::start(Flavor::Redis, options).expect("start redis-server")
    })
}

fn manager(url: &str) -> CacheManager {
    partcache_redis::install();
    CacheManager::from_url(url).expect("a valid Redis URL")
}

/// A manager on a database no other test of this binary uses.
fn redis_manager() -> CacheManager {
    static NEXT_DB: AtomicU32 = AtomicU32::new(0);
    let db = NEXT_DB.fetch_add(1, Ordering::Relaxed);
    assert!(db < DATABASES, "more tests than databases: raise DATABASES");
    let addr = tokio::task::block_in_place(|| server().addr());
    manager(&format!("redis://{addr}/{db}"))
}

behaviour_suite!(redis_manager());

fn product(id: u64) -> Product {
    Product {
        id,
        name: format!("product {id}"),
        price: 100 + id as u32,
    }
}

/// Runs `call` and checks it finished within `limit`.
async fn within<T>(limit: Duration, call: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let out = call.await;
    assert!(start.elapsed() < limit, "took {:?}", start.elapsed());
    out
}

/// Nothing listens on the port: the cache opens lazily (it is built, but cannot reach
/// its store), so every annotated function runs uncached, and fast (a refused
/// connection is never waited on until a timeout); the store errors are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_runs_every_function_uncached() {
    let port = partcache_integration_tests::ports::free_port().expect("a free port");
    // Timeouts far above the bound: a refused connection must not be waited on at all
    // (not until a timeout), and the bound leaves a loaded machine its slack.
    let manager = manager(&format!(
        "redis://127.0.0.1:{port}?connect_timeout=5s&response_timeout=5s"
    ));
    let catalog = Catalog::new(manager.clone());
    let limit = Duration::from_secs(1);
    for _ in 0..3 {
        assert_eq!(within(limit, catalog.product(&Db, 1)).await, Ok(product(1)));
    }
    assert_eq!(
        within(limit, catalog.save(&Db, product(2))).await,
        Ok(product(2))
    );
    assert_eq!(within(limit, catalog.delete(&Db, 2)).await, Ok(()));
    within(limit, catalog.delete_all()).await;
    assert_eq!(catalog.calls(), 6);
    let cache = manager
        .get_cache::<u64, Product>("products")
        .expect("the cache is built even though its store is down");
    assert!(
        cache.stats().store_errors >= 3,
        "store errors not counted: {:?}",
        cache.stats()
    );
}

/// The server dies after the cache was opened: every call runs the function, store
/// errors are counted in the cache's statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_died_runs_every_function_uncached() {
    let redis = tokio::task::block_in_place(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    });
    let manager = manager(&format!(
        "redis://{}?connect_timeout=100ms&response_timeout=100ms",
        redis.addr()
    ));
    let catalog = Catalog::new(manager.clone());
    assert_eq!(catalog.product(&Db, 1).await, Ok(product(1)));
    assert_eq!(catalog.product(&Db, 1).await, Ok(product(1)));
    assert_eq!(catalog.calls(), 1);
    let cache = manager
        .get_cache::<u64, Product>("products")
        .expect("opened by the first call");

    assert!(tokio::task::block_in_place(|| redis.kill()));
    let limit = Duration::from_millis(500);
    for _ in 0..3 {
        assert_eq!(within(limit, catalog.product(&Db, 1)).await, Ok(product(1)));
    }
    assert_eq!(
        within(limit, catalog.save(&Db, product(2))).await,
        Ok(product(2))
    );
    assert_eq!(within(limit, catalog.delete(&Db, 2)).await, Ok(()));
    assert_eq!(
        within(limit, catalog.delete_before(&Db, 3)).await,
        Err(NotFound(3))
    );
    assert_eq!(catalog.calls(), 7);
    let stats = cache.stats();
    assert!(stats.store_errors >= 6, "{stats:?}");
}
