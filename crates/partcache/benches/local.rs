//! Local store vs raw `moka::future::Cache`, side by side in one run.
//!
//! `cargo bench -p partcache --bench local` prints, for 2 and 8 concurrent tasks:
//! `BENCH local_get_hit ratio=<partcache/moka> partcache=<ops/s> moka=<ops/s> tasks=<n>`
//! `BENCH local_put ratio=<partcache/moka> partcache=<ops/s> moka=<ops/s> tasks=<n>`
//!
//! Workload: 100k keys, values of ~100 bytes behind `Arc`, statistics enabled (they
//! always are). Each figure is the best of several alternating rounds, so both sides
//! see the same noise on a shared machine.

use std::sync::Arc;
use std::time::{Duration, Instant};

use partcache::{Cache, CacheManager};

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

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let values: Arc<Vec<Value>> = Arc::new((0..KEYS).map(|i| Arc::new(value(i))).collect());
        for tasks in [2usize, 8] {
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
    });
}
