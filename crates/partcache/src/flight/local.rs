//! The local part of a flight: per-key coalescing of concurrent callers of one process
//! (see the module docs of [`crate::flight`]).

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
    /// Waiters subscribe here (so that its receiver count is the number of waiters).
    sender: watch::Sender<Slot<T>>,
    cancelled: Arc<AtomicBool>,
}

/// In-flight work per key, in one process. Cheap to share behind an `Arc`; every
/// method is non-blocking (one short mutex section).
pub struct Flights<K, T> {
    flights: Mutex<HashMap<K, Entry<T>>>,
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
    sender: watch::Sender<Slot<T>>,
    cancelled: Arc<AtomicBool>,
}

/// A waiter's handle on another caller's flight.
#[derive(Debug)]
pub struct Waiter<T> {
    receiver: watch::Receiver<Slot<T>>,
}

impl<K: Hash + Eq + Clone, T: Clone> Flights<K, T> {
    /// No flights.
    pub fn new() -> Self {
        Flights {
            flights: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Joins `key`'s flight, or starts one (and leads it) if there is none.
    pub fn join(self: &Arc<Self>, key: &K) -> Joined<K, T> {
        let mut flights = self.flights.lock();
        if let Some(entry) = flights.get(key) {
            return Joined::Waiter(Waiter {
                receiver: entry.sender.subscribe(),
            });
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (sender, _) = watch::channel(Slot::Running);
        let cancelled = Arc::new(AtomicBool::new(false));
        flights.insert(
            key.clone(),
            Entry {
                id,
                sender: sender.clone(),
                cancelled: cancelled.clone(),
            },
        );
        Joined::Leader(Flight {
            owner: self.clone(),
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

    /// Detaches the flights whose keys `matches` (see [`Flights::cancel`]), leaving
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

    /// Detaches every flight (see [`Flights::cancel`]).
    pub fn cancel_all(&self) {
        for (_, entry) in self.flights.lock().drain() {
            entry.cancelled.store(true, Ordering::Release);
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
            // Each waiter holds one receiver; the entry holds the sender.
            .map_or(0, |entry| entry.sender.receiver_count())
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
            let mut flights = self.owner.flights.lock();
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
}
