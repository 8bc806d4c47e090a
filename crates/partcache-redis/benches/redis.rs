//! partcache on Redis versus raw redis-rs calls doing the equivalent work, on servers this
//! benchmark starts itself (a 3-master cluster and a standalone server), at 64
//! concurrent tasks with 100-byte values. Prints these `BENCH` lines:
//!
//! ```text
//! cargo bench -p partcache-redis --bench redis
//! ```
//!
//! Each figure is the best of several short rounds in which partcache and the raw client
//! alternate, so that both sides see the same noise on a shared machine; the `median`
//! field is the median of the per-round ratios, and `cpu_us_partcache` / `cpu_us_raw`
//! the median CPU time one operation cost this process plus the servers (`client+servers`,
//! microseconds): on a machine shared with other work these move much less than
//! throughput does. `PARTCACHE_BENCH_SECS` sets the seconds
//! per measurement (default 1), `PARTCACHE_BENCH_ROUNDS` the rounds (default 5), and
//! `PARTCACHE_BENCH_ONLY` (comma-separated names, e.g. `cluster_put,standalone_get`)
//! runs only those figures; `PARTCACHE_BENCH_SIDE=partcache` (or `raw`) measures one
//! side only and prints no `BENCH` line (for instruction counts under callgrind), and
//! `PARTCACHE_BENCH_SYSCALLS=1` prints the read and write system calls per operation of
//! this process and of the servers after each measurement (how well requests batch).
//!
//! `redis_memory` (two lines, `case=eternal` and `case=ttl_1h`) is memory, not speed:
//! the server's `used_memory` growth per entry for 100,000 entries of 100-byte values
//! on a fresh standalone server, partcache (a cache without `max_entries` or listeners;
//! for `ttl_1h` with `ExpiryPolicy::Modified` of one hour) over raw `SET`s (with
//! `PX 3600000` for `ttl_1h`); below 1 would be smaller than raw. `redis_len_100k` and
//! `redis_iter_100k` are what a cache without an index pays for that: the time of
//! `len()` and of iterating all keys of 100,000 entries, with an index (a cache with
//! `max_entries`) over without (a `SCAN` of the server, which also holds the other
//! cache's keys); below 1 is slower without.

use std::time::{Duration, Instant};

use partcache::expiry::ExpiryPolicy;
use partcache::{Cache, CacheManager};
use partcache_integration_tests::{Flavor, RedisCluster, RedisServer, ServerOptions};
use redis::AsyncCommands;

mod support;
use support::{Measured, SERVER_PIDS, measure, median, rounds, seconds, throughput};

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
    ours: Vec<Measured>,
    raw: Vec<Measured>,
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
        // `PARTCACHE_BENCH_SIDE=partcache` (or `raw`) measures one side only: for
        // instruction counts under callgrind.
        let side = std::env::var("PARTCACHE_BENCH_SIDE").unwrap_or_default();
        if !side.is_empty() {
            for _ in 0..rounds() {
                let m = if side == "raw" {
                    measure(raw()).await
                } else {
                    measure(ours()).await
                };
                println!("# {side}: {:.0} ops/s", m.ops);
            }
            return r;
        }
        for i in 0..rounds() {
            // Alternate which side goes first, so neither always follows the other.
            if i % 2 == 0 {
                r.ours.push(measure(ours()).await);
                r.raw.push(measure(raw()).await);
            } else {
                r.raw.push(measure(raw()).await);
                r.ours.push(measure(ours()).await);
            }
        }
        r
    }

    fn line(&self, name: &str) {
        if self.ours.is_empty() || self.raw.is_empty() {
            return;
        }
        let best = |v: &[Measured]| v.iter().map(|m| m.ops).fold(0f64, f64::max);
        let (ours, raw) = (best(&self.ours), best(&self.raw));
        let ratios: Vec<f64> = self
            .ours
            .iter()
            .zip(&self.raw)
            .map(|(a, b)| a.ops / b.ops)
            .collect();
        let cpu = |v: &[Measured]| {
            let client = median(v.iter().map(|m| m.client_us).collect());
            let server = median(v.iter().map(|m| m.server_us).collect());
            format!("{client:.1}+{server:.1}")
        };
        println!(
            "BENCH {name} ratio={:.2} partcache={:.0} raw={:.0} median={:.2} rounds={} \
             cpu_us_partcache={} cpu_us_raw={}",
            ours / raw,
            ours,
            raw,
            median(ratios.clone()),
            ratios.len(),
            cpu(&self.ours),
            cpu(&self.raw),
        );
    }
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
    throughput(TASKS, KEYS, move |k| {
        let cache = cache.clone();
        async move {
            cache.get(&k).await.expect("get");
        }
    })
    .await
}

async fn partcache_puts(cache: &Cache<u64, String>) -> f64 {
    let cache = cache.clone();
    throughput(TASKS, KEYS, move |k| {
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
    throughput(TASKS, KEYS, move |k| {
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
    throughput(TASKS, KEYS, move |k| {
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

/// Entries of the memory measurement.
const MEMORY_ENTRIES: u64 = 100_000;

/// The server's `used_memory`.
async fn used_memory(conn: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(conn)
        .await
        .expect("INFO memory");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

/// Bytes per entry that `fill` adds to an emptied server.
async fn bytes_per_entry<F, Fut>(conn: &mut redis::aio::MultiplexedConnection, fill: F) -> f64
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let _: () = redis::cmd("FLUSHALL")
        .arg("SYNC")
        .query_async(conn)
        .await
        .expect("FLUSHALL");
    let before = used_memory(conn).await;
    fill().await;
    (used_memory(conn).await - before) / MEMORY_ENTRIES as f64
}

/// `redis_memory`: partcache's bytes per entry over raw `SET`'s, eternal and with a
/// one-hour TTL (see the module docs).
async fn memory(url: &str) {
    let mut conn = redis::Client::open(url)
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connection");
    // `FLUSHALL SYNC` of a few hundred thousand keys outlasts the default timeout on
    // a busy machine.
    conn.set_response_timeout(Duration::from_secs(60));
    for (case, ttl) in [
        ("eternal", None),
        ("ttl_1h", Some(Duration::from_secs(3600))),
    ] {
        let raw_conn = conn.clone();
        let raw = bytes_per_entry(&mut conn, || async move {
            for chunk in (0..MEMORY_ENTRIES).collect::<Vec<_>>().chunks(1000) {
                let mut pipe = redis::pipe();
                for k in chunk {
                    let cmd = pipe.cmd("SET").arg(format!("raw:{k}")).arg(value());
                    if let Some(ttl) = ttl {
                        cmd.arg("PX").arg(ttl.as_millis() as u64);
                    }
                    cmd.ignore();
                }
                let _: () = pipe
                    .query_async(&mut raw_conn.clone())
                    .await
                    .expect("raw fill");
            }
        })
        .await;
        let manager = CacheManager::from_url(url).expect("manager");
        let ours = bytes_per_entry(&mut conn, || async {
            let mut builder = manager.cache(&format!("bench-memory-{case}"));
            if let Some(ttl) = ttl {
                builder = builder.expiry(ExpiryPolicy::Modified(ttl));
            }
            let cache: Cache<u64, String> = builder.build().await.expect("cache");
            for chunk in (0..MEMORY_ENTRIES).collect::<Vec<_>>().chunks(1000) {
                cache
                    .put_all(chunk.iter().map(|&k| (k, value())))
                    .await
                    .expect("fill");
            }
        })
        .await;
        println!(
            "BENCH redis_memory ratio={:.2} case={case} partcache_bytes={ours:.0} raw_bytes={raw:.0} entries={MEMORY_ENTRIES}",
            ours / raw
        );
    }
}

/// `redis_len_100k` and `redis_iter_100k` (see the module docs).
async fn scan_cost(url: &str) {
    use futures::StreamExt;
    let manager = CacheManager::from_url(url).expect("manager");
    let mut caches = Vec::new();
    for (name, max) in [
        ("bench-scan-plain", None),
        ("bench-scan-indexed", Some(10 * MEMORY_ENTRIES)),
    ] {
        let mut builder = manager.cache(name);
        if let Some(max) = max {
            builder = builder.max_entries(max);
        }
        let cache: Cache<u64, String> = builder.build().await.expect("cache");
        for chunk in (0..MEMORY_ENTRIES).collect::<Vec<_>>().chunks(1000) {
            cache
                .put_all(chunk.iter().map(|&k| (k, value())))
                .await
                .expect("fill");
        }
        caches.push(cache);
    }
    let mut len_ms = Vec::new();
    let mut iter_ms = Vec::new();
    for cache in &caches {
        let start = Instant::now();
        assert_eq!(cache.len().await.expect("len"), MEMORY_ENTRIES);
        len_ms.push(start.elapsed().as_secs_f64() * 1e3);
        let start = Instant::now();
        assert_eq!(cache.keys().count().await as u64, MEMORY_ENTRIES);
        iter_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    for (name, ms) in [("redis_len_100k", &len_ms), ("redis_iter_100k", &iter_ms)] {
        println!(
            "BENCH {name} ratio={:.2} scan_ms={:.0} index_ms={:.0}",
            ms[1] / ms[0],
            ms[0],
            ms[1]
        );
    }
}

fn main() {
    let cluster = RedisCluster::start(Flavor::Redis, 3, 0).expect("start cluster");
    let server = RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start server");
    let version = server.binaries().version_line().to_string();
    let pids = (0..cluster.len()).filter_map(|i| cluster.node_pid(i));
    let _ = SERVER_PIDS.set(pids.chain(server.pid()).collect());
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
        if wanted("redis_memory") {
            let server =
                RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start server");
            memory(&server.url()).await;
            scan_cost(&server.url()).await;
        }
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
