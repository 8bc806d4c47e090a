//! The per-entry deadlines the local store keeps itself, on a cache whose policy moka
//! expires on its own (see [`super::local`]): each entry written with its own TTL
//! carries its deadline, and an index of those deadlines by time finds the entries that
//! are due without anybody reading them, so that they are removed, announced and their
//! memory given back.
//!
//! Reads of the index cost one atomic load while nothing is due: [`Deadlines::next`]
//! holds the earliest deadline of the index, and is only ever lowered by a new
//! deadline, or raised by a sweep after it removed every entry due before it, or by a
//! removal outside a sweep. So `next > now` means no entry due at `now` is left.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

/// [`Deadlines::next`] when the index is empty.
const NEVER: u64 = u64::MAX;

/// One entry's deadline: nanoseconds from the store's epoch, and a sequence number
/// that tells apart entries due at the same moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Due {
    at: u64,
    seq: u64,
}

struct Index<K> {
    by_time: BTreeMap<Due, K>,
    seq: u64,
}

impl<K> Index<K> {
    fn first(&self) -> u64 {
        self.by_time
            .first_key_value()
            .map_or(NEVER, |(due, _)| due.at)
    }
}

/// The deadlines of one store's entries. See the module docs.
pub(super) struct Deadlines<K> {
    epoch: Instant,
    /// The earliest deadline in `index` (or earlier, never later while an entry is due):
    /// written under the `index` lock, read without it.
    next: AtomicU64,
    index: Mutex<Index<K>>,
    /// Held for a whole sweep, removals included, so that a caller who finds a deadline
    /// due waits until everything due is gone.
    sweeping: Mutex<()>,
}

impl<K> Deadlines<K> {
    pub(super) fn new() -> Self {
        Deadlines {
            epoch: Instant::now(),
            next: AtomicU64::new(NEVER),
            index: Mutex::new(Index {
                by_time: BTreeMap::new(),
                seq: 0,
            }),
            sweeping: Mutex::new(()),
        }
    }

    /// `instant` in nanoseconds from the epoch (the store's instants are all later).
    #[inline]
    pub(super) fn nanos(&self, instant: Instant) -> u64 {
        let nanos = instant.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(nanos).unwrap_or(NEVER - 1)
    }

    /// `true` when the index holds a deadline: a read must then look at the clock.
    #[inline]
    pub(super) fn pending(&self) -> bool {
        self.next.load(Ordering::Acquire) != NEVER
    }

    /// `true` when a deadline of the index is at or before `now` (nanoseconds).
    #[inline]
    pub(super) fn any_due(&self, now: u64) -> bool {
        self.next.load(Ordering::Acquire) <= now
    }

    /// `true` when `due` is at or before `now` (nanoseconds).
    #[inline]
    pub(super) fn passed(due: Due, now: u64) -> bool {
        due.at <= now
    }

    /// Records that `key`'s new entry is due at `deadline`, before it is stored (so
    /// that whoever sees the entry also sees [`Deadlines::next`] at or before it).
    pub(super) fn track(&self, key: K, deadline: Instant) -> Due {
        let at = self.nanos(deadline);
        let mut index = self.index.lock();
        index.seq += 1;
        let due = Due { at, seq: index.seq };
        index.by_time.insert(due, key);
        if at < self.next.load(Ordering::Relaxed) {
            self.next.store(at, Ordering::Release);
        }
        due
    }

    /// Forgets the deadline of an entry that left the store.
    pub(super) fn untrack(&self, due: Due) {
        let mut index = self.index.lock();
        if index.by_time.remove(&due).is_none() {
            return;
        }
        // Raising `next` in the middle of a sweep would hide the entries the sweep took
        // and has not removed yet; the sweep sets it when it is done.
        if let Some(_idle) = self.sweeping.try_lock() {
            self.next.store(index.first(), Ordering::Release);
        }
    }

    /// Removes, with `expire`, every entry whose deadline is at or before `now`
    /// (nanoseconds): the index hands out the keys due, a batch at a time, and `expire`
    /// removes the key's entry if it is (still) due. Returns once all are gone; a
    /// concurrent caller waits for the sweep under way first.
    pub(super) fn sweep(&self, now: u64, mut expire: impl FnMut(&K)) {
        /// Keys taken from the index per lock, so that writers wait little.
        const BATCH: usize = 64;
        let _sweeping = self.sweeping.lock();
        loop {
            let due: Vec<K> = {
                let mut index = self.index.lock();
                if index.first() > now {
                    self.next.store(index.first(), Ordering::Release);
                    return;
                }
                let mut due = Vec::with_capacity(BATCH);
                while due.len() < BATCH {
                    match index.by_time.first_entry() {
                        Some(entry) if entry.key().at <= now => due.push(entry.remove()),
                        _ => break,
                    }
                }
                due
            };
            // Removing takes the store's write locks: never under the index lock, which
            // writers take while holding theirs.
            for key in &due {
                expire(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sweep_hands_out_exactly_the_keys_due_and_lowers_nothing_it_leaves() {
        let deadlines = Deadlines::new();
        let t0 = Instant::now();
        assert!(!deadlines.pending());
        deadlines.track("late", t0 + Duration::from_secs(60));
        let soon = deadlines.track("soon", t0 + Duration::from_millis(5));
        assert!(deadlines.pending());
        let now = deadlines.nanos(t0 + Duration::from_millis(10));
        assert!(deadlines.any_due(now));
        assert!(Deadlines::<&str>::passed(soon, now));
        let mut expired = Vec::new();
        deadlines.sweep(now, |key| expired.push(*key));
        assert_eq!(expired, ["soon"]);
        assert!(!deadlines.any_due(now), "the sweep raised `next` to `late`");
        assert!(deadlines.pending());
    }

    #[test]
    fn untracking_the_last_deadline_empties_the_index() {
        let deadlines = Deadlines::new();
        let due = deadlines.track(1u64, Instant::now() + Duration::from_secs(1));
        deadlines.untrack(due);
        assert!(!deadlines.pending());
        // A second removal of the same entry changes nothing.
        deadlines.untrack(due);
        assert!(!deadlines.pending());
    }
}
