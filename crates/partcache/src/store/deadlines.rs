//! The per-entry deadlines the local store keeps itself, on a cache whose policy moka
//! expires on its own (see [`super::local`]): each entry written with its own TTL
//! carries its deadline, and an index of those deadlines by time finds the entries that
//! are due without anybody reading them, so that they are removed, announced and their
//! memory given back.
//!
//! Reads of the index cost one atomic load while nothing is due: [`Deadlines::next`]
//! holds the earliest deadline of the index. A new deadline lowers it; it is raised
//! only to the earliest deadline left, by a sweep once the entries it took are gone,
//! or by a removal outside a sweep. So `next > now` means no entry due at `now` is
//! left.

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
    /// concurrent caller waits for the sweep under way first. For the operations that
    /// answer for entries they do not look at (`contains_key`, `len`).
    pub(super) fn sweep(&self, now: u64, mut expire: impl FnMut(&K)) {
        let _sweeping = self.sweeping.lock();
        while self.sweep_batch(now, &mut expire) {}
    }

    /// Holds off every sweep while the guard lives, as a sweep under way does.
    #[cfg(test)]
    pub(super) fn sweeping(&self) -> parking_lot::MutexGuard<'_, ()> {
        self.sweeping.lock()
    }

    /// One batch of [`Deadlines::sweep`], unless a sweep is under way: for reads and
    /// writes, which check the entries they touch themselves and only give back the
    /// memory of the others, a little at a time (as moka's housekeeping does).
    pub(super) fn sweep_some(&self, now: u64, mut expire: impl FnMut(&K)) {
        if let Some(_sweeping) = self.sweeping.try_lock() {
            self.sweep_batch(now, &mut expire);
        }
    }

    /// Takes up to a batch of keys due at `now` from the index and expires them, then
    /// sets [`Deadlines::next`]; `true` when more may be due. The caller holds
    /// `sweeping`.
    fn sweep_batch(&self, now: u64, expire: &mut impl FnMut(&K)) -> bool {
        /// Keys taken from the index per lock, so that writers wait little.
        const BATCH: usize = 64;
        let due: Vec<K> = {
            let mut index = self.index.lock();
            let mut due = Vec::new();
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
        let index = self.index.lock();
        let next = index.first();
        self.next.store(next, Ordering::Release);
        next <= now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sweep_hands_out_exactly_the_keys_due_and_keeps_the_others() {
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
    fn a_partial_sweep_takes_one_batch_and_leaves_the_rest_due() {
        let deadlines = Deadlines::new();
        let t0 = Instant::now();
        for n in 0..100 {
            deadlines.track(n, t0);
        }
        let now = deadlines.nanos(t0);
        let mut expired = 0;
        deadlines.sweep_some(now, |_| expired += 1);
        assert_eq!(expired, 64);
        assert!(deadlines.any_due(now));
        deadlines.sweep(now, |_| expired += 1);
        assert_eq!(expired, 100);
        assert!(!deadlines.pending());
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
