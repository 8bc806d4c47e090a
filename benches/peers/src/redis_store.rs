//! `peer_redis_get`: gets from a standalone Redis server, partcache against `cached`'s
//! `AsyncRedisCache` (feature `redis_tokio`, its multiplexed connection), as
//! `cargo bench -p partcache-redis --bench redis` measures `standalone_get`: 64 tasks,
//! 10,000 keys of 100-byte values, every get a hit, one server this benchmark starts on
//! a free port and stops at the end. Raw redis-rs `GET`s on a multiplexed connection
//! are printed beside them (not a peer).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cached::{AsyncRedisCache, ConcurrentCachedAsync};
use partcache::{Cache, CacheManager};

use crate::report::{Board, Measured, Meter, PARTCACHE, order, schedule, seconds};

const TASKS: usize = 64;
const KEYS: u64 = 10_000;

const CACHED: &str = "cached";
const RAW: &str = "raw";
const CONTENDERS: [&str; 3] = [PARTCACHE, CACHED, RAW];

fn value() -> String {
    "x".repeat(100)
}

/// Runs `get(key)` from 64 tasks for the measurement time; returns gets per second.
async fn throughput<F, Fut>(get: F) -> Measured
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let get = Arc::new(get);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + seconds();
    let meter = Meter::start();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (get, done) = (get.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = t as u64 * 7919;
                while Instant::now() < deadline {
                    get(i % KEYS).await;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task");
    }
    meter.stop(done.load(Ordering::Relaxed))
}

async fn partcache_cache(url: &str) -> Cache<u64, String> {
    let manager = CacheManager::from_url(url).expect("manager");
    let cache: Cache<u64, String> = manager.cache("peer-get").build().await.expect("cache");
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        cache
            .put_all(chunk.iter().map(|&k| (k, value())))
            .await
            .expect("fill");
    }
    cache
}

async fn cached_cache(url: &str) -> AsyncRedisCache<u64, String> {
    let cache = AsyncRedisCache::<u64, String>::builder("peer-get")
        .connection_string(url)
        .build()
        .await
        .expect("AsyncRedisCache");
    for k in 0..KEYS {
        cache.async_cache_set(k, value()).await.expect("fill");
    }
    cache
}

async fn raw_connection(url: &str) -> redis::aio::MultiplexedConnection {
    let connection = redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    for k in 0..KEYS {
        let _: () = redis::cmd("SET")
            .arg(format!("raw:{k}"))
            .arg(value())
            .query_async(&mut connection.clone())
            .await
            .expect("raw fill");
    }
    connection
}

/// Prints `BENCH peer_redis_get` against the server at `url`.
pub async fn run(url: &str) {
    let ours = partcache_cache(url).await;
    let theirs = cached_cache(url).await;
    let raw = raw_connection(url).await;
    let mut board = Board::new("redis_get", &[RAW]);
    for (round, kind) in schedule(5) {
        for name in order(round, &CONTENDERS) {
            let figure = match name {
                PARTCACHE => {
                    let cache = ours.clone();
                    throughput(move |k| {
                        let cache = cache.clone();
                        async move {
                            assert!(cache.get(&k).await.expect("get").is_some());
                        }
                    })
                    .await
                }
                CACHED => {
                    let cache = theirs.clone();
                    throughput(move |k| {
                        let cache = cache.clone();
                        async move {
                            assert!(cache.async_cache_get(&k).await.expect("get").is_some());
                        }
                    })
                    .await
                }
                _ => {
                    let connection = raw.clone();
                    throughput(move |k| {
                        let mut connection = connection.clone();
                        async move {
                            let value: Option<Vec<u8>> = redis::cmd("GET")
                                .arg(format!("raw:{k}"))
                                .query_async(&mut connection)
                                .await
                                .expect("raw get");
                            assert!(value.is_some());
                        }
                    })
                    .await
                }
            };
            board.record(kind, name, figure);
        }
    }
    board.print();
}
