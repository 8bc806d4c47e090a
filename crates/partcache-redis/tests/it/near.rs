//! The near cache on real servers, with independent clients (each `CacheManager` has
//! its own connections, subscriptions and near cache, as two processes would):
//! invalidation delay, `clear`/`remove_all` everywhere, a dropped subscription, and a
//! master killed under load (the guarantee, and near hits per master: the healthy
//! masters' partitions keep their copies). The guarantee checked: a client never serves a value that
//! another client overwrote more than `max_staleness` ago.

use crate::common;

use common::unique;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use partcache::{Cache, CacheManager, NearCache};
use partcache_integration_tests::{Flavor, RedisCluster};

/// The near caches' staleness bound here.
const STALENESS: Duration = Duration::from_millis(600);
/// Scheduling slack on 2 shared cores.
const MARGIN: Duration = Duration::from_millis(1500);
/// How long a near cache may take to come (back) up: subscribing to every partition's
/// channel on every master, then the first vouches.
const LIVENESS: Duration = Duration::from_secs(10);

fn near() -> NearCache {
    NearCache::max_entries(10_000).max_staleness(STALENESS)
}

async fn near_cache(manager: &CacheManager, name: &str) -> Cache<String, u64> {
    manager
        .cache(name)
        .near_cache(near())
        .build()
        .await
        .expect("build a near cache")
}

async fn plain_cache(manager: &CacheManager, name: &str) -> Cache<String, u64> {
    manager.cache(name).build().await.expect("build a cache")
}

/// Polls `cache.get(key)` until it returns `want`; the time that took.
async fn until_reads(cache: &Cache<String, u64>, key: &str, want: Option<u64>) -> Duration {
    let started = Instant::now();
    let deadline = started + STALENESS + MARGIN;
    loop {
        let got = cache.get(&key.to_string()).await.expect("get").map(|v| *v);
        if got == want {
            return started.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "`{key}` still reads {got:?}, not {want:?}, {:?} after the write (bound {STALENESS:?})",
            started.elapsed()
        );
        tokio::task::yield_now().await;
    }
}

/// Reads `key` until it is served from the near cache (a near hit is counted). A
/// liveness check, not a latency bound (that is [`until_reads`]): the feed must come
/// up, however long subscribing takes on a loaded machine, within [`LIVENESS`].
async fn until_local(cache: &Cache<String, u64>, key: &str) {
    let deadline = Instant::now() + LIVENESS;
    loop {
        let before = cache.stats().near_hits;
        cache.get(&key.to_string()).await.expect("get");
        if cache.stats().near_hits > before {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{key}` is never served from the near cache: {:?}",
            cache.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_one_client_reaches_the_near_cache_of_another_within_milliseconds() {
    let url = common::cluster().seed_url();
    let (a, b) = (common::manager(&url), common::manager(&url));
    let name = unique("near-delay");
    let writer = near_cache(&a, &name).await;
    let reader = near_cache(&b, &name).await;
    let mut delays = Vec::new();
    for round in 0..100u64 {
        let key = format!("k{}", round % 10);
        writer.put(key.clone(), round).await.unwrap();
        // The reader holds the old value locally (after the first rounds) until the
        // invalidation arrives.
        delays.push(until_reads(&reader, &key, Some(round)).await);
        until_local(&reader, &key).await;
    }
    delays.sort();
    let (p50, p99) = (percentile(&delays, 0.5), percentile(&delays, 0.99));
    println!(
        "NEAR invalidation delay over 100 writes: p50 {p50:?}, p99 {p99:?}, max {:?}",
        delays[delays.len() - 1]
    );
    let stats = reader.stats();
    assert!(
        stats.near_hits >= 100,
        "the reader served from its near cache {} times",
        stats.near_hits
    );
    assert!(stats.near_misses > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_and_remove_all_invalidate_every_near_cache() {
    let url = common::cluster().seed_url();
    let (a, b) = (common::manager(&url), common::manager(&url));
    let name = unique("near-clear");
    let writer = plain_cache(&a, &name).await;
    let reader = near_cache(&b, &name).await;
    let keys: Vec<String> = (0..50).map(|i| format!("k{i}")).collect();

    for (i, key) in keys.iter().enumerate() {
        writer.put(key.clone(), i as u64).await.unwrap();
    }
    for key in &keys {
        until_local(&reader, key).await;
    }
    writer.remove_all_keys(&keys[..25]).await.unwrap();
    for key in &keys[..25] {
        until_reads(&reader, key, None).await;
    }
    for (i, key) in keys.iter().enumerate().skip(25) {
        assert_eq!(reader.get(key).await.unwrap().map(|v| *v), Some(i as u64));
    }

    for key in &keys[25..] {
        until_local(&reader, key).await;
    }
    // `clear` emits no events to listeners; near caches still hear of it.
    writer.clear().await.unwrap();
    for key in &keys[25..] {
        until_reads(&reader, key, None).await;
    }
}

/// Kills, on every master, the connections that hold subscriptions (the near caches'
/// invalidation feeds); returns how many were killed.
fn kill_subscription_connections(cluster: &RedisCluster) -> usize {
    let mut killed = 0;
    for master in cluster.masters() {
        let list: String = cluster
            .query_node(master.index, &["CLIENT", "LIST"])
            .expect("CLIENT LIST");
        for line in list.lines() {
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|f| f.strip_prefix(name).map(str::to_string))
            };
            let subscribed = ["sub=", "ssub="]
                .iter()
                .filter_map(|n| field(n))
                .any(|n| n != "0");
            if let (true, Some(id)) = (subscribed, field("id=")) {
                let n: i64 = cluster
                    .query_node(master.index, &["CLIENT", "KILL", "ID", &id])
                    .unwrap_or(0);
                killed += n as usize;
            }
        }
    }
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_subscription_never_leaves_a_stale_value() {
    // Its own cluster: killing every subscription connection would cut the feeds of
    // the other tests' near caches and listeners.
    let cluster = &tokio::task::block_in_place(common::private_cluster);
    let url = cluster.seed_url();
    let (a, b) = (common::manager(&url), common::manager(&url));
    let name = unique("near-drop");
    let writer = plain_cache(&a, &name).await;
    let reader = near_cache(&b, &name).await;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    for key in &keys {
        writer.put(key.clone(), 1).await.unwrap();
        until_local(&reader, key).await;
    }
    // The invalidations of these writes go to nobody: the reader's feed is cut.
    let killed = tokio::task::block_in_place(|| kill_subscription_connections(cluster));
    assert!(killed > 0, "no subscription connection to kill");
    for key in &keys {
        writer.put(key.clone(), 2).await.unwrap();
    }
    let acked = Instant::now();
    for key in &keys {
        until_reads(&reader, key, Some(2)).await;
    }
    println!(
        "NEAR after a dropped subscription every key read anew within {:?}",
        acked.elapsed()
    );
    // And the near cache works again afterwards, never going back to the old value.
    for key in &keys {
        until_local(&reader, key).await;
        assert_eq!(reader.get(key).await.unwrap().map(|v| *v), Some(2));
    }
}

/// One acknowledged write: key, version, when it was acknowledged.
type Ack = (usize, u64, Instant);
/// One read: key, when the read started, the version read.
type Read = (usize, Instant, Option<u64>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_never_makes_a_near_cache_serve_an_overwritten_value() {
    let cluster = Arc::new(tokio::task::block_in_place(|| {
        RedisCluster::start(Flavor::Redis, 3, 1).expect("start a 3+3 cluster")
    }));
    let url = format!(
        "{}?response_timeout=500ms&connect_timeout=300ms",
        cluster.seed_url()
    );
    let (a, b) = (common::manager(&url), common::manager(&url));
    let name = unique("near-failover");
    let writer = plain_cache(&a, &name).await;
    let reader = near_cache(&b, &name).await;
    const KEYS: usize = 32;
    let key = |i: usize| format!("k{i}");

    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let reads: Arc<Mutex<Vec<Read>>> = Arc::default();
    let write_task = {
        let (stop, acks, writer) = (stop.clone(), acks.clone(), writer.clone());
        tokio::spawn(async move {
            let mut version = 0u64;
            while !stop.load(Ordering::Relaxed) {
                version += 1;
                let i = (version as usize) % KEYS;
                if writer.put(key(i), version).await.is_ok() {
                    acks.lock().push((i, version, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let read_task = {
        let (stop, reads, reader) = (stop.clone(), reads.clone(), reader.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let i = n % KEYS;
                let started = Instant::now();
                if let Ok(v) = reader.get(&key(i)).await {
                    reads.lock().push((i, started, v.map(|v| *v)));
                }
                tokio::task::yield_now().await;
            }
        })
    };
    // The master dies under load: wait until both sides are running.
    let deadline = Instant::now() + MARGIN;
    while acks.lock().len() < 50 || reads.lock().len() < 50 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let victim = cluster.masters()[0].index;
    tokio::task::block_in_place(|| cluster.kill_node(victim)).expect("kill a master");
    let window =
        tokio::task::block_in_place(|| cluster.wait_for_failover(victim)).expect("failover");
    let settled = Instant::now();
    tokio::time::sleep(STALENESS + Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    write_task.await.unwrap();
    read_task.await.unwrap();

    // After the failover settled, a read that started at `t` returns, for its key, at
    // least the last version acknowledged before `t - max_staleness` (writes acknowledged
    // before the failover may be lost by Redis itself, so only later ones count).
    let acks = acks.lock().clone();
    let reads = reads.lock().clone();
    let mut checked = 0;
    let mut violations = Vec::new();
    for &(i, started, got) in &reads {
        if started < settled + STALENESS {
            continue;
        }
        let Some(cutoff) = started.checked_sub(STALENESS) else {
            continue;
        };
        let floor = acks
            .iter()
            .filter(|(k, _, at)| *k == i && *at > settled && *at < cutoff)
            .map(|(_, v, _)| *v)
            .max();
        if let Some(floor) = floor {
            checked += 1;
            if got.is_none_or(|v| v < floor) {
                violations.push((key(i), got, floor));
            }
        }
    }
    println!(
        "NEAR failover: promoted after {window:?}; {} writes, {} reads, {checked} checked after it settled",
        acks.len(),
        reads.len()
    );
    assert!(checked > 100, "too few reads to check: {checked}");
    assert!(
        violations.is_empty(),
        "{} reads older than the bound allows, e.g. {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    // At rest, every near value is the store's value.
    let last: HashMap<usize, u64> = acks.iter().map(|(k, v, _)| (*k, *v)).collect();
    for i in 0..KEYS {
        let stored = writer.get(&key(i)).await.unwrap().map(|v| *v);
        assert_eq!(
            stored,
            last.get(&i).copied(),
            "the store lost the last write of k{i} after the failover settled"
        );
        until_reads(&reader, &key(i), stored).await;
    }
}

/// One read of the per-master test: key, when it started, the version read, whether
/// the near cache answered it.
type NearRead = (usize, Instant, Option<u64>, bool);

/// A master killed under near-cached reads: the partitions on the two healthy masters
/// keep their near copies through the failover (their feed was never lost), the
/// killed master's partitions are dropped and come back once its replica took over,
/// and no read is older than the guarantee allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_drops_only_its_own_partitions_from_the_near_cache() {
    let cluster = Arc::new(tokio::task::block_in_place(|| {
        RedisCluster::start(Flavor::Redis, 3, 1).expect("start a 3+3 cluster")
    }));
    let url = format!(
        "{}?response_timeout=500ms&connect_timeout=300ms",
        cluster.seed_url()
    );
    let (a, b) = (common::manager(&url), common::manager(&url));
    let name = unique("near-per-master");
    let writer = plain_cache(&a, &name).await;
    let reader = near_cache(&b, &name).await;
    const KEYS: usize = 96;
    let key = |i: usize| format!("k{i}");
    // Every fourth key is written during the test (the guarantee check); the others
    // only read (the near-hit count).
    let written = |i: usize| i.is_multiple_of(4);
    for i in 0..KEYS {
        writer.put(key(i), 1).await.expect("put");
    }
    // Which master holds each key.
    let map = reader.partition_map().expect("a partition map").clone();
    let master_of: Vec<usize> = tokio::task::block_in_place(|| {
        (0..KEYS)
            .map(|i| {
                let partition = map
                    .partition_of(&partcache::HashingPolicy::Standard, &key(i))
                    .expect("a partition");
                cluster.slot_owner(map.slot(partition)).expect("an owner")
            })
            .collect()
    });
    for i in 0..KEYS {
        until_local(&reader, &key(i)).await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
    let reads: Arc<Mutex<Vec<NearRead>>> = Arc::default();
    let write_task = {
        let (stop, acks, writer) = (stop.clone(), acks.clone(), writer.clone());
        tokio::spawn(async move {
            let mut version = 1u64;
            while !stop.load(Ordering::Relaxed) {
                version += 1;
                let i = (version as usize * 4) % KEYS;
                if writer.put(key(i), version).await.is_ok() {
                    acks.lock().push((i, version, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let read_task = {
        let (stop, reads, reader) = (stop.clone(), reads.clone(), reader.clone());
        tokio::spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let i = n % KEYS;
                let started = Instant::now();
                // The only reader of this cache: the counter's step is this read's.
                let before = reader.stats().near_hits;
                if let Ok(v) = reader.get(&key(i)).await {
                    let near = reader.stats().near_hits > before;
                    reads.lock().push((i, started, v.map(|v| *v), near));
                }
                tokio::task::yield_now().await;
            }
        })
    };
    let deadline = Instant::now() + MARGIN;
    while acks.lock().len() < 50 || reads.lock().len() < 500 {
        assert!(Instant::now() < deadline, "the load did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let victim = cluster.masters()[0].index;
    let killed = Instant::now();
    tokio::task::block_in_place(|| cluster.kill_node(victim)).expect("kill a master");
    let window =
        tokio::task::block_in_place(|| cluster.wait_for_failover(victim)).expect("failover");
    let settled = Instant::now();
    tokio::time::sleep(STALENESS + Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    write_task.await.unwrap();
    read_task.await.unwrap();
    let acks = acks.lock().clone();
    let reads = reads.lock().clone();

    // Near hits per master during the failover, over the keys nobody writes.
    let mut per_master: HashMap<usize, (usize, usize)> = HashMap::new();
    for &(i, started, _, near) in &reads {
        if started < killed || started > settled || written(i) {
            continue;
        }
        let entry = per_master.entry(master_of[i]).or_default();
        entry.0 += 1;
        entry.1 += usize::from(near);
    }
    let during = reads
        .iter()
        .filter(|r| r.1 >= killed && r.1 <= settled)
        .count();
    println!(
        "NEAR per master during the failover ({window:?}, {during} reads, {:.0} reads/s): {}",
        during as f64 / (settled - killed).as_secs_f64(),
        per_master
            .iter()
            .map(|(m, (n, hits))| format!(
                "master {m}{}: {hits}/{n} near hits ({:.1}%)",
                if *m == victim { " (killed)" } else { "" },
                100.0 * *hits as f64 / (*n).max(1) as f64
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (master, (n, hits)) in &per_master {
        if *master == victim {
            continue;
        }
        assert!(*n > 100, "too few reads on master {master}: {n}");
        assert!(
            *hits as f64 >= 0.95 * *n as f64,
            "master {master} kept {hits} near hits of {n} reads during the failover"
        );
    }

    // The guarantee, as in the test above: no read older than the last write
    // acknowledged `max_staleness` before it started; for the killed master's keys,
    // counting from when the failover settled (Redis itself may lose writes
    // acknowledged before it).
    let mut checked = 0;
    let mut violations = Vec::new();
    for &(i, started, got, _) in &reads {
        if master_of[i] != victim || started < settled + STALENESS {
            continue;
        }
        let Some(cutoff) = started.checked_sub(STALENESS) else {
            continue;
        };
        let floor = acks
            .iter()
            .filter(|(k, _, at)| *k == i && *at > settled && *at < cutoff)
            .map(|(_, v, _)| *v)
            .max();
        if let Some(floor) = floor {
            checked += 1;
            if got.is_none_or(|v| v < floor) {
                violations.push((key(i), got, floor));
            }
        }
    }
    // The healthy masters' keys, all along (through the failover too).
    for &(i, started, got, _) in &reads {
        if master_of[i] == victim {
            continue;
        }
        let Some(cutoff) = started.checked_sub(STALENESS) else {
            continue;
        };
        let floor = acks
            .iter()
            .filter(|(k, _, at)| *k == i && *at < cutoff)
            .map(|(_, v, _)| *v)
            .max();
        if let Some(floor) = floor {
            checked += 1;
            if got.is_none_or(|v| v < floor) {
                violations.push((key(i), got, floor));
            }
        }
    }
    assert!(checked > 100, "too few reads to check: {checked}");
    assert!(
        violations.is_empty(),
        "{} reads older than the bound allows, e.g. {:?}",
        violations.len(),
        &violations[..violations.len().min(5)]
    );
    // The killed master's partitions are near-cached again once its replica serves.
    for i in (0..KEYS).filter(|&i| master_of[i] == victim && !written(i)) {
        until_local(&reader, &key(i)).await;
    }
}

/// A listener added to a cache that has a near cache keeps the near copies: its
/// subscription is already in place, so nothing restarts the near cache's feed (a
/// restart drops every copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_added_later_keeps_the_near_copies() {
    let url = common::cluster().seed_url();
    let manager = common::manager(&url);
    let cache = near_cache(&manager, &unique("near-listen")).await;
    cache.put("k".to_string(), 1).await.expect("put");
    until_local(&cache, "k").await;
    let _events = cache
        .listen(partcache::EventFilter::all())
        .await
        .expect("listen");
    let before = cache.stats();
    assert_eq!(
        cache.get(&"k".to_string()).await.expect("get").map(|v| *v),
        Some(1)
    );
    let after = cache.stats();
    assert_eq!(
        (
            after.near_hits - before.near_hits,
            after.near_misses - before.near_misses
        ),
        (1, 0),
        "the read after `listen` was not served from the near cache"
    );
}

/// A near cache's guarantee across processes holds whatever another process's
/// settings: a process that would write without events (`publish_events(false)`),
/// which no near cache could hear, cannot open a cache a near cache reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_writing_without_events_cannot_open_a_cache_a_near_cache_reads() {
    let url = tokio::task::block_in_place(|| common::standalone().url());
    let (a, b) = (common::manager(&url), common::manager(&url));
    let name = unique("near-silent-writer");
    let reader = near_cache(&a, &name).await;
    let silent = b
        .cache::<String, u64>(&name)
        .publish_events(false)
        .build()
        .await;
    match silent {
        Err(error @ partcache::Error::Mismatch { .. }) => {
            assert!(error.to_string().contains("publish_events"), "{error}")
        }
        other => panic!("a silent writer was let in: {other:?}"),
    }
    // A writer that publishes reaches the near cache as ever.
    let writer: Cache<String, u64> = b.cache(&name).build().await.unwrap();
    writer.put("k".to_string(), 1).await.unwrap();
    assert_eq!(
        reader.get(&"k".to_string()).await.unwrap().map(|v| *v),
        Some(1)
    );
    writer.put("k".to_string(), 2).await.unwrap();
    let deadline = Instant::now() + STALENESS + MARGIN;
    while reader.get(&"k".to_string()).await.unwrap().map(|v| *v) != Some(2) {
        assert!(Instant::now() < deadline, "the near cache stayed stale");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
