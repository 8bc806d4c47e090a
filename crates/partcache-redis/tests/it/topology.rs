//! Topology changes on real deployments under load: a master killed
//! and replaced by its replica, slots of several partitions migrated to another master,
//! and a whole standalone deployment stopped and restarted. Every call runs under a
//! deadline of the configured response timeout plus a margin, so a call that hangs
//! fails the test instead of stalling it.

use crate::common;

use common::unique;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use partcache::partition::{HashingPolicy, PartitionMap};
use partcache::{Cache, Error, EventFilter, EventKind, ExpiryPolicy};
use partcache_integration_tests::{Flavor, RedisCluster, RedisServer, ServerOptions};

/// `response_timeout` of every URL here.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// `connect_timeout` of every URL here.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
/// Scheduling slack on top of the response timeout (2 shared cores, 16 busy tasks).
const MARGIN: Duration = Duration::from_millis(1500);
/// Load tasks.
const TASKS: usize = 16;
/// Keys per load task (each task owns its keys, so its last acknowledged put of a key
/// is the value that key must hold).
const KEYS_PER_TASK: u64 = 64;

fn with_timeouts(url: &str) -> String {
    format!(
        "{url}?response_timeout={}ms&connect_timeout={}ms",
        RESPONSE_TIMEOUT.as_millis(),
        CONNECT_TIMEOUT.as_millis()
    )
}

/// Runs `call` under the deadline `RESPONSE_TIMEOUT + MARGIN`; `None` if it hung.
async fn bounded<T>(
    call: impl Future<Output = partcache::Result<T>>,
) -> Option<partcache::Result<T>> {
    tokio::time::timeout(RESPONSE_TIMEOUT + MARGIN, call)
        .await
        .ok()
}

/// The shared record of a load run.
#[derive(Default)]
struct Record {
    stop: AtomicBool,
    ok: AtomicU64,
    /// Calls that did not return within their deadline.
    hung: AtomicU64,
    /// Failed calls: when, and the error.
    errors: Mutex<Vec<(Instant, Error)>>,
    /// Reads that returned something other than the reader's own last acknowledged put.
    wrong_reads: Mutex<Vec<String>>,
    /// Per key, the last acknowledged value.
    acked: Mutex<HashMap<String, u64>>,
}

impl Record {
    /// Waits (bounded) until `n` more calls than `from` have succeeded: the load is
    /// really running, however slow the machine, instead of sleeping and hoping.
    async fn wait_for_calls(&self, from: u64, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.ok.load(Ordering::Relaxed) < from + n {
            assert!(
                Instant::now() < deadline,
                "the load made fewer than {n} successful calls in 20 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn errors_since(&self, since: Instant) -> usize {
        self.errors
            .lock()
            .iter()
            .filter(|(at, _)| *at >= since)
            .count()
    }
}

/// Starts `TASKS` tasks of mixed `get`/`put` on `cache` (half each, on the task's own
/// keys). A read must see the task's last acknowledged put, or (when that put failed)
/// the attempted value.
fn start_load(
    cache: &Cache<String, u64>,
    record: &Arc<Record>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..TASKS)
        .map(|task| {
            let cache = cache.clone();
            let record = record.clone();
            tokio::spawn(async move {
                // Per key: the last acknowledged value, and a value whose put failed
                // (a failed put may still have been applied).
                let mut mine: HashMap<String, (Option<u64>, Option<u64>)> = HashMap::new();
                let mut n: u64 = 0;
                while !record.stop.load(Ordering::Relaxed) {
                    n += 1;
                    let key = format!("t{task}-k{}", n % KEYS_PER_TASK);
                    let outcome = if n.is_multiple_of(2) {
                        let value = n;
                        match bounded(cache.put(key.clone(), value)).await {
                            None => None,
                            Some(Ok(())) => {
                                mine.insert(key.clone(), (Some(value), None));
                                record.acked.lock().insert(key, value);
                                Some(Ok(()))
                            }
                            Some(Err(e)) => {
                                mine.entry(key).or_default().1 = Some(value);
                                Some(Err(e))
                            }
                        }
                    } else {
                        match bounded(cache.get(&key)).await {
                            None => None,
                            Some(Ok(found)) => {
                                let found = found.map(|v| *v);
                                let (acked, attempted) =
                                    mine.get(&key).copied().unwrap_or_default();
                                if found != acked && (found.is_none() || found != attempted) {
                                    record.wrong_reads.lock().push(format!(
                                        "{key}: read {found:?}, last acknowledged put {acked:?}"
                                    ));
                                }
                                Some(Ok(()))
                            }
                            Some(Err(e)) => Some(Err(e)),
                        }
                    };
                    match outcome {
                        None => {
                            record.hung.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Ok(())) => {
                            record.ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Some(Err(e)) => {
                            record.errors.lock().push((Instant::now(), e));
                            // Do not spin on a dead node: the cores are shared.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            })
        })
        .collect()
}

async fn stop_load(record: &Record, tasks: Vec<tokio::task::JoinHandle<()>>) {
    record.stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("load task panicked");
    }
}

/// Partitions of `map` whose slot `owner` serves, per the cluster's own slot map.
fn partitions_owned_by(cluster: &RedisCluster, map: &PartitionMap, owner: usize) -> Vec<u16> {
    let addr = cluster.node_addr(owner);
    let owners = cluster.slot_owners().expect("slot owners");
    (0..map.partitions())
        .filter(|&p| {
            let slot = map.slot(p);
            owners
                .iter()
                .any(|(range, master)| range.contains(&slot) && *master == addr)
        })
        .collect()
}

/// A key (with prefix `label`) that falls in `partition`.
fn key_in(map: &PartitionMap, partition: u16, label: &str) -> String {
    (0u64..)
        .map(|i| format!("{label}-{i}"))
        .find(|k| map.partition_of(&HashingPolicy::Standard, k).ok() == Some(partition))
        .expect("some key hashes to every partition")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_and_the_same_client_keeps_working() {
    let cluster = Arc::new(tokio::task::block_in_place(|| {
        RedisCluster::start(Flavor::Redis, 3, 1).expect("start a 3+3 cluster")
    }));
    let manager = common::manager(&with_timeouts(&cluster.seed_url()));
    let cache: Cache<String, u64> = manager.cache(&unique("failover")).build().await.unwrap();
    // A second cache on the same deployment, quiet, to prove that events still arrive
    // from the promoted replica (its sharded subscriptions are restored).
    let probe: Cache<String, u64> = manager
        .cache(&unique("failover-events"))
        .build()
        .await
        .unwrap();
    let victim = cluster.masters()[0].index;
    let map = probe.partition_map().unwrap().clone();
    let victim_partition = partitions_owned_by(&cluster, &map, victim)[0];

    let record = Arc::new(Record::default());
    let tasks = start_load(&cache, &record);
    record.wait_for_calls(0, 200).await;
    let before = record.ok.load(Ordering::Relaxed);
    assert_eq!(
        record.errors.lock().len(),
        0,
        "errors before the kill: {:?}",
        record.errors.lock()
    );

    let killed = Instant::now();
    tokio::task::block_in_place(|| cluster.kill_node(victim)).unwrap();
    let failover = cluster
        .wait_for_failover_async(victim)
        .await
        .expect("failover");
    println!("failover of node {victim}: replica promoted {failover:?} after the kill");

    // The same client recovers by itself: wait (bounded) for a second without errors.
    let recovered = loop {
        let quiet_from = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        if record.errors_since(quiet_from) == 0 {
            break quiet_from;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(30),
            "still failing 30 s after the kill: {:?}",
            record.errors.lock().last()
        );
    };
    let after = record.ok.load(Ordering::Relaxed);
    stop_load(&record, tasks).await;

    let errors = std::mem::take(&mut *record.errors.lock());
    let window = match (errors.first(), errors.last()) {
        (Some((first, _)), Some((last, _))) => *last - *first,
        _ => Duration::ZERO,
    };
    println!(
        "FAILOVER window={window:?} (first to last error), {} failed calls, {} ok before the kill, {} ok in all, recovered {:?} after the kill",
        errors.len(),
        before,
        after,
        recovered - killed
    );
    for (_, e) in errors.iter() {
        assert!(
            matches!(
                e,
                Error::Unavailable(_) | Error::Timeout(_) | Error::CircuitOpen { .. }
            ),
            "untyped error during failover: {e:?}"
        );
    }
    assert_eq!(
        record.hung.load(Ordering::Relaxed),
        0,
        "calls hung past their timeout"
    );
    assert!(
        window < Duration::from_secs(15),
        "failover window {window:?}"
    );
    assert!(after > before, "no call succeeded after the failover");

    // Every partition answers again, including the ones the dead master held.
    let keys: Vec<String> = (0..map.partitions())
        .map(|p| key_in(&map, p, "all"))
        .collect();
    let entries: Vec<(String, u64)> = keys.iter().cloned().map(|k| (k, 7)).collect();
    bounded(cache.put_all(entries))
        .await
        .expect("put_all hung")
        .expect("put_all after failover");
    let values = bounded(cache.get_all(&keys))
        .await
        .expect("get_all hung")
        .expect("get_all");
    assert!(values.iter().all(|v| v.as_deref() == Some(&7)));

    // Events from a partition the promoted replica now serves reach this process.
    let mut rx = probe
        .listen(EventFilter::kinds([EventKind::Created]))
        .await
        .expect("listen");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut attempt = 0;
    'probe: loop {
        assert!(
            Instant::now() < deadline,
            "no event from the promoted replica within 10 s"
        );
        attempt += 1;
        let key = key_in(&map, victim_partition, &format!("ev{attempt}"));
        probe.put(key.clone(), 1).await.expect("probe put");
        let wait = Instant::now() + Duration::from_millis(500);
        while let Ok(Ok(event)) = tokio::time::timeout_at(wait.into(), rx.recv()).await {
            if event.key == key {
                println!("events from the promoted replica arrive again (attempt {attempt})");
                break 'probe;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_the_slots_of_partitions_under_load_loses_nothing_and_fails_nothing() {
    let cluster = Arc::new(tokio::task::block_in_place(|| {
        RedisCluster::start(Flavor::Redis, 3, 0).expect("start a 3-master cluster")
    }));
    let manager = common::manager(&with_timeouts(&cluster.seed_url()));
    // Sliding expiry and a budget: reads run scripts too (not plain MGETs), and every
    // partition has its deadline records beside the entries.
    let cache: Cache<String, u64> = manager
        .cache(&unique("reshard"))
        .expiry(ExpiryPolicy::Accessed(Duration::from_secs(3600)))
        .max_entries(1_000_000)
        .build()
        .await
        .unwrap();
    // And an eternal cache without a budget: its puts are the common put, which
    // concurrent callers send per node in one call (`coalesce/puts.rs`) that checks
    // each entry's slot itself and hands back those it cannot do here.
    let plain: Cache<String, u64> = manager
        .cache(&unique("reshard-plain"))
        .build()
        .await
        .unwrap();
    let map = cache.partition_map().unwrap().clone();
    // Partition p of any cache with the same partition count has the same slot.
    assert_eq!(plain.partition_map().unwrap().slot(1), map.slot(1));
    let masters: Vec<usize> = cluster.masters().iter().map(|m| m.index).collect();
    let (from, to) = (masters[0], masters[1]);
    // Six partitions of the first master, spread over its range.
    let owned = partitions_owned_by(&cluster, &map, from);
    let moving: Vec<u16> = owned
        .iter()
        .step_by(owned.len() / 6)
        .take(6)
        .copied()
        .collect();

    let record = Arc::new(Record::default());
    let tasks = start_load(&cache, &record);
    let plain_record = Arc::new(Record::default());
    let plain_tasks = start_load(&plain, &plain_record);
    record.wait_for_calls(0, 200).await;
    plain_record.wait_for_calls(0, 200).await;

    let started = Instant::now();
    let mut keys_moved = 0;
    for &p in &moving {
        let slot = map.slot(p);
        let c = cluster.clone();
        keys_moved += tokio::task::spawn_blocking(move || {
            // A few keys at a time, as `redis-cli --cluster reshard` does, so that the
            // load meets the slot half moved (ASK, TRYAGAIN).
            let m = c.begin_slot_migration(slot, to)?;
            let mut moved = 0;
            loop {
                std::thread::sleep(Duration::from_millis(20));
                let n = c.migrate_slot_keys(&m, 2)?;
                if n == 0 {
                    break;
                }
                moved += n;
            }
            moved += c.finish_slot_migration(&m)?;
            Ok::<_, partcache_integration_tests::HarnessError>(moved)
        })
        .await
        .unwrap()
        .expect("migrate a slot");
    }
    // Some load against the new layout before stopping.
    record
        .wait_for_calls(record.ok.load(Ordering::Relaxed), 200)
        .await;
    plain_record
        .wait_for_calls(plain_record.ok.load(Ordering::Relaxed), 200)
        .await;
    stop_load(&record, tasks).await;
    stop_load(&plain_record, plain_tasks).await;
    println!(
        "RESHARD moved {} partitions ({keys_moved} keys) from node {from} to node {to} in {:?}",
        moving.len(),
        started.elapsed(),
    );
    for &p in &moving {
        assert_eq!(
            tokio::task::block_in_place(|| cluster.slot_owner(map.slot(p))).unwrap(),
            to,
            "partition {p} did not move"
        );
    }
    check_load("sliding, budget", &cache, &record, &map, &moving).await;
    check_load(
        "eternal, coalesced puts",
        &plain,
        &plain_record,
        &map,
        &moving,
    )
    .await;
}

/// What a load over a resharding must show: no call hung or failed, every read saw
/// its task's own writes, every acknowledged put is readable, some in moved partitions.
async fn check_load(
    label: &str,
    cache: &Cache<String, u64>,
    record: &Record,
    map: &PartitionMap,
    moving: &[u16],
) {
    println!(
        "{label}: {} calls ok, {} failed",
        record.ok.load(Ordering::Relaxed),
        record.errors.lock().len()
    );
    assert_eq!(
        record.hung.load(Ordering::Relaxed),
        0,
        "{label}: calls hung past their timeout"
    );
    assert!(
        record.errors.lock().is_empty(),
        "{label}: failed calls during resharding: {:?}",
        record
            .errors
            .lock()
            .iter()
            .take(5)
            .map(|(_, e)| e)
            .collect::<Vec<_>>()
    );
    assert!(
        record.wrong_reads.lock().is_empty(),
        "{label}: reads during resharding: {:?}",
        record.wrong_reads.lock().iter().take(5).collect::<Vec<_>>()
    );
    // Every acknowledged put is readable afterwards.
    let acked: Vec<(String, u64)> = record
        .acked
        .lock()
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let keys: Vec<String> = acked.iter().map(|(k, _)| k.clone()).collect();
    let values = cache.get_all(&keys).await.unwrap();
    let lost: Vec<_> = acked
        .iter()
        .zip(&values)
        .filter(|((_, v), found)| found.as_deref() != Some(v))
        .collect();
    assert!(
        lost.is_empty(),
        "{label}: {} of {} acknowledged entries lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    let moved_keys = keys
        .iter()
        .filter(|k| moving.contains(&map.partition_of(&HashingPolicy::Standard, k).unwrap()))
        .count();
    println!(
        "{label}: {} acknowledged keys readable, {moved_keys} of them in moved partitions",
        keys.len()
    );
    assert!(
        moved_keys > 0,
        "{label}: the load wrote nothing in the moved partitions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_deployment_fails_fast_and_the_same_cache_works_after_restart() {
    let server = Arc::new(tokio::task::block_in_place(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    }));
    let manager = common::manager(&with_timeouts(&server.url()));
    let cache: Cache<String, u64> = manager.cache(&unique("down")).build().await.unwrap();
    cache.put("k".to_string(), 1).await.unwrap();

    tokio::task::block_in_place(|| server.stop());
    let limit = RESPONSE_TIMEOUT.max(CONNECT_TIMEOUT) + Duration::from_millis(200);
    for round in 0..5 {
        let start = Instant::now();
        let result = bounded(cache.get(&"k".to_string()))
            .await
            .expect("get hung");
        let took = start.elapsed();
        assert!(
            matches!(
                result,
                Err(Error::Unavailable(_) | Error::Timeout(_) | Error::CircuitOpen { .. })
            ),
            "round {round}: {result:?}"
        );
        assert!(took < limit, "round {round}: failed after {took:?}");
        let start = Instant::now();
        let result = bounded(cache.put("k".to_string(), 2))
            .await
            .expect("put hung");
        assert!(
            matches!(
                result,
                Err(Error::Unavailable(_) | Error::Timeout(_) | Error::CircuitOpen { .. })
            ),
            "round {round}: {result:?}"
        );
        assert!(
            start.elapsed() < limit,
            "round {round}: put failed after {:?}",
            start.elapsed()
        );
        println!("round {round}: get failed in {took:?} ({result:?})");
    }

    tokio::task::block_in_place(|| server.restart()).expect("restart");
    // The restarted server is empty (no persistence): the cache's layout record is gone
    // too, and the same cache handle must work regardless.
    let start = Instant::now();
    loop {
        match bounded(cache.put("k".to_string(), 3))
            .await
            .expect("put hung")
        {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "no recovery after restart: {e:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    println!(
        "the same cache works again {:?} after the restart",
        start.elapsed()
    );
    assert_eq!(
        cache.get(&"k".to_string()).await.unwrap().as_deref(),
        Some(&3)
    );
    assert!(cache.remove(&"k".to_string()).await.unwrap());
}

/// A manual failover (`CLUSTER FAILOVER`) demotes a master to replica while coalesced
/// puts run: a demoted master answers a call that declares no keys (a put batch) with
/// READONLY rather than MOVED, and the batch's puts then go alone, through the router's
/// redirections. No call fails with anything but a typed transient error, the same
/// client keeps working, and every acknowledged put is readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_demoted_under_coalesced_puts_loses_and_fails_nothing() {
    let cluster = tokio::task::block_in_place(|| {
        RedisCluster::start(Flavor::Redis, 3, 1).expect("start a 3+3 cluster")
    });
    let manager = common::manager(&with_timeouts(&cluster.seed_url()));
    // An eternal cache: its puts are coalesced per node (`coalesce/puts.rs`).
    let cache: Cache<String, u64> = manager.cache(&unique("demoted")).build().await.unwrap();
    let map = cache.partition_map().unwrap().clone();
    let master = cluster.masters()[0].index;
    let replica = cluster.replicas_of(master)[0];
    let demoted = partitions_owned_by(&cluster, &map, master);

    let record = Arc::new(Record::default());
    let tasks = start_load(&cache, &record);
    record.wait_for_calls(0, 200).await;
    tokio::task::block_in_place(|| {
        cluster
            .query_node::<String>(replica, &["CLUSTER", "FAILOVER"])
            .expect("CLUSTER FAILOVER")
    });
    let took = cluster
        .wait_for_failover_async(master)
        .await
        .expect("the replica takes over");
    record
        .wait_for_calls(record.ok.load(Ordering::Relaxed), 400)
        .await;
    stop_load(&record, tasks).await;
    println!(
        "DEMOTED node {master} for {replica} in {took:?}: {} calls ok, {} failed",
        record.ok.load(Ordering::Relaxed),
        record.errors.lock().len()
    );
    // Transient errors while the roles swap are allowed (typed); a batch's READONLY
    // reaching the caller (as `Store`) is the defect this guards against.
    for (_, e) in record.errors.lock().iter() {
        assert!(
            matches!(e, Error::Timeout(_) | Error::Unavailable(_)),
            "untyped error during the failover: {e}"
        );
    }
    record.errors.lock().clear();
    check_load("demoted master", &cache, &record, &map, &demoted).await;
}
