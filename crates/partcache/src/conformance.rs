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
#[derive(Debug)]
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

/// Runs a check whose verdict depends on time at time scale 1, and again at twice the
/// scale (every duration doubled) while a round reports that its timing did not hold
/// (`Err`: a machine too busy to keep the margins, so the round judged nothing). A
/// wrong answer in a round whose timing held fails at once, inside the round.
async fn at_time_scale<F, Fut>(what: &str, mut round: F)
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut scale = 1;
    loop {
        match round(scale).await {
            Ok(()) => return,
            Err(late) if scale < 8 => {
                eprintln!(
                    "{what}: {late} at time scale {scale}; again at {}",
                    scale * 2
                );
                scale *= 2;
            }
            Err(late) => panic!("{what}: {late} even at time scale {scale}"),
        }
    }
}

/// `n` milliseconds at time scale `scale` (see [`at_time_scale`]).
fn scaled(scale: u32, n: u64) -> Duration {
    Duration::from_millis(n * u64::from(scale))
}

/// `Err` (the round judged nothing) once `now` is past `deadline`.
fn before(deadline: Instant, what: &str) -> Result<(), String> {
    if Instant::now() < deadline {
        Ok(())
    } else {
        Err(format!("{what} ran late"))
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
    // Nor is it counted as evictions or expirations, once the store's housekeeping ran.
    c.run_pending_tasks().await.unwrap();
    let s = c.stats();
    assert_eq!((s.evictions, s.removals, s.expirations), (0, 0, 0), "{s:?}");
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
    // Nor does it create an absent entry it set before panicking (the TCK's
    // `noValueException`).
    let result = c
        .invoke(&k("b"), |e| {
            e.set_value(v("abc"));
            if e.exists() {
                panic!("processor failed");
            }
        })
        .await;
    assert!(
        matches!(result, Err(Error::Panicked("entry processor", _))),
        "{result:?}"
    );
    assert!(!c.contains_key(&k("b")).await.unwrap());
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
    at_time_scale("max idle", |scale| max_idle_round(h, scale)).await;
}

async fn max_idle_round(h: &Harness, scale: u32) -> Result<(), String> {
    let idle = SHORT * scale;
    let c = h
        .cache::<String, String>(&format!("exp-idle-{scale}"))
        .max_idle(idle)
        .build()
        .await
        .unwrap();
    c.put(k("idle"), v("1")).await.unwrap();
    let mut last_access = Instant::now();
    c.put(k("busy"), v("1")).await.unwrap();
    let start = Instant::now();
    while start.elapsed() < idle * 4 {
        let access = Instant::now();
        let busy = get(&c, "busy").await;
        // Read within `idle` of the previous access, or the entry may rightly be gone.
        before(last_access + idle * 9 / 10, "a read of the busy entry")?;
        assert!(busy.is_some(), "an entry read every {:?} expired", idle / 4);
        last_access = access;
        tokio::time::sleep(idle / 4).await;
    }
    assert!(
        !c.contains_key(&k("idle")).await.unwrap(),
        "idle entry outlived max-idle"
    );
    Ok(())
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

/// A thousand years: far, but a deadline every store keeps.
const THOUSAND_YEARS: Duration = Duration::from_secs(1000 * 365 * 24 * 3600);

pub async fn writes_with_a_ttl_of_duration_max_or_a_thousand_years_are_stored(h: &Harness) {
    // `Duration::MAX` is the usual "forever": it sets no deadline, and a thousand years
    // is still a deadline, far away. Each write is stored, and read back.
    for (label, ttl) in [("max", Duration::MAX), ("1000y", THOUSAND_YEARS)] {
        let c = plain(h, &format!("ttl-{label}")).await;
        c.put_with_ttl(k("put"), v("1"), ttl)
            .await
            .unwrap_or_else(|e| panic!("put_with_ttl {label}: {e}"));
        c.put_with_ttl(k("put"), v("2"), ttl)
            .await
            .unwrap_or_else(|e| panic!("put_with_ttl {label}, an update: {e}"));
        c.get_or_load_with_ttl(&k("loaded"), ttl, |_| async {
            Ok::<_, std::io::Error>(v("1"))
        })
        .await
        .unwrap_or_else(|e| panic!("get_or_load_with_ttl {label}: {e}"));
        c.invoke(&k("invoked"), |e| e.set_value_with_ttl(v("1"), ttl))
            .await
            .unwrap_or_else(|e| panic!("set_value_with_ttl {label}: {e}"));
        assert_eq!(
            (
                get(&c, "put").await,
                get(&c, "loaded").await,
                get(&c, "invoked").await
            ),
            (Some(v("2")), Some(v("1")), Some(v("1"))),
            "TTL {label}"
        );
    }
}

/// A custom policy that answers `Duration::MAX` to every question.
struct Forever;

impl crate::expiry::CustomExpiry for Forever {
    fn for_creation(&self) -> Option<Duration> {
        Some(Duration::MAX)
    }
    fn for_access(&self) -> Option<Duration> {
        Some(Duration::MAX)
    }
    fn for_update(&self) -> Option<Duration> {
        Some(Duration::MAX)
    }
}

pub async fn expiry_settings_of_duration_max_store_update_and_read_entries(h: &Harness) {
    // A policy, a max-idle or a custom policy's answer of `Duration::MAX` sets no
    // deadline: entries are created, updated and read as under an eternal policy.
    let mut caches = Vec::new();
    for (label, policy) in [
        ("created", ExpiryPolicy::Created(Duration::MAX)),
        ("modified", ExpiryPolicy::Modified(Duration::MAX)),
        ("accessed", ExpiryPolicy::Accessed(Duration::MAX)),
        ("touched", ExpiryPolicy::Touched(Duration::MAX)),
    ] {
        let built = h.cache::<String, String>(&format!("policy-max-{label}"));
        caches.push((label, built.expiry(policy).build().await.unwrap()));
    }
    let built = h.cache::<String, String>("idle-max");
    caches.push((
        "max_idle",
        built.max_idle(Duration::MAX).build().await.unwrap(),
    ));
    let built = h.cache::<String, String>("custom-max");
    caches.push((
        "custom",
        built.expiry_policy(Forever).build().await.unwrap(),
    ));
    for (label, c) in caches {
        c.put(k("a"), v("1"))
            .await
            .unwrap_or_else(|e| panic!("{label}: a creation: {e}"));
        c.put(k("a"), v("2"))
            .await
            .unwrap_or_else(|e| panic!("{label}: an update: {e}"));
        assert_eq!(get(&c, "a").await, Some(v("2")), "{label}: an access");
        assert_eq!(get(&c, "a").await, Some(v("2")), "{label}: after an access");
    }
}

// ---------------------------------------------------------------- the expiry table

/// What an operation is for expiry (JSR-107 §6.4's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Touch {
    /// Moves no deadline.
    Nothing,
    /// An access: moves the deadline of `Accessed` and `Touched`.
    Access,
    /// An update: moves the deadline of `Modified` and `Touched`.
    Update,
}

/// The operations of the table, each on a present entry with the value `v0`.
const TABLE: [(&str, Touch); 16] = [
    ("contains_key", Touch::Nothing),
    ("get", Touch::Access),
    ("get_all", Touch::Access),
    ("put", Touch::Update),
    ("put_all", Touch::Update),
    ("put_if_absent", Touch::Nothing),
    ("get_and_put", Touch::Update),
    ("get_and_replace", Touch::Update),
    ("replace", Touch::Update),
    ("replace_if_equals", Touch::Update),
    ("replace_if_equals_mismatch", Touch::Access),
    ("remove_if_equals_mismatch", Touch::Access),
    ("invoke_without_read", Touch::Nothing),
    ("invoke_read", Touch::Access),
    ("invoke_set", Touch::Update),
    ("load_all_replacing", Touch::Update),
];

async fn apply(c: &C, op: &str) {
    let key = k(op);
    match op {
        "contains_key" => assert!(c.contains_key(&key).await.unwrap()),
        "get" => assert!(c.get(&key).await.unwrap().is_some()),
        "get_all" => assert!(c.get_all(&[key]).await.unwrap()[0].is_some()),
        "put" => c.put(key, v("v1")).await.unwrap(),
        "put_all" => c.put_all([(key, v("v1"))]).await.unwrap(),
        "put_if_absent" => assert!(!c.put_if_absent(key, v("v1")).await.unwrap()),
        "get_and_put" => assert!(c.get_and_put(key, v("v1")).await.unwrap().is_some()),
        "get_and_replace" => assert!(c.get_and_replace(key, v("v1")).await.unwrap().is_some()),
        "replace" => assert!(c.replace(key, v("v1")).await.unwrap()),
        "replace_if_equals" => assert!(c.replace_if_equals(key, v("v0"), v("v1")).await.unwrap()),
        "replace_if_equals_mismatch" => {
            assert!(!c.replace_if_equals(key, v("other"), v("v1")).await.unwrap())
        }
        "remove_if_equals_mismatch" => {
            assert!(!c.remove_if_equals(&key, v("other")).await.unwrap())
        }
        "invoke_without_read" => assert!(c.invoke(&key, |e| e.exists()).await.unwrap()),
        "invoke_read" => assert!(c.invoke(&key, |e| e.value().is_some()).await.unwrap()),
        "invoke_set" => c.invoke(&key, |e| e.set_value(v("v1"))).await.unwrap(),
        "load_all_replacing" => {
            assert!(matches!(
                c.load_all(&[key], true).await.unwrap()[..],
                [Ok(true)]
            ))
        }
        other => panic!("no operation {other}"),
    }
}

/// Checks every cell of JSR-107's expiry table for one policy: each operation runs on
/// its own entry half-way through the entry's life, and afterwards, once the original
/// deadline has passed, exactly the entries whose deadline the operation moved are
/// still there. Iteration (an access) runs on a cache of its own, since it reaches
/// every entry.
///
/// The verdict depends on time (see [`at_time_scale`]): the operations must all land
/// before the original deadlines and the checks must all run before the moved ones.
async fn expiry_table(
    h: &Harness,
    label: &str,
    policy: fn(Duration) -> ExpiryPolicy,
    moves: &[Touch],
) {
    at_time_scale(label, |scale| {
        let life = scaled(scale, 2000);
        expiry_table_round(h, format!("{label}-{scale}"), policy(life), life, moves)
    })
    .await;
}

/// One run of [`expiry_table`]: `Err` (judging nothing) when the timing did not hold.
async fn expiry_table_round(
    h: &Harness,
    label: String,
    policy: ExpiryPolicy,
    life: Duration,
    moves: &[Touch],
) -> Result<(), String> {
    // A loader for `load_all` only (no read-through: no other operation loads).
    let build = |suffix: &str| {
        h.cache::<String, String>(&format!("{label}-{suffix}"))
            .expiry(policy)
            .loader(MapLoader {
                calls: Arc::default(),
            })
            .read_through(false)
            .build()
    };
    let c = build("ops").await.unwrap();
    let iterated = build("iter").await.unwrap();
    let created = Instant::now();
    c.put_all(TABLE.iter().map(|(op, _)| (k(op), v("v0"))))
        .await
        .unwrap();
    iterated.put(k("entry"), v("v0")).await.unwrap();
    let created_by = Instant::now();
    tokio::time::sleep_until((created + life / 2).into()).await;
    let touched = Instant::now();
    // Each operation has its own entry, so they run at once: the window they need is
    // one round trip, not sixteen.
    let (_, found) = futures::join!(
        futures::future::join_all(TABLE.iter().map(|(op, _)| apply(&c, op))),
        iterated.entries().collect::<Vec<_>>()
    );
    before(created + life, "the operations")?;
    assert_eq!(found.len(), 1, "{policy:?}: iteration before the deadline");
    // The original deadlines are past; a moved one is at least `life` after `touched`.
    tokio::time::sleep_until((created_by + life + Duration::from_millis(300)).into()).await;
    let cells = TABLE.iter().map(|&(op, touch)| (&c, op, touch)).chain([(
        &iterated,
        "entry",
        Touch::Access,
    )]);
    let checks = cells.map(|(cache, op, touch)| async move {
        let moved = moves.contains(&touch);
        (cache.contains_key(&k(op)).await.unwrap() != moved).then(|| {
            format!(
                "{op} ({touch:?}) {} the deadline",
                if moved { "did not move" } else { "moved" }
            )
        })
    });
    let wrong: Vec<String> = futures::future::join_all(checks)
        .await
        .into_iter()
        .flatten()
        .collect();
    before(touched + life, "the checks")?;
    assert!(wrong.is_empty(), "{policy:?}: {wrong:#?}");
    Ok(())
}

pub async fn expiry_table_created(h: &Harness) {
    expiry_table(h, "table-created", ExpiryPolicy::Created, &[]).await;
}

pub async fn expiry_table_modified(h: &Harness) {
    expiry_table(
        h,
        "table-modified",
        ExpiryPolicy::Modified,
        &[Touch::Update],
    )
    .await;
}

pub async fn expiry_table_accessed(h: &Harness) {
    expiry_table(
        h,
        "table-accessed",
        ExpiryPolicy::Accessed,
        &[Touch::Access],
    )
    .await;
}

pub async fn expiry_table_touched(h: &Harness) {
    expiry_table(
        h,
        "table-touched",
        ExpiryPolicy::Touched,
        &[Touch::Access, Touch::Update],
    )
    .await;
}

/// A custom policy with fixed answers (ms; `None` as `CustomExpiry` means it).
struct Durations(Option<u64>, Option<u64>, Option<u64>);

impl crate::CustomExpiry for Durations {
    fn for_creation(&self) -> Option<Duration> {
        self.0.map(Duration::from_millis)
    }
    fn for_access(&self) -> Option<Duration> {
        self.1.map(Duration::from_millis)
    }
    fn for_update(&self) -> Option<Duration> {
        self.2.map(Duration::from_millis)
    }
}

pub async fn a_custom_expiry_policy_sets_each_deadline_it_is_asked_for(h: &Harness) {
    at_time_scale("custom expiry", |scale| custom_expiry_round(h, scale)).await;
    at_time_scale("custom expiry, none", |scale| {
        custom_expiry_none_round(h, scale)
    })
    .await;
}

async fn custom_expiry_round(h: &Harness, scale: u32) -> Result<(), String> {
    let ms = |n: u64| scaled(scale, n);
    let c = h
        .cache::<String, String>(&format!("custom-expiry-{scale}"))
        .expiry_policy(Durations(
            Some(2000 * u64::from(scale)),
            Some(4000 * u64::from(scale)),
            Some(400 * u64::from(scale)),
        ))
        .build()
        .await
        .unwrap();
    let start = Instant::now();
    for key in ["created", "accessed", "updated", "untouched"] {
        c.put(k(key), v("1")).await.unwrap();
    }
    let created_by = Instant::now();
    tokio::time::sleep_until((start + ms(500)).into()).await;
    let accessed_at = Instant::now();
    let accessed = c.get(&k("accessed")).await.unwrap();
    c.put(k("updated"), v("2")).await.unwrap();
    let updated_by = Instant::now();
    let untouched = c.contains_key(&k("untouched")).await.unwrap();
    before(start + ms(2000), "the access and the update")?;
    assert!(accessed.is_some());
    assert!(untouched, "contains_key is no access");
    // The update's 400 ms are over, the creation's 2 s are not.
    tokio::time::sleep_until((updated_by + ms(500)).max(start + ms(1300)).into()).await;
    let updated = c.contains_key(&k("updated")).await.unwrap();
    let created = c.contains_key(&k("created")).await.unwrap();
    before(start + ms(2000), "the checks of the update")?;
    assert!(!updated, "for_update not applied");
    assert!(created, "expired before for_creation");
    // The creation's 2 s are over, the access's 4 s are not.
    tokio::time::sleep_until((created_by + ms(2100)).max(start + ms(2400)).into()).await;
    let created = c.contains_key(&k("created")).await.unwrap();
    let untouched = c.contains_key(&k("untouched")).await.unwrap();
    let accessed = c.contains_key(&k("accessed")).await.unwrap();
    before(accessed_at + ms(4000), "the checks of the creation")?;
    assert!(!created, "for_creation not applied");
    assert!(!untouched);
    assert!(accessed, "for_access not applied");
    Ok(())
}

/// `None` for an access or an update leaves the deadline where it is.
async fn custom_expiry_none_round(h: &Harness, scale: u32) -> Result<(), String> {
    let ms = |n: u64| scaled(scale, n);
    let kept = h
        .cache::<String, String>(&format!("custom-expiry-kept-{scale}"))
        .expiry_policy(Durations(Some(1000 * u64::from(scale)), None, None))
        .build()
        .await
        .unwrap();
    let start = Instant::now();
    kept.put(k("a"), v("1")).await.unwrap();
    let put_by = Instant::now();
    tokio::time::sleep_until((start + ms(400)).into()).await;
    let moved_from = Instant::now();
    let read = kept.get(&k("a")).await.unwrap();
    kept.put(k("a"), v("2")).await.unwrap();
    before(start + ms(1000), "the access and the update")?;
    assert!(read.is_some());
    // Past the creation's deadline, before the one a moving access or update would set.
    tokio::time::sleep_until((put_by + ms(1100)).into()).await;
    let there = kept.contains_key(&k("a")).await.unwrap();
    before(moved_from + ms(1000), "the check")?;
    assert!(!there, "an access or update moved it");
    Ok(())
}

pub async fn a_custom_expiry_policy_with_a_zero_creation_stores_nothing(h: &Harness) {
    // A zero creation duration stores nothing and counts no put.
    let zero = h
        .cache::<String, String>("custom-expiry-zero")
        .expiry_policy(Durations(Some(0), None, None))
        .build()
        .await
        .unwrap();
    zero.put(k("a"), v("1")).await.unwrap();
    assert!(!zero.contains_key(&k("a")).await.unwrap());
    assert_eq!(zero.stats().puts, 0);
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
    let s = c.stats();
    assert_eq!(
        (s.puts, s.load_successes),
        (0, 1),
        "a loaded value is a load, not a put"
    );
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

// ---------------------------------------------------------------- JCache statistics

pub async fn put_all_counts_a_put_only_for_entries_it_stores(h: &Harness) {
    let c = plain(h, "put-all-stats").await;
    c.put_all((0..5).map(|i| (format!("k{i}"), v("x"))))
        .await
        .unwrap();
    assert_eq!(c.stats().puts, 5);
    // A zero creation expiry stores nothing: nothing counted, no event.
    let zero = h
        .cache::<String, String>("put-all-zero")
        .expiry(ExpiryPolicy::Created(Duration::ZERO))
        .build()
        .await
        .unwrap();
    let mut rx = zero.subscribe(EventFilter::all());
    zero.put_all((0..5).map(|i| (format!("k{i}"), v("x"))))
        .await
        .unwrap();
    assert_eq!(zero.len().await.unwrap(), 0);
    assert_eq!(
        zero.stats().puts,
        0,
        "put_all counted entries it did not store"
    );
    assert!(
        rx.try_recv().is_none(),
        "put_all of unstored entries emitted an event"
    );
}

pub async fn invoke_counts_a_hit_or_a_miss_whether_or_not_the_processor_reads(h: &Harness) {
    let c = plain(h, "invoke-stats").await;
    c.put(k("present"), v("1")).await.unwrap();
    c.reset_stats();
    c.invoke(&k("present"), |e| e.exists()).await.unwrap();
    c.invoke(&k("absent"), |e| e.exists()).await.unwrap();
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.puts, s.removals), (1, 1, 0, 0));
    c.invoke(&k("present"), |e| e.set_value(v("2")))
        .await
        .unwrap();
    c.invoke(&k("new"), |e| e.set_value(v("1"))).await.unwrap();
    c.invoke(&k("present"), |e| e.remove()).await.unwrap();
    // Set then remove of an absent key: no net effect, nothing but the miss.
    c.invoke(&k("ghost"), |e| {
        e.set_value(v("1"));
        e.remove();
    })
    .await
    .unwrap();
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.puts, s.removals), (3, 3, 2, 1));
}

pub async fn iteration_counts_a_hit_per_entry_and_its_removal_a_removal(h: &Harness) {
    let writer = Arc::new(RecordingWriter::default());
    let c = h
        .cache::<String, String>("iter-stats")
        .writer(writer.clone())
        .build()
        .await
        .unwrap();
    c.put_all((0..10).map(|i| (format!("k{i}"), v("x"))))
        .await
        .unwrap();
    c.reset_stats();
    let mut removed = Vec::new();
    let mut entries = c.entries();
    assert!(
        matches!(entries.remove().await, Err(Error::Rejected(_))),
        "removal before the first entry"
    );
    while let Some(entry) = entries.next().await {
        let (key, _) = entry.unwrap();
        if key.ends_with(['1', '3', '5']) {
            assert!(entries.remove().await.unwrap());
            removed.push(key);
        }
    }
    drop(entries);
    removed.sort();
    assert_eq!(removed, ["k1", "k3", "k5"]);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.removals), (10, 0, 3));
    assert_eq!(s.gets(), 10);
    assert_eq!(c.len().await.unwrap(), 7);
    assert!(!c.contains_key(&k("k3")).await.unwrap());
    let deletes = writer
        .log
        .lock()
        .iter()
        .filter(|l| l.starts_with("delete"))
        .count();
    assert_eq!(deletes, 3, "an iterator removal is written through");
    // `keys()` is not JCache's iterator: it counts nothing.
    let _: Vec<_> = c.keys().collect().await;
    assert_eq!(c.stats().hits, 10);
}

/// A loader that answers `loaded <key>`, `None` for `missing`, and fails for `broken`.
struct MapLoader {
    calls: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl CacheLoader<String, String> for MapLoader {
    async fn load(&self, key: &String) -> Result<Option<String>, BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match key.as_str() {
            "missing" => Ok(None),
            "broken" => Err("database down".into()),
            _ => Ok(Some(format!("loaded {key}"))),
        }
    }
}

pub async fn a_read_through_load_is_a_miss_not_a_put_and_is_not_written_through(h: &Harness) {
    let writer = Arc::new(RecordingWriter::default());
    let c = h
        .cache::<String, String>("load-stats")
        .loader(MapLoader {
            calls: Arc::default(),
        })
        .writer(writer.clone())
        .build()
        .await
        .unwrap();
    let mut rx = c.subscribe(EventFilter::all());
    assert_eq!(get(&c, "a").await.as_deref(), Some("loaded a"));
    let values = c.get_all(&[k("b"), k("a")]).await.unwrap();
    assert_eq!(values[0].as_deref().map(String::as_str), Some("loaded b"));
    let s = c.stats();
    // get a: miss (loaded); get_all: b miss (loaded), a hit.
    assert_eq!((s.hits, s.misses, s.puts, s.load_successes), (1, 2, 0, 2));
    assert!(
        writer.log.lock().is_empty(),
        "a loaded value was written through: {:?}",
        writer.log.lock()
    );
    assert!(c.contains_key(&k("a")).await.unwrap());
    // A loaded entry is created (JCache sends CREATED for a load).
    assert_eq!(next_event(&mut rx).await.kind, EventKind::Created);
}

// ---------------------------------------------------------------- read-through in invoke

pub async fn invoke_loads_an_absent_value_the_processor_reads_when_reading_through(h: &Harness) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = h
        .cache::<String, String>("invoke-load")
        .loader(MapLoader {
            calls: calls.clone(),
        })
        .build()
        .await
        .unwrap();
    // Reading loads; kept as it is, the value is stored as a load.
    let seen = c.invoke(&k("a"), |e| e.value().cloned()).await.unwrap();
    assert_eq!(seen.as_deref(), Some("loaded a"));
    assert_eq!(get(&c, "a").await.as_deref(), Some("loaded a"));
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.puts, s.load_successes), (1, 1, 0, 1));
    // Only a read loads: `exists` does not.
    assert!(!c.invoke(&k("b"), |e| e.exists()).await.unwrap());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Loaded, then set: the set value is stored and counted as a put.
    c.invoke(&k("c"), |e| {
        let loaded = e.value().cloned().unwrap_or_default();
        e.set_value(format!("{loaded}!"));
    })
    .await
    .unwrap();
    assert_eq!(get(&c, "c").await.as_deref(), Some("loaded c!"));
    // Loaded, then removed: nothing stored.
    c.invoke(&k("d"), |e| {
        let _ = e.value();
        e.remove();
    })
    .await
    .unwrap();
    assert!(!c.contains_key(&k("d")).await.unwrap());
    // Nothing to load: the processor sees nothing; a failing loader fails the call.
    assert_eq!(
        c.invoke(&k("missing"), |e| e.value().cloned())
            .await
            .unwrap(),
        None
    );
    assert!(matches!(
        c.invoke(&k("broken"), |e| e.value().cloned()).await,
        Err(Error::Loader(_))
    ));
    // Without read-through the processor sees nothing and nothing loads.
    let off = h
        .cache::<String, String>("invoke-no-load")
        .loader(MapLoader {
            calls: calls.clone(),
        })
        .read_through(false)
        .build()
        .await
        .unwrap();
    let before = calls.load(Ordering::SeqCst);
    assert_eq!(
        off.invoke(&k("a"), |e| e.value().cloned()).await.unwrap(),
        None
    );
    assert_eq!(get(&off, "a").await, None);
    assert_eq!(calls.load(Ordering::SeqCst), before);
}

pub async fn invoke_writes_through_a_set_or_a_removal_before_the_cache_changes(h: &Harness) {
    let writer = Arc::new(RecordingWriter::default());
    let c = h
        .cache::<String, String>("invoke-writer")
        .writer(writer.clone())
        .loader(MapLoader {
            calls: Arc::default(),
        })
        .build()
        .await
        .unwrap();
    c.invoke(&k("a"), |e| e.set_value(v("1"))).await.unwrap();
    c.invoke(&k("a"), |e| {
        let next = format!("{}2", e.value().cloned().unwrap_or_default());
        e.set_value(next);
    })
    .await
    .unwrap();
    assert_eq!(get(&c, "a").await.as_deref(), Some("12"));
    // Reading only writes nothing; removing an absent entry deletes it from the
    // system of record, which may hold it (JSR-107 §9.3, as `remove` does).
    assert!(c.invoke(&k("a"), |e| e.value().is_some()).await.unwrap());
    c.invoke(&k("none"), |e| e.remove()).await.unwrap();
    // A failing writer fails the call and leaves the entry.
    let failed = c.invoke(&k("a"), |e| e.set_value(v("poison"))).await;
    assert!(matches!(failed, Err(Error::Writer(_))), "{failed:?}");
    assert_eq!(get(&c, "a").await.as_deref(), Some("12"));
    c.invoke(&k("a"), |e| e.remove()).await.unwrap();
    assert!(!c.contains_key(&k("a")).await.unwrap());
    // A loaded value kept as it is comes from the system of record: not written.
    assert_eq!(
        c.invoke(&k("b"), |e| e.value().cloned())
            .await
            .unwrap()
            .as_deref(),
        Some("loaded b")
    );
    assert!(c.contains_key(&k("b")).await.unwrap());
    assert_eq!(
        *writer.log.lock(),
        ["write a=1", "write a=12", "delete none", "delete a"]
    );
    let s = c.stats();
    assert_eq!((s.puts, s.removals), (2, 1));
}

// ---------------------------------------------------------------- batch writers

/// A writer whose batch forms apply every entry but those whose key contains `bad`,
/// and report those as failed.
#[derive(Default)]
struct PartialWriter {
    written: parking_lot::Mutex<Vec<String>>,
    deleted: parking_lot::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl CacheWriter<String, String> for Arc<PartialWriter> {
    async fn write(&self, key: &String, _: &String) -> Result<(), BoxError> {
        self.written.lock().push(key.clone());
        Ok(())
    }

    async fn delete(&self, key: &String) -> Result<(), BoxError> {
        self.deleted.lock().push(key.clone());
        Ok(())
    }

    async fn write_all(&self, entries: &[(&String, &String)]) -> Result<(), crate::BatchError> {
        let mut failed = Vec::new();
        for (i, (key, _)) in entries.iter().enumerate() {
            if key.contains("bad") {
                failed.push(i);
            } else {
                self.written.lock().push((*key).clone());
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(crate::BatchError {
                failed,
                error: "some rows were refused".into(),
            })
        }
    }

    async fn delete_all(&self, keys: &[&String]) -> Result<(), crate::BatchError> {
        let mut failed = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if key.contains("bad") {
                failed.push(i);
            } else {
                self.deleted.lock().push((*key).clone());
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(crate::BatchError {
                failed,
                error: "some rows were refused".into(),
            })
        }
    }
}

pub async fn a_batch_writer_failing_for_some_entries_applies_exactly_the_others(h: &Harness) {
    let writer = Arc::new(PartialWriter::default());
    let c = h
        .cache::<String, String>("batch-writer")
        .writer(writer.clone())
        .build()
        .await
        .unwrap();
    let keys = ["k1", "bad2", "k3", "bad4", "k5"];
    let result = c.put_all(keys.iter().map(|key| (k(key), v("x")))).await;
    assert!(matches!(result, Err(Error::Writer(_))), "{result:?}");
    for key in keys {
        let written = writer.written.lock().contains(&k(key));
        assert_eq!(
            c.contains_key(&k(key)).await.unwrap(),
            written,
            "{key}: written by the writer <=> present in the cache"
        );
    }
    assert_eq!(writer.written.lock().len(), 3);
    assert_eq!(c.stats().puts, 3);
    // Deletes likewise: the failed keys stay.
    c.put(k("bad2"), v("x")).await.unwrap();
    c.put(k("bad4"), v("x")).await.unwrap();
    let result = c.remove_all_keys(&keys.map(k)).await;
    assert!(matches!(result, Err(Error::Writer(_))), "{result:?}");
    for key in keys {
        let deleted = writer.deleted.lock().contains(&k(key));
        assert_eq!(
            c.contains_key(&k(key)).await.unwrap(),
            !deleted,
            "{key}: deleted by the writer <=> absent from the cache"
        );
    }
    assert_eq!(c.stats().removals, 3);
}

pub async fn the_default_batch_writer_stops_at_the_first_failure_and_the_cache_follows(
    h: &Harness,
) {
    let writer = Arc::new(RecordingWriter::default());
    let c = h
        .cache::<String, String>("batch-writer-default")
        .writer(writer.clone())
        .build()
        .await
        .unwrap();
    let result = c
        .put_all([(k("a"), v("1")), (k("b"), v("poison")), (k("c"), v("3"))])
        .await;
    assert!(matches!(result, Err(Error::Writer(_))), "{result:?}");
    assert_eq!(*writer.log.lock(), ["write a=1"]);
    assert_eq!(get(&c, "a").await.as_deref(), Some("1"));
    assert_eq!(get(&c, "b").await, None);
    assert_eq!(get(&c, "c").await, None);
}

// ---------------------------------------------------------------- invoke_all, load_all

pub async fn invoke_all_returns_a_result_per_key_and_an_error_stays_with_its_key(h: &Harness) {
    let c = h.cache::<String, u64>("invoke-all").build().await.unwrap();
    c.put(k("a"), 1).await.unwrap();
    let keys = [k("a"), k("boom"), k("b")];
    let results = c
        .invoke_all(&keys, |key, e| {
            if key == "boom" {
                panic!("processor failed on {key}");
            }
            let next = e.value().copied().unwrap_or(0) + 10;
            e.set_value(next);
            next
        })
        .await;
    assert_eq!(results.len(), 3);
    assert_eq!(*results[0].as_ref().unwrap(), 11);
    assert!(
        matches!(results[1], Err(Error::Panicked("entry processor", _))),
        "{:?}",
        results[1]
    );
    assert_eq!(*results[2].as_ref().unwrap(), 10);
    assert_eq!(c.get(&k("a")).await.unwrap().as_deref(), Some(&11));
    assert_eq!(c.get(&k("b")).await.unwrap().as_deref(), Some(&10));
    assert!(!c.contains_key(&k("boom")).await.unwrap());
}

pub async fn load_all_loads_absent_keys_and_reports_each_keys_outcome(h: &Harness) {
    let calls = Arc::new(AtomicUsize::new(0));
    let writer = Arc::new(RecordingWriter::default());
    // Read-through off: load_all uses the loader all the same.
    let c = h
        .cache::<String, String>("load-all")
        .loader(MapLoader {
            calls: calls.clone(),
        })
        .read_through(false)
        .writer(writer.clone())
        .build()
        .await
        .unwrap();
    c.put(k("present"), v("mine")).await.unwrap();
    c.reset_stats();
    let keys = [k("a"), k("present"), k("missing"), k("broken"), k("b")];
    let outcome = c.load_all(&keys, false).await.unwrap();
    assert!(matches!(outcome[0], Ok(true)));
    assert!(
        matches!(outcome[1], Ok(false)),
        "a present key was not skipped"
    );
    assert!(matches!(outcome[2], Ok(false)));
    assert!(
        matches!(outcome[3], Err(Error::Loader(_))),
        "{:?}",
        outcome[3]
    );
    assert!(matches!(outcome[4], Ok(true)));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        4,
        "the present key was loaded"
    );
    assert_eq!(get(&c, "a").await.as_deref(), Some("loaded a"));
    assert_eq!(get(&c, "present").await.as_deref(), Some("mine"));
    assert!(!c.contains_key(&k("missing")).await.unwrap());
    assert!(!c.contains_key(&k("broken")).await.unwrap());
    // Loads are neither puts nor written through.
    let s = c.stats();
    assert_eq!((s.puts, s.load_successes, s.load_failures), (0, 3, 1));
    assert_eq!(*writer.log.lock(), ["write present=mine"]);
    // replace_existing loads present keys too.
    let outcome = c.load_all(&[k("present")], true).await.unwrap();
    assert!(matches!(outcome[0], Ok(true)));
    assert_eq!(get(&c, "present").await.as_deref(), Some("loaded present"));
    // Without a loader there is nothing to do.
    let none = plain(h, "load-all-none").await;
    let outcome = none.load_all(&[k("a")], true).await.unwrap();
    assert!(matches!(outcome[0], Ok(false)));
    assert!(!none.contains_key(&k("a")).await.unwrap());
}

// ---------------------------------------------------------------- close, destroy

pub async fn a_closed_cache_refuses_every_call_and_leaves_its_manager(h: &Harness) {
    let c = plain(h, "close").await;
    let name = c.name().to_string();
    c.put(k("a"), v("1")).await.unwrap();
    let clone = c.clone();
    c.close().await.unwrap();
    c.close().await.unwrap();
    assert!(clone.is_closed());
    assert!(matches!(c.get(&k("a")).await, Err(Error::Closed(ref n)) if *n == name));
    assert!(matches!(
        clone.put(k("b"), v("1")).await,
        Err(Error::Closed(_))
    ));
    assert!(matches!(
        c.put_if_absent(k("b"), v("1")).await,
        Err(Error::Closed(_))
    ));
    assert!(matches!(c.remove(&k("a")).await, Err(Error::Closed(_))));
    assert!(matches!(
        c.invoke(&k("a"), |e| e.exists()).await,
        Err(Error::Closed(_))
    ));
    assert!(matches!(c.len().await, Err(Error::Closed(_))));
    let first = c.entries().next().await;
    assert!(matches!(first, Some(Err(Error::Closed(_)))), "{first:?}");
    assert!(h.manager.get_cache::<String, String>(&name).is_none());
    // Building it again opens it anew; a remote store kept the data.
    let again = h
        .manager
        .cache::<String, String>(&name)
        .build()
        .await
        .unwrap();
    assert!(!again.is_closed());
    if !h.is_local() {
        assert_eq!(get(&again, "a").await.as_deref(), Some("1"));
    }
    again.put(k("b"), v("2")).await.unwrap();
    assert_eq!(get(&again, "b").await.as_deref(), Some("2"));
}

/// The end of a receiver's events: [`RecvError::Closed`](crate::event::RecvError::Closed)
/// within [`DEADLINE`].
async fn expect_closed<K: Clone, V>(rx: &mut EventReceiver<K, V>, when: &str) {
    match tokio::time::timeout(DEADLINE, rx.recv()).await {
        Ok(Err(crate::event::RecvError::Closed)) => {}
        Ok(Ok(event)) => panic!("{when}: a {:?} event instead of the end", event.kind),
        Ok(Err(e)) => panic!("{when}: {e} instead of the end"),
        Err(_) => panic!("{when}: the receiver still waits after {DEADLINE:?}"),
    }
}

pub async fn closing_a_cache_ends_its_listeners_after_the_events_sent_before(h: &Harness) {
    let c = plain(h, "close-listeners").await;
    let mut before = c.listen(EventFilter::all()).await.unwrap();
    let mut waiting = c.subscribe(EventFilter::all());
    c.put(k("a"), v("1")).await.unwrap();
    assert_eq!(next_event(&mut waiting).await.kind, EventKind::Created);
    // A receiver blocked in `recv` is woken by the close.
    let blocked = tokio::spawn(async move {
        expect_closed(&mut waiting, "a receiver waiting during the close").await;
    });
    c.close().await.unwrap();
    blocked.await.unwrap();
    let event = next_event(&mut before).await;
    assert_eq!((event.kind, event.key.as_str()), (EventKind::Created, "a"));
    expect_closed(&mut before, "after the events sent before the close").await;
    // A listener of a closed cache hears nothing.
    let mut after = c.subscribe(EventFilter::all());
    assert!(matches!(
        after.try_recv(),
        Some(Err(crate::event::RecvError::Closed))
    ));
    expect_closed(&mut after, "subscribed after the close").await;
    assert!(matches!(
        c.listen(EventFilter::all()).await,
        Err(Error::Closed(_))
    ));
}

pub async fn destroying_a_cache_ends_its_listeners_without_events(h: &Harness) {
    let c = plain(h, "destroy-listeners").await;
    c.put_all((0..5).map(|i| (format!("k{i}"), v("x"))))
        .await
        .unwrap();
    let mut rx = c.listen(EventFilter::all()).await.unwrap();
    h.manager.destroy_cache(c.name()).await.unwrap();
    expect_closed(&mut rx, "after destroy_cache").await;
    let stats = c.stats();
    assert_eq!(
        (stats.evictions, stats.removals, stats.expirations),
        (0, 0, 0),
        "{stats:?}"
    );
}

pub async fn destroy_cache_removes_data_and_layout_for_every_process(h: &Harness) {
    let c = h
        .cache::<String, String>("destroy")
        .partitions(3)
        .build()
        .await
        .unwrap();
    let name = c.name().to_string();
    c.put_all((0..20).map(|i| (format!("k{i}"), v("x"))))
        .await
        .unwrap();
    // Another process's handle on the same cache (remote stores only share data).
    let elsewhere = if h.is_local() {
        None
    } else {
        let other = CacheManager::from_url(h.manager.url()).unwrap();
        let cache = other
            .cache::<String, String>(&name)
            .partitions(3)
            .build()
            .await
            .unwrap();
        assert_eq!(get(&cache, "k1").await.as_deref(), Some("x"));
        Some(cache)
    };
    h.manager.destroy_cache(&name).await.unwrap();
    assert!(c.is_closed());
    assert!(matches!(c.get(&k("k1")).await, Err(Error::Closed(_))));
    if let Some(elsewhere) = &elsewhere {
        assert_eq!(
            get(elsewhere, "k1").await,
            None,
            "the data outlived destroy_cache"
        );
    }
    // The layout record went too: the name takes other settings now.
    let again = h
        .manager
        .cache::<String, String>(&name)
        .partitions(5)
        .build()
        .await
        .unwrap();
    assert_eq!(again.len().await.unwrap(), 0);
    assert_eq!(get(&again, "k1").await, None);
    // A cache this manager never built is destroyed too (opened with its settings).
    if let Some(elsewhere) = elsewhere {
        let unbuilt = format!("{name}-unbuilt");
        let other = CacheManager::from_url(h.manager.url()).unwrap();
        let cache = other
            .cache::<String, String>(&unbuilt)
            .build()
            .await
            .unwrap();
        cache.put(k("a"), v("1")).await.unwrap();
        h.manager.destroy_cache(&unbuilt).await.unwrap();
        assert_eq!(
            get(&cache, "a").await,
            None,
            "the data outlived destroy_cache"
        );
        assert!(h.manager.get_cache::<String, String>(&unbuilt).is_none());
        drop(elsewhere);
    }
}

// ---------------------------------------------------------------- the TCK's statistics

/// `(hits, misses, puts, removals)` of a cache, and that `gets` is hits plus misses
/// and nothing was evicted (JSR-107 `CacheStatisticsMXBean`).
fn counts(c: &C) -> (u64, u64, u64, u64) {
    let s = c.stats();
    assert_eq!(s.gets(), s.hits + s.misses);
    assert_eq!(s.evictions, 0);
    (s.hits, s.misses, s.puts, s.removals)
}

/// The TCK's sequence of operations and the counts after each (its
/// `CacheMBStatisticsBeanTest`, one step at a time).
pub async fn statistics_count_every_operation_as_jcache_does(h: &Harness) {
    let c = plain(h, "tck-stats").await;
    assert_eq!(counts(&c), (0, 0, 0, 0));
    c.put(k("1"), v("Sooty")).await.unwrap();
    assert_eq!(counts(&c), (0, 0, 1, 0));
    let entries = || [(k("2"), v("Lucky")), (k("3"), v("Prince"))];
    c.put_all(entries()).await.unwrap();
    assert_eq!(counts(&c), (0, 0, 3, 0));
    // An update is a put like any other.
    c.put(k("1"), v("Sooty")).await.unwrap();
    c.put_all(entries()).await.unwrap();
    assert_eq!(counts(&c), (0, 0, 6, 0));
    assert_eq!(c.get_and_put(k("4"), v("Cody")).await.unwrap(), None);
    assert_eq!(counts(&c), (0, 1, 7, 0));
    assert!(c.get_and_put(k("4"), v("Cody")).await.unwrap().is_some());
    assert_eq!(counts(&c), (1, 1, 8, 0));
    assert_eq!(get(&c, "1").await.as_deref(), Some("Sooty"));
    assert_eq!(get(&c, "1234324324").await, None);
    assert_eq!(counts(&c), (2, 2, 8, 0));
    // `contains_key` counts nothing, nor does `remove` beyond its removal.
    assert!(c.contains_key(&k("1")).await.unwrap());
    assert!(!c.contains_key(&k("1234324324")).await.unwrap());
    assert_eq!(counts(&c), (2, 2, 8, 0));
    assert!(c.remove(&k("1")).await.unwrap());
    assert_eq!(counts(&c), (2, 2, 8, 1));
    assert!(!c.remove(&k("1")).await.unwrap());
    assert_eq!(counts(&c), (2, 2, 8, 1));
    // A conditional removal reads the entry: a hit, or a miss when it is absent.
    c.put(k("1"), v("Sooty")).await.unwrap();
    assert!(c.remove_if_equals(&k("1"), v("Sooty")).await.unwrap());
    assert_eq!(counts(&c), (3, 2, 9, 2));
    assert!(!c.remove_if_equals(&k("1"), v("Sooty")).await.unwrap());
    assert_eq!(counts(&c), (3, 3, 9, 2));
    // `clear` counts nothing; `remove_all` a removal per entry it removed.
    c.clear().await.unwrap();
    assert_eq!(counts(&c), (3, 3, 9, 2));
    assert_eq!(c.remove_all().await.unwrap(), 0);
    assert_eq!(counts(&c), (3, 3, 9, 2));
    let three = || {
        [
            (k("2"), v("Lucky")),
            (k("3"), v("Prince")),
            (k("21"), v("Trinity")),
        ]
    };
    c.put_all(three()).await.unwrap();
    assert_eq!(c.remove_all().await.unwrap(), 3);
    assert_eq!(counts(&c), (3, 3, 12, 5));
    c.put_all(three()).await.unwrap();
    assert_eq!(c.remove_all_keys(&[k("2"), k("3")]).await.unwrap(), 2);
    assert_eq!(counts(&c), (3, 3, 15, 7));
    assert_eq!(c.remove_all_keys(&[k("2"), k("3")]).await.unwrap(), 0);
    assert_eq!(counts(&c), (3, 3, 15, 7));
    // Resetting zeroes every count and mean time.
    c.reset_stats();
    let s = c.stats();
    assert_eq!(counts(&c), (0, 0, 0, 0));
    assert_eq!(
        (
            s.average_get_time,
            s.average_put_time,
            s.average_remove_time
        ),
        (Duration::ZERO, Duration::ZERO, Duration::ZERO)
    );
}

/// The TCK's single-operation statistics: `get_and_replace`, `replace`,
/// `replace_if_equals`, `put_if_absent`, `get_and_remove` and entry processors.
pub async fn conditional_operations_count_hits_misses_and_writes_as_jcache_does(h: &Harness) {
    let c = plain(h, "tck-stats-cond").await;
    assert_eq!(c.get_and_replace(k("1"), v("x")).await.unwrap(), None);
    assert!(!c.contains_key(&k("1")).await.unwrap());
    assert_eq!(counts(&c), (0, 1, 0, 0));
    c.put(k("1"), v("Sooty")).await.unwrap();
    assert_eq!(c.get_and_replace(k("2"), v("x")).await.unwrap(), None);
    assert!(!c.contains_key(&k("2")).await.unwrap());
    assert_eq!(counts(&c), (0, 2, 1, 0));
    assert!(
        c.get_and_replace(k("1"), v("Replaced"))
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(counts(&c), (1, 2, 2, 0));

    let c = plain(h, "tck-stats-replace").await;
    assert!(!c.replace(k("1"), v("x")).await.unwrap());
    assert_eq!(counts(&c), (0, 1, 0, 0));
    c.put(k("1"), v("Sooty")).await.unwrap();
    assert!(!c.replace(k("2"), v("x")).await.unwrap());
    assert_eq!(counts(&c), (0, 2, 1, 0));
    assert!(c.replace(k("1"), v("Replaced")).await.unwrap());
    assert_eq!(counts(&c), (1, 2, 2, 0));

    let c = plain(h, "tck-stats-replace-if").await;
    assert!(
        !c.replace_if_equals(k("1"), v("Sooty"), v("x"))
            .await
            .unwrap()
    );
    assert_eq!(counts(&c), (0, 1, 0, 0));
    c.put(k("1"), v("Sooty")).await.unwrap();
    assert!(
        c.replace_if_equals(k("1"), v("Sooty"), v("Replaced"))
            .await
            .unwrap()
    );
    assert_eq!(counts(&c), (1, 1, 2, 0));
    assert!(
        !c.replace_if_equals(k("1"), v("Sooty"), v("x"))
            .await
            .unwrap()
    );
    assert_eq!(counts(&c), (2, 1, 2, 0));

    let c = plain(h, "tck-stats-pia").await;
    assert!(c.put_if_absent(k("1"), v("succeeded")).await.unwrap());
    assert_eq!(counts(&c), (0, 1, 1, 0));
    assert!(!c.put_if_absent(k("1"), v("succeeded")).await.unwrap());
    assert_eq!(counts(&c), (1, 1, 1, 0));

    let c = plain(h, "tck-stats-gar").await;
    assert_eq!(c.get_and_remove(&k("1")).await.unwrap(), None);
    assert_eq!(counts(&c), (0, 1, 0, 0));
    c.put(k("1"), v("added")).await.unwrap();
    assert!(c.get_and_remove(&k("1")).await.unwrap().is_some());
    assert_eq!(counts(&c), (1, 1, 1, 1));
    assert!(!c.contains_key(&k("1")).await.unwrap());

    // Entry processors: finding the entry is the hit or the miss, whatever the
    // processor does with it.
    let c = plain(h, "tck-stats-invoke").await;
    c.put(k("1"), v("Sooty")).await.unwrap();
    let read = c.invoke(&k("1"), |e| e.value().cloned()).await.unwrap();
    assert_eq!(read.as_deref(), Some("Sooty"));
    c.invoke(&k("1"), |_| ()).await.unwrap();
    c.invoke(&k("1000"), |_| ()).await.unwrap();
    assert_eq!(counts(&c), (2, 1, 1, 0));
    c.invoke(&k("1"), |e| e.set_value(v("Trinity")))
        .await
        .unwrap();
    assert_eq!(counts(&c), (3, 1, 2, 0));
    let removed = c
        .invoke(&k("1"), |e| {
            let old = e.value().cloned();
            e.remove();
            old
        })
        .await
        .unwrap();
    assert_eq!(removed.as_deref(), Some("Trinity"));
    assert_eq!(counts(&c), (4, 1, 2, 1));
}

/// Removing every entry counts none that had expired (the TCK's
/// `testCacheStatisticsRemoveAll`).
pub async fn remove_all_counts_no_removal_for_expired_entries(h: &Harness) {
    let c = h
        .cache::<String, String>("tck-remove-all-expired")
        .expiry(ExpiryPolicy::Created(Duration::from_millis(20)))
        .build()
        .await
        .unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    c.put_all(keys.iter().map(|key| (key.clone(), v("x"))))
        .await
        .unwrap();
    eventually("every entry expired", || async {
        c.get_all(&keys).await.unwrap().iter().all(Option::is_none)
    })
    .await;
    c.remove_all().await.unwrap();
    let s = c.stats();
    assert_eq!((s.puts, s.removals), (20, 0));
}

// ---------------------------------------------------------------- the TCK's zero durations

/// A custom policy whose creation answer can be switched from zero (store nothing)
/// to never expiring, and which counts what it is asked.
#[derive(Default)]
struct Counting {
    zero_creation: std::sync::atomic::AtomicBool,
    creations: AtomicUsize,
    accesses: AtomicUsize,
    updates: AtomicUsize,
}

impl Counting {
    /// `(creations, accesses, updates)` asked since the last call.
    fn take(&self) -> (usize, usize, usize) {
        (
            self.creations.swap(0, Ordering::SeqCst),
            self.accesses.swap(0, Ordering::SeqCst),
            self.updates.swap(0, Ordering::SeqCst),
        )
    }
}

impl crate::CustomExpiry for Arc<Counting> {
    fn for_creation(&self) -> Option<Duration> {
        self.creations.fetch_add(1, Ordering::SeqCst);
        self.zero_creation
            .load(Ordering::SeqCst)
            .then_some(Duration::ZERO)
    }
    fn for_access(&self) -> Option<Duration> {
        self.accesses.fetch_add(1, Ordering::SeqCst);
        None
    }
    fn for_update(&self) -> Option<Duration> {
        self.updates.fetch_add(1, Ordering::SeqCst);
        None
    }
}

/// A policy whose creation duration is zero stores nothing, whatever the operation,
/// counts no put and sends no event (the TCK's `expire_whenCreated_*` and
/// `testExpiryOnCreation`).
pub async fn a_zero_creation_expiry_stores_nothing_for_any_operation(h: &Harness) {
    let zero = Duration::ZERO;
    for policy in [
        ExpiryPolicy::Created(zero),
        ExpiryPolicy::Accessed(zero),
        ExpiryPolicy::Touched(zero),
        ExpiryPolicy::Modified(zero),
    ] {
        let c = h
            .cache::<String, String>("tck-zero-creation")
            .expiry(policy)
            .build()
            .await
            .unwrap();
        zero_creation_round(&c, &format!("{policy:?}")).await;
    }
    // The same with a custom policy, which then turns to storing: every event of the
    // key before the sentinel's (same key, so one ordered channel) is one the rounds
    // sent, and none of them is a creation or an update.
    let policy = Arc::new(Counting::default());
    policy.zero_creation.store(true, Ordering::SeqCst);
    let c = h
        .cache::<String, String>("tck-zero-creation-custom")
        .expiry_policy(policy.clone())
        .build()
        .await
        .unwrap();
    let mut rx = c.subscribe(EventFilter::all());
    zero_creation_round(&c, "custom").await;
    policy.zero_creation.store(false, Ordering::SeqCst);
    c.put(k("1"), v("sentinel")).await.unwrap();
    loop {
        let e = next_event(&mut rx).await;
        if e.value.as_deref().map(String::as_str) == Some("sentinel") {
            break;
        }
        assert!(
            !matches!(e.kind, EventKind::Created | EventKind::Updated),
            "an entry expired at its creation was announced {:?}",
            e.kind
        );
    }
}

async fn zero_creation_round(c: &C, policy: &str) {
    let absent = async |what: &str| {
        assert!(!c.contains_key(&k("1")).await.unwrap(), "{policy}: {what}");
        assert_eq!(get(c, "1").await, None, "{policy}: {what}");
    };
    c.put(k("1"), v("1")).await.unwrap();
    absent("put").await;
    c.put(k("1"), v("1")).await.unwrap();
    assert!(!c.remove(&k("1")).await.unwrap(), "{policy}");
    c.put(k("1"), v("1")).await.unwrap();
    assert!(
        !c.remove_if_equals(&k("1"), v("1")).await.unwrap(),
        "{policy}"
    );
    assert_eq!(c.get_and_put(k("1"), v("1")).await.unwrap(), None);
    absent("get_and_put").await;
    // Nothing was stored, so `false` (as the reference implementation answers).
    assert!(!c.put_if_absent(k("1"), v("1")).await.unwrap(), "{policy}");
    absent("put_if_absent").await;
    c.put_all([(k("1"), v("1")), (k("2"), v("2"))])
        .await
        .unwrap();
    absent("put_all").await;
    c.invoke(&k("1"), |e| e.set_value(v("1"))).await.unwrap();
    absent("invoke").await;
    c.put(k("1"), v("1")).await.unwrap();
    assert_eq!(c.entries().count().await, 0, "{policy}: iteration");
    assert_eq!(c.len().await.unwrap(), 0, "{policy}: len");
    assert_eq!(c.stats().puts, 0, "{policy}: puts counted");
}

/// A custom policy `(none, zero, none)`: a read returns the value one last time and
/// the entry is gone after it, whichever operation read it (the TCK's
/// `expire_whenAccessed`).
pub async fn a_zero_access_expiry_expires_an_entry_once_read(h: &Harness) {
    let c = h
        .cache::<String, String>("tck-zero-access")
        .expiry_policy(Durations(None, Some(0), None))
        .build()
        .await
        .unwrap();
    let read_once = async |what: &str| {
        assert!(
            c.contains_key(&k("1")).await.unwrap(),
            "{what}: contains_key"
        );
        assert!(get(&c, "1").await.is_some(), "{what}: the read");
        assert!(
            !c.contains_key(&k("1")).await.unwrap(),
            "{what}: after the read"
        );
    };
    c.put(k("1"), v("1")).await.unwrap();
    read_once("put").await;
    assert_eq!(get(&c, "1").await, None);
    c.put(k("1"), v("1")).await.unwrap();
    read_once("put").await;
    assert_eq!(c.get_and_replace(k("1"), v("2")).await.unwrap(), None);
    c.put(k("1"), v("1")).await.unwrap();
    read_once("put").await;
    assert_eq!(c.get_and_remove(&k("1")).await.unwrap(), None);
    c.put(k("1"), v("1")).await.unwrap();
    read_once("put").await;
    assert!(!c.remove(&k("1")).await.unwrap());
    c.put(k("1"), v("1")).await.unwrap();
    read_once("put").await;
    assert!(!c.remove_if_equals(&k("1"), v("1")).await.unwrap());
    c.get_and_put(k("1"), v("1")).await.unwrap();
    read_once("get_and_put").await;
    c.get_and_put(k("1"), v("1")).await.unwrap();
    assert!(c.contains_key(&k("1")).await.unwrap());
    // `get_and_put`'s read is an access, but the update that follows sets the
    // deadline (none: it stays), so the entry outlives it.
    assert!(c.get_and_put(k("1"), v("1")).await.unwrap().is_some());
    read_once("get_and_put of a present entry").await;
    assert!(c.put_if_absent(k("1"), v("1")).await.unwrap());
    read_once("put_if_absent").await;
    c.put_all([(k("1"), v("1"))]).await.unwrap();
    read_once("put_all").await;
    c.put_all([(k("1"), v("1"))]).await.unwrap();
    assert!(c.get_all(&[k("1")]).await.unwrap()[0].is_some());
    assert!(!c.contains_key(&k("1")).await.unwrap(), "after get_all");
    c.put(k("1"), v("1")).await.unwrap();
    let read = c.invoke(&k("1"), |e| e.value().cloned()).await.unwrap();
    assert_eq!(read.as_deref(), Some("1"));
    assert!(
        !c.contains_key(&k("1")).await.unwrap(),
        "after invoke's read"
    );
    c.put(k("1"), v("1")).await.unwrap();
    assert_eq!(c.entries().count().await, 1);
    assert_eq!(c.entries().count().await, 0, "after iteration");
}

/// A custom policy `(none, none, zero)`: an update expires the entry at once, whichever
/// operation updated it; reads leave it (the TCK's `expire_whenModified`).
pub async fn a_zero_update_expiry_expires_an_entry_at_its_update(h: &Harness) {
    let c = h
        .cache::<String, String>("tck-zero-update")
        .expiry_policy(Durations(None, None, Some(0)))
        .build()
        .await
        .unwrap();
    let fresh = async || {
        c.put(k("1"), v("1")).await.unwrap();
        assert!(c.contains_key(&k("1")).await.unwrap());
        assert_eq!(get(&c, "1").await.as_deref(), Some("1"));
        assert_eq!(get(&c, "1").await.as_deref(), Some("1"));
    };
    let gone = async |what: &str| {
        assert!(!c.contains_key(&k("1")).await.unwrap(), "after {what}");
        assert_eq!(get(&c, "1").await, None, "after {what}");
    };
    fresh().await;
    c.put(k("1"), v("2")).await.unwrap();
    gone("put").await;
    fresh().await;
    c.put(k("1"), v("2")).await.unwrap();
    assert!(!c.remove(&k("1")).await.unwrap());
    fresh().await;
    c.put(k("1"), v("2")).await.unwrap();
    assert!(!c.remove_if_equals(&k("1"), v("2")).await.unwrap());
    fresh().await;
    assert_eq!(
        c.get_and_put(k("1"), v("2"))
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("1")
    );
    gone("get_and_put").await;
    fresh().await;
    c.put_all([(k("1"), v("2"))]).await.unwrap();
    gone("put_all").await;
    fresh().await;
    assert!(c.replace(k("1"), v("2")).await.unwrap());
    gone("replace").await;
    fresh().await;
    assert!(c.replace_if_equals(k("1"), v("1"), v("2")).await.unwrap());
    gone("replace_if_equals").await;
    fresh().await;
    assert!(c.get_and_replace(k("1"), v("2")).await.unwrap().is_some());
    gone("get_and_replace").await;
    fresh().await;
    c.invoke(&k("1"), |e| e.set_value(v("2"))).await.unwrap();
    gone("invoke").await;
    fresh().await;
    assert_eq!(c.entries().count().await, 1);
    assert_eq!(c.entries().count().await, 1, "iteration is no update");
    c.put(k("1"), v("2")).await.unwrap();
    assert_eq!(c.entries().count().await, 0);
}

/// What a custom policy is asked by each operation (the TCK's
/// `*ShouldCallGetExpiry*` and `*ShouldNotCallExpiryPolicyMethods` tests, JSR-107
/// §6.4's table): nothing for a miss, a removal, `contains_key` or a present key's
/// `put_if_absent`; the creation for a new entry; the access for a read; the update
/// for a write of a present entry; only the net effect of an entry processor.
pub async fn a_custom_expiry_policy_is_asked_only_what_each_operation_needs(h: &Harness) {
    let policy = Arc::new(Counting::default());
    let c = h
        .cache::<String, String>("tck-expiry-calls")
        .expiry_policy(policy.clone())
        .build()
        .await
        .unwrap();
    let asked = || policy.take();
    assert!(!c.contains_key(&k("1")).await.unwrap());
    assert_eq!(get(&c, "1").await, None);
    c.get_all(&[k("1"), k("2")]).await.unwrap();
    assert_eq!(c.get_and_remove(&k("1")).await.unwrap(), None);
    assert_eq!(c.get_and_replace(k("1"), v("1")).await.unwrap(), None);
    assert!(!c.replace(k("1"), v("1")).await.unwrap());
    assert!(!c.remove(&k("1")).await.unwrap());
    assert!(!c.remove_if_equals(&k("1"), v("1")).await.unwrap());
    assert_eq!(asked(), (0, 0, 0), "operations on an absent key");
    c.put(k("1"), v("1")).await.unwrap();
    assert_eq!(asked(), (1, 0, 0), "put creating");
    assert!(c.contains_key(&k("1")).await.unwrap());
    assert_eq!(asked(), (0, 0, 0), "contains_key");
    assert!(get(&c, "1").await.is_some());
    assert_eq!(asked(), (0, 1, 0), "get");
    c.put(k("1"), v("1")).await.unwrap();
    assert_eq!(asked(), (0, 0, 1), "put updating");
    c.put(k("2"), v("2")).await.unwrap();
    asked();
    c.get_all(&[k("1"), k("2")]).await.unwrap();
    assert_eq!(asked(), (0, 2, 0), "get_all");
    assert_eq!(c.entries().count().await, 2);
    assert_eq!(asked(), (0, 2, 0), "iteration");
    c.put_all([(k("1"), v("1")), (k("3"), v("3"))])
        .await
        .unwrap();
    assert_eq!(asked(), (1, 0, 1), "put_all");
    assert!(c.get_and_put(k("1"), v("2")).await.unwrap().is_some());
    assert_eq!(asked(), (0, 0, 1), "get_and_put updating");
    assert!(c.get_and_put(k("4"), v("2")).await.unwrap().is_none());
    assert_eq!(asked(), (1, 0, 0), "get_and_put creating");
    assert!(!c.put_if_absent(k("1"), v("9")).await.unwrap());
    assert_eq!(asked(), (0, 0, 0), "put_if_absent of a present key");
    assert!(c.put_if_absent(k("5"), v("9")).await.unwrap());
    assert_eq!(asked(), (1, 0, 0), "put_if_absent of an absent key");
    assert!(c.get_and_replace(k("1"), v("3")).await.unwrap().is_some());
    assert_eq!(asked(), (0, 0, 1), "get_and_replace");
    assert!(c.replace(k("1"), v("4")).await.unwrap());
    assert_eq!(asked(), (0, 0, 1), "replace");
    assert!(c.replace_if_equals(k("1"), v("4"), v("5")).await.unwrap());
    assert_eq!(asked(), (0, 0, 1), "replace_if_equals");
    assert!(!c.replace_if_equals(k("1"), v("4"), v("6")).await.unwrap());
    assert_eq!(asked(), (0, 1, 0), "replace_if_equals of another value");
    assert!(!c.remove_if_equals(&k("1"), v("4")).await.unwrap());
    assert_eq!(asked(), (0, 1, 0), "remove_if_equals of another value");
    assert!(c.remove_if_equals(&k("1"), v("5")).await.unwrap());
    assert!(c.remove(&k("2")).await.unwrap());
    assert!(c.get_and_remove(&k("3")).await.unwrap().is_some());
    assert_eq!(asked(), (0, 0, 0), "removals");
    // An entry processor: only its net effect is asked about.
    let seen = c
        .invoke(&k("p"), |e| {
            assert!(!e.exists());
            e.set_value(v("456"));
            e.value().cloned()
        })
        .await
        .unwrap();
    assert_eq!(seen.as_deref(), Some("456"));
    assert_eq!(asked(), (1, 0, 0), "invoke creating");
    c.invoke(&k("p"), |e| e.set_value(v("789"))).await.unwrap();
    assert_eq!(asked(), (0, 0, 1), "invoke updating");
    c.invoke(&k("p"), |e| e.value().cloned()).await.unwrap();
    assert_eq!(asked(), (0, 1, 0), "invoke reading");
    c.invoke(&k("p"), |e| e.exists()).await.unwrap();
    assert_eq!(asked(), (0, 0, 0), "invoke without a read");
    c.invoke(&k("p"), |e| e.remove()).await.unwrap();
    assert_eq!(asked(), (0, 0, 0), "invoke removing");
    // Loads: a creation for an absent key, an update for a present one replaced.
    let loading = h
        .cache::<String, String>("tck-expiry-calls-load")
        .expiry_policy(policy.clone())
        .loader(MapLoader {
            calls: Arc::default(),
        })
        .build()
        .await
        .unwrap();
    loading.load_all(&[k("1"), k("2")], false).await.unwrap();
    assert_eq!(asked(), (2, 0, 0), "load_all of absent keys");
    loading.load_all(&[k("1")], true).await.unwrap();
    assert_eq!(asked(), (0, 0, 1), "load_all replacing");
    assert_eq!(get(&loading, "3").await.as_deref(), Some("loaded 3"));
    assert_eq!(asked(), (1, 0, 0), "a read-through load");
}

// ---------------------------------------------------------------- the TCK's listener events

/// Ends a sequence of operations on `keys`: puts a sentinel value under each and
/// returns, per key, the `(kind, value, old value)` of the events that came before its
/// sentinel's (one key's events arrive in order, so none of its events can come
/// after its sentinel's). The sentinels leave the cache holding them.
async fn events_until_sentinels(
    c: &C,
    rx: &mut EventReceiver<String, String>,
    keys: &[&str],
) -> std::collections::BTreeMap<String, Vec<(EventKind, Option<String>, Option<String>)>> {
    for key in keys {
        c.put(k(key), v("sentinel")).await.unwrap();
    }
    let mut seen: std::collections::BTreeMap<_, Vec<_>> =
        keys.iter().map(|key| (k(key), Vec::new())).collect();
    let mut open = keys.len();
    while open > 0 {
        let e = next_event(rx).await;
        let value = e.value.as_deref().cloned();
        if value.as_deref() == Some("sentinel") && e.key != "sentinel" {
            open -= 1;
            // Mark the key done: later events of it are the sentinel's own.
            seen.entry(e.key.clone()).or_default().push((
                EventKind::Created,
                Some(v("sentinel")),
                None,
            ));
            continue;
        }
        seen.entry(e.key.clone()).or_default().push((
            e.kind,
            value,
            e.old_value.as_deref().cloned(),
        ));
    }
    // Drop the sentinels' markers.
    for events in seen.values_mut() {
        if let Some(at) = events
            .iter()
            .position(|(_, value, _)| value.as_deref() == Some("sentinel"))
        {
            events.truncate(at);
        }
    }
    seen
}

type Seen = (EventKind, Option<String>, Option<String>);

fn ev(kind: EventKind, value: Option<&str>, old: Option<&str>) -> Seen {
    (kind, value.map(v), old.map(v))
}

/// Each operation's events, kind by kind (the TCK's `testCacheEntryListener`):
/// writes announce a creation or an update, reads and `contains_key` nothing, an entry
/// processor its net effect, an iterator's removal a removal. An update carries the
/// value it replaced where the store knows it (the embedded store).
pub async fn every_operation_announces_what_jcache_announces(h: &Harness) {
    use EventKind::{Created, Removed, Updated};
    let c = plain(h, "tck-listener").await;
    let mut rx = c.subscribe(EventFilter::all());
    c.put(k("1"), v("Sooty")).await.unwrap();
    c.put_all([(k("2"), v("Lucky")), (k("3"), v("Prince"))])
        .await
        .unwrap();
    c.put(k("1"), v("Sooty")).await.unwrap();
    c.put_all([(k("2"), v("Lucky")), (k("3"), v("Prince"))])
        .await
        .unwrap();
    c.get_and_put(k("4"), v("Cody")).await.unwrap();
    c.get_and_put(k("4"), v("Cody")).await.unwrap();
    assert_eq!(get(&c, "1").await.as_deref(), Some("Sooty"));
    assert!(c.get_all(&[k("1"), k("2")]).await.unwrap()[0].is_some());
    assert!(c.contains_key(&k("1")).await.unwrap());
    let read = c.invoke(&k("1"), |e| e.value().cloned()).await.unwrap();
    assert_eq!(read.as_deref(), Some("Sooty"));
    c.invoke(&k("1"), |e| e.set_value(v("Zoot"))).await.unwrap();
    c.invoke(&k("1"), |e| e.remove()).await.unwrap();
    c.invoke(&k("1"), |e| e.set_value(v("Moose")))
        .await
        .unwrap();
    let mut entries = c.entries();
    while let Some(entry) = entries.next().await {
        entry.unwrap();
        assert!(entries.remove().await.unwrap());
    }
    drop(entries);
    // A put of a present key with another value, replace and replace_if_equals update;
    // failed conditional operations announce nothing.
    c.put(k("5"), v("Fred")).await.unwrap();
    assert!(!c.put_if_absent(k("5"), v("x")).await.unwrap());
    assert!(!c.replace(k("6"), v("x")).await.unwrap());
    assert!(!c.replace_if_equals(k("5"), v("x"), v("y")).await.unwrap());
    assert!(!c.remove_if_equals(&k("5"), v("x")).await.unwrap());
    assert!(c.replace(k("5"), v("Bryn")).await.unwrap());
    assert!(
        c.replace_if_equals(k("5"), v("Bryn"), v("Sooty"))
            .await
            .unwrap()
    );
    assert!(
        c.get_and_replace(k("5"), v("Prince"))
            .await
            .unwrap()
            .is_some()
    );
    assert!(c.get_and_remove(&k("5")).await.unwrap().is_some());
    assert!(!c.remove(&k("5")).await.unwrap());
    let seen = events_until_sentinels(&c, &mut rx, &["1", "2", "3", "4", "5", "6"]).await;
    let old = |value: &'static str| h.is_local().then_some(value);
    let expected: [(&str, Vec<Seen>); 6] = [
        (
            "1",
            vec![
                ev(Created, Some("Sooty"), None),
                ev(Updated, Some("Sooty"), old("Sooty")),
                ev(Updated, Some("Zoot"), old("Sooty")),
                ev(Removed, Some("Zoot"), None),
                ev(Created, Some("Moose"), None),
                ev(Removed, Some("Moose"), None),
            ],
        ),
        (
            "2",
            vec![
                ev(Created, Some("Lucky"), None),
                ev(Updated, Some("Lucky"), old("Lucky")),
                ev(Removed, Some("Lucky"), None),
            ],
        ),
        (
            "3",
            vec![
                ev(Created, Some("Prince"), None),
                ev(Updated, Some("Prince"), old("Prince")),
                ev(Removed, Some("Prince"), None),
            ],
        ),
        (
            "4",
            vec![
                ev(Created, Some("Cody"), None),
                ev(Updated, Some("Cody"), old("Cody")),
                ev(Removed, Some("Cody"), None),
            ],
        ),
        (
            "5",
            vec![
                ev(Created, Some("Fred"), None),
                ev(Updated, Some("Bryn"), old("Fred")),
                ev(Updated, Some("Sooty"), old("Bryn")),
                ev(Updated, Some("Prince"), old("Sooty")),
                ev(Removed, Some("Prince"), None),
            ],
        ),
        ("6", vec![]),
    ];
    for (key, events) in expected {
        assert_eq!(seen[key], events, "events of key {key}");
    }
}

/// A listener of this process has each operation's events when the operation
/// returns (the TCK registers its listeners as synchronous and counts their events
/// right after each call, JSR-107 §8.4), and none for an operation that changed
/// nothing.
pub async fn an_operations_events_reach_this_processs_listeners_before_it_returns(h: &Harness) {
    use EventKind::{Created, Removed, Updated};
    let c = plain(h, "tck-sync-events").await;
    let mut rx = c.listen(EventFilter::all()).await.unwrap();
    let mut now = || {
        let mut kinds = Vec::new();
        while let Some(event) = rx.try_recv() {
            let event = event.unwrap();
            kinds.push((event.kind, event.key));
        }
        kinds.sort_by(|a, b| a.1.cmp(&b.1));
        kinds
    };
    let at = |kind: EventKind, key: &str| (kind, k(key));
    c.put(k("1"), v("Sooty")).await.unwrap();
    assert_eq!(now(), [at(Created, "1")], "put");
    c.put_all([(k("2"), v("Lucky")), (k("3"), v("Prince"))])
        .await
        .unwrap();
    assert_eq!(now(), [at(Created, "2"), at(Created, "3")], "put_all");
    c.put(k("1"), v("Sooty")).await.unwrap();
    assert_eq!(now(), [at(Updated, "1")], "put of a present key");
    c.get_and_put(k("4"), v("Cody")).await.unwrap();
    assert_eq!(now(), [at(Created, "4")], "get_and_put");
    assert!(!c.put_if_absent(k("4"), v("x")).await.unwrap());
    get(&c, "1").await;
    c.get_all(&[k("1"), k("2")]).await.unwrap();
    c.contains_key(&k("1")).await.unwrap();
    assert!(!c.replace(k("9"), v("x")).await.unwrap());
    assert!(!c.remove(&k("9")).await.unwrap());
    assert_eq!(now(), [], "operations that changed nothing");
    c.replace(k("4"), v("Zoot")).await.unwrap();
    assert_eq!(now(), [at(Updated, "4")], "replace");
    c.invoke(&k("1"), |e| e.set_value(v("Zoot"))).await.unwrap();
    assert_eq!(now(), [at(Updated, "1")], "invoke");
    c.remove(&k("1")).await.unwrap();
    assert_eq!(now(), [at(Removed, "1")], "remove");
    c.remove_all_keys(&[k("2")]).await.unwrap();
    assert_eq!(now(), [at(Removed, "2")], "remove_all_keys");
    let mut entries = c.entries();
    while let Some(entry) = entries.next().await {
        entry.unwrap();
        entries.remove().await.unwrap();
    }
    drop(entries);
    assert_eq!(
        now(),
        [at(Removed, "3"), at(Removed, "4")],
        "an iterator's removals"
    );
    c.put(k("5"), v("x")).await.unwrap();
    now();
    c.remove_all().await.unwrap();
    assert_eq!(now(), [at(Removed, "5")], "remove_all");
}

/// A listener with a filter hears exactly the events its filter accepts (the TCK's
/// `testFilteredListener`: values with a vowel, and events without a value).
pub async fn a_filtered_listener_hears_only_the_events_its_filter_accepts(h: &Harness) {
    use EventKind::{Created, Removed, Updated};
    let c = plain(h, "tck-filtered").await;
    let vowel = |e: &CacheEvent<String, String>| {
        e.value
            .as_deref()
            .is_none_or(|value| value.contains(['a', 'e', 'i', 'o', 'u']))
    };
    let mut rx = c.subscribe(EventFilter::all().matching(vowel));
    let mut all = c.subscribe(EventFilter::all());
    c.put(k("1"), v("Sooty")).await.unwrap();
    c.put_all([(k("2"), v("Lucky")), (k("3"), v("Bryn"))])
        .await
        .unwrap();
    c.put(k("1"), v("Zyn")).await.unwrap();
    c.remove(&k("2")).await.unwrap();
    c.replace(k("1"), v("Fred")).await.unwrap();
    c.replace_if_equals(k("3"), v("Bryn"), v("Sooty"))
        .await
        .unwrap();
    get(&c, "1").await;
    c.contains_key(&k("1")).await.unwrap();
    let _: Vec<_> = c.entries().collect().await;
    c.get_and_put(k("1"), v("Pistachio")).await.unwrap();
    c.get_all(&[k("1")]).await.unwrap();
    c.get_and_replace(k("1"), v("Prince")).await.unwrap();
    c.get_and_remove(&k("1")).await.unwrap();
    // The sentinels (with vowels) pass the filter too; the unfiltered receiver shows
    // the same operations' every event, so the two can be compared.
    let keys = ["1", "2", "3"];
    let heard = events_until_sentinels(&c, &mut rx, &keys).await;
    let everything = events_until_sentinels(&c, &mut all, &keys).await;
    let kinds_of = |events: &[Seen]| events.iter().map(|e| e.0).collect::<Vec<_>>();
    assert_eq!(
        kinds_of(&heard["1"]),
        [Created, Updated, Updated, Updated, Removed]
    );
    assert_eq!(kinds_of(&heard["2"]), [Created, Removed]);
    assert_eq!(kinds_of(&heard["3"]), [Updated]);
    for key in keys {
        let accepted: Vec<Seen> = everything[key]
            .iter()
            .filter(|e| {
                e.1.as_deref()
                    .is_none_or(|v| v.contains(['a', 'e', 'i', 'o', 'u']))
            })
            .cloned()
            .collect();
        assert_eq!(heard[key], accepted, "key {key}");
    }
}

// ---------------------------------------------------------------- the TCK's writer calls

/// Which removals are written through (the TCK's `CacheWriterTest`): `remove`,
/// `get_and_remove` and an entry processor's removal delete the key from the system of
/// record whether or not the cache holds it (the system of record may); a failed
/// `remove_if_equals` deletes nothing; an entry processor that creates then removes an
/// entry writes nothing, one that removes then sets writes the value only.
pub async fn removals_are_written_through_as_jcache_writes_them(h: &Harness) {
    let writer = Arc::new(RecordingWriter::default());
    let c = h
        .cache::<String, String>("tck-writer")
        .writer(writer.clone())
        .build()
        .await
        .unwrap();
    let log = || std::mem::take(&mut *writer.log.lock());
    assert!(!c.remove(&k("1")).await.unwrap());
    assert_eq!(log(), ["delete 1"], "remove of an absent key");
    assert_eq!(c.get_and_remove(&k("1")).await.unwrap(), None);
    assert_eq!(log(), ["delete 1"], "get_and_remove of an absent key");
    c.invoke(&k("1"), |e| e.remove()).await.unwrap();
    assert_eq!(
        log(),
        ["delete 1"],
        "an entry processor's removal of an absent key"
    );
    assert!(!c.contains_key(&k("1")).await.unwrap());
    c.invoke(&k("1"), |e| {
        assert!(!e.exists());
        e.set_value(v("Gudday"));
        e.remove();
    })
    .await
    .unwrap();
    assert!(log().is_empty(), "created then removed: no net effect");
    assert!(!c.contains_key(&k("1")).await.unwrap());
    c.put(k("1"), v("Gudday")).await.unwrap();
    c.invoke(&k("1"), |e| {
        e.remove();
        assert!(!e.exists());
        e.set_value(v("After remove"));
    })
    .await
    .unwrap();
    assert_eq!(log(), ["write 1=Gudday", "write 1=After remove"]);
    assert_eq!(get(&c, "1").await.as_deref(), Some("After remove"));
    assert!(!c.remove_if_equals(&k("1"), v("Hello")).await.unwrap());
    assert!(!c.remove_if_equals(&k("2"), v("Hello")).await.unwrap());
    assert!(
        !c.replace_if_equals(k("1"), v("Hello"), v("x"))
            .await
            .unwrap()
    );
    assert!(!c.replace(k("2"), v("x")).await.unwrap());
    assert!(c.get_and_replace(k("2"), v("x")).await.unwrap().is_none());
    assert!(!c.put_if_absent(k("1"), v("x")).await.unwrap());
    assert!(log().is_empty(), "failed conditional writes wrote through");
    assert!(
        c.remove_if_equals(&k("1"), v("After remove"))
            .await
            .unwrap()
    );
    assert_eq!(log(), ["delete 1"]);
    // Iterating writes nothing; reads neither.
    c.put(k("3"), v("x")).await.unwrap();
    log();
    let _: Vec<_> = c.entries().collect().await;
    get(&c, "3").await;
    c.get_all(&[k("3"), k("4")]).await.unwrap();
    assert!(c.contains_key(&k("3")).await.unwrap());
    assert!(log().is_empty(), "reads wrote through");
    // The statistics count what the cache did: no removal for an absent key.
    c.reset_stats();
    c.invoke(&k("absent"), |e| e.remove()).await.unwrap();
    assert_eq!(log(), ["delete absent"]);
    let s = c.stats();
    assert_eq!((s.misses, s.removals), (1, 0));
}

// ---------------------------------------------------------------- the TCK's loader calls

/// Which operations read through (the TCK's `CacheLoaderTest` and
/// `CacheLoaderWithoutReadThroughTest`): `get`, `get_all` and an entry processor's
/// read load a missing key; no write, removal, `contains_key` or iteration does; a
/// failing loader fails the read; a loader with nothing stores nothing; an entry
/// that expired is loaded again (`CacheLoaderWithExpiryTest`). Without read-through
/// nothing loads and nothing fails.
pub async fn only_reads_read_through_as_jcache_reads_through(h: &Harness) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = h
        .cache::<String, String>("tck-loader")
        .loader(MapLoader {
            calls: calls.clone(),
        })
        .build()
        .await
        .unwrap();
    let loads = || calls.swap(0, Ordering::SeqCst);
    assert!(!c.contains_key(&k("a")).await.unwrap());
    assert_eq!(c.get_and_put(k("b"), v("x")).await.unwrap(), None);
    assert_eq!(c.get_and_remove(&k("c")).await.unwrap(), None);
    assert_eq!(c.get_and_replace(k("d"), v("x")).await.unwrap(), None);
    assert!(!c.replace(k("d"), v("x")).await.unwrap());
    assert!(!c.replace_if_equals(k("d"), v("x"), v("y")).await.unwrap());
    assert!(!c.remove(&k("e")).await.unwrap());
    assert!(!c.remove_if_equals(&k("e"), v("x")).await.unwrap());
    assert!(c.put_if_absent(k("f"), v("x")).await.unwrap());
    c.put(k("g"), v("x")).await.unwrap();
    c.put_all([(k("h"), v("x"))]).await.unwrap();
    c.remove_all_keys(&[k("i")]).await.unwrap();
    let _: Vec<_> = c.entries().collect().await;
    c.invoke(&k("j"), |e| e.exists()).await.unwrap();
    c.remove_all().await.unwrap();
    assert_eq!(loads(), 0, "an operation other than a read loaded");
    // Reads load what is missing, once.
    assert_eq!(get(&c, "a").await.as_deref(), Some("loaded a"));
    assert_eq!(get(&c, "a").await.as_deref(), Some("loaded a"));
    let values = c.get_all(&[k("a"), k("b"), k("missing")]).await.unwrap();
    assert_eq!(values[1].as_deref().map(String::as_str), Some("loaded b"));
    assert_eq!(values[2], None);
    assert!(!c.contains_key(&k("missing")).await.unwrap());
    let read = c.invoke(&k("c"), |e| e.value().cloned()).await.unwrap();
    assert_eq!(read.as_deref(), Some("loaded c"));
    assert_eq!(loads(), 4);
    // A failing loader fails the read, and stores nothing.
    assert!(matches!(c.get(&k("broken")).await, Err(Error::Loader(_))));
    assert!(matches!(
        c.get_all(&[k("broken")]).await,
        Err(Error::Loader(_))
    ));
    assert!(!c.contains_key(&k("broken")).await.unwrap());
    loads();

    // An expired entry is loaded again.
    let expiring = h
        .cache::<String, String>("tck-loader-expiry")
        .loader(MapLoader {
            calls: calls.clone(),
        })
        .expiry(ExpiryPolicy::Created(Duration::from_millis(100)))
        .build()
        .await
        .unwrap();
    expiring.put(k("a"), v("mine")).await.unwrap();
    eventually("the entry expired and the read loaded it", || async {
        get(&expiring, "a").await.as_deref() == Some("loaded a")
    })
    .await;
    assert_eq!(loads(), 1);

    // Without read-through, reads neither load nor fail.
    let off = h
        .cache::<String, String>("tck-loader-off")
        .loader(MapLoader {
            calls: calls.clone(),
        })
        .read_through(false)
        .build()
        .await
        .unwrap();
    assert_eq!(get(&off, "a").await, None);
    assert_eq!(get(&off, "broken").await, None);
    assert_eq!(
        off.get_all(&[k("a"), k("broken")]).await.unwrap(),
        [None, None]
    );
    assert_eq!(
        off.invoke(&k("a"), |e| e.value().cloned()).await.unwrap(),
        None
    );
    assert_eq!(loads(), 0, "a cache without read-through loaded");
    let s = off.stats();
    assert_eq!((s.misses, s.load_successes, s.load_failures), (5, 0, 0));
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
            writes_with_a_ttl_of_duration_max_or_a_thousand_years_are_stored,
            expiry_settings_of_duration_max_store_update_and_read_entries,
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
            typed_keys_and_values_round_trip,
            put_all_counts_a_put_only_for_entries_it_stores,
            invoke_counts_a_hit_or_a_miss_whether_or_not_the_processor_reads,
            iteration_counts_a_hit_per_entry_and_its_removal_a_removal,
            a_read_through_load_is_a_miss_not_a_put_and_is_not_written_through,
            invoke_loads_an_absent_value_the_processor_reads_when_reading_through,
            invoke_writes_through_a_set_or_a_removal_before_the_cache_changes,
            a_batch_writer_failing_for_some_entries_applies_exactly_the_others,
            the_default_batch_writer_stops_at_the_first_failure_and_the_cache_follows,
            invoke_all_returns_a_result_per_key_and_an_error_stays_with_its_key,
            load_all_loads_absent_keys_and_reports_each_keys_outcome,
            expiry_table_created,
            expiry_table_modified,
            expiry_table_accessed,
            expiry_table_touched,
            a_custom_expiry_policy_sets_each_deadline_it_is_asked_for,
            a_custom_expiry_policy_with_a_zero_creation_stores_nothing,
            a_closed_cache_refuses_every_call_and_leaves_its_manager,
            destroy_cache_removes_data_and_layout_for_every_process,
            closing_a_cache_ends_its_listeners_after_the_events_sent_before,
            destroying_a_cache_ends_its_listeners_without_events,
            statistics_count_every_operation_as_jcache_does,
            conditional_operations_count_hits_misses_and_writes_as_jcache_does,
            remove_all_counts_no_removal_for_expired_entries,
            a_zero_creation_expiry_stores_nothing_for_any_operation,
            a_zero_access_expiry_expires_an_entry_once_read,
            a_zero_update_expiry_expires_an_entry_at_its_update,
            a_custom_expiry_policy_is_asked_only_what_each_operation_needs,
            every_operation_announces_what_jcache_announces,
            a_filtered_listener_hears_only_the_events_its_filter_accepts,
            removals_are_written_through_as_jcache_writes_them,
            only_reads_read_through_as_jcache_reads_through,
            an_operations_events_reach_this_processs_listeners_before_it_returns
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
