//! A custom expiry policy on the Redis store beyond the conformance suite: the policy is
//! asked only for what a call applies even when another process changes the entry
//! between the asking and the call that applies the answer, and once per entry an
//! iteration of a bounded cache (one with an index) returns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use partcache::{Cache, CustomExpiry};

use crate::common::{self, unique};

/// Another process's write, run while the policy answers.
type Meanwhile = Box<dyn FnOnce() + Send>;

/// A policy that records what it is asked (every answer a minute), and the first time
/// it is asked for one kind runs a write of another process before it answers.
#[derive(Default)]
struct Recording {
    asked: Mutex<Vec<&'static str>>,
    meanwhile: Mutex<Option<(&'static str, Meanwhile)>>,
}

impl Recording {
    /// Runs `write` when the policy is next asked for `kind`.
    fn before(&self, kind: &'static str, write: impl FnOnce() + Send + 'static) {
        *self.meanwhile.lock().expect("lock") = Some((kind, Box::new(write)));
    }

    /// What the policy was asked since the last call, in order.
    fn take(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.asked.lock().expect("lock"))
    }

    fn answer(&self, kind: &'static str) -> Option<Duration> {
        self.asked.lock().expect("lock").push(kind);
        let due = {
            let mut meanwhile = self.meanwhile.lock().expect("lock");
            match meanwhile.as_ref() {
                Some((k, _)) if *k == kind => meanwhile.take(),
                _ => None,
            }
        };
        if let Some((_, write)) = due {
            write();
        }
        Some(Duration::from_secs(60))
    }
}

/// The cache's handle on a [`Recording`] the test keeps too.
struct Shared(Arc<Recording>);

impl CustomExpiry for Shared {
    fn for_creation(&self) -> Option<Duration> {
        self.0.answer("creation")
    }
    fn for_access(&self) -> Option<Duration> {
        self.0.answer("access")
    }
    fn for_update(&self) -> Option<Duration> {
        self.0.answer("update")
    }
}

/// Runs `write` of another cache from inside the policy's (synchronous) answer.
fn blocking<F: std::future::Future<Output = partcache::Result<T>>, T>(write: F) {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(write))
        .expect("the other process's write");
}

/// The same cache opened by two processes (two managers): `theirs` without a policy,
/// `ours` with `policy` (and `max_entries`, if any).
async fn two_processes(
    label: &str,
    policy: &Arc<Recording>,
    max_entries: Option<u64>,
) -> (Cache<String, String>, Cache<String, String>) {
    let url = tokio::task::block_in_place(|| common::standalone().url());
    let name = unique(label);
    let with_budget = |builder: partcache::CacheBuilder<String, String>| match max_entries {
        Some(max) => builder.max_entries(max),
        None => builder,
    };
    let theirs = with_budget(common::manager(&url).cache(&name))
        .build()
        .await
        .expect("their cache");
    let ours = with_budget(common::manager(&url).cache(&name))
        .expiry_policy(Shared(policy.clone()))
        .build()
        .await
        .expect("our cache");
    (theirs, ours)
}

fn k(s: &str) -> String {
    s.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_key_another_process_creates_meanwhile_is_asked_for_an_update() {
    let policy = Arc::new(Recording::default());
    let (theirs, ours) = two_processes("custom-race-create", &policy, None).await;
    let other = theirs.clone();
    policy.before("creation", move || {
        blocking(other.put(k("key"), k("theirs")));
    });
    ours.put(k("key"), k("ours")).await.unwrap();
    assert_eq!(policy.take(), ["creation", "update"]);
    assert_eq!(
        theirs.get(&k("key")).await.unwrap().as_deref(),
        Some(&k("ours"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_whose_key_another_process_removes_meanwhile_is_asked_for_a_creation() {
    let policy = Arc::new(Recording::default());
    let (theirs, ours) = two_processes("custom-race-remove", &policy, None).await;
    theirs.put(k("key"), k("theirs")).await.unwrap();
    let other = theirs.clone();
    policy.before("update", move || {
        blocking(other.remove(&k("key")));
    });
    assert_eq!(ours.get_and_put(k("key"), k("ours")).await.unwrap(), None);
    assert_eq!(policy.take(), ["update", "creation"]);
    assert_eq!(
        theirs.get(&k("key")).await.unwrap().as_deref(),
        Some(&k("ours"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iterating_a_bounded_cache_asks_the_access_duration_once_per_entry() {
    let policy = Arc::new(Recording::default());
    let (_theirs, ours) = two_processes("custom-iterate", &policy, Some(1000)).await;
    ours.put_all([(k("1"), k("a")), (k("2"), k("b")), (k("3"), k("c"))])
        .await
        .unwrap();
    assert_eq!(policy.take(), ["creation"; 3]);
    assert_eq!(ours.entries().count().await, 3);
    assert_eq!(policy.take(), ["access"; 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_asks_the_access_duration_for_a_hit_and_its_store_the_creation() {
    let policy = Arc::new(Recording::default());
    let (_theirs, ours) = two_processes("custom-lease", &policy, None).await;
    ours.put(k("present"), k("v")).await.unwrap();
    policy.take();
    let lease = ours.lease(&k("present")).await;
    assert_eq!(lease.hit().map(|v| v.as_str()), Some("v"));
    assert_eq!(policy.take(), ["access"]);
    let lease = ours.lease(&k("absent")).await;
    assert!(lease.hit().is_none() && lease.is_leased());
    assert_eq!(policy.take(), Vec::<&str>::new());
    assert!(lease.store(Arc::new(k("loaded")), None).await);
    assert_eq!(policy.take(), ["creation"]);
}
