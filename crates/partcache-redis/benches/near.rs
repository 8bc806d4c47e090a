//! The near cache against its two baselines, in one run, on a 3-master cluster this
//! benchmark starts itself, 100-byte values, every key read beforehand (all hits):
//!
//! ```text
//! cargo bench -p partcache-redis --bench near
//! BENCH near_get_hit ratio=<near hit ops/s / moka get ops/s> ...     (2 tasks: CPU bound)
//! BENCH near_vs_remote speedup=<near hit ops/s / remote get ops/s> ... (2 and 64 tasks)
//! ```
//!
//! Each figure is the best of alternating rounds (`PARTCACHE_BENCH_ROUNDS`, default 5;
//! `PARTCACHE_BENCH_SECS` seconds each, default 1), so that both sides see the same
//! noise on a shared machine.

use std::sync::Arc;
use std::time::Instant;

use partcache::{Cache, CacheManager, NearCache};
use partcache_integration_tests::{Flavor, RedisBinaries, RedisCluster};

mod support;
use support::{rounds, seconds};

const KEYS: u64 = 10_000;

/// Runs `tasks` tasks, each built by `task(first_key, deadline)` (with its own handle,
/// so that no reference count is shared between tasks on the hot path) and returning
/// how many operations it did; returns operations/s.
async fn throughput<F, Fut>(tasks: usize, task: F) -> f64
where
    F: Fn(u64, Instant) -> Fut,
    Fut: Future<Output = u64> + Send + 'static,
{
    let deadline = Instant::now() + seconds();
    let start = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| tokio::spawn(task(t as u64 * 7919, deadline)))
        .collect();
    let mut done = 0;
    for handle in handles {
        done += handle.await.expect("bench task");
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// Batches of 64 operations between clock reads and yields, so neither is measured.
const BATCH: u64 = 64;

async fn cache_gets(cache: &Cache<u64, String>, tasks: usize) -> f64 {
    throughput(tasks, |mut i, deadline| {
        let cache = cache.clone();
        async move {
            let mut n = 0;
            while Instant::now() < deadline {
                for _ in 0..BATCH {
                    std::hint::black_box(cache.get(&(i % KEYS)).await.expect("get"));
                    i += 1;
                }
                n += BATCH;
                // Local hits complete without awaiting: give the runtime's other
                // tasks (connections, the near cache's heartbeat) their turn.
                tokio::task::yield_now().await;
            }
            n
        }
    })
    .await
}

async fn moka_gets(moka: &moka::sync::Cache<u64, Arc<String>>, tasks: usize) -> f64 {
    throughput(tasks, |mut i, deadline| {
        let moka = moka.clone();
        async move {
            let mut n = 0;
            while Instant::now() < deadline {
                for _ in 0..BATCH {
                    std::hint::black_box(moka.get(&(i % KEYS)));
                    i += 1;
                }
                n += BATCH;
                // Local hits complete without awaiting: give the runtime's other
                // tasks (connections, the near cache's heartbeat) their turn.
                tokio::task::yield_now().await;
            }
            n
        }
    })
    .await
}

/// Best of alternating rounds of `ours` and `base`: (ours, base, median ratio).
async fn rounds_of<A, AF, B, BF>(ours: A, base: B) -> (f64, f64, f64)
where
    A: Fn() -> AF,
    AF: Future<Output = f64>,
    B: Fn() -> BF,
    BF: Future<Output = f64>,
{
    let (mut o, mut b) = (Vec::new(), Vec::new());
    for i in 0..rounds() {
        if i % 2 == 0 {
            o.push(ours().await);
            b.push(base().await);
        } else {
            b.push(base().await);
            o.push(ours().await);
        }
    }
    let mut ratios: Vec<f64> = o.iter().zip(&b).map(|(o, b)| o / b).collect();
    ratios.sort_by(f64::total_cmp);
    let best = |v: &[f64]| v.iter().copied().fold(0f64, f64::max);
    (best(&o), best(&b), ratios[ratios.len() / 2])
}

fn main() {
    let cluster = RedisCluster::start(Flavor::Redis, 3, 0).expect("start cluster");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "# {}; {KEYS} keys, 100-byte values, {:?} per measurement, best of {} alternating rounds",
            RedisBinaries::redis()
                .map(|b| b.version_line().to_string())
                .unwrap_or_default(),
            seconds(),
            rounds()
        );
        partcache_redis::install();
        let manager = CacheManager::from_url(&cluster.seed_url()).expect("manager");
        let near: Cache<u64, String> = manager
            .cache("bench-near")
            .near_cache(NearCache::max_entries(KEYS * 2))
            .build()
            .await
            .expect("near cache");
        // The same data through a second manager (another client) without a near cache.
        let other = CacheManager::from_url(&cluster.seed_url()).expect("manager");
        let remote: Cache<u64, String> = other.cache("bench-near").build().await.expect("cache");
        let value = "x".repeat(100);
        for chunk in (0..KEYS).collect::<Vec<_>>().chunks(1000) {
            remote
                .put_all(chunk.iter().map(|&k| (k, value.clone())))
                .await
                .expect("fill");
        }
        let moka: moka::sync::Cache<u64, Arc<String>> = moka::sync::Cache::new(KEYS * 2);
        for k in 0..KEYS {
            moka.insert(k, Arc::new(value.clone()));
            // Warm the near cache: every key read once (a miss that populates it).
            near.get(&k).await.expect("warm");
        }

        let (ours, base, median) =
            rounds_of(|| cache_gets(&near, 2), || moka_gets(&moka, 2)).await;
        println!(
            "BENCH near_get_hit ratio={:.2} near={ours:.0} moka={base:.0} median={median:.2} tasks=2",
            ours / base
        );

        // Per caller (2 tasks: each call waits for its answer) and with 64 tasks, where
        // the remote side pipelines many calls per round trip.
        for tasks in [2, 64] {
            let (ours, base, median) =
                rounds_of(|| cache_gets(&near, tasks), || cache_gets(&remote, tasks)).await;
            println!(
                "BENCH near_vs_remote speedup={:.1} near={ours:.0} remote={base:.0} median={median:.1} tasks={tasks}",
                ours / base
            );
        }
        let stats = near.stats();
        println!(
            "# near cache: {} local hits, {} local misses",
            stats.near_hits, stats.near_misses
        );
    });
}
