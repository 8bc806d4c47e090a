//! The backend conformance suite: every behaviour of [`crate::Cache`] that a store must
//! get right, written once and run unchanged over every store.
//!
//! A backend crate instantiates it in a test file with a function that returns a
//! [`CacheManager`] for its store:
//!
//! ```ignore
//! async fn manager() -> partcache::CacheManager { /* start or reuse a server */ }
//! partcache::conformance_suite!(manager);
//! ```
//!
//! Every check uses caches with unique names, so tests can share one server and run
//! in parallel. Events on remote stores arrive asynchronously: checks wait for them with
//! a deadline, and prove that an operation emitted *nothing* by following it with a
//! sentinel operation on the same key (same partition, so same ordered channel) and
//! asserting that the sentinel's event is the next one.

#![allow(missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;

use crate::{
    BoxError, CacheBuilder, CacheEvent, CacheKey, CacheLoader, CacheManager, CacheValue,
    CacheWriter, Error, EventFilter, EventKind, EventReceiver, ExpiryPolicy,
};

/// How long a check waits for something asynchronous (an event, an expiry).
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Gives each check fresh caches on the backend under test.
pub struct Harness {
    manager: CacheManager,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Harness {
    /// Wraps a manager.
    pub fn new(manager: CacheManager) -> Self {
        Harness { manager }
    }

    /// A builder for a cache with a name no other check uses.
    pub fn cache<K: CacheKey, V: CacheValue>(&self, label: &str) -> CacheBuilder<K, V> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!(
            "conf-{label}-{}-{nanos:x}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.manager.cache(&name)
    }

    /// `true` on the embedded store (some checks of exact event payloads differ).
    pub fn is_local(&self) -> bool {
        self.manager.is_local()
    }
}

/// Waits for the next event, failing the check after [`DEADLINE`].
pub async fn next_event<K: Clone, V>(rx: &mut EventReceiver<K, V>) -> CacheEvent<K, V> {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("event channel failed: {e}"),
        Err(_) => panic!("no event within {DEADLINE:?}"),
    }
}

/// Polls `condition` until it holds, failing the check after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn kinds<K, V>(events: &[CacheEvent<K, V>]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind).collect()
}

type C = crate::Cache<String, String>;

async fn plain(h: &Harness, label: &str) -> C {
    h.cache::<String, String>(label)
        .build()
        .await
        .expect("build cache")
}

fn k(s: &str) -> String {
    s.to_string()
}

fn v(s: &str) -> String {
    s.to_string()
}

async fn get(c: &C, key: &str) -> Option<String> {
    c.get(&k(key)).await.expect("get").map(|v| (*v).clone())
}

// ---------------------------------------------------------------- basic operations

pub async fn get_of_absent_key_is_a_miss(h: &Harness) {
    let c = plain(h, "miss").await;
    assert_eq!(get(&c, "nope").await, None);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.puts), (0, 1, 0));
}

pub async fn put_then_get_returns_the_value_and_counts_a_hit(h: &Harness) {
    let c = plain(h, "put-get").await;
    c.put(k("a"), v("1")).await.unwrap();
    assert_eq!(get(&c, "a").await.as_deref(), Some("1"));
    c.put(k("a"), v("2")).await.unwrap();
    assert_eq!(get(&c, "a").await.as_deref(), Some("2"));
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.puts), (2, 0, 2));
}

pub async fn put_emits_created_then_updated(h: &Harness) {
    let c = plain(h, "put-events").await;
    let mut rx = c.subscribe(EventFilter::all());
    c.put(k("a"), v("1")).await.unwrap();
    c.put(k("a"), v("2")).await.unwrap();
    let first = next_event(&mut rx).await;
    let second = next_event(&mut rx).await;
    assert_eq!(
        kinds(&[first, second.clone()]),
        [EventKind::Created, EventKind::Updated]
    );
    assert_eq!(second.key, "a");
    assert_eq!(second.value.as_deref().map(String::as_str), Some("2"));
}

pub async fn contains_key_counts_nothing_and_does_not_load(h: &Harness) {
    let c = plain(h, "contains").await;
    c.put(k("a"), v("1")).await.unwrap();
    assert!(c.contains_key(&k("a")).await.unwrap());
    assert!(!c.contains_key(&k("b")).await.unwrap());
    let s = c.stats();
    assert_eq!((s.hits, s.misses), (0, 0));
}

pub async fn get_all_returns_values_in_the_callers_order(h: &Harness) {
    let c = plain(h, "get-all").await;
    let entries: Vec<(String, String)> = (0..200)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    c.put_all(entries.clone()).await.unwrap();
    let mut keys: Vec<String> = entries.iter().map(|(k, _)| k.clone()).rev().collect();
    keys.insert(17, k("absent"));
    let values = c.get_all(&keys).await.unwrap();
    assert_eq!(values.len(), keys.len());
    for (key, value) in keys.iter().zip(&values) {
        let expected = key.strip_prefix('k').map(|n| format!("v{n}"));
        assert_eq!(value.as_deref().cloned(), expected, "key {key}");
    }
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.puts), (200, 1, 200));
}

pub async fn put_if_absent_stores_only_when_absent(h: &Harness) {
    let c = plain(h, "pia").await;
    assert!(c.put_if_absent(k("a"), v("1")).await.unwrap());
    assert!(!c.put_if_absent(k("a"), v("2")).await.unwrap());
    assert_eq!(get(&c, "a").await.as_deref(), Some("1"));
    let s = c.stats();
    // absent: a miss and a put; present: a hit; then the get: a hit.
    assert_eq!((s.hits, s.misses, s.puts), (2, 1, 1));
}

pub async fn put_if_absent_on_present_key_emits_no_event(h: &Harness) {
    let c = plain(h, "pia-events").await;
    c.put(k("a"), v("1")).await.unwrap();
    let mut rx = c.subscribe(EventFilter::all());
    assert!(!c.put_if_absent(k("a"), v("2")).await.unwrap());
    c.remove(&k("a")).await.unwrap(); // sentinel
    let event = next_event(&mut rx).await;
    assert_eq!(
        event.kind,
        EventKind::Removed,
        "put_if_absent on a present key emitted {:?}",
        event.kind
    );
}

pub async fn get_and_put_returns_the_previous_value(h: &Harness) {
    let c = plain(h, "gap").await;
    assert_eq!(c.get_and_put(k("a"), v("1")).await.unwrap(), None);
    assert_eq!(
        c.get_and_put(k("a"), v("2"))
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(get(&c, "a").await.as_deref(), Some("2"));
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.puts), (2, 1, 2));
}

pub async fn remove_reports_whether_an_entry_was_removed(h: &Harness) {
    let c = plain(h, "remove").await;
    c.put(k("a"), v("1")).await.unwrap();
    let mut rx = c.subscribe(EventFilter::kinds([EventKind::Removed]));
    assert!(c.remove(&k("a")).await.unwrap());
    assert!(!c.remove(&k("a")).await.unwrap());
    assert_eq!(get(&c, "a").await, None);
    assert_eq!(next_event(&mut rx).await.key, "a");
    assert_eq!(c.stats().removals, 1);
}

pub async fn remove_if_equals_removes_only_the_expected_value(h: &Harness) {
    let c = plain(h, "rie").await;
    c.put(k("a"), v("1")).await.unwrap();
    assert!(!c.remove_if_equals(&k("a"), v("2")).await.unwrap());
    assert!(!c.remove_if_equals(&k("b"), v("1")).await.unwrap());
    assert!(c.remove_if_equals(&k("a"), v("1")).await.unwrap());
    assert_eq!(get(&c, "a").await, None);
    let s = c.stats();
    // unequal: hit; absent: miss; equal: hit + removal; final get: miss.
    assert_eq!((s.hits, s.misses, s.removals), (2, 2, 1));
}

pub async fn get_and_remove_returns_the_removed_value(h: &Harness) {
    let c = plain(h, "gar").await;
    c.put(k("a"), v("1")).await.unwrap();
    assert_eq!(
        c.get_and_remove(&k("a"))
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(c.get_and_remove(&k("a")).await.unwrap(), None);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.removals), (1, 1, 1));
}

pub async fn replace_changes_only_present_entries(h: &Harness) {
    let c = plain(h, "replace").await;
    assert!(!c.replace(k("a"), v("1")).await.unwrap());
    assert_eq!(get(&c, "a").await, None);
    c.put(k("a"), v("1")).await.unwrap();
    let mut rx = c.subscribe(EventFilter::all());
    assert!(c.replace(k("a"), v("2")).await.unwrap());
    assert_eq!(next_event(&mut rx).await.kind, EventKind::Updated);
    assert_eq!(get(&c, "a").await.as_deref(), Some("2"));
    let s = c.stats();
    // replace absent: miss; get: miss; put; replace present: hit + put; get: hit.
    assert_eq!((s.hits, s.misses, s.puts), (2, 2, 2));
}

pub async fn replace_if_equals_compares_the_current_value(h: &Harness) {
    let c = plain(h, "rie2").await;
    assert!(!c.replace_if_equals(k("a"), v("1"), v("2")).await.unwrap());
    c.put(k("a"), v("1")).await.unwrap();
    assert!(!c.replace_if_equals(k("a"), v("9"), v("2")).await.unwrap());
    assert_eq!(get(&c, "a").await.as_deref(), Some("1"));
    assert!(c.replace_if_equals(k("a"), v("1"), v("2")).await.unwrap());
    assert_eq!(get(&c, "a").await.as_deref(), Some("2"));
    let s = c.stats();
    // absent: miss; put; unequal: hit; get: hit; equal: hit + put; get: hit.
    assert_eq!((s.hits, s.misses, s.puts), (4, 1, 2));
}

pub async fn get_and_replace_returns_the_previous_value_when_present(h: &Harness) {
    let c = plain(h, "gare").await;
    assert_eq!(c.get_and_replace(k("a"), v("1")).await.unwrap(), None);
    assert_eq!(get(&c, "a").await, None);
    c.put(k("a"), v("1")).await.unwrap();
    assert_eq!(
        c.get_and_replace(k("a"), v("2"))
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(get(&c, "a").await.as_deref(), Some("2"));
}

pub async fn remove_all_keys_removes_those_keys_only(h: &Harness) {
    let c = plain(h, "rak").await;
    c.put_all((0..10).map(|i| (format!("k{i}"), v("x"))))
        .await
        .unwrap();
    let mut rx = c.subscribe(EventFilter::kinds([EventKind::Removed]));
    let removed = c
        .remove_all_keys(&[k("k1"), k("k2"), k("zzz")])
        .await
        .unwrap();
    assert_eq!(removed, 2);
    let mut keys = vec![next_event(&mut rx).await.key, next_event(&mut rx).await.key];
    keys.sort();
    assert_eq!(keys, ["k1", "k2"]);
    assert_eq!(c.len().await.unwrap(), 8);
    assert_eq!(c.stats().removals, 2);
}

pub async fn remove_all_emits_one_removed_per_entry(h: &Harness) {
    let c = plain(h, "ra").await;
    c.put_all((0..25).map(|i| (format!("k{i}"), v("x"))))
        .await
        .unwrap();
    let mut rx = c.subscribe(EventFilter::all());
    assert_eq!(c.remove_all().await.unwrap(), 25);
    let mut seen = Vec::new();
    for _ in 0..25 {
        let e = next_event(&mut rx).await;
        assert_eq!(e.kind, EventKind::Removed);
        seen.push(e.key);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 25);
    assert_eq!(c.len().await.unwrap(), 0);
    assert_eq!(c.stats().removals, 25);
}

pub async fn clear_removes_everything_without_events_or_statistics(h: &Harness) {
    let c = plain(h, "clear").await;
    c.put_all((0..25).map(|i| (format!("k{i}"), v("x"))))
        .await
        .unwrap();
    let mut rx = c.subscribe(EventFilter::all());
    c.clear().await.unwrap();
    assert_eq!(get(&c, "k3").await, None);
    assert_eq!(c.len().await.unwrap(), 0);
    c.put(k("sentinel"), v("x")).await.unwrap();
    let e = next_event(&mut rx).await;
    assert_eq!(
        (e.kind, e.key.as_str()),
        (EventKind::Created, "sentinel"),
        "clear emitted an event"
    );
    assert_eq!(c.stats().removals, 0);
}

pub async fn keys_and_entries_stream_every_entry_once(h: &Harness) {
    let c = plain(h, "iter").await;
    c.put_all((0..300).map(|i| (format!("k{i}"), format!("v{i}"))))
        .await
        .unwrap();
    let mut entries: Vec<(String, String)> = c
        .entries()
        .map(|e| e.map(|(k, v)| (k, (*v).clone())))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    entries.sort();
    let mut expected: Vec<(String, String)> = (0..300)
        .map(|i| (format!("k{i}"), format!("v{i}")))
        .collect();
    expected.sort();
    assert_eq!(entries, expected);
    let keys: Vec<String> = c.keys().map(|k| k.unwrap()).collect().await;
    assert_eq!(keys.len(), 300);
    assert_eq!(c.len().await.unwrap(), 300);
}

// ---------------------------------------------------------------- entry processors

pub async fn invoke_applies_the_net_effect_atomically(h: &Harness) {
    let c = h.cache::<String, u64>("invoke").build().await.unwrap();
    let n = c
        .invoke(&k("counter"), |e| {
            let next = e.value().copied().unwrap_or(0) + 1;
            e.set_value(next);
            next
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Concurrent increments from many tasks lose nothing.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                c.invoke(&k("counter"), |e| {
                    let next = e.value().copied().unwrap_or(0) + 1;
                    e.set_value(next);
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(c.get(&k("counter")).await.unwrap().as_deref(), Some(&161));
    // Set then remove of an absent key does nothing; remove of a present one removes.
    let mut rx = c.subscribe(EventFilter::all());
    c.invoke(&k("ghost"), |e| {
        e.set_value(5);
        e.remove();
    })
    .await
    .unwrap();
    assert!(!c.contains_key(&k("ghost")).await.unwrap());
    c.invoke(&k("counter"), |e| e.remove()).await.unwrap();
    let event = next_event(&mut rx).await;
    assert_eq!(
        (event.kind, event.key.as_str()),
        (EventKind::Removed, "counter")
    );
    let s = c.stats();
    assert_eq!(s.puts, 161);
    assert_eq!(s.removals, 1);
}

pub async fn a_panicking_entry_processor_leaves_the_entry_and_the_cache_usable(h: &Harness) {
    let c = plain(h, "invoke-panic").await;
    c.put(k("a"), v("1")).await.unwrap();
    let result = c
        .invoke(&k("a"), |e| {
            e.set_value(v("2"));
            if e.exists() {
                panic!("processor failed");
            }
        })
        .await;
    assert!(
        matches!(result, Err(Error::Panicked("entry processor", _))),
        "{result:?}"
    );
    assert_eq!(get(&c, "a").await.as_deref(), Some("1"));
    c.put(k("a"), v("3")).await.unwrap();
    assert_eq!(get(&c, "a").await.as_deref(), Some("3"));
}

// ---------------------------------------------------------------- expiry

const SHORT: Duration = Duration::from_millis(300);

pub async fn created_expiry_is_not_extended_by_reads_or_updates(h: &Harness) {
    let c = h
        .cache::<String, String>("exp-created")
        .expiry(ExpiryPolicy::Created(SHORT * 2))
        .build()
        .await
        .unwrap();
    let start = Instant::now();
    c.put(k("a"), v("1")).await.unwrap();
    c.put(k("a"), v("2")).await.unwrap();
    assert_eq!(get(&c, "a").await.as_deref(), Some("2"));
    eventually("entry expired", || async { get(&c, "a").await.is_none() }).await;
    // It lived at most its creation TTL plus scheduling slack: updates did not extend it.
    assert!(start.elapsed() < SHORT * 2 + Duration::from_secs(3));
    assert!(
        start.elapsed() >= SHORT * 2 - Duration::from_millis(50),
        "expired early"
    );
}

pub async fn accessed_expiry_is_extended_by_reads(h: &Harness) {
    let c = h
        .cache::<String, String>("exp-accessed")
        .expiry(ExpiryPolicy::Accessed(SHORT * 3))
        .build()
        .await
        .unwrap();
    c.put(k("a"), v("1")).await.unwrap();
    let start = Instant::now();
    // Keep reading every SHORT/2 for longer than the TTL: reads keep it alive.
    while start.elapsed() < SHORT * 6 {
        assert_eq!(
            get(&c, "a").await.as_deref(),
            Some("1"),
            "expired despite reads after {:?}",
            start.elapsed()
        );
        tokio::time::sleep(SHORT / 2).await;
    }
    eventually("entry expired once reads stopped", || async {
        !c.contains_key(&k("a")).await.unwrap()
    })
    .await;
}

pub async fn modified_expiry_is_extended_by_updates_not_reads(h: &Harness) {
    let c = h
        .cache::<String, String>("exp-modified")
        .expiry(ExpiryPolicy::Modified(SHORT * 3))
        .build()
        .await
        .unwrap();
    c.put(k("a"), v("1")).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < SHORT * 6 {
        c.put(k("a"), v("1")).await.unwrap();
        tokio::time::sleep(SHORT / 2).await;
    }
    assert!(
        c.contains_key(&k("a")).await.unwrap(),
        "updates did not extend the entry"
    );
    let read_start = Instant::now();
    eventually("entry expired although it was read", || async {
        get(&c, "a").await.is_none()
    })
    .await;
    assert!(read_start.elapsed() < SHORT * 3 + Duration::from_secs(3));
}

pub async fn max_idle_expires_untouched_entries(h: &Harness) {
    let c = h
        .cache::<String, String>("exp-idle")
        .max_idle(SHORT)
        .build()
        .await
        .unwrap();
    c.put(k("idle"), v("1")).await.unwrap();
    c.put(k("busy"), v("1")).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < SHORT * 4 {
        assert!(get(&c, "busy").await.is_some());
        tokio::time::sleep(SHORT / 4).await;
    }
    assert!(
        !c.contains_key(&k("idle")).await.unwrap(),
        "idle entry outlived max-idle"
    );
}

pub async fn per_entry_ttl_expires_that_entry_only(h: &Harness) {
    let c = plain(h, "exp-ttl").await;
    c.put_with_ttl(k("short"), v("1"), SHORT).await.unwrap();
    c.put(k("long"), v("1")).await.unwrap();
    eventually("short-lived entry expired", || async {
        get(&c, "short").await.is_none()
    })
    .await;
    assert_eq!(get(&c, "long").await.as_deref(), Some("1"));
}

pub async fn zero_ttl_means_expired_at_once(h: &Harness) {
    let c = h
        .cache::<String, String>("exp-zero")
        .expiry(ExpiryPolicy::Created(Duration::ZERO))
        .build()
        .await
        .unwrap();
    let mut rx = c.subscribe(EventFilter::kinds([EventKind::Created]));
    c.put(k("a"), v("1")).await.unwrap();
    assert_eq!(get(&c, "a").await, None);
    assert!(!c.contains_key(&k("a")).await.unwrap());
    assert_eq!(c.stats().puts, 0);
    let other = plain(h, "exp-zero-ttl").await;
    other
        .put_with_ttl(k("a"), v("1"), Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(get(&other, "a").await, None);
    assert!(rx.try_recv().is_none(), "a zero-TTL put emitted Created");
}

pub async fn expired_entries_emit_expired_events(h: &Harness) {
    let c = plain(h, "exp-events").await;
    let mut rx = c.subscribe(EventFilter::kinds([EventKind::Expired]));
    c.put_with_ttl(k("a"), v("1"), Duration::from_millis(100))
        .await
        .unwrap();
    let start = Instant::now();
    let event = loop {
        c.run_pending_tasks().await.unwrap();
        if let Some(event) = rx.try_recv() {
            break event.unwrap();
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no Expired event within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(event.key, "a");
    assert!(c.stats().expirations >= 1);
}

pub async fn an_entry_processor_can_set_a_value_with_a_ttl(h: &Harness) {
    let c = plain(h, "invoke-ttl").await;
    c.invoke(&k("short"), |e| e.set_value_with_ttl(v("1"), SHORT))
        .await
        .unwrap();
    c.invoke(&k("long"), |e| e.set_value(v("1"))).await.unwrap();
    assert_eq!(get(&c, "short").await.as_deref(), Some("1"));
    eventually("entry set with a TTL by a processor expired", || async {
        get(&c, "short").await.is_none()
    })
    .await;
    assert_eq!(get(&c, "long").await.as_deref(), Some("1"));
}

// ---------------------------------------------------------------- eviction

pub async fn max_entries_evicts_and_counts_evictions_apart_from_removals(h: &Harness) {
    // Three partitions so that a partitioned store's per-partition budget is exact.
    let c = h
        .cache::<String, String>("evict")
        .max_entries(30)
        .partitions(3)
        .build()
        .await
        .unwrap();
    let mut rx = c.subscribe(EventFilter::kinds([EventKind::Evicted]));
    for i in 0..120 {
        c.put(format!("k{i}"), v("x")).await.unwrap();
    }
    c.run_pending_tasks().await.unwrap();
    let len = c.len().await.unwrap();
    assert!(len <= 30, "{len} entries exceed max_entries 30");
    assert!(len >= 20, "evicted far too much: {len} left");
    let s = c.stats();
    assert_eq!(
        s.evictions,
        120 - len,
        "evictions must account for every entry gone"
    );
    assert_eq!(s.removals, 0);
    let mut evicted = 0;
    while evicted < s.evictions {
        assert_eq!(next_event(&mut rx).await.kind, EventKind::Evicted);
        evicted += 1;
    }
    // The most recent writes survive (LRU-like).
    assert!(get(&c, "k119").await.is_some());
}

// ---------------------------------------------------------------- loading, writing

struct CountingLoader {
    calls: Arc<AtomicUsize>,
    /// Loads finish only once this turns `true` (see [`release_when_waiting`]).
    released: tokio::sync::watch::Receiver<bool>,
}

/// Releases a gated loader once `waiters` callers wait on the load of `key`, so that no
/// caller can arrive after the load finished (which would be a second, legitimate
/// load): the single-flight checks then cannot pass or fail by scheduling luck.
async fn release_when_waiting<V: CacheValue>(
    cache: &crate::Cache<String, V>,
    key: &str,
    waiters: usize,
    release: tokio::sync::watch::Sender<bool>,
) {
    let key = k(key);
    eventually("callers joined the load", || async {
        cache.inner.flights.waiting(&key) >= waiters
    })
    .await;
    release.send_replace(true);
}

#[async_trait::async_trait]
impl CacheLoader<String, String> for CountingLoader {
    async fn load(&self, key: &String) -> Result<Option<String>, BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let _ = self.released.clone().wait_for(|r| *r).await;
        match key.as_str() {
            "missing" => Ok(None),
            "broken" => Err("database down".into()),
            _ => Ok(Some(format!("loaded {key}"))),
        }
    }
}

pub async fn read_through_loads_misses_once_and_caches_them(h: &Harness) {
    let calls = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let c = h
        .cache::<String, String>("read-through")
        .loader(CountingLoader {
            calls: calls.clone(),
            released,
        })
        .build()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move { c.get(&k("a")).await.unwrap() }));
    }
    release_when_waiting(&c, "a", 19, release).await;
    for t in tasks {
        assert_eq!(
            t.await.unwrap().as_deref().map(String::as_str),
            Some("loaded a")
        );
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "single-flight: one load for concurrent misses"
    );
    assert_eq!(get(&c, "a").await.as_deref(), Some("loaded a"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(get(&c, "missing").await, None);
    assert!(matches!(c.get(&k("broken")).await, Err(Error::Loader(_))));
    let s = c.stats();
    assert_eq!(s.load_successes, 2);
    assert_eq!(s.load_failures, 1);
    assert!(!c.contains_key(&k("broken")).await.unwrap());
}

pub async fn get_or_load_runs_the_loader_once_for_concurrent_misses(h: &Harness) {
    let c = plain(h, "get-or-load").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (c, calls, mut released) = (c.clone(), calls.clone(), released.clone());
        tasks.push(tokio::spawn(async move {
            c.get_or_load(&k("a"), |key| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let _ = released.wait_for(|r| *r).await;
                Ok::<_, std::io::Error>(format!("v-{key}"))
            })
            .await
            .unwrap()
        }));
    }
    release_when_waiting(&c, "a", 31, release).await;
    for t in tasks {
        assert_eq!(*t.await.unwrap(), "v-a");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(c.stats().load_successes, 1);
}

pub async fn get_or_load_with_ttl_caches_the_loaded_value_with_that_ttl(h: &Harness) {
    let c = plain(h, "get-or-load-ttl").await;
    let loaded = c
        .get_or_load_with_ttl(&k("a"), SHORT, |_| async {
            Ok::<_, std::io::Error>(v("1"))
        })
        .await
        .unwrap();
    assert_eq!(*loaded, "1");
    assert_eq!(get(&c, "a").await.as_deref(), Some("1"));
    eventually("loaded entry expired", || async {
        get(&c, "a").await.is_none()
    })
    .await;
    assert_eq!(c.stats().puts, 1, "the loaded value is written once");
}

pub async fn a_panicking_loader_fails_every_waiter_and_caches_nothing(h: &Harness) {
    let c = plain(h, "loader-panic").await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.get_or_load(&k("a"), |_| async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if true {
                    panic!("loader bug");
                }
                Ok::<String, std::io::Error>(v("never"))
            })
            .await
        }));
    }
    for t in tasks {
        let result = tokio::time::timeout(DEADLINE, t)
            .await
            .expect("a waiter hung")
            .unwrap();
        assert!(
            matches!(result, Err(Error::Panicked("loader", _))),
            "{result:?}"
        );
    }
    assert!(!c.contains_key(&k("a")).await.unwrap());
    // The key is not poisoned: the next load works.
    let value = c
        .get_or_load(&k("a"), |_| async { Ok::<_, std::io::Error>(v("ok")) })
        .await
        .unwrap();
    assert_eq!(*value, "ok");
}

#[derive(Default)]
struct RecordingWriter {
    log: parking_lot::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl CacheWriter<String, String> for Arc<RecordingWriter> {
    async fn write(&self, key: &String, value: &String) -> Result<(), BoxError> {
        if value == "poison" {
            return Err("system of record refused".into());
        }
        self.log.lock().push(format!("write {key}={value}"));
        Ok(())
    }

    async fn delete(&self, key: &String) -> Result<(), BoxError> {
        self.log.lock().push(format!("delete {key}"));
        Ok(())
    }
}

pub async fn write_through_calls_the_writer_first_and_a_failure_changes_nothing(h: &Harness) {
    let writer = Arc::new(RecordingWriter::default());
    let c = h
        .cache::<String, String>("write-through")
        .writer(writer.clone())
        .build()
        .await
        .unwrap();
    c.put(k("a"), v("1")).await.unwrap();
    assert!(!c.put_if_absent(k("a"), v("2")).await.unwrap());
    let failed = c.put(k("a"), v("poison")).await;
    assert!(matches!(failed, Err(Error::Writer(_))), "{failed:?}");
    assert_eq!(
        get(&c, "a").await.as_deref(),
        Some("1"),
        "a failing writer changed the cache"
    );
    assert!(c.remove(&k("a")).await.unwrap());
    assert_eq!(*writer.log.lock(), ["write a=1", "delete a"]);
}

// ---------------------------------------------------------------- bad input

pub async fn oversized_values_are_rejected_before_any_write(h: &Harness) {
    let c = h
        .cache::<String, String>("oversized")
        .max_value_bytes(1024)
        .build()
        .await
        .unwrap();
    let result = c.put(k("big"), "x".repeat(4096)).await;
    assert!(
        matches!(result, Err(Error::Rejected(ref m)) if m.contains("1024")),
        "{result:?}"
    );
    assert!(!c.contains_key(&k("big")).await.unwrap());
    c.put(k("small"), v("ok")).await.unwrap();
    assert_eq!(c.stats().rejections, 1);
}

pub async fn keys_no_custom_hashing_rule_matches_are_rejected(h: &Harness) {
    let c = h
        .cache::<String, String>("custom-hashing")
        .hashing_rules([r"user:(?<tag>\d+)", r"order:(?<tag>[a-z]+)"])
        .build()
        .await
        .unwrap();
    c.put(k("user:42:profile"), v("1")).await.unwrap();
    assert_eq!(get(&c, "user:42:profile").await.as_deref(), Some("1"));
    let result = c.put(k("session:1"), v("1")).await;
    assert!(
        matches!(result, Err(Error::Rejected(ref m)) if m.contains("user:")),
        "{result:?}"
    );
    // Reads are checked the same way on every store, so switching backends never changes
    // which keys are accepted.
    let read = c.get(&k("session:1")).await;
    assert!(matches!(read, Err(Error::Rejected(_))), "{read:?}");
}

pub async fn reopening_a_cache_with_other_types_or_settings_is_a_config_error(h: &Harness) {
    let c = h
        .cache::<String, String>("reopen")
        .max_entries(10)
        .build()
        .await
        .unwrap();
    let name = c.name().to_string();
    let again = h
        .manager
        .cache::<String, String>(&name)
        .max_entries(10)
        .build()
        .await
        .unwrap();
    again.put(k("a"), v("1")).await.unwrap();
    assert_eq!(
        get(&c, "a").await.as_deref(),
        Some("1"),
        "reopening gave another cache"
    );
    let other_types = h
        .manager
        .cache::<u64, String>(&name)
        .max_entries(10)
        .build()
        .await;
    assert!(
        matches!(other_types, Err(Error::Config(ref m)) if m.contains("types")),
        "{other_types:?}"
    );
    let other_settings = h
        .manager
        .cache::<String, String>(&name)
        .max_entries(11)
        .build()
        .await;
    assert!(
        matches!(other_settings, Err(Error::Config(_))),
        "{other_settings:?}"
    );
}

pub async fn typed_keys_and_values_round_trip(h: &Harness) {
    #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
    struct User {
        id: u64,
        name: String,
        tags: Vec<String>,
        score: Option<f64>,
    }
    let c = h
        .cache::<(u32, String), User>("typed")
        .build()
        .await
        .unwrap();
    let user = User {
        id: 7,
        name: "Zoë".into(),
        tags: vec!["a:b".into(), "{x}".into()],
        score: Some(0.5),
    };
    c.put((1, "alice".into()), user.clone()).await.unwrap();
    assert_eq!(
        c.get(&(1, "alice".into())).await.unwrap().as_deref(),
        Some(&user)
    );
    assert_eq!(c.get(&(1, "bob".into())).await.unwrap(), None);
    let keys: Vec<(u32, String)> = c.keys().map(|k| k.unwrap()).collect().await;
    assert_eq!(keys, [(1, "alice".to_string())]);
}

/// Instantiates the whole suite as `#[tokio::test]`s. `$manager` is an async fn (or a
/// path to one) returning the [`CacheManager`] under test.
///
/// `conformance_suite!(skip_unless: $available, $manager)` does the same, but each test
/// first calls the plain fn `$available() -> bool` and returns at once when it is
/// `false` (for backends that may be missing, such as Valkey: `$available` should say
/// loudly why it skips).
#[macro_export]
macro_rules! conformance_suite {
    (skip_unless: $available:path, $manager:path) => {
        $crate::conformance_suite!(@checks [@guarded ($available()), $manager;]);
    };
    ($manager:path) => {
        $crate::conformance_suite!(@checks [@tests $manager;]);
    };
    (@guarded $guard:expr, $manager:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                if !$guard {
                    return;
                }
                let harness = $crate::conformance::Harness::new($manager().await);
                $crate::conformance::$check(&harness).await;
            }
        )*
    };
    (@checks [$($head:tt)*]) => {
        $crate::conformance_suite!($($head)*
            get_of_absent_key_is_a_miss,
            put_then_get_returns_the_value_and_counts_a_hit,
            put_emits_created_then_updated,
            contains_key_counts_nothing_and_does_not_load,
            get_all_returns_values_in_the_callers_order,
            put_if_absent_stores_only_when_absent,
            put_if_absent_on_present_key_emits_no_event,
            get_and_put_returns_the_previous_value,
            remove_reports_whether_an_entry_was_removed,
            remove_if_equals_removes_only_the_expected_value,
            get_and_remove_returns_the_removed_value,
            replace_changes_only_present_entries,
            replace_if_equals_compares_the_current_value,
            get_and_replace_returns_the_previous_value_when_present,
            remove_all_keys_removes_those_keys_only,
            remove_all_emits_one_removed_per_entry,
            clear_removes_everything_without_events_or_statistics,
            keys_and_entries_stream_every_entry_once,
            invoke_applies_the_net_effect_atomically,
            a_panicking_entry_processor_leaves_the_entry_and_the_cache_usable,
            created_expiry_is_not_extended_by_reads_or_updates,
            accessed_expiry_is_extended_by_reads,
            modified_expiry_is_extended_by_updates_not_reads,
            max_idle_expires_untouched_entries,
            per_entry_ttl_expires_that_entry_only,
            an_entry_processor_can_set_a_value_with_a_ttl,
            zero_ttl_means_expired_at_once,
            expired_entries_emit_expired_events,
            max_entries_evicts_and_counts_evictions_apart_from_removals,
            read_through_loads_misses_once_and_caches_them,
            get_or_load_runs_the_loader_once_for_concurrent_misses,
            get_or_load_with_ttl_caches_the_loaded_value_with_that_ttl,
            a_panicking_loader_fails_every_waiter_and_caches_nothing,
            write_through_calls_the_writer_first_and_a_failure_changes_nothing,
            oversized_values_are_rejected_before_any_write,
            keys_no_custom_hashing_rule_matches_are_rejected,
            reopening_a_cache_with_other_types_or_settings_is_a_config_error,
            typed_keys_and_values_round_trip
        );
    };
    (@tests $manager:path; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let harness = $crate::conformance::Harness::new($manager().await);
                $crate::conformance::$check(&harness).await;
            }
        )*
    };
}
