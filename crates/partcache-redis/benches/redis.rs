//! partcache on Redis versus raw redis-rs calls doing the equivalent work, on servers this
//! benchmark starts itself (a 3-master cluster and a standalone server), at 64
//! concurrent tasks with 100-byte values. Prints the `BENCH` lines of issue 3:
//!
//! ```text
//! cargo bench -p partcache-redis --bench redis
//! ```
//!
//! Each figure is the best of several short rounds in which partcache and the raw client
//! alternate, so that both sides see the same noise on a shared machine; the `median`
//! field is the median of the per-round ratios. `PARTCACHE_BENCH_SECS` sets the seconds
//! per measurement (default 1), `PARTCACHE_BENCH_ROUNDS` the rounds (default 5), and
//! `PARTCACHE_BENCH_ONLY` (comma-separated names, e.g. `cluster_put,standalone_get`)
//! runs only those figures.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use partcache::{Cache, CacheManager};
use partcache_integration_tests::{Flavor, RedisCluster, RedisServer, ServerOptions};
use redis::AsyncCommands;

mod support;
use support::{rounds, seconds};

const TASKS: usize = 64;
const KEYS: u64 = 10_000;

fn value() -> String {
    "x".repeat(100)
}

fn wanted(name: &str) -> bool {
    std::env::var("PARTCACHE_BENCH_ONLY")
        .map(|only| only.split(',').any(|n| n.trim() == name))
        .unwrap_or(true)
}

/// Best (and per-round ratios) of alternating rounds of `ours` and `raw`.
struct Rounds {
    ours: Vec<f64>,
    raw: Vec<f64>,
}

impl Rounds {
    async fn run<A, AF, B, BF>(ours: A, raw: B) -> Rounds
    where
        A: Fn() -> AF,
        AF: Future<Output = f64>,
        B: Fn() -> BF,
        BF: Future<Output = f64>,
    {
        let mut r = Rounds {
            ours: Vec::new(),
            raw: Vec::new(),
        };
        for i in 0..rounds() {
            // Alternate which side goes first, so neither always follows the other.
            if i % 2 == 0 {
                r.ours.push(ours().await);
                r.raw.push(raw().await);
            } else {
                r.raw.push(raw().await);
                r.ours.push(ours().await);
            }
        }
        r
    }

    fn line(&self, name: &str) {
        let best = |v: &[f64]| v.iter().copied().fold(0f64, f64::max);
        let (ours, raw) = (best(&self.ours), best(&self.raw));
        let mut ratios: Vec<f64> = self
            .ours
            .iter()
            .zip(&self.raw)
            .map(|(a, b)| a / b)
            .collect();
        ratios.sort_by(f64::total_cmp);
        let median = ratios[ratios.len() / 2];
        println!(
            "BENCH {name} ratio={:.2} partcache={:.0} raw={:.0} median={median:.2} rounds={}",
            ours / raw,
            ours,
            raw,
            ratios.len()
        );
    }
}

/// Runs `op(task, i)` from 64 tasks for the measurement time; returns operations/s.
async fn throughput<F, Fut>(op: F) -> f64
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + seconds();
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = t as u64 * 7919;
                while Instant::now() < deadline {
                    op(t, i % KEYS).await;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

async fn cache(manager: &CacheManager, name: &str) -> Cache<u64, String> {
    let cache: Cache<u64, String> = manager.cache(name).build().await.expect("cache");
    fill(&cache).await;
    cache
}

async fn fill(cache: &Cache<u64, String>) {
    for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
        cache
            .put_all(chunk.iter().map(|&k| (k, value())))
            .await
            .expect("fill");
    }
}

async fn partcache_gets(cache: &Cache<u64, String>) -> f64 {
    let cache = cache.clone();
    throughput(move |_, k| {
        let cache = cache.clone();
        async move {
            cache.get(&k).await.expect("get");
        }
    })
    .await
}

async fn partcache_puts(cache: &Cache<u64, String>) -> f64 {
    let cache = cache.clone();
    throughput(move |_, k| {
        let cache = cache.clone();
        async move {
            cache.put(k, value()).await.expect("put");
        }
    })
    .await
}

async fn raw_gets<C>(conn: &C) -> f64
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let conn = conn.clone();
    throughput(move |_, k| {
        let mut conn = conn.clone();
        async move {
            let _: Option<Vec<u8>> = conn.get(format!("raw:{k}")).await.expect("raw get");
        }
    })
    .await
}

async fn raw_puts<C>(conn: &C) -> f64
where
    C: redis::aio::ConnectionLike + Clone + Send + Sync + 'static,
{
    let conn = conn.clone();
    throughput(move |_, k| {
        let mut conn = conn.clone();
        async move {
            let _: () = redis::cmd("SET")
                .arg(format!("raw:{k}"))
                .arg(value())
                .arg("PX")
                .arg(600_000)
                .query_async(&mut conn)
                .await
                .expect("raw set");
        }
    })
    .await
}

async fn raw_fill<C: redis::aio::ConnectionLike + Clone + Send + Sync>(conn: &C) {
    for k in 0..KEYS {
        let mut conn = conn.clone();
        let _: () = redis::cmd("SET")
            .arg(format!("raw:{k}"))
            .arg(value())
            .query_async(&mut conn)
            .await
            .expect("raw fill");
    }
}

async fn get_all_speedup(cache: &Cache<u64, String>) -> f64 {
    let keys: Vec<u64> = (0..100).map(|i| i * 97 % KEYS).collect();
    let rounds = 30;
    let start = Instant::now();
    for _ in 0..rounds {
        for k in &keys {
            cache.get(k).await.expect("get");
        }
    }
    let sequential = start.elapsed();
    let start = Instant::now();
    for _ in 0..rounds {
        cache.get_all(&keys).await.expect("get_all");
    }
    sequential.as_secs_f64() / start.elapsed().as_secs_f64()
}

fn main() {
    let cluster = RedisCluster::start(Flavor::Redis, 3, 0).expect("start cluster");
    let server = RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start server");
    let version = server.binaries().version_line().to_string();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "# servers: {version}; {TASKS} tasks, 100-byte values, {:?} per measurement, best of {} alternating rounds",
            seconds(),
            rounds()
        );
        partcache_redis::install();
        let manager = CacheManager::from_url(&cluster.seed_url()).expect("manager");
        let raw_cluster = redis::cluster::ClusterClient::new(cluster.node_urls())
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("cluster connection");
        raw_fill(&raw_cluster).await;

        let gets = cache(&manager, "bench-get").await;
        if wanted("cluster_get") {
            Rounds::run(|| partcache_gets(&gets), || raw_gets(&raw_cluster))
                .await
                .line("cluster_get");
        }

        if wanted("cluster_put") {
            let puts: Cache<u64, String> = manager.cache("bench-put").build().await.expect("cache");
            Rounds::run(|| partcache_puts(&puts), || raw_puts(&raw_cluster))
                .await
                .line("cluster_put");
        }

        if wanted("cluster_put_evicting") {
            let evicting: Cache<u64, String> = manager
                .cache("bench-put-evicting")
                .max_entries(KEYS / 2)
                .max_idle(Duration::from_secs(600))
                .build()
                .await
                .expect("cache");
            Rounds::run(|| partcache_puts(&evicting), || raw_puts(&raw_cluster))
                .await
                .line("cluster_put_evicting");
        }

        if wanted("cluster_get_all_100") {
            let mut best = 0f64;
            for _ in 0..rounds() {
                best = best.max(get_all_speedup(&gets).await);
            }
            println!("BENCH cluster_get_all_100 speedup={best:.1} rounds={}", rounds());
        }

        if wanted("standalone_get") {
            let standalone = CacheManager::from_url(&server.url()).expect("manager");
            let raw_standalone = redis::Client::open(server.url())
                .expect("client")
                .get_multiplexed_async_connection()
                .await
                .expect("connection");
            raw_fill(&raw_standalone).await;
            let gets = cache(&standalone, "bench-get").await;
            Rounds::run(|| partcache_gets(&gets), || raw_gets(&raw_standalone))
                .await
                .line("standalone_get");
        }
    });
}
