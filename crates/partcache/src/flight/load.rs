//! A flight that loads a cache value: the local part as the cache's own loads use it
//! (`get_or_load`, the read-through loader, `#[cacheable(sync)]`).

use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures::FutureExt;

use super::local::{Flights, Joined};
use crate::error::{Error, Result};

/// What a cache's load gives its flight's callers.
pub(crate) type Outcome<V> = Result<Loaded<V>>;

/// A load's value, and whether the store had it (the leader's read found it): the
/// flight's callers count a hit or a miss as the leader did.
#[derive(Debug)]
pub(crate) struct Loaded<V> {
    pub(crate) value: Option<Arc<V>>,
    pub(crate) hit: bool,
}

impl<V> Clone for Loaded<V> {
    fn clone(&self) -> Self {
        Loaded {
            value: self.value.clone(),
            hit: self.hit,
        }
    }
}

impl<V> Loaded<V> {
    /// A value loaded (or found absent) by the loader.
    pub(crate) fn by_loader(value: Option<Arc<V>>) -> Self {
        Loaded { value, hit: false }
    }

    /// A value the store had.
    pub(crate) fn found(value: Arc<V>) -> Self {
        Loaded {
            value: Some(value),
            hit: true,
        }
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Flights<K, Result<T>> {
    /// Runs `work` for `key` unless another caller of this process is already running
    /// it, in which case waits for and shares that caller's outcome. A leader that
    /// panics hands its waiters an error (and returns one itself); a leader whose future
    /// is dropped before finishing hands over to one of the waiters, which runs the
    /// work itself, so no waiter ever hangs.
    pub(crate) async fn run<F, Fut>(self: &Arc<Self>, key: &K, work: F) -> Result<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut work = Some(work);
        loop {
            match self.join(key) {
                Joined::Leader(flight) => {
                    let Some(work) = work.take() else {
                        // Unreachable: a caller leads at most once, it returns right after.
                        return Err(Error::Store("flight leader ran twice".into()));
                    };
                    let outcome = match AssertUnwindSafe(work()).catch_unwind().await {
                        Ok(outcome) => outcome,
                        Err(payload) => Err(Error::panicked("loader", payload)),
                    };
                    flight.complete(outcome.clone());
                    return outcome;
                }
                Joined::Waiter(waiter) => {
                    if let Some(outcome) = waiter.wait().await {
                        return outcome;
                    }
                    // The leader was dropped without an outcome: take over.
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use tokio::sync::watch;

    /// Waits (bounded) until `n` callers wait on the flight of `key`: the leader is
    /// released only then, so no caller can arrive after the flight ended.
    async fn wait_for_waiters<T: Clone>(flights: &Flights<u32, T>, key: u32, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while flights.waiting(&key) < n {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("waiters did not join the flight within 10 s");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_of_one_key_run_the_work_once() {
        let flights = Arc::new(Flights::<u32, Result<Option<Arc<String>>>>::new());
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
        let flights = Arc::new(Flights::<u32, Result<Option<Arc<u32>>>>::new());
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
        let flights = Arc::new(Flights::<u32, Result<Option<Arc<u32>>>>::new());
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
