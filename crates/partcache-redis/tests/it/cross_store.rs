//! The same calls on every store give the same answers: duplicate keys, empty and odd
//! inputs, odd settings (built or refused, never a panic); a near cache hears every kind of write another process makes; a server that stops
//! answering fails every call within its timeout; a listener in another process hears
//! what the writer's own listener hears.

use crate::common;
use common::unique;
use std::time::Duration;

use partcache::Cache;

fn standalone_url() -> String {
    tokio::task::block_in_place(|| common::standalone().url())
}

fn cluster_url() -> String {
    tokio::task::block_in_place(|| common::cluster().seed_url())
}

use partcache::CacheManager;
use partcache::event::EventFilter;

fn near_manager(url: &str) -> CacheManager {
    partcache_redis::install();
    let config = format!(
        "url = \"{url}\"\n[defaults]\nnear_cache = {{ max_entries = 10000, max_staleness = \"1s\" }}\n"
    );
    CacheManager::from_config_str(&config).expect("manager")
}

/// One scenario of odd-but-legal inputs (duplicate keys); returns what it observed.
async fn duplicates(manager: &CacheManager, label: &str, max: Option<u64>) -> Vec<String> {
    let mut b = manager.cache::<String, String>(&unique(label));
    if let Some(m) = max {
        b = b.max_entries(m);
    }
    let c = b.build().await.unwrap();
    let mut rx = c.listen(EventFilter::all()).await.unwrap();
    let mut out = Vec::new();
    let s = |s: &str| s.to_string();
    c.put_all([(s("a"), s("1")), (s("a"), s("2"))])
        .await
        .unwrap();
    out.push(format!(
        "put_all dup -> get a = {:?}",
        c.get(&s("a")).await.unwrap()
    ));
    c.put(s("b"), s("x")).await.unwrap();
    let n = c.remove_all_keys(&[s("b"), s("b")]).await.unwrap();
    out.push(format!("remove_all_keys [b,b] -> {n}"));
    let all = c.get_all(&[s("a"), s("a"), s("zz")]).await.unwrap();
    out.push(format!("get_all [a,a,zz] -> {all:?}"));
    // A call's own events reach its listeners before it returns, on every store.
    let mut events = Vec::new();
    while let Some(e) = rx.try_recv() {
        let e = e.unwrap();
        events.push(format!("{:?} {} {:?}", e.kind, e.key, e.value));
    }
    out.push(format!("events {events:?}"));
    let st = c.stats();
    out.push(format!(
        "stats hits={} misses={} puts={} removals={} evictions={} expirations={}",
        st.hits, st.misses, st.puts, st.removals, st.evictions, st.expirations
    ));
    out.push(format!("len={}", c.len().await.unwrap()));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_behave_alike_on_every_store() {
    let memory = CacheManager::from_url("memory://").unwrap();
    let standalone = common::manager(&standalone_url());
    let cluster = common::manager(&cluster_url());
    let near = near_manager(&cluster_url());
    for max in [None, Some(100)] {
        let want = duplicates(&memory, "dup-mem", max).await;
        for (name, m) in [
            ("standalone", &standalone),
            ("cluster", &cluster),
            ("near", &near),
        ] {
            let got = duplicates(m, &format!("dup-{name}"), max).await;
            assert_eq!(got, want, "{name} max={max:?}");
        }
    }
}

mod cross {
    use super::*;
    use partcache::NearCache;
    use std::time::Instant;

    const STALENESS: Duration = Duration::from_millis(600);

    async fn until_local(cache: &Cache<String, u64>, key: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let before = cache.stats().near_hits;
            cache.get(&key.to_string()).await.expect("get");
            if cache.stats().near_hits > before {
                return;
            }
            assert!(Instant::now() < deadline, "`{key}` never served locally");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn until_reads(
        cache: &Cache<String, u64>,
        key: &str,
        want: Option<u64>,
        what: &str,
    ) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let got = cache.get(&key.to_string()).await.expect("get").map(|v| *v);
            if got == want {
                return Ok(());
            }
            if started.elapsed() > STALENESS + Duration::from_millis(1500) {
                return Err(format!(
                    "after {what}: `{key}` still reads {got:?}, not {want:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn every_write_kind(url: &str, max: Option<u64>) -> Vec<String> {
        let (a, b) = (common::manager(url), common::manager(url));
        let name = unique("near-x");
        let mut rb = a
            .cache::<String, u64>(&name)
            .near_cache(NearCache::max_entries(10_000).max_staleness(STALENESS));
        let mut wb = b.cache::<String, u64>(&name);
        if let Some(m) = max {
            rb = rb.max_entries(m);
            wb = wb.max_entries(m);
        }
        let reader = rb.build().await.unwrap();
        let writer = wb.build().await.unwrap();
        let mut failures = Vec::new();
        let k = |i: u64| format!("k{i}");
        for round in 0..16u64 {
            let key = k(round);
            writer.put(key.clone(), 0).await.unwrap();
            until_local(&reader, &key).await;
            let (what, want) = match round {
                0 => {
                    writer.put(key.clone(), 1).await.unwrap();
                    ("put", Some(1))
                }
                1 => {
                    writer
                        .put_all([(key.clone(), 1), (k(100), 1)])
                        .await
                        .unwrap();
                    ("put_all", Some(1))
                }
                2 => {
                    writer.get_and_put(key.clone(), 1).await.unwrap();
                    ("get_and_put", Some(1))
                }
                3 => {
                    writer.replace(key.clone(), 1).await.unwrap();
                    ("replace", Some(1))
                }
                4 => {
                    writer.replace_if_equals(key.clone(), 0, 1).await.unwrap();
                    ("replace_if_equals", Some(1))
                }
                5 => {
                    writer.remove(&key).await.unwrap();
                    ("remove", None)
                }
                6 => {
                    writer.remove_if_equals(&key, 0).await.unwrap();
                    ("remove_if_equals", None)
                }
                7 => {
                    writer.get_and_remove(&key).await.unwrap();
                    ("get_and_remove", None)
                }
                8 => {
                    writer
                        .remove_all_keys(&[key.clone(), k(101)])
                        .await
                        .unwrap();
                    ("remove_all_keys", None)
                }
                9 => {
                    writer.invoke(&key, |e| e.set_value(1u64)).await.unwrap();
                    ("invoke set", Some(1))
                }
                10 => {
                    writer.invoke(&key, |e| e.remove()).await.unwrap();
                    ("invoke remove", None)
                }
                11 => {
                    writer
                        .put_with_ttl(key.clone(), 1, Duration::from_secs(60))
                        .await
                        .unwrap();
                    ("put_with_ttl", Some(1))
                }
                12 => {
                    // Concurrent puts share batched calls.
                    let puts = (0..50u64)
                        .map(|i| writer.put(if i == 0 { key.clone() } else { format!("f{i}") }, 1));
                    for r in futures::future::join_all(puts).await {
                        r.unwrap();
                    }
                    ("concurrent puts", Some(1))
                }
                13 => {
                    writer
                        .put_with_ttl(key.clone(), 1, Duration::from_millis(100))
                        .await
                        .unwrap();
                    ("put_with_ttl 100ms (then expired)", None)
                }
                14 => {
                    writer.remove_all().await.unwrap();
                    ("remove_all", None)
                }
                _ => {
                    writer.clear().await.unwrap();
                    ("clear", None)
                }
            };
            if round == 13 {
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            if let Err(e) = until_reads(&reader, &key, want, what).await {
                failures.push(e);
            }
        }
        failures
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_process_writes_of_every_kind_reach_a_near_cache() {
        let mut failures = Vec::new();
        for (name, url) in [("standalone", standalone_url()), ("cluster", cluster_url())] {
            for max in [None, Some(1000)] {
                for f in every_write_kind(&url, max).await {
                    failures.push(format!("{name} max={max:?}: {f}"));
                }
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}

async fn empty_inputs(m: &CacheManager) -> Vec<String> {
    let c = m
        .cache::<String, String>(&unique("empty"))
        .build()
        .await
        .unwrap();
    let mut out = Vec::new();
    out.push(format!(
        "get_all {:?}",
        c.get_all(&[]).await.map(|v| v.len())
    ));
    out.push(format!(
        "remove_all_keys {:?}",
        c.remove_all_keys(&[]).await
    ));
    out.push(format!(
        "put_all {:?}",
        c.put_all(Vec::<(String, String)>::new()).await
    ));
    out.push(format!(
        "invoke_all {:?}",
        c.invoke_all(&[], |_k, _e| ()).await.len()
    ));
    out.push(format!(
        "load_all {:?}",
        c.load_all(&[], true).await.map(|v| v.len())
    ));
    out.push(format!(
        "empty key {:?}",
        c.put(String::new(), "v".to_string()).await
    ));
    out.push(format!("get empty key {:?}", c.get(&String::new()).await));
    let odd = "\u{0}\r\n{}*?[]\\:~ é".to_string();
    out.push(format!(
        "odd key {:?}",
        c.put(odd.clone(), "v".to_string()).await
    ));
    out.push(format!("get odd key {:?}", c.get(&odd).await));
    let mut keys: Vec<String> = {
        use futures::TryStreamExt;
        c.keys().try_collect().await.unwrap()
    };
    keys.sort();
    out.push(format!("keys {keys:?} len {:?}", c.len().await));
    out.push(format!("remove_all {:?}", c.remove_all().await));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_and_odd_inputs_behave_alike_on_every_store() {
    let memory = CacheManager::from_url("memory://").unwrap();
    let want = empty_inputs(&memory).await;
    for (name, url) in [("standalone", standalone_url()), ("cluster", cluster_url())] {
        let got = empty_inputs(&common::manager(&url)).await;
        assert_eq!(got, want, "{name}");
    }
}

/// Odd settings: each must build and work, or be refused with an error; never panic.
async fn odd_settings(url: &str) -> Vec<String> {
    let m = if url == "memory://" {
        CacheManager::from_url(url).unwrap()
    } else {
        common::manager(url)
    };
    let mut out = Vec::new();
    macro_rules! probe {
        ($what:expr, $builder:expr) => {{
            let built: partcache::Result<Cache<String, String>> = $builder.build().await;
            let r = match built {
                Err(e) => format!(
                    "build error: {}",
                    e.to_string().split(':').next().unwrap_or("")
                ),
                Ok(c) => {
                    let put = c
                        .put("k".into(), "v".to_string())
                        .await
                        .map_err(|e| e.to_string());
                    let get = c
                        .get(&"k".to_string())
                        .await
                        .map(|v| v.map(|v| (*v).clone()))
                        .map_err(|e| e.to_string());
                    let load = c
                        .get_or_load(&"l".to_string(), |_k| async {
                            Ok::<_, std::io::Error>("x".to_string())
                        })
                        .await
                        .map(|v| (*v).clone())
                        .map_err(|e| e.to_string());
                    format!("put {put:?} get {get:?} load {load:?}")
                }
            };
            out.push(format!("{}: {}", $what, r));
        }};
    }
    probe!(
        "lease_ttl MAX",
        m.cache(&unique("odd2")).lease_ttl(Duration::MAX)
    );
    probe!("max_entries 0", m.cache(&unique("odd3")).max_entries(0));
    probe!(
        "max_value_bytes 0",
        m.cache(&unique("odd4")).max_value_bytes(0)
    );
    probe!(
        "event_capacity 0",
        m.cache(&unique("odd5")).event_capacity(0)
    );
    probe!(
        "max_idle 0",
        m.cache(&unique("odd6")).max_idle(Duration::ZERO)
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_settings_never_panic() {
    for url in ["memory://".to_string(), standalone_url()] {
        let url2 = url.clone();
        let r = tokio::spawn(async move { odd_settings(&url2).await }).await;
        if let Err(e) = r {
            panic!("{url}: panicked: {e}");
        }
    }
}

mod silent {
    use super::*;
    use partcache::NearCache;
    use std::time::Instant;

    /// Every cache call against a server that accepts connections and never answers
    /// (a frozen process) returns, with an error or a value, within a small multiple of
    /// `response_timeout` (300 ms): the times each took.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_call_to_a_silent_server_returns_within_its_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let manager = common::manager(&format!(
            "redis://127.0.0.1:{port}?connect_timeout=300ms&response_timeout=300ms&breaker_failures=0"
        ));
        let mut times: Vec<(String, Duration, String)> = Vec::new();
        macro_rules! timed {
            ($what:expr, $e:expr) => {{
                let start = Instant::now();
                let r = tokio::time::timeout(Duration::from_secs(20), async { $e }).await;
                let took = start.elapsed();
                times.push((
                    $what.to_string(),
                    took,
                    format!(
                        "{:?}",
                        r.map(|r| format!("{r:?}").chars().take(60).collect::<String>())
                    ),
                ));
            }};
        }
        let c: Cache<String, String> = manager.cache("silent-all").build().await.unwrap();
        let k = "k".to_string();
        timed!("get", c.get(&k).await);
        timed!("put", c.put(k.clone(), "v".to_string()).await);
        timed!(
            "get_all",
            c.get_all(&["a".to_string(), "b".to_string(), "c".to_string()])
                .await
        );
        timed!(
            "put_all",
            c.put_all([
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "1".to_string())
            ])
            .await
        );
        timed!(
            "put_if_absent",
            c.put_if_absent(k.clone(), "v".to_string()).await
        );
        timed!(
            "remove_all_keys",
            c.remove_all_keys(&["a".to_string(), "b".to_string()]).await
        );
        timed!("remove_all", c.remove_all().await);
        timed!("clear", c.clear().await);
        timed!("len", c.len().await);
        timed!("keys", {
            use futures::StreamExt;
            c.keys().collect::<Vec<_>>().await.len()
        });
        timed!(
            "invoke",
            c.invoke(&k, |e| e.set_value("w".to_string())).await
        );
        timed!(
            "get_or_load",
            c.get_or_load(&k, |_k| async { Ok::<_, std::io::Error>("x".to_string()) })
                .await
        );
        timed!("contains_key", c.contains_key(&k).await);
        timed!(
            "listen",
            c.listen(partcache::EventFilter::all()).await.map(|_| ())
        );
        timed!("run_pending_tasks", c.run_pending_tasks().await);
        timed!("balance_report", c.balance_report().await.map(|_| ()));
        let near = manager
            .cache::<String, String>("silent-near")
            .near_cache(NearCache::max_entries(100))
            .build()
            .await;
        match near {
            Ok(n) => timed!("near get", n.get(&k).await),
            Err(e) => times.push(("near build".into(), Duration::ZERO, format!("{e}"))),
        }
        timed!("close", c.close().await);
        let slow: Vec<_> = times
            .iter()
            .filter(|(_, took, _)| *took > Duration::from_millis(1300))
            .map(|(w, t, _)| format!("{w}: {t:?}"))
            .collect();
        assert!(
            slow.is_empty(),
            "calls past 1.3 s (response_timeout 300 ms): {slow:#?}"
        );
    }
}

/// A listener in another process hears what the writing process's own listener hears
/// (kinds, keys, values; not `old_value`, documented), in the same order per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_hears_what_the_writer_hears() {
    for url in [standalone_url(), cluster_url()] {
        let (a, b) = (common::manager(&url), common::manager(&url));
        let name = unique("events-x");
        let other: Cache<String, String> = a.cache(&name).max_entries(3000).build().await.unwrap();
        let writer: Cache<String, String> = b.cache(&name).max_entries(3000).build().await.unwrap();
        let mut far = other.listen(EventFilter::all()).await.unwrap();
        let mut near = writer.listen(EventFilter::all()).await.unwrap();
        let s = |x: &str| x.to_string();
        writer.put(s("a"), s("1")).await.unwrap();
        writer.put(s("a"), s("2")).await.unwrap();
        writer
            .put_all([(s("b"), s("1")), (s("c"), s("1"))])
            .await
            .unwrap();
        writer.put_if_absent(s("d"), s("1")).await.unwrap();
        writer.replace(s("d"), s("2")).await.unwrap();
        writer.get_and_put(s("b"), s("2")).await.unwrap();
        writer.remove(&s("c")).await.unwrap();
        writer
            .invoke(&s("e"), |e| e.set_value(s("1")))
            .await
            .unwrap();
        writer
            .put_with_ttl(s("f"), s("1"), Duration::from_millis(50))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(120)).await;
        writer.put(s("f"), s("2")).await.unwrap();
        writer.remove_all_keys(&[s("a"), s("b")]).await.unwrap();
        writer.remove_all().await.unwrap();
        writer.put(s("zz"), s("end")).await.unwrap();
        let collect = |rx: &mut partcache::EventReceiver<String, String>| {
            let mut out = Vec::new();
            while let Some(e) = rx.try_recv() {
                let e = e.unwrap();
                let value = if e.kind == partcache::EventKind::Expired {
                    None
                } else {
                    e.value.map(|v| (*v).clone())
                };
                out.push((e.kind, e.key, value));
            }
            out
        };
        let start = std::time::Instant::now();
        let mut got = Vec::new();
        while start.elapsed() < Duration::from_secs(5) {
            got.extend(collect(&mut far));
            if got.iter().any(|(_, k, _)| k == "zz") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let want = collect(&mut near);
        let per_key = |v: &[(partcache::EventKind, String, Option<String>)]| {
            let mut m: std::collections::BTreeMap<String, Vec<String>> = Default::default();
            for (k, key, val) in v {
                m.entry(key.clone())
                    .or_default()
                    .push(format!("{k:?} {val:?}"));
            }
            m
        };
        assert_eq!(per_key(&got), per_key(&want), "{url}");
    }
}
