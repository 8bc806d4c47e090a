//! The reaper shared by every process that opens a cache: its background commands do
//! not grow with the number of processes, another process takes over when the one
//! reaping dies, and its `Expired` events reach the listeners of every process.

use std::time::{Duration, Instant};

use partcache::{Cache, EventFilter, EventKind};
use partcache_integration_tests::RedisCluster;

use crate::common::{self, manager, unique};

/// Idle caches each instance opens.
const CACHES: usize = 10;

/// Server commands so far on every node of `cluster`, but the harness's own
/// (`INFO`, `CONFIG`).
fn server_calls(cluster: &RedisCluster) -> u64 {
    cluster
        .commandstats_all()
        .expect("INFO commandstats")
        .iter()
        .flat_map(|node| node.iter())
        .filter(|(name, _)| !name.starts_with("info") && !name.starts_with("config"))
        .map(|(_, calls)| calls)
        .sum()
}

/// The servers' commands per second over `window`, from now.
async fn rate_over(cluster: &RedisCluster, window: Duration) -> f64 {
    let before = tokio::task::block_in_place(|| server_calls(cluster));
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let after = tokio::task::block_in_place(|| server_calls(cluster));
    (after - before) as f64 / start.elapsed().as_secs_f64()
}

/// The servers' commands per second while `instances` managers each hold the same
/// [`CACHES`] idle caches (default partitions), once that rate is steady. Opening's own
/// commands (layout checks, first claim requests) come first, and the surveys reach
/// their rate only after the claims settle, a time that depends on the machine's load:
/// so the rate is taken over successive windows until two in a row agree within a
/// fifth, and is their mean.
async fn background_rate(cluster: &RedisCluster, instances: usize, window: Duration) -> f64 {
    const SETTLED_WITHIN: Duration = Duration::from_secs(60);
    let names: Vec<String> = (0..CACHES)
        .map(|i| unique(&format!("idle-{instances}-{i}")))
        .collect();
    let mut caches: Vec<Cache<u64, u64>> = Vec::new();
    for _ in 0..instances {
        let manager = manager(&cluster.seed_url());
        for name in &names {
            caches.push(manager.cache(name).build().await.expect("build"));
        }
    }
    let started = Instant::now();
    let mut rates = vec![rate_over(cluster, window).await];
    let rate = loop {
        let rate = rate_over(cluster, window).await;
        let previous = rates[rates.len() - 1];
        rates.push(rate);
        if (rate - previous).abs() <= 0.2 * rate.max(previous) {
            break (rate + previous) / 2.0;
        }
        assert!(
            started.elapsed() < SETTLED_WITHIN,
            "{instances} instance(s): the background rate never settled: {rates:.0?} commands/s"
        );
    };
    println!("{instances} instance(s), commands/s per window: {rates:.0?}");
    for cache in &caches {
        cache.close().await.expect("close");
    }
    rate
}

/// Sixteen instances with ten idle caches each cost the servers about what one does:
/// one process reaps each cache. (Before the reaping claim, every instance surveyed
/// every partition of every cache each second: about sixteen times the commands.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_commands_do_not_grow_with_the_number_of_instances() {
    let cluster = tokio::task::block_in_place(common::private_cluster);
    // Several surveys per cache in each window, so that where the window starts
    // within a second changes the count little.
    let window = Duration::from_secs(2);
    let one = background_rate(&cluster, 1, window).await;
    let sixteen = background_rate(&cluster, 16, window).await;
    println!("background commands/s: 1 instance {one:.0}, 16 instances {sixteen:.0}");
    assert!(one > 0.0, "no background commands at all with one instance");
    assert!(
        sixteen <= 1.5 * one,
        "16 instances: {sixteen:.0} commands/s, one: {one:.0}/s ({:.1}x)",
        sixteen / one
    );
}

/// The key of a cache's reaping claim (see the crate docs, key layout).
fn claim_key(cache: &str) -> String {
    let hash = xxhash_rust::xxh3::xxh3_64(cache.as_bytes()) as u32;
    format!("pc:{{{hash:08x}.meta}}:{cache}:reaper")
}

/// The claim's holder, read on the master that serves its slot.
fn claim_holder(cluster: &RedisCluster, cache: &str) -> Option<String> {
    claim_value(cluster, &claim_key(cache))
}

/// The deputy's claim: who takes over when the holder's lapses.
fn deputy(cluster: &RedisCluster, cache: &str) -> Option<String> {
    let key = claim_key(cache);
    claim_value(
        cluster,
        &format!("{}deputy", key.trim_end_matches("reaper")),
    )
}

/// `key`'s value, read on the master that serves its slot.
fn claim_value(cluster: &RedisCluster, key: &str) -> Option<String> {
    let slot = cluster.key_slot(key).expect("key slot");
    let owner = cluster.slot_owner(slot).expect("slot owner");
    let client = redis::Client::open(cluster.node_url(owner)).expect("client");
    let mut connection = client.get_connection().expect("connection");
    redis::cmd("GET")
        .arg(key)
        .query::<Option<String>>(&mut connection)
        .expect("GET")
}

/// The next event of `rx` that is about `key`.
async fn next_event_of(
    rx: &mut partcache::EventReceiver<u64, u64>,
    key: u64,
) -> partcache::CacheEvent<u64, u64> {
    loop {
        let event = partcache::conformance::next_event(rx).await;
        if event.key == key {
            return event;
        }
    }
}

/// The process that reaps a cache (here one without listeners of its own) publishes
/// its `Expired` events to the listeners of every other process; one of those stands
/// by as its deputy, and when the reaping process dies without closing anything, the
/// deputy takes over within
/// [`partcache_redis::REAPER_TAKEOVER`] of an entry's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_reaping_process_dies_another_takes_over_and_every_listener_hears() {
    const TAKEOVER: Duration = partcache_redis::REAPER_TAKEOVER;
    // A loaded test machine may run the tasks late.
    const SLACK: Duration = Duration::from_secs(2);
    let cluster = tokio::task::block_in_place(common::cluster);
    let name = unique("takeover");

    // The first process, with a runtime of its own that the test can end abruptly.
    let (opened_tx, opened_rx) = std::sync::mpsc::channel::<()>();
    let (die_tx, die_rx) = std::sync::mpsc::channel::<()>();
    let first = {
        let (url, name) = (cluster.seed_url(), name.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            let manager = manager(&url);
            let cache: Cache<u64, u64> = runtime
                .block_on(manager.cache(&name).build())
                .expect("build");
            opened_tx.send(()).expect("signal");
            die_rx.recv().expect("wait");
            // Dies: nothing closed, nothing dropped, every task and connection gone.
            std::mem::forget(cache);
            std::mem::forget(manager);
            runtime.shutdown_background();
        })
    };
    opened_rx.recv().expect("first process opened");
    let first_holder = {
        let started = Instant::now();
        loop {
            if let Some(holder) = tokio::task::block_in_place(|| claim_holder(cluster, &name)) {
                break holder;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the first process never took the reaping claim"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };

    let second: Cache<u64, u64> = manager(&cluster.seed_url())
        .cache(&name)
        .build()
        .await
        .expect("build");
    let third: Cache<u64, u64> = manager(&cluster.seed_url())
        .cache(&name)
        .build()
        .await
        .expect("build");
    let mut rx2 = second.listen(EventFilter::all()).await.expect("listen");
    let mut rx3 = third.listen(EventFilter::all()).await.expect("listen");
    // One of the other two stands by as the deputy.
    partcache::conformance::eventually("a deputy stands by", || async {
        let deputy = tokio::task::block_in_place(|| deputy(cluster, &name));
        deputy.is_some() && deputy.as_deref() != Some(first_holder.as_str())
    })
    .await;

    // Reaped by the first process: both listeners hear the expiry.
    let ttl = Duration::from_millis(300);
    second.put_with_ttl(1, 1, ttl).await.expect("put");
    for rx in [&mut rx2, &mut rx3] {
        assert_eq!(next_event_of(rx, 1).await.kind, EventKind::Created);
        assert_eq!(next_event_of(rx, 1).await.kind, EventKind::Expired);
    }
    assert_eq!(
        tokio::task::block_in_place(|| claim_holder(cluster, &name)).as_deref(),
        Some(first_holder.as_str()),
        "the first process stopped reaping while alive"
    );

    die_tx.send(()).expect("signal");
    first.join().expect("first process");
    second.put_with_ttl(2, 2, ttl).await.expect("put");
    let deadline = Instant::now() + ttl;
    for rx in [&mut rx2, &mut rx3] {
        assert_eq!(next_event_of(rx, 2).await.kind, EventKind::Created);
        assert_eq!(next_event_of(rx, 2).await.kind, EventKind::Expired);
        let late = Instant::now().saturating_duration_since(deadline);
        assert!(
            late <= TAKEOVER + SLACK,
            "reaped {late:?} after the deadline, more than {TAKEOVER:?} (+{SLACK:?})"
        );
    }
    let holder = tokio::task::block_in_place(|| claim_holder(cluster, &name));
    assert!(
        holder.is_some() && holder.as_deref() != Some(first_holder.as_str()),
        "another process holds the claim: {holder:?}"
    );
}

/// A process that closes a cache gives its reaping claim up at once rather than
/// leaving it to lapse, so that the next process to ask takes over without waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_cache_gives_its_reaping_claim_up() {
    let cluster = tokio::task::block_in_place(common::cluster);
    let name = unique("handover");
    let cache: Cache<u64, u64> = manager(&cluster.seed_url())
        .cache(&name)
        .build()
        .await
        .expect("build");
    partcache::conformance::eventually("the process takes the reaping claim", || async {
        tokio::task::block_in_place(|| claim_holder(cluster, &name)).is_some()
    })
    .await;
    cache.close().await.expect("close");
    // Renewed at most a second before the close, the claim would lapse by itself
    // two seconds after it at the soonest.
    let closed = Instant::now();
    while tokio::task::block_in_place(|| claim_holder(cluster, &name)).is_some() {
        assert!(
            closed.elapsed() < Duration::from_millis(1500),
            "the closed cache's claim is still held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
