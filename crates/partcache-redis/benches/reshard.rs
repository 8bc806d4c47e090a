//! How long a partition stays unwritable while its slot moves, the way
//! `redis-cli --cluster reshard` moves it (`SETSLOT IMPORTING`/`MIGRATING`, then
//! `MIGRATE` of `--cluster-pipeline` keys at a time, 10 by default, then
//! `SETSLOT NODE`), measured with a writer and a reader on that partition. A
//! measurement rather than a check (its figures are in the crate README): run it with
//! `cargo bench -p partcache-redis --bench reshard`.

#[path = "../tests/it/common/mod.rs"]
mod common;

use common::unique;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use partcache::{Cache, Error, HashingPolicy};
use partcache_integration_tests::{Flavor, RedisCluster};

const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// One put: when it started, how long it took, whether it succeeded (else: timed out).
type Put = (Instant, Duration, Result<(), String>);

struct Run {
    entries: usize,
    pipeline: usize,
    pause: Duration,
    moved: usize,
    migration: Duration,
    /// Longest stretch without a completed put, from the migration's start.
    unwritable: Duration,
    puts: usize,
    timeouts: usize,
    slowest_put: Duration,
    reads: usize,
    failed_reads: usize,
}

/// Moves the slot of partition `partition` (each run its own, so that no run moves
/// another's keys) with `pipeline` keys per `MIGRATE` and `pause` after each.
async fn measure(
    cluster: &Arc<RedisCluster>,
    partition: u16,
    entries: usize,
    pipeline: usize,
    pause: Duration,
) -> Run {
    let url = format!(
        "{}?partitions=8&response_timeout={}ms",
        cluster.seed_url(),
        RESPONSE_TIMEOUT.as_millis()
    );
    let manager = common::manager(&url);
    let cache: Cache<String, u64> = manager.cache(&unique("reshard")).build().await.unwrap();
    let map = cache.partition_map().unwrap().clone();
    let keys: Vec<String> = (0..)
        .map(|i| format!("k{i}"))
        .filter(|k| map.partition_of(&HashingPolicy::Standard, k).unwrap() == partition)
        .take(entries)
        .collect();
    for chunk in keys.chunks(1000) {
        cache
            .put_all(chunk.iter().map(|k| (k.clone(), 0)))
            .await
            .unwrap();
    }
    let slot = map.slot(partition);
    let source = tokio::task::block_in_place(|| cluster.slot_owner(slot)).unwrap();
    let target = tokio::task::block_in_place(|| cluster.masters())
        .into_iter()
        .map(|m| m.index)
        .find(|&m| m != source)
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let puts: Arc<Mutex<Vec<Put>>> = Arc::default();
    let reads = Arc::new(Mutex::new((0usize, 0usize)));
    let keys = Arc::new(keys);
    let writer = {
        let (stop, puts, cache, keys) = (stop.clone(), puts.clone(), cache.clone(), keys.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let key = keys[(n as usize * 7919) % keys.len()].clone();
                let started = Instant::now();
                let result = cache.put(key, n).await;
                puts.lock().push((
                    started,
                    started.elapsed(),
                    result.map_err(|e| match e {
                        Error::Timeout(_) => "timeout".to_string(),
                        other => other.to_string(),
                    }),
                ));
            }
        })
    };
    let reader = {
        let (stop, reads, cache, keys) = (stop.clone(), reads.clone(), cache.clone(), keys.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let ok = cache.get(&keys[(n * 104_729) % keys.len()]).await.is_ok();
                let mut r = reads.lock();
                r.0 += 1;
                r.1 += usize::from(!ok);
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let began = Instant::now();
    let moved = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            let m = cluster.begin_slot_migration(slot, target).unwrap();
            let mut moved = 0;
            loop {
                let n = cluster.migrate_slot_keys(&m, pipeline).unwrap();
                if n == 0 {
                    break;
                }
                moved += n;
                std::thread::sleep(pause);
            }
            moved + cluster.finish_slot_migration(&m).unwrap()
        })
        .await
        .unwrap()
    };
    let migration = began.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    reader.await.unwrap();

    let puts = puts.lock().clone();
    let during: Vec<&Put> = puts.iter().filter(|p| p.0 + p.1 >= began).collect();
    let mut last_done = began;
    let mut unwritable = Duration::ZERO;
    for (started, took, result) in &during {
        if result.is_ok() {
            let done = *started + *took;
            unwritable = unwritable.max(done.saturating_duration_since(last_done));
            last_done = last_done.max(done);
        }
    }
    let (reads, failed_reads) = *reads.lock();
    Run {
        entries,
        pipeline,
        pause,
        moved,
        migration,
        unwritable,
        puts: during.len(),
        timeouts: during.iter().filter(|p| p.2.is_err()).count(),
        slowest_put: during.iter().map(|p| p.1).max().unwrap_or_default(),
        reads,
        failed_reads,
    }
}

/// How long a partition stays unwritable while its slot moves, for a few slot sizes
/// and `MIGRATE` batch sizes; one `RESHARD` line per case.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cluster = Arc::new(tokio::task::block_in_place(|| {
        RedisCluster::start(Flavor::Redis, 3, 0).expect("start a 3-master cluster")
    }));
    println!(
        "RESHARD entries | keys moved | keys/MIGRATE | pause/MIGRATE | migration | longest without a put | puts (timed out) | slowest put | reads (failed)"
    );
    for (partition, entries, pipeline, pause) in [
        (0, 1_000, 10, Duration::ZERO),
        (1, 10_000, 10, Duration::ZERO),
        (2, 10_000, 100, Duration::ZERO),
        (3, 1_000, 10, Duration::from_millis(10)),
    ] {
        let r = measure(&cluster, partition, entries, pipeline, pause).await;
        println!(
            "RESHARD {} | {} | {} | {:?} | {:.2?} | {:.2?} | {} ({}) | {:.2?} | {} ({})",
            r.entries,
            r.moved,
            r.pipeline,
            r.pause,
            r.migration,
            r.unwritable,
            r.puts,
            r.timeouts,
            r.slowest_put,
            r.reads,
            r.failed_reads
        );
    }
}
