//! Per-key coalescing of concurrent misses (single-flight), for adapters that decide
//! after the fact whether a response may be shared.
//!
//! [`partcache::Cache::get_or_load`] coalesces loads whose result is always cached. An
//! HTTP adapter needs more: the response may turn out not storable (then each waiter
//! must call the origin itself), the store write should not delay the waiters, and an
//! invalidation must be able to cancel a write still in progress. [`Coalescer`] does
//! exactly that:
//!
//! * the first caller of a key becomes the leader ([`Joined::Leader`]) and holds a
//!   [`Flight`]; later callers get a [`Waiter`];
//! * [`Flight::complete`] hands the value to every waiter at once; the flight stays
//!   joinable (late callers get the value immediately) until the leader drops it,
//!   typically after its store write finished, so a request arriving between the
//!   response and the end of the write never calls the origin again;
//! * a leader dropped without a value (error, not storable, cancelled request) wakes
//!   its waiters with `None`, and each of them then does the work itself: no waiter
//!   ever hangs;
//! * [`Coalescer::cancel`] detaches a key's flight (an invalidation happened), and the
//!   leader sees [`Flight::is_cancelled`] before writing.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use partcache_tower::coalesce::{Coalescer, Joined};
//! use std::sync::Arc;
//!
//! let flights = Arc::new(Coalescer::<String, u32>::new());
//! let Joined::Leader(flight) = flights.join(&"k".to_string()) else { unreachable!() };
//! let Joined::Waiter(waiter) = flights.join(&"k".to_string()) else { unreachable!() };
//! flight.complete(7);
//! assert_eq!(waiter.wait().await, Some(7));
//! drop(flight); // the key is free again
//! assert!(matches!(flights.join(&"k".to_string()), Joined::Leader(_)));
//! # });
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use tokio::sync::watch;

/// What a flight has produced so far.
#[derive(Clone, Debug)]
enum Slot<T> {
    Running,
    Done(Option<T>),
}

struct Entry<T> {
    id: u64,
    receiver: watch::Receiver<Slot<T>>,
    cancelled: Arc<AtomicBool>,
}

/// In-flight work per key. Cheap to share behind an `Arc`; every method is
/// non-blocking (one short mutex section).
pub struct Coalescer<K, T> {
    flights: Mutex<HashMap<K, Entry<T>>>,
    next_id: AtomicU64,
}

impl<K: Hash + Eq + Clone, T: Clone> Default for Coalescer<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K, T> std::fmt::Debug for Coalescer<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("in_flight", &self.flights.lock().len())
            .finish()
    }
}

/// The outcome of [`Coalescer::join`].
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
    coalescer: Arc<Coalescer<K, T>>,
    key: K,
    id: u64,
    sender: watch::Sender<Slot<T>>,
    cancelled: Arc<AtomicBool>,
}

/// A waiter's handle on another caller's flight.
#[derive(Debug)]
pub struct Waiter<T> {
    receiver: watch::Receiver<Slot<T>>,
}

impl<K: Hash + Eq + Clone, T: Clone> Coalescer<K, T> {
    /// An empty coalescer.
    pub fn new() -> Self {
        Coalescer {
            flights: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Joins `key`'s flight, or starts one (and leads it) if there is none.
    pub fn join(self: &Arc<Self>, key: &K) -> Joined<K, T> {
        let mut flights = self.flights.lock();
        if let Some(entry) = flights.get(key) {
            return Joined::Waiter(Waiter {
                receiver: entry.receiver.clone(),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = watch::channel(Slot::Running);
        let cancelled = Arc::new(AtomicBool::new(false));
        flights.insert(
            key.clone(),
            Entry {
                id,
                receiver,
                cancelled: cancelled.clone(),
            },
        );
        Joined::Leader(Flight {
            coalescer: self.clone(),
            key: key.clone(),
            id,
            sender,
            cancelled,
        })
    }

    /// Detaches `key`'s flight, if any: later callers start a new one, and the leader's
    /// [`Flight::is_cancelled`] turns `true` (so it skips its store write). Waiters
    /// already attached still get the leader's value.
    pub fn cancel(&self, key: &K) {
        if let Some(entry) = self.flights.lock().remove(key) {
            entry.cancelled.store(true, Ordering::Release);
        }
    }

    /// Detaches the flights whose keys `matches` (see [`Coalescer::cancel`]), leaving
    /// the others to store what they fetched.
    pub fn cancel_matching(&self, mut matches: impl FnMut(&K) -> bool) {
        self.flights.lock().retain(|key, entry| {
            let cancel = matches(key);
            if cancel {
                entry.cancelled.store(true, Ordering::Release);
            }
            !cancel
        });
    }

    /// Detaches every flight (see [`Coalescer::cancel`]).
    pub fn cancel_all(&self) {
        for (_, entry) in self.flights.lock().drain() {
            entry.cancelled.store(true, Ordering::Release);
        }
    }

    /// Number of keys with a flight right now.
    pub fn in_flight(&self) -> usize {
        self.flights.lock().len()
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Flight<K, T> {
    /// Hands `value` to every current and future waiter of this flight (until it is
    /// dropped).
    pub fn complete(&self, value: T) {
        self.sender.send_replace(Slot::Done(Some(value)));
    }

    /// Whether an invalidation detached this flight since it started.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// The key this flight is for.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Drop for Flight<K, T> {
    fn drop(&mut self) {
        {
            let mut flights = self.coalescer.flights.lock();
            // The entry may belong to a newer flight if this one was cancelled.
            if flights.get(&self.key).is_some_and(|e| e.id == self.id) {
                flights.remove(&self.key);
            }
        }
        self.sender.send_if_modified(|slot| match slot {
            Slot::Running => {
                *slot = Slot::Done(None);
                true
            }
            Slot::Done(_) => false,
        });
    }
}

impl<T: Clone> Waiter<T> {
    /// The leader's value, or `None` when the leader finished without one (the caller
    /// should then do the work itself).
    pub async fn wait(mut self) -> Option<T> {
        match self
            .receiver
            .wait_for(|slot| matches!(slot, Slot::Done(_)))
            .await
        {
            Ok(slot) => match &*slot {
                Slot::Done(value) => value.clone(),
                Slot::Running => None,
            },
            // The leader vanished without sending `Done` (only possible if its drop
            // did not run, e.g. a leaked flight): fall back to doing the work.
            Err(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dropped_leader_wakes_waiters_with_none() {
        let flights = Arc::new(Coalescer::<u32, u32>::new());
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
        let flights = Arc::new(Coalescer::<u32, u32>::new());
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
        let flights = Arc::new(Coalescer::<u32, u32>::new());
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
        let flights = Arc::new(Coalescer::<u32, u32>::new());
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
}
