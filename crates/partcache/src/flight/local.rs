//! The local part of a flight: per-key coalescing of concurrent callers of one process
//! (see the module docs of [`crate::flight`]).
//!
//! A miss of an HTTP response cache starts and ends one flight, so a flight costs what
//! it must: one allocation for its shared state (value, cancellation flag, waiters),
//! the key cloned into the map and into the leader's handle, and two short sections
//! under one mutex, hashed with foldhash (as the local store is) rather than SipHash.
//! A waiter is woken by a `Notify`, which costs the leader nothing when nobody waits.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// What a flight has produced so far.
#[derive(Clone, Debug)]
enum Slot<T> {
    Running,
    Done(Option<T>),
}

/// What the leader, the map entry and the waiters of one flight share.
struct State<T> {
    slot: Mutex<Slot<T>>,
    /// Woken when `slot` becomes `Done`.
    done: Notify,
    cancelled: AtomicBool,
    /// Waiters holding a [`Waiter`] of this flight.
    waiters: AtomicUsize,
}

impl<T> std::fmt::Debug for State<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("cancelled", &self.cancelled.load(Ordering::Relaxed))
            .field("waiters", &self.waiters.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T> State<T> {
    /// Sets the outcome unless one is set, and wakes every waiter.
    fn finish(&self, value: Option<T>, replace: bool) {
        {
            let mut slot = self.slot.lock();
            if !replace && matches!(*slot, Slot::Done(_)) {
                return;
            }
            *slot = Slot::Done(value);
        }
        self.done.notify_waiters();
    }
}

struct Entry<T> {
    id: u64,
    state: Arc<State<T>>,
}

/// The map's hasher: keys are often request text, and SipHash cost more than the rest
/// of a flight; foldhash is seeded at random per map, so callers who cannot read its
/// outputs cannot aim collisions at it.
type Hasher = foldhash::fast::RandomState;

/// In-flight work per key, in one process. Cheap to share behind an `Arc`; every
/// method is non-blocking (one short mutex section).
pub struct Flights<K, T> {
    flights: Mutex<HashMap<K, Entry<T>, Hasher>>,
    next_id: AtomicU64,
}

impl<K: Hash + Eq + Clone, T: Clone> Default for Flights<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, T> std::fmt::Debug for Flights<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights")
            .field("in_flight", &self.flights.lock().len())
            .finish()
    }
}

/// The outcome of [`Flights::join`].
#[derive(Debug)]
pub enum Joined<K: Hash + Eq + Clone, T: Clone> {
    /// This caller does the work and must [`Flight::complete`] or drop the flight.
    Leader(Flight<K, T>),
    /// Another caller is doing the work: wait for its value.
    Waiter(Waiter<T>),
}

/// The leader's handle on a key's flight. Dropping it frees the key; if no value was
/// given, waiters wake up with `None`.
#[derive(Debug)]
pub struct Flight<K: Hash + Eq + Clone, T: Clone> {
    owner: Arc<Flights<K, T>>,
    key: K,
    id: u64,
    state: Arc<State<T>>,
}

/// A waiter's handle on another caller's flight.
#[derive(Debug)]
pub struct Waiter<T> {
    state: Arc<State<T>>,
}

impl<K: Hash + Eq + Clone, T: Clone> Flights<K, T> {
    /// No flights.
    pub fn new() -> Self {
        Flights {
            flights: Mutex::new(HashMap::with_hasher(Hasher::default())),
            next_id: AtomicU64::new(0),
        }
    }

    /// Joins `key`'s flight, or starts one (and leads it) if there is none.
    pub fn join(self: &Arc<Self>, key: &K) -> Joined<K, T> {
        let mut flights = self.flights.lock();
        if let Some(entry) = flights.get(key) {
            entry.state.waiters.fetch_add(1, Ordering::Relaxed);
            return Joined::Waiter(Waiter {
                state: entry.state.clone(),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let state = Arc::new(State {
            slot: Mutex::new(Slot::Running),
            done: Notify::new(),
            cancelled: AtomicBool::new(false),
            waiters: AtomicUsize::new(0),
        });
        flights.insert(
            key.clone(),
            Entry {
                id,
                state: state.clone(),
            },
        );
        drop(flights);
        Joined::Leader(Flight {
            owner: self.clone(),
            key: key.clone(),
            id,
            state,
        })
    }

    /// Detaches `key`'s flight, if any: later callers start a new one, and the leader's
    /// [`Flight::is_cancelled`] turns `true` (so it skips its store write). Waiters
    /// already attached still get the leader's value.
    pub fn cancel(&self, key: &K) {
        if let Some(entry) = self.flights.lock().remove(key) {
            entry.state.cancelled.store(true, Ordering::Release);
        }
    }

    /// Detaches the flights whose keys `matches` (see [`Flights::cancel`]), leaving
    /// the others to store what they fetched.
    pub fn cancel_matching(&self, mut matches: impl FnMut(&K) -> bool) {
        self.flights.lock().retain(|key, entry| {
            let cancel = matches(key);
            if cancel {
                entry.state.cancelled.store(true, Ordering::Release);
            }
            !cancel
        });
    }

    /// Detaches every flight (see [`Flights::cancel`]).
    pub fn cancel_all(&self) {
        for (_, entry) in self.flights.lock().drain() {
            entry.state.cancelled.store(true, Ordering::Release);
        }
    }

    /// Number of keys with a flight right now.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }

    /// Number of callers waiting on `key`'s flight (its leader not counted).
    pub fn waiting(&self, key: &K) -> usize {
        self.flights
            .lock()
            .get(key)
            .map_or(0, |entry| entry.state.waiters.load(Ordering::Relaxed))
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Flight<K, T> {
    /// Hands `value` to every current and future waiter of this flight (until it is
    /// dropped).
    pub fn complete(&self, value: T) {
        self.state.finish(Some(value), true);
    }

    /// Whether an invalidation detached this flight since it started.
    pub fn is_cancelled(&self) -> bool {
        self.state.cancelled.load(Ordering::Acquire)
    }

    /// The key this flight is for.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Drop for Flight<K, T> {
    fn drop(&mut self) {
        {
            let mut flights = self.owner.flights.lock();
            // The entry may belong to a newer flight if this one was cancelled: then
            // it goes back (one lookup in the usual case, two in that rare one).
            if let Some((key, entry)) = flights.remove_entry(&self.key)
                && entry.id != self.id
            {
                flights.insert(key, entry);
            }
        }
        self.state.finish(None, false);
    }
}

impl<T: Clone> Waiter<T> {
    /// The leader's value, or `None` when the leader finished without one (the caller
    /// should then do the work itself).
    pub async fn wait(self) -> Option<T> {
        loop {
            // Registered before the slot is read: a value set after the read wakes it.
            let done = self.state.done.notified();
            let mut done = std::pin::pin!(done);
            done.as_mut().enable();
            if let Slot::Done(value) = &*self.state.slot.lock() {
                return value.clone();
            }
            done.await;
        }
    }
}

impl<T> Drop for Waiter<T> {
    fn drop(&mut self) {
        self.state.waiters.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_leader_wakes_waiters_with_none() {
        let flights = Arc::new(Flights::<u32, u32>::new());
        let Joined::Leader(flight) = flights.join(&1) else {
            panic!("expected leader")
        };
        let Joined::Waiter(waiter) = flights.join(&1) else {
            panic!("expected waiter")
        };
        let task = tokio::spawn(waiter.wait());
        drop(flight);
        assert_eq!(task.await.unwrap(), None);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_completed_flight_serves_late_joiners_until_dropped() {
        let flights = Arc::new(Flights::<u32, u32>::new());
        let Joined::Leader(flight) = flights.join(&1) else {
            panic!("expected leader")
        };
        flight.complete(5);
        let Joined::Waiter(late) = flights.join(&1) else {
            panic!("expected waiter")
        };
        assert_eq!(late.wait().await, Some(5));
        drop(flight);
        assert!(matches!(flights.join(&1), Joined::Leader(_)));
    }

    #[tokio::test]
    async fn cancel_detaches_the_flight_and_flags_the_leader() {
        let flights = Arc::new(Flights::<u32, u32>::new());
        let Joined::Leader(old) = flights.join(&1) else {
            panic!("expected leader")
        };
        flights.cancel(&1);
        assert!(old.is_cancelled());
        let Joined::Leader(new) = flights.join(&1) else {
            panic!("expected a new leader")
        };
        // Dropping the cancelled flight must not detach the new one.
        drop(old);
        assert_eq!(flights.in_flight(), 1);
        drop(new);
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn cancel_matching_detaches_only_the_matching_flights() {
        let flights = Arc::new(Flights::<u32, u32>::new());
        let leaders: Vec<Flight<u32, u32>> = (1..=4)
            .map(|k| match flights.join(&k) {
                Joined::Leader(f) => f,
                Joined::Waiter(_) => panic!("expected leader of {k}"),
            })
            .collect();
        flights.cancel_matching(|k| k % 2 == 0);
        let cancelled: Vec<bool> = leaders.iter().map(Flight::is_cancelled).collect();
        assert_eq!(cancelled, [false, true, false, true]);
        assert_eq!(flights.in_flight(), 2);
        assert!(matches!(flights.join(&1), Joined::Waiter(_)));
        assert!(matches!(flights.join(&2), Joined::Leader(_)));
    }

    #[tokio::test]
    async fn waiters_are_counted_until_they_finish_or_go() {
        let flights = Arc::new(Flights::<String, u32>::new());
        let key = "k".to_string();
        let Joined::Leader(flight) = flights.join(&key) else {
            panic!("expected leader")
        };
        let (Joined::Waiter(first), Joined::Waiter(second)) =
            (flights.join(&key), flights.join(&key))
        else {
            panic!("expected waiters")
        };
        assert_eq!(flights.waiting(&key), 2);
        drop(first);
        assert_eq!(flights.waiting(&key), 1);
        flight.complete(9);
        assert_eq!(second.wait().await, Some(9));
        assert_eq!(flights.waiting(&key), 0);
        drop(flight);
        assert_eq!(flights.in_flight(), 0);
    }

    /// Waiters joining from other threads while the leader completes are all woken
    /// with its value: none misses the wake-up between reading the slot and sleeping.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_waiter_gets_a_value_completed_while_they_join() {
        for round in 0..50u32 {
            let flights = Arc::new(Flights::<u32, u32>::new());
            let Joined::Leader(flight) = flights.join(&round) else {
                panic!("expected leader")
            };
            let waiters: Vec<_> = (0..16)
                .map(|_| {
                    let flights = flights.clone();
                    tokio::spawn(async move {
                        match flights.join(&round) {
                            Joined::Waiter(waiter) => waiter.wait().await,
                            Joined::Leader(_) => panic!("the leader is still running"),
                        }
                    })
                })
                .collect();
            tokio::task::yield_now().await;
            flight.complete(round);
            for waiter in waiters {
                let got = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
                    .await
                    .expect("a waiter was never woken")
                    .expect("waiter task");
                assert_eq!(got, Some(round));
            }
            drop(flight);
        }
    }
}
