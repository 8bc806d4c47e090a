//! Local store vs raw `moka::future::Cache`, side by side in one run.
//!
//! `cargo bench -p partcache --bench local` prints, for 2 and 8 concurrent tasks:
//! `BENCH local_get_hit ratio=<partcache/moka> partcache=<ops/s> moka=<ops/s> tasks=<n>`
//! `BENCH local_put ratio=<partcache/moka> partcache=<ops/s> moka=<ops/s> tasks=<n>`
//!
//! Workload: 100k keys, values of ~100 bytes behind `Arc`, statistics enabled (they
//! always are). Each figure is the best of several alternating rounds, so both sides
//! see the same noise on a shared machine.
//!
//! Then the hits a function-result cache serves, 2 tasks:
//! `BENCH cacheable_hit ratio=<partcache/moka> partcache=<ops/s> moka=<ops/s> median=<x> cpu=<x> tasks=2`
//! `BENCH cache_get ratio=<partcache/moka> partcache=<ops/s> moka=<ops/s> median=<x> cpu=<x> tasks=2`
//! `BENCH store_floor_hit ratio=<floor/moka> ...`: the same hit on what the local store
//! is built on, with nothing of partcache around it (see [`store_floor`]).
//!
//! `ratio` is best round over best round, `median` the median of the rounds' ratios,
//! and `cpu` the median ratio of operations per second of CPU time (which moves least
//! when other work shares the machine).
//!
//! Workload: 1,000 keys, a small struct value (an id, a name, a price), an expiry policy
//! on both sides (`ExpiryPolicy::Modified` against moka's `time_to_live`), and the
//! value handed to the caller as its own copy, as moka's `get` hands it: a
//! `#[cacheable]` function's hit, and `Cache::get` with the `Arc` cloned out, against
//! `moka::future::Cache::get`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use partcache::{Cache, CacheManager};

mod support;
use support::{HIT_KEYS, HIT_TTL, ITEMS, Item, cached_item, filled_moka, item};

const KEYS: u64 = 100_000;
const OPS_PER_TASK: u64 = 400_000;
/// Rounds per figure; `PARTCACHE_BENCH_ROUNDS` overrides (e.g. 1 for a quick look).
fn rounds() -> usize {
    std::env::var("PARTCACHE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
}

type Value = Arc<Vec<u8>>;

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![0u8; 100];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

/// A cheap deterministic key sequence per task (xorshift), identical for both sides.
fn keys(seed: u64) -> impl Iterator<Item = u64> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    std::iter::from_fn(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some(x % KEYS)
    })
}

async fn run_tasks<F, Fut>(tasks: usize, op: F) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                for key in keys(t as u64 + 1).take(OPS_PER_TASK as usize) {
                    op(key).await;
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
    (tasks as u64 * OPS_PER_TASK) as f64 / start.elapsed().as_secs_f64()
}

async fn partcache_cache() -> Cache<u64, Vec<u8>> {
    let manager = CacheManager::from_url("memory://").expect("memory");
    let name = format!("bench-{}", Instant::now().elapsed().as_nanos());
    manager
        .cache::<u64, Vec<u8>>(&name)
        .max_entries(KEYS * 2)
        .build()
        .await
        .expect("build")
}

fn moka_cache() -> moka::future::Cache<u64, Value> {
    moka::future::Cache::builder()
        .max_capacity(KEYS * 2)
        .build()
}

fn report(name: &str, tasks: usize, ours: f64, theirs: f64) {
    println!(
        "BENCH {name} ratio={:.3} partcache={:.0} moka={:.0} tasks={tasks}",
        ours / theirs,
        ours,
        theirs
    );
}

/// The same key sequence as [`keys`], over [`HIT_KEYS`].
fn hit_keys(seed: u64) -> impl Iterator<Item = u64> {
    keys(seed).map(|k| k % HIT_KEYS)
}

/// CPU time this process has used: the sum of its threads' run times from
/// `/proc/self/task/*/schedstat` (nanoseconds), else user and system time from
/// `/proc/self/stat` (in 10 ms ticks, coarse for a round of a fraction of a second);
/// zero where there is no `/proc`.
fn cpu_time() -> Duration {
    let threads = std::fs::read_dir("/proc/self/task").ok().and_then(|tasks| {
        tasks
            .map(|task| {
                let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
                stat.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum::<Option<u64>>()
    });
    if let Some(nanos) = threads.filter(|&n| n > 0) {
        return Duration::from_nanos(nanos);
    }
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| {
            // Fields after the command name (which may hold spaces): utime and stime are
            // the 12th and 13th.
            let rest = stat.rsplit_once(')')?.1;
            let mut fields = rest.split_whitespace().skip(11);
            let user: u64 = fields.next()?.parse().ok()?;
            let system: u64 = fields.next()?.parse().ok()?;
            Some(user + system)
        })
        .unwrap_or(0);
    // The kernel's USER_HZ is 100 on every Linux platform.
    Duration::from_millis(ticks * 10)
}

/// Throughput of one round of hits, by the wall clock and by CPU time (operations per
/// second of CPU; on a loaded machine it moves far less than the wall-clock figure).
struct Round {
    wall: f64,
    cpu: f64,
}

async fn run_hit_tasks<F, Fut>(tasks: usize, op: F) -> Round
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Item> + Send,
{
    let cpu_start = cpu_time();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let op = op.clone();
            tokio::spawn(async move {
                for key in hit_keys(t as u64 + 1).take(OPS_PER_TASK as usize) {
                    let value = op(key).await;
                    debug_assert_eq!(value.id, key);
                    std::hint::black_box(value);
                }
            })
        })
        .collect();
    for h in handles {
        h.await.expect("bench task");
    }
    let ops = (tasks as u64 * OPS_PER_TASK) as f64;
    let wall = ops / start.elapsed().as_secs_f64();
    let cpu = ops / cpu_time().saturating_sub(cpu_start).as_secs_f64().max(0.01);
    Round { wall, cpu }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// What the local store is built on, with nothing of partcache around it: a
/// `moka::sync::Cache` of shared values with LRU eviction, foldhash and moka's
/// `time_to_live` (what the store runs under `Modified`, which needs no per-entry
/// expiry). Its hits against raw moka's (`BENCH store_floor_hit`) are the most
/// `Cache::get` can reach without another store.
type FloorCache = moka::sync::Cache<u64, Arc<Item>, foldhash::fast::RandomState>;

fn store_floor() -> FloorCache {
    let floor = moka::sync::Cache::builder()
        .max_capacity(HIT_KEYS * 10)
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .time_to_live(HIT_TTL)
        .build_with_hasher(foldhash::fast::RandomState::default());
    for k in 0..HIT_KEYS {
        floor.insert(k, Arc::new(item(k)));
    }
    floor
}

/// `#[cacheable]` hits and `Cache::get` hits against moka's, alternating rounds.
async fn function_result_hits(manager: &CacheManager) {
    const TASKS: usize = 2;
    let items = ITEMS.open(manager).await.expect("open");
    let moka = filled_moka().await;
    let floor = store_floor();
    // Leaked, so that each call borrows its cache instead of cloning a handle (a moka
    // handle is several `Arc`s).
    let items: &'static Cache<u64, Item> = Box::leak(Box::new(items));
    let moka: &'static moka::future::Cache<u64, Item> = Box::leak(Box::new(moka));
    let floor: &'static FloorCache = Box::leak(Box::new(floor));
    let (mut cacheable, mut get, mut raw) = (Vec::new(), Vec::new(), Vec::new());
    let mut floors = Vec::new();
    for _ in 0..rounds() {
        floors.push(
            run_hit_tasks(TASKS, move |k| async move {
                Item::clone(&floor.get(&k).expect("hit"))
            })
            .await,
        );
        cacheable.push(run_hit_tasks(TASKS, cached_item).await);
        get.push(
            run_hit_tasks(TASKS, move |k| async move {
                Item::clone(&items.get(&k).await.expect("get").expect("hit"))
            })
            .await,
        );
        raw.push(
            run_hit_tasks(
                TASKS,
                move |k| async move { moka.get(&k).await.expect("hit") },
            )
            .await,
        );
    }
    let stats = items.stats();
    assert_eq!(stats.misses, HIT_KEYS, "every timed call is a hit");
    let best = |xs: &[Round]| xs.iter().map(|r| r.wall).fold(0f64, f64::max);
    for (name, side, ours) in [
        ("cacheable_hit", "partcache", &cacheable),
        ("cache_get", "partcache", &get),
        ("store_floor_hit", "floor", &floors),
    ] {
        let medians: Vec<f64> = ours
            .iter()
            .zip(&raw)
            .map(|(o, r)| o.wall / r.wall)
            .collect();
        let cpu: Vec<f64> = ours.iter().zip(&raw).map(|(o, r)| o.cpu / r.cpu).collect();
        println!(
            "BENCH {name} ratio={:.3} {side}={:.0} moka={:.0} median={:.3} cpu={:.3} tasks={TASKS}",
            best(ours) / best(&raw),
            best(ours),
            best(&raw),
            median(medians),
            median(cpu),
        );
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let values: Arc<Vec<Value>> = Arc::new((0..KEYS).map(|i| Arc::new(value(i))).collect());
        // `PARTCACHE_BENCH_ONLY=hits` runs the function-result benchmarks alone.
        let only_hits = std::env::var("PARTCACHE_BENCH_ONLY").is_ok_and(|o| o == "hits");
        for tasks in [2usize, 8].into_iter().filter(|_| !only_hits) {
            let (mut best_ours, mut best_moka) = (0f64, 0f64);
            let (mut best_ours_put, mut best_moka_put) = (0f64, 0f64);
            for _ in 0..rounds() {
                // Puts into empty caches, then gets that all hit.
                let ours = partcache_cache().await;
                let vs = values.clone();
                let c = ours.clone();
                best_ours_put = best_ours_put.max(
                    run_tasks(tasks, move |k| {
                        let (c, v) = (c.clone(), vs[k as usize].clone());
                        async move { c.put(k, v).await.expect("put") }
                    })
                    .await,
                );
                for k in 0..KEYS {
                    ours.put(k, values[k as usize].clone()).await.expect("put");
                }
                let c = ours.clone();
                best_ours = best_ours.max(
                    run_tasks(tasks, move |k| {
                        let c = c.clone();
                        async move {
                            assert!(c.get(&k).await.expect("get").is_some());
                        }
                    })
                    .await,
                );

                let theirs = moka_cache();
                let vs = values.clone();
                let m = theirs.clone();
                best_moka_put = best_moka_put.max(
                    run_tasks(tasks, move |k| {
                        let (m, v) = (m.clone(), vs[k as usize].clone());
                        async move { m.insert(k, v).await }
                    })
                    .await,
                );
                for k in 0..KEYS {
                    theirs.insert(k, values[k as usize].clone()).await;
                }
                let m = theirs.clone();
                best_moka = best_moka.max(
                    run_tasks(tasks, move |k| {
                        let m = m.clone();
                        async move {
                            assert!(m.get(&k).await.is_some());
                        }
                    })
                    .await,
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            report("local_get_hit", tasks, best_ours, best_moka);
            report("local_put", tasks, best_ours_put, best_moka_put);
        }
        let manager = CacheManager::from_url("memory://").expect("memory");
        partcache::set_default_manager(manager.clone()).expect("default manager");
        function_result_hits(&manager).await;
    });
}
