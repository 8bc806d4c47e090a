//! `peer_fn_hit`: a memoized async function's hit, `#[cacheable]` against `cached`'s
//! `#[cached]` and `#[concurrent_cached]`. 1,000 keys, all cached before the clock
//! starts, a small struct as the value (returned to the caller, who checks it), room
//! for 10,000 entries and a 300-second lifetime after writing on every side. Two tasks
//! on two worker threads, as `cargo bench -p partcache --bench local` runs its
//! two-task figures.
//!
//! Not peers but printed beside them: a `moka::future::Cache::get` with the same
//! settings (the store under partcache's local caches) and partcache's `Cache::get`
//! called by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cached::macros::{cached, concurrent_cached};
use partcache::{CacheDecl, CacheManager, ExpiryPolicy, cacheable};
use serde::{Deserialize, Serialize};

use crate::report::{Board, Measured, Meter, PARTCACHE, order, schedule};

const KEYS: u64 = 1_000;
const CAPACITY: u64 = 10_000;
const LIFETIME: Duration = Duration::from_secs(300);
const TASKS: u64 = 2;
const CALLS_PER_TASK: usize = 400_000;

const CACHED: &str = "cached";
const CONCURRENT_CACHED: &str = "concurrent_cached";
const MOKA: &str = "moka";
const PARTCACHE_GET: &str = "partcache_get";
const CONTENDERS: [&str; 5] = [PARTCACHE, CACHED, CONCURRENT_CACHED, MOKA, PARTCACHE_GET];

/// The value: a row as a service would load it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    id: u64,
    name: String,
    price_cents: u64,
}

/// Calls that ran the function body: a hit must not add to it.
static LOADS: AtomicU64 = AtomicU64::new(0);

fn load(id: u64) -> Product {
    LOADS.fetch_add(1, Ordering::Relaxed);
    Product {
        id,
        name: format!("product {id}"),
        price_cents: id * 100,
    }
}

static PRODUCTS: CacheDecl<u64, Product> = CacheDecl::new("peer-products")
    .expiry(ExpiryPolicy::Modified(LIFETIME))
    .max_entries(CAPACITY);

#[cacheable(cache = PRODUCTS, manager = caches)]
async fn partcache_product(caches: &CacheManager, id: u64) -> Product {
    load(id)
}

#[cached(max_size = 10_000, ttl_secs = 300)]
async fn cached_product(id: u64) -> Product {
    load(id)
}

#[concurrent_cached(max_size = 10_000, ttl_secs = 300)]
async fn concurrent_cached_product(id: u64) -> Product {
    load(id)
}

/// A cheap deterministic key sequence per task (xorshift), the same for every side.
fn keys(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some(x % KEYS)
    })
}

/// Calls per second of `call` from `TASKS` tasks.
async fn calls<F, Fut>(call: F) -> Measured
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Product> + Send,
{
    let meter = Meter::start();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let call = call.clone();
            tokio::spawn(async move {
                for id in keys(t + 1).take(CALLS_PER_TASK) {
                    let product = call(id).await;
                    assert_eq!(product.id, id);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task");
    }
    meter.stop(TASKS * CALLS_PER_TASK as u64)
}

/// Prints `BENCH peer_fn_hit`.
pub async fn run() {
    let caches = CacheManager::from_url("memory://").expect("memory store");
    let by_hand = PRODUCTS.open(&caches).await.expect("cache");
    let moka: moka::future::Cache<u64, Product> = moka::future::Cache::builder()
        .max_capacity(CAPACITY)
        .time_to_live(LIFETIME)
        .build();
    for id in 0..KEYS {
        partcache_product(&caches, id).await;
        cached_product(id).await;
        concurrent_cached_product(id).await;
        moka.insert(id, load(id)).await;
    }
    let loaded = LOADS.load(Ordering::Relaxed);
    assert_eq!(loaded, 4 * KEYS, "every first call runs the body once");

    let mut board = Board::new("fn_hit", &[MOKA, PARTCACHE_GET]);
    for (round, kind) in schedule(7) {
        for name in order(round, &CONTENDERS) {
            let figure = match name {
                PARTCACHE => {
                    let caches = caches.clone();
                    calls(move |id| {
                        let caches = caches.clone();
                        async move { partcache_product(&caches, id).await }
                    })
                    .await
                }
                CACHED => calls(cached_product).await,
                CONCURRENT_CACHED => calls(concurrent_cached_product).await,
                MOKA => {
                    let moka = moka.clone();
                    calls(move |id| {
                        let moka = moka.clone();
                        async move { moka.get(&id).await.expect("a hit") }
                    })
                    .await
                }
                _ => {
                    let cache = by_hand.clone();
                    calls(move |id| {
                        let cache = cache.clone();
                        async move {
                            let product = cache.get(&id).await.expect("get").expect("a hit");
                            // The caller's own copy, as `#[cacheable]` hands it.
                            Product::clone(&product)
                        }
                    })
                    .await
                }
            };
            board.record(kind, name, figure);
        }
    }
    assert_eq!(
        LOADS.load(Ordering::Relaxed),
        loaded,
        "every measured call is a hit"
    );
    board.print();
}
