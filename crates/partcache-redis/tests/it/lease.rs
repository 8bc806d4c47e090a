//! Leases across OS processes: one load per key for the whole deployment, no stale set
//! after another process's write, a dead holder's key taken over after the lease's
//! time to live, and loads that still happen when the store is down.
//!
//! The other processes are this test binary again, running [`child_process`] with its
//! task in the environment (run alone, without one, it checks one process's part). The processes meet through keys
//! on the shared standalone server (`<name>:…`): a child announces what it reached,
//! and waits (polling, with a deadline) for what the test lets it do.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use partcache::Cache;
use redis::AsyncCommands;

use crate::common::{self, unique};

const MODE: &str = "PARTCACHE_LEASE_MODE";
const URL: &str = "PARTCACHE_LEASE_URL";
const COORD: &str = "PARTCACHE_LEASE_COORD";
const NAME: &str = "PARTCACHE_LEASE_NAME";
const LEASE_TTL_MS: &str = "PARTCACHE_LEASE_TTL_MS";

/// How long a process waits for another one's step before it fails.
const STEP_DEADLINE: Duration = Duration::from_secs(20);

const HOT: &str = "hot";

/// Starts this test binary as a child process running [`child_process`] in `mode`.
fn spawn(mode: &str, url: &str, coord: &str, name: &str, lease_ttl: Duration) -> Child {
    let exe = std::env::current_exe().expect("the test binary's path");
    Command::new(exe)
        .args([
            "lease::child_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(MODE, mode)
        .env(URL, url)
        .env(COORD, coord)
        .env(NAME, name)
        .env(LEASE_TTL_MS, lease_ttl.as_millis().to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a child process")
}

/// The `RESULT` line of a finished child: its `key=value` fields.
fn result(child: Child) -> Vec<(String, String)> {
    let output = child.wait_with_output().expect("child output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    let line = stdout
        .lines()
        .find_map(|l| l.split_once("RESULT ").map(|(_, fields)| fields))
        .unwrap_or_else(|| panic!("no RESULT line in: {stdout}"));
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no field {name} in {fields:?}"))
}

async fn coordination(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .expect("coordination url")
        .get_multiplexed_async_connection()
        .await
        .expect("coordination connection")
}

/// Waits until `key` exists on the coordination server.
async fn wait_for(conn: &mut redis::aio::MultiplexedConnection, key: &str) {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let exists: bool = conn.exists(key).await.expect("EXISTS");
        if exists {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{key}` not set within {STEP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until the integer at `key` reaches `n`.
async fn wait_for_count(conn: &mut redis::aio::MultiplexedConnection, key: &str, n: u64) {
    let deadline = Instant::now() + STEP_DEADLINE;
    loop {
        let count: Option<u64> = conn.get(key).await.expect("GET");
        if count.unwrap_or(0) >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{key}` below {n} after {STEP_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn cache(url: &str, name: &str, lease_ttl: Duration) -> Cache<String, String> {
    common::manager(url)
        .cache(name)
        .partitions(7)
        .lease_ttl(lease_ttl)
        .build()
        .await
        .expect("cache")
}

/// 32 tasks miss the hot key at once with a 100 ms loader; each must get its value
/// (`expect`: what a failed call means). Returns how many times the loader ran.
async fn miss_hot_key(cache: &Cache<String, String>, expect: &'static str) -> usize {
    let loads = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (cache, loads) = (cache.clone(), loads.clone());
            tokio::spawn(async move {
                cache
                    .get_or_load(&HOT.to_string(), |_| async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, std::io::Error>("v".to_string())
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        let value = task.await.expect("task").expect(expect);
        assert_eq!(value.as_str(), "v");
    }
    loads.load(Ordering::SeqCst)
}

/// A child process's task (see the module docs). Run alone (no task in the
/// environment), it is one process's part of the stampede: its 32 tasks miss the hot
/// key at once and the loader runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_process() {
    let vars = (
        std::env::var(MODE),
        std::env::var(URL),
        std::env::var(COORD),
        std::env::var(NAME),
    );
    let alone = !matches!(vars, (Ok(_), Ok(_), Ok(_), Ok(_)));
    let (mode, url, coord, name) = match vars {
        (Ok(mode), Ok(url), Ok(coord), Ok(name)) => (mode, url, coord, name),
        _ => {
            let url = coord_url();
            let name = unique("lease-alone");
            let mut conn = coordination(&url).await;
            let _: () = conn.set(format!("{name}:go"), 1).await.expect("SET");
            ("stampede".to_string(), url.clone(), url, name)
        }
    };
    let lease_ttl = std::env::var(LEASE_TTL_MS)
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis);
    let cache = cache(&url, &name, lease_ttl).await;
    let mut conn = coordination(&coord).await;
    match mode.as_str() {
        // 32 tasks miss the hot key at once with a 100 ms loader.
        "stampede" => {
            // One round trip first, so that opening the cache is not in the race.
            cache.get(&"warm".to_string()).await.expect("warm-up read");
            let _: u64 = conn.incr(format!("{name}:ready"), 1).await.expect("INCR");
            wait_for(&mut conn, &format!("{name}:go")).await;
            let loads = miss_hot_key(&cache, "get_or_load").await;
            println!("RESULT loads={loads}");
            if alone {
                assert_eq!(loads, 1, "one process, one load");
            }
        }
        // Loads the old value from the "database", then waits until the other process
        // changed it and removed (or wrote) the key before returning what it read.
        "stale" => {
            let value = cache
                .get_or_load(&HOT.to_string(), |_| {
                    let mut conn = conn.clone();
                    let name = name.clone();
                    async move {
                        let read: String = conn.get(format!("{name}:db")).await?;
                        let _: () = conn.set(format!("{name}:loading"), 1).await?;
                        wait_for(&mut conn, &format!("{name}:changed")).await;
                        Ok::<_, redis::RedisError>(read)
                    }
                })
                .await
                .expect("get_or_load");
            println!(
                "RESULT value={value} stale={}",
                cache.stats().stale_sets_prevented
            );
        }
        // Takes the lease and never finishes loading (the test kills this process).
        "hold" => {
            let _ = cache
                .get_or_load(&HOT.to_string(), |_| {
                    let mut conn = conn.clone();
                    let name = name.clone();
                    async move {
                        let _: () = conn.set(format!("{name}:loading"), 1).await?;
                        std::future::pending::<()>().await;
                        Ok::<_, redis::RedisError>(String::new())
                    }
                })
                .await;
        }
        // Reads the hot key once.
        "read" => {
            let value = cache.get(&HOT.to_string()).await.expect("get");
            println!(
                "RESULT value={}",
                value.as_deref().map_or("<none>", String::as_str)
            );
        }
        other => panic!("unknown child mode {other}"),
    }
}

fn coord_url() -> String {
    tokio::task::block_in_place(|| common::standalone().url())
}

/// 4 processes × 32 tasks miss one hot key at once: the loader runs once in total.
async fn four_processes_load_a_hot_key_once(url: &str) {
    let coord = coord_url();
    let name = unique("lease-stampede");
    let children: Vec<Child> = (0..4)
        .map(|_| spawn("stampede", url, &coord, &name, Duration::from_secs(5)))
        .collect();
    let mut conn = coordination(&coord).await;
    wait_for_count(&mut conn, &format!("{name}:ready"), 4).await;
    let _: () = conn.set(format!("{name}:go"), 1).await.expect("SET");
    let loads: Vec<u64> = children
        .into_iter()
        .map(|c| field(&result(c), "loads").parse().expect("a count"))
        .collect();
    assert_eq!(loads.iter().sum::<u64>(), 1, "loads per process: {loads:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_missing_one_hot_key_load_it_once_on_a_standalone_server() {
    four_processes_load_a_hot_key_once(&coord_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_missing_one_hot_key_load_it_once_on_a_cluster() {
    let url = tokio::task::block_in_place(|| common::cluster().seed_url());
    four_processes_load_a_hot_key_once(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_missing_one_hot_key_load_it_once_on_a_joined_store() {
    let url = tokio::task::block_in_place(common::joined_url);
    four_processes_load_a_hot_key_once(&url).await;
}

/// How this process changes the key while another loads it.
#[derive(Clone, Copy, PartialEq)]
enum Change {
    Remove,
    Put,
    /// `clear`, which finds no entry of the key (it is being loaded).
    Clear,
}

/// Process A loads the old value; this process (B) changes the database and then
/// removes, overwrites or clears the key while A's loader runs; A's loader returns only
/// after that. Afterwards every process reads the new value or a miss, never the old
/// one.
async fn a_change_during_another_process_load_is_not_overwritten(url: &str, change: Change) {
    let coord = coord_url();
    let name = unique("lease-stale");
    let mut conn = coordination(&coord).await;
    let _: () = conn.set(format!("{name}:db"), "old").await.expect("SET");
    let b = cache(url, &name, Duration::from_secs(5)).await;
    let a = spawn("stale", url, &coord, &name, Duration::from_secs(5));
    wait_for(&mut conn, &format!("{name}:loading")).await;
    let _: () = conn.set(format!("{name}:db"), "new").await.expect("SET");
    match change {
        Change::Remove => assert!(!b.remove(&HOT.to_string()).await.expect("remove")),
        Change::Put => b
            .put(HOT.to_string(), "new".to_string())
            .await
            .expect("put"),
        Change::Clear => b.clear().await.expect("clear"),
    }
    let _: () = conn.set(format!("{name}:changed"), 1).await.expect("SET");
    let a = result(a);
    // A's callers get what A's loader read, as without a cache.
    assert_eq!(field(&a, "value"), "old");
    let expected = if change == Change::Put {
        "new"
    } else {
        "<none>"
    };
    let here = b.get(&HOT.to_string()).await.expect("get");
    assert_eq!(here.as_deref().map_or("<none>", String::as_str), expected);
    let reader = result(spawn("read", url, &coord, &name, Duration::from_secs(5)));
    assert_eq!(field(&reader, "value"), expected);
    assert_eq!(field(&a, "stale"), "1", "the refused set is counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_while_another_process_loads_prevents_its_stale_set() {
    a_change_during_another_process_load_is_not_overwritten(&coord_url(), Change::Remove).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_while_another_process_loads_prevents_its_stale_set() {
    a_change_during_another_process_load_is_not_overwritten(&coord_url(), Change::Clear).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_while_another_process_loads_prevents_its_stale_set_on_a_cluster() {
    let url = tokio::task::block_in_place(|| common::cluster().seed_url());
    a_change_during_another_process_load_is_not_overwritten(&url, Change::Put).await;
}

/// The lease holder's process is killed mid-load: this process, waiting for the
/// holder's value, loads the key itself once the lease's time to live has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_lease_holder_leaves_the_key_to_another_process_after_the_lease_ttl() {
    let url = coord_url();
    let name = unique("lease-killed");
    let lease_ttl = Duration::from_millis(1_500);
    let mut conn = coordination(&url).await;
    let mut holder = spawn("hold", &url, &url, &name, lease_ttl);
    wait_for(&mut conn, &format!("{name}:loading")).await;
    let cache = cache(&url, &name, lease_ttl).await;
    let started = Instant::now();
    let loads = Arc::new(AtomicUsize::new(0));
    let waiter = {
        let (cache, loads) = (cache.clone(), loads.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(&HOT.to_string(), |_| async move {
                    loads.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>("b".to_string())
                })
                .await
        })
    };
    holder.kill().expect("SIGKILL the holder");
    let _ = holder.wait();
    let value = tokio::time::timeout(lease_ttl + Duration::from_secs(5), waiter)
        .await
        .expect("the waiter took over within the lease ttl")
        .expect("task")
        .expect("get_or_load");
    let took = started.elapsed();
    assert_eq!(value.as_str(), "b");
    assert_eq!(loads.load(Ordering::SeqCst), 1);
    assert!(
        took <= lease_ttl + Duration::from_secs(1),
        "took {took:?} for a lease of {lease_ttl:?}"
    );
    assert_eq!(
        cache
            .get(&HOT.to_string())
            .await
            .expect("get")
            .as_deref()
            .map(String::as_str),
        Some("b")
    );
}

/// The store cannot be reached: `get_or_load` still loads, once for this process's
/// concurrent callers, and returns the value to each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_store_down_loads_happen_once_per_process_and_return_values() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("redis://127.0.0.1:{port}?connect_timeout=200ms&response_timeout=200ms");
    let cache = cache(&url, &unique("lease-down"), Duration::from_secs(5)).await;
    let loads = miss_hot_key(&cache, "a value, not the store's error").await;
    assert_eq!(loads, 1);
}

/// Two instances (managers) of one process on one server, a lease time of 5 s.
async fn two_instances(name: &str, max_value_bytes: usize) -> [Cache<String, String>; 2] {
    let url = coord_url();
    let open = || async {
        common::manager(&url)
            .cache(name)
            .partitions(7)
            .lease_ttl(Duration::from_secs(5))
            .max_value_bytes(max_value_bytes)
            .build()
            .await
            .expect("cache")
    };
    [open().await, open().await]
}

/// A leader whose load fails, finds nothing, gives up (its future dropped) or loads a
/// value the store refuses ends its lease: the other instance leads at once instead of
/// waiting out the lease's 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_stores_nothing_ends_its_lease() {
    let name = unique("lease-ends");
    let [a, b] = two_instances(&name, 64).await;
    let quick = Duration::from_secs(2);
    let key = |k: &str| k.to_string();

    // A value over the cache's 64-byte limit: served, refused by the store.
    let big = a
        .get_or_load(&key("big"), |_| async {
            Ok::<_, std::io::Error>("x".repeat(100))
        })
        .await
        .expect("a load that cannot be cached is still returned");
    assert_eq!(big.len(), 100);
    // A failed load.
    let failed = a
        .get_or_load(&key("failed"), |_| async {
            Err::<String, _>(std::io::Error::other("origin down"))
        })
        .await;
    assert!(failed.is_err());
    // A leader dropped mid-load (a caller that gave up).
    let (loading_tx, loading_rx) = tokio::sync::oneshot::channel::<()>();
    let gave_up = {
        let a = a.clone();
        tokio::spawn(async move {
            a.get_or_load(&"dropped".to_string(), |_| async move {
                let _ = loading_tx.send(());
                std::future::pending::<Result<String, std::io::Error>>().await
            })
            .await
        })
    };
    loading_rx.await.expect("the leader started loading");
    gave_up.abort();
    let _ = gave_up.await;

    for k in ["big", "failed", "dropped"] {
        let started = Instant::now();
        let value = b
            .get_or_load(&key(k), |_| async {
                Ok::<_, std::io::Error>("b".to_string())
            })
            .await
            .expect("get_or_load");
        assert_eq!(value.as_str(), "b", "{k}");
        assert!(
            started.elapsed() < quick,
            "{k}: the other instance waited {:?} for a lease nobody would use",
            started.elapsed()
        );
    }
}

/// A key whose text cannot be written (its `Serialize` fails).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
struct Unwritable;

impl serde::Serialize for Unwritable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("this key has no text"))
    }
}

/// On a cache whose reads are functions (an entry budget), `get_or_load`'s read is the
/// lease call: a key the store refuses is the caller's error there as on `get`, and
/// nothing is loaded; a refusal is counted once per call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_store_refuses_fails_get_or_load_as_it_fails_get() {
    let cache = common::manager(&coord_url())
        .cache::<Unwritable, String>(&unique("lease-bad-key"))
        .partitions(7)
        .max_entries(100)
        .build()
        .await
        .expect("cache");
    let got = cache.get(&Unwritable).await;
    assert!(matches!(got, Err(partcache::Error::Rejected(_))), "{got:?}");
    let loads = AtomicUsize::new(0);
    let loaded = cache
        .get_or_load(&Unwritable, |_| async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>("v".to_string())
        })
        .await;
    assert!(
        matches!(loaded, Err(partcache::Error::Rejected(_))),
        "{loaded:?}"
    );
    assert_eq!(loads.load(Ordering::SeqCst), 0);
    assert_eq!(cache.stats().rejections, 2);
}

/// A leader whose load ends without a value (here: it fails) leaves the key to every
/// process that waited for it at once, as a local flight does to its waiters: they load
/// side by side, not one process after another (which made a miss that is never
/// stored cost each instance the sum of the others' loads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_of_a_lease_ended_without_a_value_load_side_by_side() {
    let name = unique("lease-released");
    let [a, b] = two_instances(&name, 1024).await;
    let [c, _] = two_instances(&name, 1024).await;
    let key = "k".to_string();
    let load_time = Duration::from_millis(300);

    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let leader = {
        let key = key.clone();
        tokio::spawn(async move {
            a.get_or_load(&key, |_| async move {
                let _ = started_tx.send(());
                tokio::time::sleep(load_time).await;
                Err::<String, _>(std::io::Error::other("origin down"))
            })
            .await
        })
    };
    started_rx.await.expect("the leader started loading");

    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let waiter = |cache: Cache<String, String>| {
        let (key, running, most, calls) =
            (key.clone(), running.clone(), most.clone(), calls.clone());
        tokio::spawn(async move {
            cache
                .get_or_load(&key, |_| async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(load_time).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok::<_, std::io::Error>("v".to_string())
                })
                .await
        })
    };
    let (first, second) = (waiter(b), waiter(c));
    assert!(leader.await.expect("leader task").is_err());
    for loaded in [first.await, second.await] {
        assert_eq!(loaded.expect("task").expect("get_or_load").as_str(), "v");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "each waiting process loads"
    );
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "the waiting processes loaded one after another"
    );
}
