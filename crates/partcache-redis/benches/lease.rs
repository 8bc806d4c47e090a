//! Leases against per-process flights, in one run, on a 3-master cluster this benchmark
//! starts itself:
//!
//! ```text
//! cargo bench -p partcache-redis --bench lease
//! BENCH cluster_stampede speedup=<origin calls with per-process flights / with leases> ...
//! BENCH lease_miss ratio=<miss-and-load ops/s with leases / without> ...
//! BENCH lease_hit ratio=<get_or_load hit ops/s with leases / without> ...
//! ```
//!
//! `cluster_stampede`: 4 OS processes (this binary again, as workers) × 32 tasks read
//! 100 hot keys at random with `get_or_load` for `PARTCACHE_BENCH_SECS` × 2 seconds; the
//! entries expire 250 ms after their creation and the origin takes 20 ms, so every key
//! is loaded again several times during the run. Per-process flights (`lease_ttl` 0)
//! call the origin about once per key, expiry and process; leases once per key and
//! expiry for the whole deployment: the speedup approaches the number of processes.
//!
//! `lease_miss`: 32 tasks of one process call `get_or_load` on keys nobody read before
//! (every call a miss, a load and a store write) with an instant loader, the harshest
//! case for the lease's extra round trip; a second line gives the same with a 1 ms
//! origin, closer to a real load.
//!
//! `lease_hit`: the same tasks call `get_or_load` on 1,000 keys stored before (every
//! call a hit): on a cache with plain reads a hit is the same batched read with or
//! without leases, so the ratio should be 1.
//!
//! Best of alternating rounds (`PARTCACHE_BENCH_ROUNDS`, default 5;
//! `PARTCACHE_BENCH_SECS` seconds each, default 1).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use partcache::{Cache, CacheManager, ExpiryPolicy};
use partcache_integration_tests::{Flavor, RedisCluster};

mod support;
use support::{Measured, SERVER_PIDS, measure, median, rounds, seconds};

const PROCESSES: usize = 4;
const TASKS: usize = 32;
const HOT_KEYS: u64 = 100;
const ORIGIN: Duration = Duration::from_millis(20);
const EXPIRY: Duration = Duration::from_millis(250);

const WORKER: &str = "PARTCACHE_BENCH_LEASE_WORKER";

fn value() -> String {
    "x".repeat(100)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A worker process of `cluster_stampede`: `<url> <cache> <lease ms> <start unix ms>
/// <run ms>` in [`WORKER`]; prints `CALLS <origin calls>`.
async fn worker(spec: &str) {
    let parts: Vec<&str> = spec.split(' ').collect();
    let [url, name, lease_ms, start_ms, run_ms] = parts[..] else {
        panic!("bad worker spec {spec}");
    };
    let number = |s: &str| s.parse::<u64>().expect("a number");
    partcache_redis::install();
    let manager = CacheManager::from_url(url).expect("manager");
    let cache: Cache<u64, String> = manager
        .cache(name)
        .expiry(ExpiryPolicy::Created(EXPIRY))
        .lease_ttl(Duration::from_millis(number(lease_ms)))
        .build()
        .await
        .expect("cache");
    cache.get(&u64::MAX).await.expect("warm-up read");
    let start = number(start_ms);
    let wait = start.saturating_sub(unix_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let deadline = Instant::now() + Duration::from_millis(number(run_ms));
    let calls = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|t| {
            let (cache, calls) = (cache.clone(), calls.clone());
            tokio::spawn(async move {
                // A per-task linear congruential sequence: random enough keys.
                let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                while Instant::now() < deadline {
                    x = x
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    let key = (x >> 33) % HOT_KEYS;
                    let calls = calls.clone();
                    cache
                        .get_or_load(&key, |_| async move {
                            calls.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(ORIGIN).await;
                            Ok::<_, std::io::Error>(value())
                        })
                        .await
                        .expect("get_or_load");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("worker task");
    }
    println!("CALLS {}", calls.load(Ordering::Relaxed));
}

/// Origin calls of one `cluster_stampede` run: [`PROCESSES`] workers on a fresh cache.
fn stampede(url: &str, lease: Duration, round: usize) -> u64 {
    let exe = std::env::current_exe().expect("the benchmark's path");
    let name = format!("bench-stampede-{}-{round}-{}", lease.as_millis(), unix_ms());
    let run = seconds() * 2;
    let start = unix_ms() + 1_500;
    let workers: Vec<_> = (0..PROCESSES)
        .map(|_| {
            std::process::Command::new(&exe)
                .env(
                    WORKER,
                    format!(
                        "{url} {name} {} {start} {}",
                        lease.as_millis(),
                        run.as_millis()
                    ),
                )
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("start a worker")
        })
        .collect();
    workers
        .into_iter()
        .map(|w| {
            let out = w.wait_with_output().expect("worker output");
            assert!(out.status.success(), "a worker failed");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find_map(|l| l.strip_prefix("CALLS "))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .expect("a CALLS line")
        })
        .sum()
}

/// Miss-and-load operations per second: [`TASKS`] tasks call `get_or_load` on keys
/// never read before, with a loader that takes `origin`.
async fn misses(cache: &Cache<u64, String>, origin: Duration) -> f64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + seconds();
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (cache, done) = (cache.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let key = NEXT.fetch_add(1, Ordering::Relaxed);
                    cache
                        .get_or_load(&key, |_| async move {
                            if !origin.is_zero() {
                                tokio::time::sleep(origin).await;
                            }
                            Ok::<_, std::io::Error>(value())
                        })
                        .await
                        .expect("get_or_load");
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

/// Number of keys the hit rounds read.
const HIT_KEYS: u64 = 1000;

/// Hit operations per second: [`TASKS`] tasks call `get_or_load` on [`HIT_KEYS`]
/// keys stored before (the loader never runs).
async fn hits(cache: &Cache<u64, String>) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + seconds();
    let start = Instant::now();
    let tasks: Vec<_> = (0..TASKS as u64)
        .map(|task| {
            let (cache, done) = (cache.clone(), done.clone());
            tokio::spawn(async move {
                let mut key = task * 31;
                while Instant::now() < deadline {
                    key = (key + 7) % HIT_KEYS;
                    cache
                        .get_or_load(&key, |_| async move {
                            Err::<String, _>(std::io::Error::other("a hit was expected"))
                        })
                        .await
                        .expect("get_or_load hit");
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

/// Alternating rounds of `get_or_load` hits with and without leases: a hit must not
/// pay for the lease. Prints the `lease_hit` line.
async fn lease_hit(manager: &CacheManager) {
    let leased: Cache<u64, String> = manager
        .cache("bench-hit-leased")
        .build()
        .await
        .expect("cache");
    let plain: Cache<u64, String> = manager
        .cache("bench-hit-plain")
        .lease_ttl(Duration::ZERO)
        .build()
        .await
        .expect("cache");
    for key in 0..HIT_KEYS {
        leased.put(key, value()).await.expect("put");
        plain.put(key, value()).await.expect("put");
    }
    let (mut with, mut without): (Vec<Measured>, Vec<Measured>) = (Vec::new(), Vec::new());
    for i in 0..rounds() {
        if i % 2 == 0 {
            with.push(measure(hits(&leased)).await);
            without.push(measure(hits(&plain)).await);
        } else {
            without.push(measure(hits(&plain)).await);
            with.push(measure(hits(&leased)).await);
        }
    }
    print_line("lease_hit", &with, &without, None);
}

/// Prints one comparison line: best-round ratio, both best figures, median ratio,
/// CPU per operation.
fn print_line(name: &str, with: &[Measured], without: &[Measured], origin: Option<Duration>) {
    let best = |v: &[Measured]| v.iter().map(|m| m.ops).fold(0f64, f64::max);
    let ratios: Vec<f64> = with
        .iter()
        .zip(without)
        .map(|(a, b)| a.ops / b.ops)
        .collect();
    let cpu = |v: &[Measured]| {
        let client = median(v.iter().map(|m| m.client_us).collect());
        let server = median(v.iter().map(|m| m.server_us).collect());
        format!("{client:.1}+{server:.1}")
    };
    let origin = origin.map_or(String::new(), |o| format!(" origin_ms={}", o.as_millis()));
    println!(
        "BENCH {name} ratio={:.2} leases={:.0} flights={:.0} median={:.2} rounds={}{origin} \
         cpu_us_leases={} cpu_us_flights={}",
        best(with) / best(without),
        best(with),
        best(without),
        median(ratios.clone()),
        ratios.len(),
        cpu(with),
        cpu(without),
    );
}

/// Alternating rounds of misses with and without leases; prints the line.
async fn lease_miss(manager: &CacheManager, origin: Duration, name: &str) {
    let leased: Cache<u64, String> = manager
        .cache(&format!("bench-miss-leased-{}", origin.as_millis()))
        .build()
        .await
        .expect("cache");
    let plain: Cache<u64, String> = manager
        .cache(&format!("bench-miss-plain-{}", origin.as_millis()))
        .lease_ttl(Duration::ZERO)
        .build()
        .await
        .expect("cache");
    let (mut with, mut without): (Vec<Measured>, Vec<Measured>) = (Vec::new(), Vec::new());
    for i in 0..rounds() {
        if i % 2 == 0 {
            with.push(measure(misses(&leased, origin)).await);
            without.push(measure(misses(&plain, origin)).await);
        } else {
            without.push(measure(misses(&plain, origin)).await);
            with.push(measure(misses(&leased, origin)).await);
        }
    }
    print_line(name, &with, &without, Some(origin));
}

fn main() {
    if let Ok(spec) = std::env::var(WORKER) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(worker(&spec));
        return;
    }
    let cluster = RedisCluster::start(Flavor::Redis, 3, 0).expect("start cluster");
    let _ = SERVER_PIDS.set(
        (0..cluster.len())
            .filter_map(|i| cluster.node_pid(i))
            .collect(),
    );
    let url = cluster.seed_url();
    println!(
        "# servers: {}; {PROCESSES} processes x {TASKS} tasks, {HOT_KEYS} hot keys expiring {EXPIRY:?} after creation, origin {ORIGIN:?}, best of {} rounds",
        cluster.flavor().name(),
        rounds()
    );
    let (mut flights, mut leases) = (Vec::new(), Vec::new());
    for round in 0..rounds() {
        flights.push(stampede(&url, Duration::ZERO, round) as f64);
        leases.push(stampede(&url, Duration::from_secs(5), round) as f64);
    }
    let speedups: Vec<f64> = flights
        .iter()
        .zip(&leases)
        .map(|(f, l)| f / l.max(1.0))
        .collect();
    println!(
        "BENCH cluster_stampede speedup={:.2} origin_calls_flights={:.0} origin_calls_leases={:.0} rounds={}",
        median(speedups.clone()),
        median(flights),
        median(leases),
        speedups.len()
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        partcache_redis::install();
        let manager = CacheManager::from_url(&url).expect("manager");
        lease_miss(&manager, Duration::ZERO, "lease_miss").await;
        lease_miss(&manager, Duration::from_millis(1), "lease_miss_1ms_origin").await;
        lease_hit(&manager).await;
    });
}
