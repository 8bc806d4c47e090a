//! Single-flight: concurrent misses of one key run the load once.
//!
//! The first caller of a key becomes the leader and runs the work; later callers wait
//! for its result. A leader that panics hands its waiters an error (and returns one
//! itself); a leader whose future is dropped before finishing hands over to one of the
//! waiters, which runs the work itself, so no waiter ever hangs.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::{Error, Result};

type Outcome<V> = Result<Option<Arc<V>>>;
type Flights<K, V> = Mutex<HashMap<K, watch::Sender<Option<Outcome<V>>>>>;

/// In-flight loads of one cache.
pub(crate) struct SingleFlight<K, V> {
    flights: Flights<K, V>,
}

impl<K: Hash + Eq + Clone, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        SingleFlight {
            flights: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes the leader's flight however the leader ends (result, panic or drop).
struct LeaderGuard<'a, K: Hash + Eq, V> {
    flights: &'a Flights<K, V>,
    key: &'a K,
}

impl<K: Hash + Eq, V> Drop for LeaderGuard<'_, K, V> {
    fn drop(&mut self) {
        self.flights.lock().remove(self.key);
    }
}

enum Role<V> {
    Leader(watch::Sender<Option<Outcome<V>>>),
    Waiter(watch::Receiver<Option<Outcome<V>>>),
}

impl<K: Hash + Eq + Clone, V> SingleFlight<K, V> {
    /// Runs `work` for `key` unless another caller is already running it, in which case
    /// waits for and shares that caller's outcome.
    pub(crate) async fn run<F, Fut>(&self, key: &K, work: F) -> Outcome<V>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Outcome<V>>,
    {
        let mut work = Some(work);
        loop {
            let role = {
                let mut flights = self.flights.lock();
                match flights.get(key) {
                    Some(tx) => Role::Waiter(tx.subscribe()),
                    None => {
                        let (tx, _) = watch::channel(None);
                        flights.insert(key.clone(), tx.clone());
                        Role::Leader(tx)
                    }
                }
            };
            match role {
                Role::Leader(tx) => {
                    let guard = LeaderGuard {
                        flights: &self.flights,
                        key,
                    };
                    let Some(work) = work.take() else {
                        // Unreachable: a caller leads at most once, it returns right after.
                        return Err(Error::Store("single-flight leader ran twice".into()));
                    };
                    let outcome = match AssertUnwindSafe(work()).catch_unwind().await {
                        Ok(outcome) => outcome,
                        Err(payload) => Err(Error::panicked("loader", payload)),
                    };
                    tx.send_replace(Some(outcome.clone()));
                    drop(guard);
                    return outcome;
                }
                Role::Waiter(mut rx) => loop {
                    if let Some(outcome) = rx.borrow_and_update().clone() {
                        return outcome;
                    }
                    if rx.changed().await.is_err() {
                        // The leader was dropped without an outcome: take over.
                        break;
                    }
                },
            }
        }
    }

    /// Number of callers waiting for the load of `key` (its leader not counted).
    #[cfg(any(test, feature = "conformance"))]
    pub(crate) fn waiting(&self, key: &K) -> usize {
        self.flights
            .lock()
            .get(key)
            .map_or(0, |tx| tx.receiver_count())
    }

    /// Number of keys being loaded right now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// Waits (bounded) until `n` callers wait on the flight of `key`: the leader is
    /// released only then, so no caller can arrive after the flight ended.
    async fn wait_for_waiters<V>(flights: &SingleFlight<u32, V>, key: u32, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while flights
                .flights
                .lock()
                .get(&key)
                .is_none_or(|tx| tx.receiver_count() < n)
            {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("waiters did not join the flight within 10 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_of_one_key_run_the_work_once() {
        let flights = Arc::new(SingleFlight::<u32, String>::default());
        let calls = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (flights, calls, mut released) = (flights.clone(), calls.clone(), released.clone());
            tasks.push(tokio::spawn(async move {
                flights
                    .run(&1, || async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|r| *r).await;
                        Ok(Some(Arc::new("v".to_string())))
                    })
                    .await
            }));
        }
        wait_for_waiters(&flights, 1, 49).await;
        release.send_replace(true);
        for t in tasks {
            assert_eq!(
                t.await.unwrap().unwrap().as_deref().map(String::as_str),
                Some("v")
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_leader_gives_waiters_an_error_and_leaves_no_flight() {
        let flights = Arc::new(SingleFlight::<u32, u32>::default());
        let started = Arc::new(tokio::sync::Notify::new());
        let (release, mut released) = watch::channel(false);
        let leader = {
            let (flights, started) = (flights.clone(), started.clone());
            tokio::spawn(async move {
                flights
                    .run(&1, || async move {
                        started.notify_one();
                        let _ = released.wait_for(|r| *r).await;
                        panic!("boom");
                    })
                    .await
            })
        };
        started.notified().await;
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run(&1, || async { Ok(Some(Arc::new(2))) }).await })
        };
        wait_for_waiters(&flights, 1, 1).await;
        release.send_replace(true);
        let waiter = waiter.await.unwrap();
        assert!(
            matches!(waiter, Err(Error::Panicked("loader", ref m)) if m == "boom"),
            "{waiter:?}"
        );
        assert!(matches!(leader.await.unwrap(), Err(Error::Panicked(..))));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_leader_hands_over_to_a_waiter() {
        let flights = Arc::new(SingleFlight::<u32, u32>::default());
        let started = Arc::new(tokio::sync::Notify::new());
        let leader = {
            let (flights, started) = (flights.clone(), started.clone());
            tokio::spawn(async move {
                flights
                    .run(&1, || async move {
                        started.notify_one();
                        std::future::pending::<()>().await;
                        Ok(None)
                    })
                    .await
            })
        };
        started.notified().await;
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move { flights.run(&1, || async { Ok(Some(Arc::new(7))) }).await })
        };
        wait_for_waiters(&flights, 1, 1).await;
        leader.abort();
        let outcome = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome.unwrap().as_deref(), Some(&7));
    }
}
