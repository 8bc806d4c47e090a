//! Behaviour of the Redis store beyond the conformance suite, on real servers.

use crate::common;

use common::unique;

use std::time::{Duration, Instant};

use partcache::partition::HashingPolicy;
use partcache::{Cache, Error, LayoutMismatch};
use partcache_integration_tests::{Flavor, RedisServer, ServerOptions};

fn standalone_url() -> String {
    tokio::task::block_in_place(|| common::standalone().url())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_with_another_partition_count_is_a_layout_mismatch() {
    let url = standalone_url();
    let name = unique("reopen-p");
    let first: Cache<String, String> = common::manager(&url)
        .cache(&name)
        .partitions(31)
        .build()
        .await
        .unwrap();
    first.put("a".to_string(), "1".to_string()).await.unwrap();
    let again = common::manager(&url)
        .cache::<String, String>(&name)
        .partitions(64)
        .build()
        .await;
    match again {
        Err(error @ Error::Mismatch { .. }) => {
            assert!(
                error.to_string().contains(&format!(
                    "cache `{name}` was created with 31 partitions, opened with 64"
                )),
                "{error}"
            );
            assert!(
                matches!(
                    error,
                    Error::Mismatch {
                        mismatch: LayoutMismatch::Partitions {
                            stored: 31,
                            opened: 64
                        },
                        ..
                    }
                ),
                "{error:?}"
            );
        }
        other => panic!("expected a layout mismatch, got {other:?}"),
    }
    // The same partition count from another manager (another process) opens it.
    let same: Cache<String, String> = common::manager(&url)
        .cache(&name)
        .partitions(31)
        .build()
        .await
        .unwrap();
    assert_eq!(
        same.get(&"a".to_string())
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("1")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_bytes_in_an_entry_are_a_miss_and_a_decode_error() {
    let url = standalone_url();
    let name = unique("corrupt");
    let cache: Cache<String, String> = common::manager(&url).cache(&name).build().await.unwrap();
    cache.put("k".to_string(), "v".to_string()).await.unwrap();
    let map = cache.partition_map().unwrap().clone();
    let partition = map.partition_of(&HashingPolicy::Standard, "k").unwrap();
    let key = format!("pc:{{{}}}:{name}:e:k", map.tag(partition));
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(exists, 1, "the layout changed: {key} not found");
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(b"\xde\xad\xbe\xef".as_slice())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(cache.get(&"k".to_string()).await.unwrap(), None);
    let stats = cache.stats();
    assert_eq!(stats.decode_errors, 1);
    assert_eq!(stats.misses, 1);
}

/// Overwrites `key`'s entry of `cache` (named `name`) with bytes no codec reads: what
/// a value written by an older version of the value type looks like.
async fn overwrite_with_undecodable_bytes(
    url: &str,
    name: &str,
    cache: &Cache<String, String>,
    key: &str,
) {
    let map = cache.partition_map().unwrap().clone();
    let partition = map.partition_of(&HashingPolicy::Standard, key).unwrap();
    let entry = format!("pc:{{{}}}:{name}:e:{key}", map.tag(partition));
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&entry)
        .arg(b"\xde\xad\xbe\xef".as_slice())
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// An entry that does not decode is a miss; the load of the key then replaces it, so
/// that the loader runs once, not on every read for as long as the bytes stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_replaces_an_undecodable_entry_so_the_loader_runs_once() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let url = standalone_url();
    let name = unique("undecodable-load");
    let cache: Cache<String, String> = common::manager(&url).cache(&name).build().await.unwrap();
    let k = "k".to_string();
    cache.put(k.clone(), "v1".to_string()).await.unwrap();
    overwrite_with_undecodable_bytes(&url, &name, &cache, "k").await;
    let loads = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let loads = loads.clone();
        let v = cache
            .get_or_load(&k, move |_k| async move {
                loads.fetch_add(1, Ordering::SeqCst);
                Ok::<_, std::io::Error>("v2".to_string())
            })
            .await
            .unwrap();
        assert_eq!(*v, "v2");
    }
    let decode_errors = cache.stats().decode_errors;
    let got = cache.get(&k).await.unwrap();
    assert_eq!(
        (
            loads.load(Ordering::SeqCst),
            got.as_deref().map(String::as_str)
        ),
        (1, Some("v2")),
        "stats {:?}",
        cache.stats()
    );
    // The bad bytes were counted when found, and are gone.
    assert!(decode_errors >= 1);
    assert_eq!(cache.stats().decode_errors, decode_errors);
}

/// `get` says an undecodable entry is absent, and so does `put_if_absent`: it stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_if_absent_stores_over_an_undecodable_entry_as_get_finds_none() {
    let url = standalone_url();
    let name = unique("undecodable-pia");
    let cache: Cache<String, String> = common::manager(&url).cache(&name).build().await.unwrap();
    let k = "k".to_string();
    cache.put(k.clone(), "v1".to_string()).await.unwrap();
    overwrite_with_undecodable_bytes(&url, &name, &cache, "k").await;
    assert_eq!(cache.get(&k).await.unwrap(), None);
    let stored = cache
        .put_if_absent(k.clone(), "v2".to_string())
        .await
        .unwrap();
    let got = cache.get(&k).await.unwrap();
    assert_eq!(
        (stored, got.as_deref().map(String::as_str)),
        (true, Some("v2"))
    );
    // A decodable value is present, as ever.
    assert!(
        !cache
            .put_if_absent(k.clone(), "v3".to_string())
            .await
            .unwrap()
    );
}

/// An entry processor finds an undecodable entry absent: what it sets is a creation
/// (a `Created` event), and a removal has nothing to remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_processor_creates_over_an_undecodable_entry() {
    let url = standalone_url();
    let name = unique("undecodable-invoke");
    let cache: Cache<String, String> = common::manager(&url).cache(&name).build().await.unwrap();
    let k = "k".to_string();
    cache.put(k.clone(), "v1".to_string()).await.unwrap();
    overwrite_with_undecodable_bytes(&url, &name, &cache, "k").await;
    let mut events = cache.listen(partcache::EventFilter::all()).await.unwrap();
    let seen = cache
        .invoke(&k, |e| {
            let seen = e.value().cloned();
            e.set_value("v2".to_string());
            seen
        })
        .await
        .unwrap();
    assert_eq!(seen, None);
    assert_eq!(
        cache.get(&k).await.unwrap().as_deref().map(String::as_str),
        Some("v2")
    );
    let event = events.try_recv().expect("an event").unwrap();
    assert_eq!((event.kind, event.key), (partcache::EventKind::Created, k));
}

/// Fails unless `result` is a transient store error (`Unavailable`, `Timeout`, or
/// `CircuitOpen` once a silent node's breaker opened).
fn assert_transient<T: std::fmt::Debug>(result: partcache::Result<T>) {
    assert!(
        matches!(
            result,
            Err(Error::Unavailable(_) | Error::Timeout(_) | Error::CircuitOpen { .. })
        ),
        "{result:?}"
    );
}

/// A cache is built even while its server is down (it opens lazily); its
/// operations fail fast with a typed error meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_is_down_fails_fast_with_a_typed_error() {
    let port = partcache_integration_tests::ports::free_port().unwrap();
    let manager = common::manager(&format!(
        "redis://127.0.0.1:{port}?connect_timeout=200ms&response_timeout=300ms"
    ));
    let start = Instant::now();
    let cache: Cache<String, String> = manager.cache("down").build().await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "build took {:?}",
        start.elapsed()
    );
    for _ in 0..3 {
        let start = Instant::now();
        assert_transient(cache.get(&"k".to_string()).await);
        assert_transient(cache.put("k".to_string(), "v".to_string()).await);
        assert!(
            start.elapsed() < Duration::from_millis(900),
            "took {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_stops_answering_times_out_within_the_response_timeout() {
    // A listener that accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let manager = common::manager(&format!(
        "redis://127.0.0.1:{port}?connect_timeout=300ms&response_timeout=300ms"
    ));
    let start = Instant::now();
    let cache: Cache<String, String> = manager.cache("silent").build().await.unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(1200),
        "build took {:?}",
        start.elapsed()
    );
    for _ in 0..3 {
        let start = Instant::now();
        assert_transient(cache.get(&"k".to_string()).await);
        assert!(
            start.elapsed() < Duration::from_millis(1200),
            "took {:?}",
            start.elapsed()
        );
    }
}

/// A `DeploymentUrl` built in code (as `RedisBackend::new`'s example does) with a
/// response timeout of `Duration::MAX`, the usual "no timeout": every call works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_timeout_of_duration_max_set_in_code_is_no_timeout() {
    let mut url = partcache_redis::url::parse(&standalone_url()).unwrap();
    url.response_timeout = Duration::MAX;
    let manager = partcache::CacheManager::with_backend(std::sync::Arc::new(
        partcache_redis::RedisBackend::new(url),
    ));
    // In a task, so that a panic is reported as the call's outcome.
    let calls = tokio::spawn(async move {
        let cache: Cache<String, String> = manager.cache(&unique("rt-max")).build().await?;
        cache.put("k".to_string(), "v".to_string()).await?;
        let got = cache.get(&"k".to_string()).await?;
        Ok::<_, Error>(got.map(|v| (*v).clone()))
    });
    let got = calls.await.expect("the calls return");
    assert_eq!(got.expect("the calls succeed"), Some("v".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_built_while_the_server_is_down_works_once_it_is_up() {
    let server = tokio::task::block_in_place(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    });
    assert!(tokio::task::block_in_place(|| server.stop()));
    let manager = common::manager(&format!(
        "redis://{}?connect_timeout=100ms&response_timeout=100ms",
        server.addr()
    ));
    let limit = Duration::from_millis(100 + 400);

    let start = Instant::now();
    let cache: Cache<u64, String> = manager.cache(&unique("lazy")).build().await.unwrap();
    assert!(start.elapsed() < limit, "build took {:?}", start.elapsed());
    let mut events = cache.subscribe(partcache::EventFilter::all());
    for i in 0..5 {
        let start = Instant::now();
        assert_transient(cache.put(i, "v".to_string()).await);
        assert_transient(cache.get(&i).await);
        assert!(start.elapsed() < limit * 2, "took {:?}", start.elapsed());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }

    tokio::task::block_in_place(|| server.restart()).expect("restart");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match cache.put(1, "one".to_string()).await {
            Ok(()) => break,
            Err(e) => {
                assert!(e.is_transient(), "{e:?}");
                assert!(Instant::now() < deadline, "still failing: {e:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert_eq!(
        cache.get(&1).await.unwrap().as_deref().map(String::as_str),
        Some("one")
    );
    // Events work: the cache subscribed while it finished opening.
    cache.put(2, "two".to_string()).await.unwrap();
    loop {
        let event = partcache::conformance::next_event(&mut events).await;
        if event.key == 2 {
            break;
        }
        assert_eq!(event.key, 1, "unexpected event {event:?}");
    }
    assert_eq!(cache.len().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_url_parameters_are_config_errors_naming_them() {
    partcache_redis::install();
    let error = partcache::CacheManager::from_url("redis://127.0.0.1:1?partitons=64").unwrap_err();
    assert!(
        matches!(error, Error::Config(ref m) if m.contains("`partitons`")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_balance_report_lists_the_one_server() {
    let url = standalone_url();
    let cache: Cache<String, String> = common::manager(&url)
        .cache(&unique("balance-one"))
        .partitions(7)
        .build()
        .await
        .unwrap();
    cache
        .put_all((0..50).map(|i| (format!("k{i}"), "v".repeat(20))))
        .await
        .unwrap();
    let report = cache.balance_report().await.unwrap();
    assert_eq!(report.masters.len(), 1);
    assert_eq!(report.masters[0].partitions, 7);
    assert_eq!(report.entries(), 50);
    assert!(report.bytes() >= 50 * 20, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_of_one_name_in_two_databases_do_not_hear_each_others_events() {
    let url = standalone_url();
    let name = unique("two-dbs");
    let in_db1: Cache<u64, String> = common::manager(&format!("{url}/1"))
        .cache(&name)
        .build()
        .await
        .unwrap();
    let in_db2: Cache<u64, String> = common::manager(&format!("{url}/2"))
        .cache(&name)
        .build()
        .await
        .unwrap();
    let mut rx = in_db2.listen(partcache::EventFilter::all()).await.unwrap();
    in_db1.put(1, "in db 1".to_string()).await.unwrap();
    assert_eq!(in_db2.get(&1).await.unwrap(), None);
    // A write in db 2 itself is the sentinel: it must be the first event db 2 sees.
    in_db2.put(2, "in db 2".to_string()).await.unwrap();
    let event = partcache::conformance::next_event(&mut rx).await;
    assert_eq!(event.key, 2, "an event of database 1 reached database 2");
}

/// Writers publish an event only while some process listens (`PUBSUB NUMSUB` in the
/// scripts), and a listener that `listen`ed receives every write made after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_publish_only_while_some_process_listens() {
    partcache_redis::install();
    let server =
        tokio::task::block_in_place(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .expect("start server");
    let url = server.url();
    let name = unique("gated");
    let writer: Cache<u64, String> = common::manager(&url).cache(&name).build().await.unwrap();
    // Another manager stands for another process.
    let listener: Cache<u64, String> = common::manager(&url).cache(&name).build().await.unwrap();

    tokio::task::block_in_place(|| server.reset_stats()).expect("reset stats");
    for i in 0..50 {
        writer.put(i, format!("v{i}")).await.unwrap();
    }
    assert!(writer.remove(&0).await.unwrap());
    let stats = tokio::task::block_in_place(|| server.commandstats()).expect("stats");
    assert_eq!(
        stats.get("publish").copied().unwrap_or(0),
        0,
        "nobody listens, yet writes published: {stats:?}"
    );
    assert!(stats.get("fcall").copied().unwrap_or(0) >= 51, "{stats:?}");

    let mut rx = listener
        .listen(partcache::EventFilter::all())
        .await
        .unwrap();
    writer.put(100, "after".to_string()).await.unwrap();
    assert!(writer.remove(&1).await.unwrap());
    let created = partcache::conformance::next_event(&mut rx).await;
    assert_eq!(
        (created.kind, created.key),
        (partcache::EventKind::Created, 100)
    );
    let removed = partcache::conformance::next_event(&mut rx).await;
    assert_eq!(
        (removed.kind, removed.key),
        (partcache::EventKind::Removed, 1)
    );
    let stats = tokio::task::block_in_place(|| server.commandstats()).expect("stats");
    assert_eq!(stats.get("publish").copied(), Some(2), "{stats:?}");
}

/// A put over an entry whose value Redis already expired (its bookkeeping not yet
/// reclaimed) announces that expiry exactly once, then the creation: whether the
/// reaper or the put gets there first, listeners and statistics see the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_over_an_entry_redis_expired_announces_the_expiry_once() {
    partcache_redis::install();
    for max_idle in [None, Some(Duration::from_secs(60))] {
        let mut builder = common::manager(&standalone_url()).cache(&unique("gone"));
        if let Some(idle) = max_idle {
            // A max-idle cache takes the write-first put (common.lua, put_blind).
            builder = builder.max_idle(idle);
        }
        let cache: Cache<u64, String> = builder.build().await.unwrap();
        let mut rx = cache.subscribe(partcache::EventFilter::all());
        cache
            .put_with_ttl(7, "first".to_string(), Duration::from_millis(50))
            .await
            .unwrap();
        let created = partcache::conformance::next_event(&mut rx).await;
        assert_eq!(created.kind, partcache::EventKind::Created);
        partcache::conformance::eventually("Redis expired the value", || async {
            cache.get(&7).await.unwrap().is_none()
        })
        .await;
        cache.put(7, "second".to_string()).await.unwrap();
        let mut kinds = Vec::new();
        loop {
            let event = partcache::conformance::next_event(&mut rx).await;
            kinds.push(event.kind);
            if event.kind == partcache::EventKind::Created {
                assert_eq!(event.value.as_deref().map(String::as_str), Some("second"));
                break;
            }
        }
        assert_eq!(
            kinds,
            [partcache::EventKind::Expired, partcache::EventKind::Created],
            "max_idle {max_idle:?}"
        );
        assert_eq!(cache.stats().expirations, 1, "max_idle {max_idle:?}");
        assert_eq!(
            cache.get(&7).await.unwrap().as_deref().map(String::as_str),
            Some("second")
        );
    }
}

/// JSR-107 §8.3: the events of one key reach a listener in the order the server made
/// them, though the reaper's expirations and the puts that replace the expired entries
/// race (their replies come back to different tasks): see
/// [`common::assert_each_keys_events_in_server_order`].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_key_arrive_in_the_order_the_server_made_them() {
    common::assert_each_keys_events_in_server_order(&format!(
        "{}?response_timeout=10s",
        standalone_url()
    ))
    .await;
}

/// A server that lost partcache's function library (a restart without persistence, a
/// `FUNCTION FLUSH`) gets it loaded again by the next call, which then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lost_the_function_library_gets_it_again() {
    partcache_redis::install();
    let server =
        tokio::task::block_in_place(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .expect("start server");
    let cache: Cache<u64, String> = common::manager(&server.url())
        .cache(&unique("flushed"))
        .max_entries(10_000)
        .build()
        .await
        .unwrap();
    cache.put(1, "one".to_string()).await.unwrap();
    tokio::task::block_in_place(|| {
        let _: String = server.query(&["FUNCTION", "FLUSH"]).expect("flush");
        server.reset_stats()
    })
    .expect("reset stats");
    cache.put(2, "two".to_string()).await.unwrap();
    assert_eq!(
        cache.get(&1).await.unwrap().as_deref().map(String::as_str),
        Some("one")
    );
    let stats = tokio::task::block_in_place(|| server.commandstats()).expect("stats");
    assert_eq!(stats.get("function|load").copied(), Some(1), "{stats:?}");
}

/// A plain put over an entry that had a TTL makes it eternal: when the old deadline
/// passes, the reaper finds the value without a deadline, drops the stale records,
/// and announces and counts nothing (put.lua leaves those records to the reaper).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_put_over_an_entry_with_a_ttl_outlives_the_old_deadline() {
    partcache_redis::install();
    let cache: Cache<u64, String> = common::manager(&standalone_url())
        .cache(&unique("untimed"))
        .build()
        .await
        .unwrap();
    let mut rx = cache.subscribe(partcache::EventFilter::all());
    let ttl = Duration::from_millis(100);
    cache
        .put_with_ttl(3, "with ttl".to_string(), ttl)
        .await
        .unwrap();
    let put_at = Instant::now();
    cache.put(3, "eternal".to_string()).await.unwrap();
    // Well past the old deadline, then a full reaper pass (which must end).
    tokio::time::sleep_until((put_at + ttl * 3).into()).await;
    tokio::time::timeout(Duration::from_secs(5), cache.run_pending_tasks())
        .await
        .expect("a reaper pass ends")
        .unwrap();
    assert_eq!(
        cache.get(&3).await.unwrap().as_deref().map(String::as_str),
        Some("eternal")
    );
    assert_eq!(cache.stats().expirations, 0);
    let mut kinds = Vec::new();
    while let Some(Ok(event)) = rx.try_recv() {
        kinds.push(event.kind);
    }
    assert_eq!(
        kinds,
        [partcache::EventKind::Created, partcache::EventKind::Updated]
    );
}

/// The deadline records (`dl`/`fx` members) of cache `name` on `server`.
fn deadline_records(server: &RedisServer, name: &str) -> u64 {
    tokio::task::block_in_place(|| {
        let keys: Vec<String> = server
            .query(&["KEYS", &format!("pc:*:{name}:dl")])
            .expect("keys");
        keys.iter()
            .map(|k| server.query::<u64>(&["ZCARD", k]).expect("zcard"))
            .sum()
    })
}

/// On a max-idle cache that nobody listens to, an entry whose only deadline is max-idle
/// keeps it in its index score alone, without deadline records (two server calls less
/// per write, `lua/common.lua`, lean): it still expires on time, and the reaper reclaims
/// it through the index and counts it. While someone listens, entries are written
/// with their records, so that their expiry can be announced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_idle_entries_nobody_listens_to_go_without_deadline_records() {
    partcache_redis::install();
    let server = tokio::task::block_in_place(common::standalone);
    // Entry 0 stays live only if each access reaches the server within its max-idle of
    // the one before: a round in which the machine stalled longer judges nothing and
    // runs again with the max-idle doubled (a wrong answer in a round whose timing held
    // fails at once).
    for scale in [1, 2, 4, 8] {
        match max_idle_round(server, Duration::from_millis(300) * scale).await {
            Ok(()) => return,
            Err(late) => eprintln!("{late} with max-idle x{scale}; again at x{}", scale * 2),
        }
    }
    panic!("the accesses ran late even with a max-idle of 2.4 s");
}

/// One round of [`max_idle_entries_nobody_listens_to_go_without_deadline_records`];
/// `Err` if an access came too late for the verdict on entry 0 to mean anything.
async fn max_idle_round(server: &RedisServer, idle: Duration) -> Result<(), String> {
    let name = unique("lean");
    let cache: Cache<u64, String> = common::manager(&server.url())
        .cache(&name)
        .max_idle(idle)
        .max_entries(10_000)
        .build()
        .await
        .unwrap();
    for k in 1..50 {
        cache.put(k, format!("v{k}")).await.unwrap();
    }
    // A TTL is a fixed deadline: that entry has its records.
    cache
        .put_with_ttl(100, "ttl".to_string(), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(deadline_records(server, &name), 1);

    // Keep entry 0 in use while the others pass their max-idle. The server saw the
    // previous access no earlier than `sent` and this one no later than its reply.
    let mut sent = Instant::now();
    cache.put(0, "v0".to_string()).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < idle * 4 {
        tokio::time::sleep(idle / 4).await;
        let now = Instant::now();
        let live = cache.get(&0).await.unwrap().is_some();
        if sent.elapsed() >= idle {
            return Err(format!(
                "an access came {:?} after the one before",
                sent.elapsed()
            ));
        }
        assert!(live, "a used entry expired");
        sent = now;
    }
    assert_eq!(cache.get(&1).await.unwrap(), None);
    assert!(!cache.contains_key(&2).await.unwrap());
    tokio::time::timeout(Duration::from_secs(10), cache.run_pending_tasks())
        .await
        .expect("a reaper pass ends")
        .unwrap();
    let (len, expirations) = (cache.len().await.unwrap(), cache.stats().expirations);
    if sent.elapsed() >= idle {
        return Err(format!(
            "the count came {:?} after the last access",
            sent.elapsed()
        ));
    }
    // Entry 100 outlived its max-idle too (it was not read): its records went with it.
    assert_eq!(len, 1, "only the entry in use is left");
    assert_eq!(expirations, 50);
    assert_eq!(deadline_records(server, &name), 0);

    // With a listener, writes keep the records, and the expiry reaches it.
    let mut rx = cache.subscribe(partcache::EventFilter::kinds([
        partcache::EventKind::Expired,
    ]));
    cache.put(200, "watched".to_string()).await.unwrap();
    assert_eq!(deadline_records(server, &name), 1);
    let expired = partcache::conformance::next_event(&mut rx).await;
    // Entry 0, written while nobody listened, expires unannounced meanwhile.
    assert_eq!(
        (expired.kind, expired.key),
        (partcache::EventKind::Expired, 200)
    );
    Ok(())
}

/// Starts `n` gets of `keys` at once (behind a barrier) and returns each one's result and
/// how long it took.
async fn concurrent_gets(
    cache: &Cache<u64, String>,
    keys: impl Iterator<Item = u64>,
) -> Vec<(
    u64,
    partcache::Result<Option<std::sync::Arc<String>>>,
    Duration,
)> {
    let keys: Vec<u64> = keys.collect();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(keys.len()));
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|k| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let start = Instant::now();
                let got = cache.get(&k).await;
                (k, got, start.elapsed())
            })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.expect("get task"));
    }
    out
}

/// On a standalone server, one-key reads that arrive while another is on its way wait
/// for it and then go together as one `MGET` (`coalesce.rs`): 64 concurrent gets cost
/// the server a handful of commands, and each caller gets its own key's value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_on_a_standalone_server_share_mgets() {
    partcache_redis::install();
    let server =
        tokio::task::block_in_place(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .expect("start server");
    let cache: Cache<u64, String> = common::manager(&server.url())
        .cache(&unique("coalesced"))
        .build()
        .await
        .unwrap();
    for k in (0..64).step_by(2) {
        cache.put(k, format!("v{k}")).await.unwrap();
    }
    tokio::task::block_in_place(|| server.reset_stats()).expect("reset stats");
    for (k, got, _) in concurrent_gets(&cache, 0..64).await {
        let expected = (k % 2 == 0).then(|| format!("v{k}"));
        assert_eq!(got.unwrap().as_deref().cloned(), expected, "key {k}");
    }
    let stats = tokio::task::block_in_place(|| server.commandstats()).expect("stats");
    let (gets, mgets) = (
        stats.get("get").copied().unwrap_or(0),
        stats.get("mget").copied().unwrap_or(0),
    );
    assert!(mgets >= 1, "{stats:?}");
    assert!(
        gets + mgets < 32,
        "64 reads took {gets} GETs and {mgets} MGETs"
    );
    assert_eq!(cache.stats().hits, 32);
    assert_eq!(cache.stats().misses, 32);
}

/// Reads that queued behind a read the server never answers fail with it, within one
/// response timeout of their start, rather than wait for a second timeout of their
/// own; once the server answers again, reads work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_reads_on_a_silent_server_fail_within_the_response_timeout() {
    partcache_redis::install();
    let server =
        tokio::task::block_in_place(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .expect("start server");
    let timeout = Duration::from_millis(500);
    let cache: Cache<u64, String> = common::manager(&format!(
        "{}?response_timeout={}ms",
        server.url(),
        timeout.as_millis()
    ))
    .cache(&unique("silent-coalesced"))
    .build()
    .await
    .unwrap();
    cache.put(1, "one".to_string()).await.unwrap();
    tokio::task::block_in_place(|| server.pause()).expect("pause");
    for (k, got, took) in concurrent_gets(&cache, 0..16).await {
        assert!(
            matches!(got, Err(Error::Timeout(_) | Error::Unavailable(_))),
            "key {k}: {got:?}"
        );
        assert!(
            took < timeout + Duration::from_millis(400),
            "key {k} took {took:?}"
        );
    }
    tokio::task::block_in_place(|| server.resume()).expect("resume");
    partcache::conformance::eventually("reads work again", || async {
        matches!(cache.get(&1).await, Ok(Some(v)) if v.as_str() == "one")
    })
    .await;
}

/// Common puts that arrive while another is on its way to the same node wait for it
/// and then go together in one call (`coalesce/puts.rs`): 64 concurrent puts cost the
/// server a handful of calls, every one is stored, and another process listening to
/// the cache hears every creation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_to_one_node_share_calls_and_announce_every_entry() {
    partcache_redis::install();
    let server =
        tokio::task::block_in_place(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .expect("start server");
    let name = unique("coalesced-puts");
    let cache: Cache<u64, String> = common::manager(&server.url())
        .cache(&name)
        .build()
        .await
        .unwrap();
    // Another process: its own manager, connections and origin.
    let other: Cache<u64, String> = common::manager(&server.url())
        .cache(&name)
        .build()
        .await
        .unwrap();
    let mut heard = other
        .listen(partcache::EventFilter::kinds([
            partcache::EventKind::Created,
        ]))
        .await
        .unwrap();
    tokio::task::block_in_place(|| server.reset_stats()).expect("reset stats");
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64u64)
        .map(|k| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                cache.put(k, format!("v{k}")).await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("put task").unwrap();
    }
    let stats = tokio::task::block_in_place(|| server.commandstats()).expect("stats");
    let calls = stats.get("fcall").copied().unwrap_or(0);
    assert!(calls < 32, "64 puts took {calls} calls: {stats:?}");
    assert_eq!(cache.stats().puts, 64);
    let keys: Vec<u64> = (0..64).collect();
    let values = cache.get_all(&keys).await.unwrap();
    for (k, v) in keys.iter().zip(values) {
        assert_eq!(v.as_deref().cloned(), Some(format!("v{k}")), "key {k}");
    }
    let mut created = std::collections::BTreeSet::new();
    while created.len() < 64 {
        let event = partcache::conformance::next_event(&mut heard).await;
        assert!(
            created.insert(event.key),
            "key {} announced twice",
            event.key
        );
    }
}

/// Concurrent puts of two caches share the node's batches (`lua/put_batch.lua`): one
/// that publishes, with few partitions (so that the batch finds its channels among the
/// few that have subscribers, `begin_batch` in `lua/common.lua`), and one that does
/// not. Another process listening to the first hears every creation and then every
/// update, and nothing of the second; every value is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_puts_of_a_listened_and_a_silent_cache_announce_only_the_listened() {
    partcache_redis::install();
    let server =
        tokio::task::block_in_place(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .expect("start server");
    let (loud, quiet) = (unique("loud"), unique("quiet"));
    let manager = common::manager(&server.url());
    let cache: Cache<u64, String> = manager.cache(&loud).partitions(3).build().await.unwrap();
    let silent: Cache<u64, String> = manager
        .cache(&quiet)
        .publish_events(false)
        .build()
        .await
        .unwrap();
    let other: Cache<u64, String> = common::manager(&server.url())
        .cache(&loud)
        .partitions(3)
        .build()
        .await
        .unwrap();
    let mut heard = other.listen(partcache::EventFilter::all()).await.unwrap();
    for round in 0..2 {
        tokio::task::block_in_place(|| server.reset_stats()).expect("reset stats");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
        let tasks: Vec<_> = (0..64u64)
            .map(|k| {
                let (cache, silent, barrier) = (cache.clone(), silent.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    if k % 2 == 0 {
                        cache.put(k, format!("v{k}.{round}")).await
                    } else {
                        silent.put(k, format!("v{k}.{round}")).await
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("put task").unwrap();
        }
        let stats = tokio::task::block_in_place(|| server.commandstats()).expect("stats");
        let calls = stats.get("fcall").copied().unwrap_or(0);
        assert!(calls < 32, "64 puts took {calls} calls: {stats:?}");
        for k in 0..64u64 {
            let read = if k % 2 == 0 {
                cache.get(&k).await
            } else {
                silent.get(&k).await
            };
            assert_eq!(
                read.unwrap().as_deref().cloned(),
                Some(format!("v{k}.{round}"))
            );
        }
        let kind = if round == 0 {
            partcache::EventKind::Created
        } else {
            partcache::EventKind::Updated
        };
        let mut keys = std::collections::BTreeSet::new();
        while keys.len() < 32 {
            let event = partcache::conformance::next_event(&mut heard).await;
            assert_eq!(event.kind, kind, "round {round}: {:?}", event.key);
            assert!(
                event.key % 2 == 0,
                "the silent cache's key {} was announced",
                event.key
            );
            assert!(keys.insert(event.key), "key {} announced twice", event.key);
        }
    }
}

/// Concurrent puts on an evicting cache with few partitions (`lua/upsert_batch.lua`,
/// which names its entries' channels only when some have subscribers): another
/// process listening hears every creation and every eviction, and the budget holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_puts_on_an_evicting_cache_announce_creations_and_evictions() {
    partcache_redis::install();
    let server =
        tokio::task::block_in_place(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .expect("start server");
    let name = unique("evicting-loud");
    let cache: Cache<u64, String> = common::manager(&server.url())
        .cache(&name)
        .partitions(3)
        .max_entries(30)
        .build()
        .await
        .unwrap();
    let other: Cache<u64, String> = common::manager(&server.url())
        .cache(&name)
        .partitions(3)
        .max_entries(30)
        .build()
        .await
        .unwrap();
    let mut heard = other.listen(partcache::EventFilter::all()).await.unwrap();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64u64)
        .map(|k| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                cache.put(k, format!("v{k}")).await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("put task").unwrap();
    }
    let len = cache.len().await.unwrap();
    assert!(len <= 30, "{len} entries over a budget of 30");
    let evicted = cache.stats().evictions;
    assert_eq!(evicted, 64 - len);
    let (mut created, mut gone) = (std::collections::BTreeSet::new(), 0);
    while created.len() < 64 || gone < evicted {
        let event = partcache::conformance::next_event(&mut heard).await;
        match event.kind {
            partcache::EventKind::Created => assert!(created.insert(event.key)),
            partcache::EventKind::Evicted => gone += 1,
            other => panic!("unexpected {other:?} of {}", event.key),
        }
    }
    assert_eq!(gone, evicted);
}

/// An upsert batch (`lua/upsert_batch.lua`) voids the lease of a key it creates, as a
/// put by itself does (a load that read the system of record before the put must not
/// be stored after it), creates no lease for a key that had none (its check says so,
/// and the void is skipped), and evicts the least recently used entry beyond the
/// budget, keeping the others' index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_batch_voids_the_lease_of_a_key_it_creates_and_evicts_beyond_the_budget() {
    partcache_redis::install();
    let server =
        tokio::task::block_in_place(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .expect("start server");
    let name = unique("upsert-batch-lease");
    let cache: Cache<u64, String> = common::manager(&server.url())
        .cache(&name)
        .partitions(3)
        .max_entries(3)
        .build()
        .await
        .unwrap();
    // Loads the function library, and leaves the partitions empty.
    cache.put(1, "one".to_string()).await.unwrap();
    cache.clear().await.unwrap();
    let listing: redis::Value =
        tokio::task::block_in_place(|| server.query(&["FUNCTION", "LIST"])).unwrap();
    let upsert_batch =
        super::cluster::function_named(&listing, "_upsert_batch").expect("upsert_batch is loaded");
    let map = cache.partition_map().unwrap().clone();
    let prefix = format!("pc:{{{}}}:{name}:", map.tag(0));
    let query = |args: &[&str]| -> redis::Value {
        tokio::task::block_in_place(|| server.query(args)).unwrap()
    };
    query(&["SET", &format!("{prefix}l:t2"), "token@1", "PX", "60000"]);
    // Settings: eternal, no max-idle, a budget of one; no events. Then per entry:
    // prefix, text, blob, ttl, key-only blob.
    let replies: Vec<i64> = tokio::task::block_in_place(|| {
        server.query(&[
            "FCALL",
            &upsert_batch,
            "0",
            "0",
            "0",
            "-1",
            "1",
            "origin",
            "ev",
            "0",
            &prefix,
            "t1",
            "b1",
            "-1",
            "k1",
            &prefix,
            "t2",
            "b2",
            "-1",
            "k2",
        ])
    })
    .unwrap();
    // Created and applied (2), then created, applied and one eviction (2 + 4).
    assert_eq!(replies, [2, 6]);
    let lease: Option<String> =
        tokio::task::block_in_place(|| server.query(&["GET", &format!("{prefix}l:t2")])).unwrap();
    assert_eq!(lease.as_deref(), Some("x"), "the lease of t2 is voided");
    let leased: i64 =
        tokio::task::block_in_place(|| server.query(&["EXISTS", &format!("{prefix}l:t1")]))
            .unwrap();
    assert_eq!(leased, 0, "no lease made for t1");
    let index: Vec<String> = tokio::task::block_in_place(|| {
        server.query(&["ZRANGE", &format!("{prefix}ix"), "0", "-1"])
    })
    .unwrap();
    assert_eq!(index, ["t2"]);
    let evicted: Option<String> =
        tokio::task::block_in_place(|| server.query(&["GET", &format!("{prefix}e:t1")])).unwrap();
    assert_eq!(evicted, None);
}

/// A standalone server with the function library loaded and an evicting cache of three
/// partitions and `max_entries` (a budget of `max_entries / 3` per partition), empty:
/// the server, the `upsert_batch` function's name and the key prefixes of partitions 0
/// and 1.
async fn upsert_batch_fixture(max_entries: u64) -> (RedisServer, String, String, String) {
    partcache_redis::install();
    let server =
        tokio::task::block_in_place(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .expect("start server");
    let name = unique("upsert-batch-budget");
    let cache: Cache<u64, String> = common::manager(&server.url())
        .cache(&name)
        .partitions(3)
        .max_entries(max_entries)
        .build()
        .await
        .unwrap();
    // Loads the function library, and leaves the partitions empty.
    cache.put(1, "one".to_string()).await.unwrap();
    cache.clear().await.unwrap();
    let listing: redis::Value =
        tokio::task::block_in_place(|| server.query(&["FUNCTION", "LIST"])).unwrap();
    let upsert_batch =
        super::cluster::function_named(&listing, "_upsert_batch").expect("upsert_batch is loaded");
    let map = cache.partition_map().unwrap().clone();
    let prefix = |p: u16| format!("pc:{{{}}}:{name}:", map.tag(p));
    let (p0, p1) = (prefix(0), prefix(1));
    (server, upsert_batch, p0, p1)
}

/// Calls `upsert_batch` (eternal, no max-idle, a budget of `budget`, events published
/// with `PUBLISH`) with `entries` of (prefix, text, blob, ttl ms); the packed replies.
fn upsert_batch(
    server: &RedisServer,
    function: &str,
    budget: u64,
    entries: &[(&str, &str, &str, &str)],
) -> Vec<i64> {
    let budget = budget.to_string();
    let mut args = vec![
        "FCALL", function, "0", "0", "0", "-1", &budget, "origin", "ev", "1",
    ];
    for (prefix, text, blob, ttl) in entries {
        args.extend([*prefix, *text, *blob, *ttl, *blob]);
    }
    tokio::task::block_in_place(|| server.query(&args)).unwrap()
}

/// The evictions a packed write reply counts (`lua/common.lua`, write_reply).
fn evictions(replies: &[i64]) -> i64 {
    replies.iter().map(|r| (r >> 2) & 0xffff).sum()
}

/// The texts of a partition's index, least recently used first.
fn index(server: &RedisServer, prefix: &str) -> Vec<String> {
    tokio::task::block_in_place(|| server.query(&["ZRANGE", &format!("{prefix}ix"), "0", "-1"]))
        .unwrap()
}

fn value(server: &RedisServer, prefix: &str, text: &str) -> Option<String> {
    tokio::task::block_in_place(|| server.query(&["GET", &format!("{prefix}e:{text}")])).unwrap()
}

/// One upsert batch that creates more entries in a partition than its budget (which
/// evicts once per partition, after the partition's last entry of the batch) leaves
/// what the same puts leave one at a time: exactly the newest entries within the
/// budget, in the order written; every eviction is counted once in the replies and
/// announced once (an `Evicted` message with the evicted value), and the other
/// partition's entry is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_batch_beyond_the_budget_keeps_the_newest_and_counts_each_eviction_once() {
    let (server, function, p0, p1) = upsert_batch_fixture(6).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut listener = tokio::task::block_in_place(|| client.get_connection()).unwrap();
    let mut pubsub = listener.as_pubsub();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    tokio::task::block_in_place(|| pubsub.subscribe(format!("{p0}ev"))).unwrap();
    let before = upsert_batch(
        &server,
        &function,
        2,
        &[(&p0, "o1", "bo1", "-1"), (&p0, "o2", "bo2", "-1")],
    );
    assert_eq!(evictions(&before), 0);
    let replies = upsert_batch(
        &server,
        &function,
        2,
        &[
            (&p0, "t1", "bt1", "-1"),
            (&p0, "t2", "bt2", "-1"),
            (&p1, "u1", "bu1", "-1"),
            (&p0, "t3", "bt3", "-1"),
            (&p0, "t4", "bt4", "-1"),
            (&p0, "t5", "bt5", "-1"),
        ],
    );
    assert!(
        replies.iter().all(|r| r & 3 == 2),
        "every put a creation: {replies:?}"
    );
    assert_eq!(evictions(&replies), 5, "{replies:?}");
    assert_eq!(index(&server, &p0), ["t4", "t5"]);
    assert_eq!(index(&server, &p1), ["u1"]);
    for text in ["o1", "o2", "t1", "t2", "t3"] {
        assert_eq!(value(&server, &p0, text), None, "{text} was evicted");
    }
    assert_eq!(value(&server, &p0, "t5").as_deref(), Some("bt5"));
    // `<kind><number>:<origin>:<blob>`: two creations, then five creations and five
    // evictions.
    let mut evicted = Vec::new();
    let mut created = 0;
    while created < 7 || evicted.len() < 5 {
        let message = tokio::task::block_in_place(|| pubsub.get_message())
            .expect("a message within the read timeout");
        let payload: String = message.get_payload().unwrap();
        let blob = payload
            .splitn(3, ':')
            .nth(2)
            .unwrap_or_default()
            .to_string();
        match payload.as_bytes().first() {
            Some(b'C') => created += 1,
            Some(b'V') => evicted.push(blob),
            _ => panic!("unexpected message {payload}"),
        }
    }
    evicted.sort();
    assert_eq!(evicted, ["bo1", "bo2", "bt1", "bt2", "bt3"]);
}

/// An eviction of several entries whose values are partly gone already (dropped by
/// Redis, as its own expiry or memory eviction does) counts exactly: the entries it
/// takes out count as evictions, those it finds without a value as expirations on a
/// max-idle cache (whose values Redis expires) and not at all without one, and every
/// victim leaves the index, however many victims one write takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_of_several_entries_counts_those_already_gone_apart() {
    let (server, function, p0, _) = upsert_batch_fixture(6).await;
    let drop_value = |text: &str| {
        tokio::task::block_in_place(|| server.query::<i64>(&["DEL", &format!("{p0}e:{text}")]))
            .unwrap();
    };
    // Settings: eternal, max-idle `idle`, a budget of two, no events; then per entry:
    // prefix, text, blob, ttl, key-only blob. The packed replies.
    let call = |idle: &str, texts: &[&str]| -> Vec<i64> {
        let mut args = vec![
            "FCALL", &function, "0", "0", "0", idle, "2", "origin", "ev", "0",
        ];
        for text in texts {
            args.extend([p0.as_str(), *text, "blob", "-1", "key"]);
        }
        tokio::task::block_in_place(|| server.query(&args)).unwrap()
    };
    let expirations = |replies: &[i64]| -> i64 { replies.iter().map(|r| r >> 18).sum() };
    for idle in ["600000", "-1"] {
        let replies = call(idle, &["o1", "o2"]);
        assert_eq!(evictions(&replies), 0);
        drop_value("o1");
        // Three creations over a budget of two: o1 (gone), o2 and t1 are the victims.
        let replies = call(idle, &["t1", "t2", "t3"]);
        assert_eq!(evictions(&replies), 2, "o2 and t1: {replies:?}");
        let expired = if idle == "-1" { 0 } else { 1 };
        assert_eq!(expirations(&replies), expired, "o1: {replies:?}");
        assert_eq!(index(&server, &p0), ["t2", "t3"]);
        for text in ["o2", "t1"] {
            assert_eq!(value(&server, &p0, text), None, "{text} was evicted");
        }
        // Emptied for the next round (the index and the values).
        tokio::task::block_in_place(|| {
            server.query::<i64>(&[
                "DEL",
                &format!("{p0}ix"),
                &format!("{p0}e:t2"),
                &format!("{p0}e:t3"),
            ])
        })
        .unwrap();
    }
}

/// The names of a partition's keys that the functions keep from call to call (and
/// forget all at once past a bound) stay the partition's own: after batches through
/// more partitions than are kept (here 2,100 others, one entry each), a batch on a
/// partition named before them and since forgotten finds its lease and its records,
/// evicts exactly its least recently used entry, and leaves the other partitions
/// their entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_named_across_many_calls_keep_their_budgets_leases_and_records() {
    let (server, function, p0, p1) = upsert_batch_fixture(6).await;
    let replies = upsert_batch(
        &server,
        &function,
        2,
        &[(&p0, "o1", "bo1", "-1"), (&p0, "o2", "bo2", "-1")],
    );
    assert_eq!(evictions(&replies), 0);
    // Many other partitions (key prefixes of another cache name), in calls of 300.
    let others: Vec<String> = (0..2100).map(|i| format!("pc:{{x{i}}}:other:")).collect();
    for chunk in others.chunks(300) {
        let entries: Vec<(&str, &str, &str, &str)> = chunk
            .iter()
            .map(|p| (p.as_str(), "a", "ba", "-1"))
            .collect();
        let replies = upsert_batch(&server, &function, 2, &entries);
        assert!(
            replies.iter().all(|&r| r == 2),
            "each a creation: {replies:?}"
        );
    }
    // A lease on a key of p0 that the next batch creates, and a record of p1 (an
    // entry put with a TTL) that the next batch finds and drops on an update.
    tokio::task::block_in_place(|| {
        server.query::<()>(&["SET", &format!("{p0}l:t1"), "token@1", "PX", "60000"])
    })
    .unwrap();
    upsert_batch(&server, &function, 2, &[(&p1, "u1", "bu1", "600000")]);
    let records = |p: &str| -> i64 {
        tokio::task::block_in_place(|| server.query(&["HLEN", &format!("{p}fx")])).unwrap()
    };
    assert_eq!(records(&p1), 1);
    let replies = upsert_batch(
        &server,
        &function,
        2,
        &[(&p0, "t1", "bt1", "-1"), (&p1, "u1", "bu1b", "-1")],
    );
    // A creation with one eviction (2 + 4), and an update (existed and applied: 3).
    assert_eq!(replies, [6, 3]);
    assert_eq!(index(&server, &p0), ["o2", "t1"]);
    assert_eq!(value(&server, &p0, "o1"), None);
    let lease: Option<String> =
        tokio::task::block_in_place(|| server.query(&["GET", &format!("{p0}l:t1")])).unwrap();
    assert_eq!(lease.as_deref(), Some("x"), "the lease of t1 is voided");
    assert_eq!(
        records(&p1),
        0,
        "the update without a TTL dropped u1's record"
    );
    for p in [&others[0], &others[2099]] {
        assert_eq!(index(&server, p), ["a"]);
        assert_eq!(value(&server, p, "a").as_deref(), Some("ba"));
    }
}

/// A batch that creates an entry, updates another it created, and puts a third: the
/// entries left and their LRU order are those of the same puts one at a time (the
/// update makes its entry the most recently used, so the budget evicts the older
/// ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_batch_that_creates_and_updates_a_key_leaves_the_lru_order_of_its_writes() {
    let (server, function, p0, _) = upsert_batch_fixture(6).await;
    upsert_batch(
        &server,
        &function,
        2,
        &[(&p0, "o1", "bo1", "-1"), (&p0, "o2", "bo2", "-1")],
    );
    let replies = upsert_batch(
        &server,
        &function,
        2,
        &[
            (&p0, "x", "bx1", "-1"),
            (&p0, "y", "by", "-1"),
            (&p0, "x", "bx2", "-1"),
        ],
    );
    assert_eq!(evictions(&replies), 2, "{replies:?}");
    assert_eq!(index(&server, &p0), ["y", "x"]);
    assert_eq!(value(&server, &p0, "x").as_deref(), Some("bx2"));
    assert_eq!(value(&server, &p0, "o2"), None);
}

/// A batch whose update of an entry it created has a zero expiry (which removes the
/// entry) evicts first what the creation evicted one put at a time: the entry that was
/// there before does not get the room back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upsert_batch_removing_an_entry_it_created_leaves_what_one_put_at_a_time_leaves() {
    let (server, function, p0, _) = upsert_batch_fixture(3).await;
    upsert_batch(&server, &function, 1, &[(&p0, "a", "ba", "-1")]);
    let replies = upsert_batch(
        &server,
        &function,
        1,
        &[(&p0, "b", "bb1", "-1"), (&p0, "b", "bb2", "0")],
    );
    assert_eq!(evictions(&replies), 1, "{replies:?}");
    assert_eq!(index(&server, &p0), Vec::<String>::new());
    assert_eq!(
        value(&server, &p0, "a"),
        None,
        "a was evicted by b's creation"
    );
    assert_eq!(value(&server, &p0, "b"), None, "b expired at its update");
}

/// `put_all` of more entries than a partition's budget (`lua/put_many.lua`, one call
/// per partition, which evicts once after its writes): the cache keeps its budget
/// exactly, each eviction is counted once, and every entry left holds its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_all_beyond_the_budget_keeps_it_and_counts_each_eviction_once() {
    let cache: Cache<u64, String> = common::manager(&standalone_url())
        .cache(&unique("put-all-budget"))
        .partitions(3)
        .max_entries(6)
        .build()
        .await
        .unwrap();
    cache
        .put_all((0..60u64).map(|k| (k, format!("v{k}"))))
        .await
        .unwrap();
    assert_eq!(cache.len().await.unwrap(), 6);
    assert_eq!(cache.stats().evictions, 54);
    let keys: Vec<u64> = (0..60).collect();
    let values = cache.get_all(&keys).await.unwrap();
    let mut found = 0;
    for (k, v) in keys.iter().zip(values) {
        if let Some(v) = v {
            assert_eq!(*v, format!("v{k}"));
            found += 1;
        }
    }
    assert_eq!(found, 6);
}

/// The function library keeps the settings it last read from one call to the next (so
/// as not to read the same ones again): a call of a cache with other settings in
/// between (here the common put of a cache without a budget, which runs with default
/// settings) must not leave its settings to the next call of the evicting cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_of_another_cache_in_between_leave_each_cache_its_own_budget() {
    partcache_redis::install();
    let server =
        tokio::task::block_in_place(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .expect("start server");
    let manager = common::manager(&server.url());
    let evicting: Cache<u64, String> = manager
        .cache(&unique("settings-evicting"))
        .partitions(3)
        .max_entries(3)
        .build()
        .await
        .unwrap();
    let plain: Cache<u64, String> = manager
        .cache(&unique("settings-plain"))
        .build()
        .await
        .unwrap();
    for k in 0..30u64 {
        evicting.put(k, format!("v{k}")).await.unwrap();
        plain.put(k, format!("v{k}")).await.unwrap();
    }
    assert_eq!(evicting.len().await.unwrap(), 3);
    assert_eq!(evicting.stats().evictions, 27);
    assert_eq!(plain.len().await.unwrap(), 30);
}

/// A process that opens a cache with a much smaller `max_entries` than the one that
/// filled it evicts, on its next creation in a partition, everything beyond the new
/// budget at once: here about 9,000 entries in one call (more than Lua unpacks in one
/// go), which must neither fail the write nor leave evicted entries in the index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_much_lowered_budget_evicts_thousands_in_one_write() {
    partcache_redis::install();
    let server =
        tokio::task::block_in_place(|| RedisServer::start(Flavor::Redis, ServerOptions::default()))
            .expect("start server");
    let name = unique("lowered-budget");
    let big: Cache<u64, String> = common::manager(&server.url())
        .cache(&name)
        .partitions(3)
        .max_entries(30_000)
        .build()
        .await
        .unwrap();
    let keys: Vec<u64> = (0..27_000).collect();
    for chunk in keys.chunks(5000) {
        big.put_all(chunk.iter().map(|&k| (k, String::new())))
            .await
            .unwrap();
    }
    assert_eq!(big.len().await.unwrap(), 27_000);
    let small: Cache<u64, String> = common::manager(&server.url())
        .cache(&name)
        .partitions(3)
        .max_entries(3)
        .build()
        .await
        .unwrap();
    // Thirty creations: every partition gets some (the partitions of these keys are
    // fixed), the first in each evicting some 9,000 entries.
    for k in 100_000..100_030u64 {
        small.put(k, format!("v{k}")).await.unwrap();
    }
    assert_eq!(small.len().await.unwrap(), 3);
    assert_eq!(small.stats().evictions, 27_030 - 3);
    let last = small.get(&100_029).await.unwrap();
    assert_eq!(last.as_deref().map(String::as_str), Some("v100029"));
}

/// A flood of concurrent puts and reads on one node keeps the batching queues within
/// `max_pending_batched` and `max_pending_batched_bytes`: what does not fit is sent
/// alone (every put is stored, every read answered) and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_puts_and_reads_keeps_the_batching_queues_bounded() {
    const CALLS: u64 = 4_000;
    const MAX: u64 = 32;
    const MAX_BYTES: u64 = 16 * 1024;
    // A long response timeout: 4,000 concurrent calls on a loaded machine may take
    // longer than the default second; the bound is what this checks.
    let url = format!(
        "{}?max_pending_batched={MAX}&max_pending_batched_bytes={MAX_BYTES}&response_timeout=10s",
        standalone_url()
    );
    let cache: Cache<u64, String> = common::manager(&url)
        .cache(&unique("flood"))
        .build()
        .await
        .unwrap();
    let store = cache
        .raw_store()
        .and_then(|raw| raw.as_any().downcast_ref::<partcache_redis::RedisStore>())
        .expect("a Redis store");
    // About 1 KiB a value: the byte limit holds fewer than the count limit's puts.
    let value = |k: u64| format!("{k}:{}", "x".repeat(1000));
    let puts: Vec<_> = (0..CALLS)
        .map(|k| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.put(k, value(k)).await })
        })
        .collect();
    for put in futures::future::join_all(puts).await {
        put.expect("put task").unwrap();
    }
    let after_puts = store.batching_stats();
    let gets: Vec<_> = (0..CALLS)
        .map(|k| {
            let cache = cache.clone();
            tokio::spawn(async move { (k, cache.get(&k).await) })
        })
        .collect();
    for get in futures::future::join_all(gets).await {
        let (k, got) = get.expect("get task");
        assert_eq!(got.unwrap().as_deref().cloned(), Some(value(k)), "key {k}");
    }
    let stats = store.batching_stats();
    assert!(
        after_puts.peak_pending > 1,
        "the flood was batched at all: {after_puts:?}"
    );
    assert!(stats.peak_pending <= MAX, "{stats:?}");
    assert!(stats.peak_pending_bytes <= MAX_BYTES, "{stats:?}");
    assert!(
        after_puts.sent_alone > 0 && stats.sent_alone > after_puts.sent_alone,
        "puts and reads that did not fit went alone: {after_puts:?} then {stats:?}"
    );
    assert_eq!((stats.pending, stats.pending_bytes), (0, 0), "{stats:?}");
    assert_eq!(cache.stats().puts, CALLS);
}

/// Unconditional puts on an evicting cache (`lua/upsert.lua`) that arrive while
/// another is on its way go together in one call (`upsert_batch`), on Redis and on
/// Valkey: the server sees a handful of calls for 640 puts, the budget holds, every
/// eviction is counted, and the last value of every key left is the one put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_on_an_evicting_cache_share_calls_and_keep_the_budget() {
    partcache_redis::install();
    let mut flavors = vec![partcache_integration_tests::RedisBinaries::redis().expect("redis")];
    flavors.extend(partcache_integration_tests::RedisBinaries::valkey_or_skip(
        "concurrent_puts_on_an_evicting_cache_share_calls_and_keep_the_budget (valkey)",
    ));
    for binaries in flavors {
        let flavor = binaries.flavor().name();
        let server = tokio::task::block_in_place(|| {
            RedisServer::start_with(&binaries, ServerOptions::default())
        })
        .expect("start server");
        let max = 2 * u64::from(partcache::partition::DEFAULT_PARTITIONS);
        let cache: Cache<u64, String> = common::manager(&server.url())
            .cache(&unique("evicting-batch"))
            .max_entries(max)
            .max_idle(Duration::from_secs(600))
            .build()
            .await
            .unwrap();
        tokio::task::block_in_place(|| server.reset_stats()).expect("reset stats");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let (cache, barrier) = (cache.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    for i in 0..10 {
                        let k = t * 10 + i;
                        cache.put(k, format!("v{k}")).await?;
                    }
                    Ok::<_, Error>(())
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("put task").unwrap();
        }
        let stats = tokio::task::block_in_place(|| server.commandstats()).expect("stats");
        let calls = stats.get("fcall").copied().unwrap_or(0);
        assert!(calls < 320, "{flavor}: 640 puts took {calls} calls");
        let len = cache.len().await.unwrap();
        assert!(len <= max, "{flavor}: {len} entries over a budget of {max}");
        assert_eq!(cache.stats().evictions, 640 - len, "{flavor}");
        let keys: Vec<u64> = (0..640).collect();
        let values = cache.get_all(&keys).await.unwrap();
        let mut found = 0;
        for (k, v) in keys.iter().zip(values) {
            if let Some(v) = v {
                assert_eq!(*v, format!("v{k}"), "{flavor}");
                found += 1;
            }
        }
        assert_eq!(found, len, "{flavor}");
        println!("{flavor}: 640 puts in {calls} calls, {len} entries left");
    }
}

/// A cache used from a runtime that shut down while coalesced reads and puts were
/// queued (a test runtime ending, say) still works from the next runtime: the queues
/// those runtimes' tasks held are released, not left waiting behind nobody.
#[test]
fn coalescing_survives_a_runtime_that_shut_down_mid_flight() {
    partcache_redis::install();
    let server = RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start");
    let url = format!("{}?response_timeout=2s", server.url());
    let manager = common::manager(&url);
    let first = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (reads, writes) = first.block_on(async {
        let reads: Cache<u64, String> = manager.cache(&unique("rt-reads")).build().await.unwrap();
        let writes: Cache<u64, String> = manager.cache(&unique("rt-puts")).build().await.unwrap();
        reads.put(1, "one".to_string()).await.unwrap();
        (reads, writes)
    });
    // Requests that will not be answered before the runtime goes: the first of each
    // kind on its way, the others queued behind it.
    server.pause().expect("pause");
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for k in 0..16u64 {
        let (reads, writes) = (reads.clone(), writes.clone());
        let (a, b) = (started.clone(), started.clone());
        first.spawn(async move {
            a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            reads.get(&k).await
        });
        first.spawn(async move {
            b.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            writes.put(k, "v".to_string()).await
        });
    }
    // Every request has started (and, having nothing to wait for before it, is on its
    // way or queued) before the runtime goes.
    first.block_on(partcache::conformance::eventually(
        "the requests started",
        || {
            let started = started.clone();
            async move { started.load(std::sync::atomic::Ordering::SeqCst) == 32 }
        },
    ));
    first.shutdown_background();
    server.resume().expect("resume");

    let second = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    second.block_on(async {
        partcache::conformance::eventually("reads work from the new runtime", || async {
            matches!(reads.get(&1).await, Ok(Some(v)) if v.as_str() == "one")
        })
        .await;
        partcache::conformance::eventually("puts work from the new runtime", || async {
            writes.put(99, "w".to_string()).await.is_ok()
        })
        .await;
    });
}

/// The keys of cache `name` on `server` (the layout record and reaping claims aside).
fn cache_keys(server: &RedisServer, name: &str) -> Vec<String> {
    tokio::task::block_in_place(|| {
        let keys: Vec<String> = server
            .query(&["KEYS", &format!("pc:*:{name}:*")])
            .expect("keys");
        // Not its layout record, nor the claims of the processes that reap it.
        keys.into_iter()
            .filter(|k| !k.ends_with(":meta") && !k.ends_with(":reaper") && !k.ends_with(":deputy"))
            .collect()
    })
}

/// A cache with neither `max_entries` nor max-idle keeps no index, and while nobody
/// listens its entries keep no deadline records: each is one Redis string (with its
/// own expiry for a TTL). `len`, iteration and `clear` find them by key scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_without_an_index_is_its_entry_keys_alone() {
    use futures::StreamExt;
    partcache_redis::install();
    let server = tokio::task::block_in_place(common::standalone);
    let name = unique("plain");
    let cache: Cache<u64, String> = common::manager(&server.url())
        .cache(&name)
        .partitions(7)
        .build()
        .await
        .unwrap();
    cache
        .put_all((0..300).map(|k| (k, format!("v{k}"))))
        .await
        .unwrap();
    for k in 300..305 {
        cache
            .put_with_ttl(k, format!("t{k}"), Duration::from_secs(60))
            .await
            .unwrap();
    }
    let keys = cache_keys(server, &name);
    assert_eq!(keys.len(), 305);
    assert!(
        keys.iter().all(|k| k.contains(&format!(":{name}:e:"))),
        "only entry keys: {keys:?}"
    );
    assert_eq!(cache.len().await.unwrap(), 305);
    let mut seen: Vec<u64> = cache.keys().map(|k| k.unwrap()).collect().await;
    seen.sort_unstable();
    assert_eq!(seen, (0..305).collect::<Vec<_>>());
    let report = cache.balance_report().await.unwrap();
    assert_eq!(report.masters.iter().map(|m| m.entries).sum::<u64>(), 305);

    // A TTL is Redis' own expiry.
    cache
        .put_with_ttl(1, "short".to_string(), Duration::from_millis(50))
        .await
        .unwrap();
    partcache::conformance::eventually("Redis expired the entry", || async {
        cache.get(&1).await.unwrap().is_none()
    })
    .await;
    assert_eq!(cache.len().await.unwrap(), 304);

    // `clear` drops every entry, and an emptied cache has no keys left but its record.
    cache.clear().await.unwrap();
    assert_eq!(cache.len().await.unwrap(), 0);
    assert_eq!(cache_keys(server, &name), Vec::<String>::new());
}

/// Without an index, a `Created` entry written while nobody listens has no records:
/// an update keeps its creation deadline all the same (read back from the value's
/// own expiry), as JSR-107's `CreatedExpiryPolicy` requires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_entry_without_records_keeps_its_deadline_across_updates() {
    partcache_redis::install();
    let server = tokio::task::block_in_place(common::standalone);
    let name = unique("created");
    let cache: Cache<u64, String> = common::manager(&server.url())
        .cache(&name)
        .expiry(partcache::ExpiryPolicy::Created(Duration::from_secs(10)))
        .build()
        .await
        .unwrap();
    cache.put(1, "first".to_string()).await.unwrap();
    let created = Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cache.put(1, "second".to_string()).await.unwrap();
    assert_eq!(deadline_records(server, &name), 0);
    let keys = cache_keys(server, &name);
    assert_eq!(keys.len(), 1, "{keys:?}");
    // Measured before PTTL is sent: the server read the deadline no earlier than this,
    // and set it no later than `created`, so a kept deadline leaves at most this much.
    let at_most = 10_000 - created.elapsed().as_millis() as i64;
    let left: i64 = tokio::task::block_in_place(|| server.query(&["PTTL", &keys[0]])).unwrap();
    assert!(
        left > 0 && left <= at_most,
        "{left} ms left, at most {at_most} (the update must not restart the deadline)"
    );
    assert_eq!(
        cache.get(&1).await.unwrap().as_deref().map(String::as_str),
        Some("second")
    );
}

/// Whether a cache keeps an index is part of its layout: opening it with `max_entries`
/// (or max-idle) when it was created without, or the other way round, is an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_cache_with_another_index_setting_is_a_layout_mismatch() {
    let url = standalone_url();
    for (created_with, opened_with) in [(false, true), (true, false)] {
        let name = unique("reopen-index");
        let build = |indexed: bool| {
            let builder = common::manager(&url).cache::<String, String>(&name);
            let builder = if indexed {
                builder.max_entries(1000)
            } else {
                builder
            };
            builder.build()
        };
        let first = build(created_with).await.unwrap();
        first.put("a".to_string(), "1".to_string()).await.unwrap();
        match build(opened_with).await {
            Err(Error::Mismatch {
                mismatch: LayoutMismatch::EntryIndex { stored, opened },
                ..
            }) => assert_eq!((stored, opened), (created_with, opened_with)),
            other => panic!("expected a layout mismatch, got {other:?}"),
        }
        assert!(build(created_with).await.is_ok());
    }
}

/// The hashing rules are part of a cache's layout: a process opening it with other
/// rules would put a key in another partition than the others do (each then reads its
/// own copy, and one's update or removal never reaches the other's), so it is refused
/// with an error naming both rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_cache_with_other_hashing_rules_is_a_layout_mismatch() {
    let url = standalone_url();
    let rules = ["^(?<tag>user):"];
    for (created_custom, opened_custom) in [(false, true), (true, false)] {
        let name = unique("reopen-hashing");
        let build = |custom: bool| {
            let builder = common::manager(&url).cache::<String, String>(&name);
            let builder = if custom {
                builder.hashing_rules(rules)
            } else {
                builder
            };
            builder.build()
        };
        let first = build(created_custom).await.unwrap();
        first
            .put("user:1".to_string(), "1".to_string())
            .await
            .unwrap();
        let described = |custom: bool| {
            if custom {
                r#"rules ["^(?<tag>user):"]"#.to_string()
            } else {
                "standard".to_string()
            }
        };
        match build(opened_custom).await {
            Err(
                error @ Error::Mismatch {
                    mismatch: LayoutMismatch::Hashing { .. },
                    ..
                },
            ) => {
                let Error::Mismatch {
                    mismatch: LayoutMismatch::Hashing { stored, opened },
                    ..
                } = &error
                else {
                    unreachable!()
                };
                assert_eq!(
                    (stored.clone(), opened.clone()),
                    (described(created_custom), described(opened_custom))
                );
                let message = error.to_string();
                assert!(
                    message.contains(stored) && message.contains(opened),
                    "{message}"
                );
            }
            other => panic!("expected a hashing mismatch, got {other:?}"),
        }
        assert!(build(created_custom).await.is_ok());
    }
}

/// Whether a cache's processes publish events is part of its layout: a process that
/// writes without them (`publish_events(false)`) leaves the near caches and listeners
/// of the others stale for good, so opening a cache silent where others publish (or
/// the other way round) is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_cache_silent_where_others_publish_events_is_a_layout_mismatch() {
    let url = standalone_url();
    for (created_publishing, opened_publishing) in [(true, false), (false, true)] {
        let name = unique("reopen-events");
        let build = |publishing: bool| {
            common::manager(&url)
                .cache::<String, String>(&name)
                .publish_events(publishing)
                .build()
        };
        let first = build(created_publishing).await.unwrap();
        first.put("a".to_string(), "1".to_string()).await.unwrap();
        match build(opened_publishing).await {
            Err(
                error @ Error::Mismatch {
                    mismatch: LayoutMismatch::Events { .. },
                    ..
                },
            ) => {
                assert!(error.is_config(), "{error}");
                assert!(error.to_string().contains("publish_events"), "{error}");
                let Error::Mismatch {
                    mismatch: LayoutMismatch::Events { stored, opened },
                    ..
                } = error
                else {
                    unreachable!()
                };
                assert_eq!((stored, opened), (created_publishing, opened_publishing));
            }
            other => panic!("expected an events mismatch, got {other:?}"),
        }
        assert!(build(created_publishing).await.is_ok());
    }
}

/// A layout record written by an earlier release (partitions, codec, version and
/// index only) still opens; the first process that opens it records its hashing rules
/// and events, and a later process with other ones is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layout_record_of_an_earlier_release_opens_and_gains_hashing_and_events() {
    let url = standalone_url();
    let name = unique("old-record");
    let first: Cache<String, String> = common::manager(&url).cache(&name).build().await.unwrap();
    let hash = xxhash_rust::xxh3::xxh3_64(name.as_bytes()) as u32;
    let meta = format!("pc:{{{hash:08x}.meta}}:{name}:meta");
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let fields: Vec<String> = redis::cmd("HKEYS")
        .arg(&meta)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        fields.contains(&"hashing".to_string()),
        "{meta}: {fields:?}"
    );
    let _: () = redis::cmd("HDEL")
        .arg(&meta)
        .arg("events")
        .arg("hashing")
        .arg("hashing_rules")
        .query_async(&mut conn)
        .await
        .unwrap();
    drop(first);
    let rules = ["^(?<tag>user):"];
    let again = common::manager(&url)
        .cache::<String, String>(&name)
        .hashing_rules(rules)
        .publish_events(false)
        .build()
        .await;
    assert!(again.is_ok(), "{again:?}");
    let standard = common::manager(&url)
        .cache::<String, String>(&name)
        .publish_events(false)
        .build()
        .await;
    assert!(
        matches!(
            standard,
            Err(Error::Mismatch {
                mismatch: LayoutMismatch::Hashing { .. },
                ..
            })
        ),
        "{standard:?}"
    );
    let publishing = common::manager(&url)
        .cache::<String, String>(&name)
        .hashing_rules(rules)
        .build()
        .await;
    assert!(
        matches!(
            publishing,
            Err(Error::Mismatch {
                mismatch: LayoutMismatch::Events {
                    stored: false,
                    opened: true
                },
                ..
            })
        ),
        "{publishing:?}"
    );
}

/// Caches without an index find their entries with `SCAN … MATCH`: caches whose names
/// are prefixes of each other or hold glob characters (`*`, `?`, `[`, `]`, `\`), on one
/// server, each count, list and clear their own entries only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caches_without_an_index_never_count_list_or_clear_each_others_entries() {
    use futures::StreamExt;

    let url = standalone_url();
    let base = unique("scan");
    let names = [
        base.clone(),
        format!("{base}*"),
        format!("{base}-b"),
        format!("[{base}]"),
        format!("{base}?\\"),
    ];
    let manager = common::manager(&url);
    let mut caches = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let cache: Cache<String, String> = manager.cache(name).build().await.unwrap();
        for k in 0..=i {
            cache.put(format!("k{k}"), name.clone()).await.unwrap();
        }
        caches.push(cache);
    }
    for (i, cache) in caches.iter().enumerate() {
        assert_eq!(
            cache.len().await.unwrap(),
            i as u64 + 1,
            "len of `{}`",
            names[i]
        );
        let listed: Vec<_> = cache.entries().collect().await;
        assert_eq!(listed.len(), i + 1, "entries of `{}`", names[i]);
        for entry in listed {
            let (_, value) = entry.unwrap();
            assert_eq!(*value, names[i], "an entry of another cache listed");
        }
    }
    // Clearing the first (a prefix of every other name) leaves the others whole.
    caches[0].clear().await.unwrap();
    assert_eq!(caches[0].len().await.unwrap(), 0);
    for (i, cache) in caches.iter().enumerate().skip(1) {
        assert_eq!(
            cache.len().await.unwrap(),
            i as u64 + 1,
            "`{}` after a clear",
            names[i]
        );
    }
}
