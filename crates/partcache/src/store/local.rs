//! The embedded store: a [moka](https://docs.rs/moka) cache of decoded values.
//!
//! Values are kept as `Arc<V>`, so a hit is a moka lookup and a reference-count
//! increment: nothing is serialized. Every write goes through moka's per-key
//! `and_compute_with`, which serializes writers of one key, so conditional writes
//! (`put_if_absent`, `replace_if_equals`, entry processors) are atomic per key.
//!
//! Eviction is LRU (not moka's default TinyLFU admission, which may refuse a new entry
//! outright and would surprise a caller who just put it). moka applies evictions and
//! expiry notifications lazily, in batches; [`Store::run_pending_tasks`] forces those
//! due. Under moka's per-entry expiry (below) an entry past its deadline is never
//! returned, iterated or counted by `len`, but moka removes it, and so announces it
//! `Expired`, at its timer wheel's next tick: up to about a second late.
//!
//! Expiry takes one of two shapes, chosen when the store is built:
//!
//! - **moka's own.** Under [`ExpiryPolicy::Eternal`] and [`ExpiryPolicy::Modified`]
//!   (without max-idle or a custom policy) no read moves a deadline and every write
//!   sets the policy's anew, which is what moka's `time_to_live` does by itself. moka
//!   then runs no per-entry expiry, whose callback and timer wheel make every lookup
//!   and its housekeeping dearer. An entry written with its own TTL (`put_with_ttl`)
//!   carries its deadline, which the store checks on each read and keeps in an index
//!   by time (`store/deadlines.rs`): reads and writes that find a deadline past
//!   remove the entries due, announce them as expired and count them, so none is returned,
//!   counted by `len` or iterated, and nobody needs to read one for it to go.
//! - **Per entry.** The other policies move deadlines in ways moka's `time_to_live`
//!   and `time_to_idle` cannot follow (`Created` keeps the creation deadline on
//!   update, `Accessed` keeps the access deadline on update, and under `Touched` or
//!   max-idle moka's read inside a conditional write would count as an access, which
//!   JSR-107 §6.4 says `put_if_absent` is not), so moka's per-entry expiry
//!   (`expire_after`) asks `MokaExpiry` for every deadline.

use std::hash::{BuildHasher, Hash};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use moka::notification::RemovalCause;
use moka::ops::compute::Op;
use moka::policy::EvictionPolicy;

use super::deadlines::{Deadlines, Due};
use super::spi::{
    Action, Computed, Condition, Decision, Lease, LeasedPut, Processor, Store, Write, WriteOutcome,
};
use crate::error::{Error, Result};
use crate::event::{EventKind, EventSender};
use crate::expiry::{ExpiryPolicy, ExpirySettings, FixedDeadlines};
use crate::stats::StatsCounters;

/// One stored entry: the shared value and the deadlines reads do not move.
struct Slot<V> {
    value: Arc<V>,
    fixed: FixedDeadlines,
    /// Under a custom policy only: the policy deadline the last access set, if one did
    /// (moka's read callback sees the entry by shared reference).
    accessed: Option<Arc<parking_lot::Mutex<Option<Instant>>>>,
    /// Where the store keeps deadlines itself ([`Deadlines`]): this entry's own, if it
    /// has one.
    due: Option<Due>,
}

// Not derived: a derive would require `V: Clone`, but only the `Arc` is cloned.
impl<V> Clone for Slot<V> {
    fn clone(&self) -> Self {
        Slot {
            value: self.value.clone(),
            fixed: self.fixed,
            accessed: self.accessed.clone(),
            due: self.due,
        }
    }
}

impl<V> Slot<V> {
    fn new(value: Arc<V>, fixed: FixedDeadlines, settings: &ExpirySettings) -> Self {
        Slot {
            value,
            fixed,
            accessed: settings.custom.as_ref().map(|_| Arc::default()),
            due: None,
        }
    }

    /// The entry's fixed deadlines, with the policy deadline an access moved.
    fn deadlines(&self) -> FixedDeadlines {
        match self.accessed.as_ref().and_then(|a| *a.lock()) {
            Some(policy) => FixedDeadlines {
                policy: Some(policy),
                ..self.fixed
            },
            None => self.fixed,
        }
    }
}

/// A weigher: the cost of one entry towards [`LocalConfig::max_weight`].
pub type Weigher<K, V> = Arc<dyn Fn(&K, &V) -> u32 + Send + Sync>;

/// How to build a [`LocalStore`].
pub struct LocalConfig<K, V> {
    /// The cache's expiry settings.
    pub expiry: ExpirySettings,
    /// Evict (LRU) beyond this many entries.
    pub max_entries: Option<u64>,
    /// With `max_weight`: evict beyond this total weight instead of an entry count.
    pub weigher: Option<Weigher<K, V>>,
    /// The total weight budget for `weigher`.
    pub max_weight: Option<u64>,
    /// Shared statistics (the store counts evictions and expirations).
    pub stats: Arc<StatsCounters>,
    /// Where events go.
    pub events: EventSender<K, V>,
}

struct MokaExpiry {
    settings: ExpirySettings,
    /// [`ExpirySettings::reads_extend`], read once: when reads move no deadline, a
    /// read leaves moka's deadline as it is without looking at the entry (every local
    /// hit calls [`MokaExpiry::expire_after_read`]).
    reads_extend: bool,
}

thread_local! {
    /// Set while a write or an entry processor runs in moka's `and_compute_with`,
    /// whose lookup of the current entry moka records as a read: that lookup is not an
    /// access (JSR-107 §6.4: updates and `putIfAbsent` on a present key leave the access
    /// deadline alone), so [`MokaExpiry::expire_after_read`] leaves the deadline as it
    /// is while this is set. Writes that *are* accesses read the entry again afterwards.
    static NOT_AN_ACCESS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

thread_local! {
    /// Set while a plain put runs moka's `insert`, which tells the eviction listener of
    /// the entry it replaces, on this thread, before it returns: an entry past its own
    /// deadline that it replaces is then counted as expired (no write looked at it).
    static INSERTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

thread_local! {
    /// Set while a write or an entry processor stores a new entry where moka showed it
    /// none: under moka's per-entry expiry, moka hides an entry past its deadline from
    /// `and_compute_with` until its housekeeping removes it, and reports the insert
    /// that replaces it as a replacement. The entry it replaces was expired, and is
    /// announced so (JSR-107's reference implementation does), before the creation.
    static REPLACING_HIDDEN: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Clears [`REPLACING_HIDDEN`] when dropped: after a compute, even one that panicked.
struct HiddenReset;

impl Drop for HiddenReset {
    fn drop(&mut self) {
        REPLACING_HIDDEN.with(|flag| flag.set(false));
    }
}

/// Marks the store's coming insert as the replacement of whatever moka hid, when the
/// compute that makes it was shown no entry and stores one.
fn mark_if_hidden<V>(shown_none: bool, op: &Op<V>) {
    if shown_none && matches!(op, Op::Put(_)) {
        REPLACING_HIDDEN.with(|flag| flag.set(true));
    }
}

/// Runs `f` with [`NOT_AN_ACCESS`] set (and clears it even if `f` panics).
fn without_access<T>(f: impl FnOnce() -> T) -> T {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            NOT_AN_ACCESS.with(|flag| flag.set(false));
        }
    }
    NOT_AN_ACCESS.with(|flag| flag.set(true));
    let _reset = Reset;
    f()
}

impl<K, V> moka::Expiry<K, Slot<V>> for MokaExpiry {
    fn expire_after_create(
        &self,
        _key: &K,
        slot: &Slot<V>,
        created_at: Instant,
    ) -> Option<Duration> {
        self.settings.ttl_on_create(created_at, slot.fixed)
    }

    fn expire_after_read(
        &self,
        _key: &K,
        slot: &Slot<V>,
        read_at: Instant,
        remaining: Option<Duration>,
        _last_modified_at: Instant,
    ) -> Option<Duration> {
        if !self.reads_extend || NOT_AN_ACCESS.with(|flag| flag.get()) {
            return remaining;
        }
        if let Some((fixed, ttl)) = self.settings.on_access(read_at, slot.deadlines()) {
            if let (Some(accessed), Some(policy)) = (&slot.accessed, fixed.policy) {
                *accessed.lock() = Some(policy);
            }
            return ttl;
        }
        self.settings.on_read(read_at, slot.fixed, remaining)
    }

    fn expire_after_update(
        &self,
        _key: &K,
        slot: &Slot<V>,
        updated_at: Instant,
        remaining: Option<Duration>,
    ) -> Option<Duration> {
        self.settings
            .ttl_on_update(updated_at, slot.fixed, remaining)
    }
}

/// A write's operation on an entry it found past its own deadline: that entry goes,
/// whatever the write decided to leave.
fn remove_if_expired<V>(op: Op<V>, expired: bool) -> Op<V> {
    match op {
        Op::Nop if expired => Op::Remove,
        op => op,
    }
}

/// Write-lock stripes. Plain puts use moka's `insert`, which does not take moka's
/// per-key compute lock; every write therefore also holds one of these stripes, so a
/// plain put can never land between a conditional write's read and its write. Each
/// stripe counts the removals of its keys (its *epoch*), for the leases of loads
/// (see [`LocalStore::lease`]).
const WRITE_STRIPES: usize = 64;

/// Leases of loads in flight beyond which the expired ones are forgotten (a lease whose
/// holder neither stored nor released, e.g. its runtime shut down). The next pruning
/// waits until twice as many are left, so that many live leases cost no sweep per
/// lease.
const LEASES_KEPT: usize = 1024;

/// The leases of loads in flight ([`LocalStore::lease`]).
#[derive(Default)]
struct Leases {
    /// Token → the epoch of its key's stripe when granted, and when the lease ends.
    granted: std::collections::HashMap<String, (u64, Instant)>,
    /// How many leases make the next grant forget the expired ones (0: [`LEASES_KEPT`]).
    prune_at: usize,
}

/// The hasher of the store's map and write stripes: foldhash, seeded at random per
/// process and per store. moka's default (SipHash-1-3) made hashing the largest single
/// cost of a local hit or put with text keys, and moka hashes every key again each time
/// it rebuilds a table (as it grows, and as evictions leave it full of tombstones).
/// foldhash keeps resistance to collision floods from callers who cannot read its
/// outputs, which is the exposure of a cache keyed on request data.
type Hasher = foldhash::fast::RandomState;

/// The time to live moka applies by itself when the store keeps the per-entry
/// deadlines itself (see the module docs): `Some(None)` for eternal entries,
/// `Some(Some(d))` under `Modified(d)`; `None` when moka's per-entry expiry is needed.
fn own_expiry(expiry: &ExpirySettings) -> Option<Option<Duration>> {
    /// moka refuses a `time_to_live` beyond 1000 years; longer ones stay per entry.
    const MAX_TIME_TO_LIVE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    if expiry.custom.is_some() || expiry.max_idle.is_some() {
        return None;
    }
    match expiry.policy {
        ExpiryPolicy::Eternal => Some(None),
        // A zero `Modified` stores nothing, which the per-entry expiry already handles.
        ExpiryPolicy::Modified(d) if !d.is_zero() && d <= MAX_TIME_TO_LIVE => Some(Some(d)),
        _ => None,
    }
}

/// The embedded store. See the module docs.
pub struct LocalStore<K, V> {
    cache: moka::sync::Cache<K, Slot<V>, Hasher>,
    expiry: ExpirySettings,
    events: EventSender<K, V>,
    stripes: Box<[parking_lot::Mutex<u64>]>,
    /// The leases of loads in flight.
    leases: parking_lot::Mutex<Leases>,
    hasher: Hasher,
    /// The per-entry deadlines, when the store keeps them itself; `None` when moka's
    /// per-entry expiry runs.
    deadlines: Option<Arc<Deadlines<K>>>,
    stats: Arc<StatsCounters>,
}

impl<K, V> LocalStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// Builds the store. Fails when the size settings contradict each other.
    pub fn new(config: LocalConfig<K, V>) -> Result<Self> {
        let LocalConfig {
            expiry,
            max_entries,
            weigher,
            max_weight,
            stats,
            events,
        } = config;
        // Durations beyond the longest deadline set none (moka's own expiry included).
        let expiry = expiry.effective();
        let own = own_expiry(&expiry);
        let deadlines = own.map(|_| Arc::new(Deadlines::new()));
        let mut builder = moka::sync::Cache::builder().eviction_policy(EvictionPolicy::lru());
        builder = match own {
            Some(Some(time_to_live)) => builder.time_to_live(time_to_live),
            Some(None) => builder,
            None => builder.expire_after(MokaExpiry {
                settings: expiry.clone(),
                reads_extend: expiry.reads_extend(),
            }),
        };
        match (max_entries, weigher, max_weight) {
            (Some(_), Some(_), _) => {
                return Err(Error::Config(
                    "the local store takes either `max_entries` or a weigher with `max_weight`, not both"
                        .into(),
                ));
            }
            (None, Some(_), None) => {
                return Err(Error::Config("a weigher needs `max_weight`".into()));
            }
            (None, None, Some(_)) => {
                return Err(Error::Config("`max_weight` needs a weigher".into()));
            }
            (Some(n), None, _) => builder = builder.max_capacity(n),
            (None, Some(w), Some(max)) => {
                builder = builder
                    .max_capacity(max)
                    .weigher(move |k: &K, slot: &Slot<V>| w(k, &slot.value));
            }
            (None, None, None) => {}
        }
        let listener_events = events.clone();
        let listener_stats = stats.clone();
        let listener_deadlines = deadlines.clone();
        builder = builder.eviction_listener(move |key: Arc<K>, slot: Slot<V>, cause| {
            let stats = &listener_stats;
            let mut past_due = false;
            if let (Some(deadlines), Some(due)) = (&listener_deadlines, slot.due) {
                deadlines.untrack(due);
                past_due = Deadlines::<K>::passed(due, deadlines.nanos(Instant::now()));
            }
            let expired = match cause {
                RemovalCause::Expired => true,
                // An entry past its own deadline is expired, whatever evicts it first.
                RemovalCause::Size => past_due,
                // A plain put's `insert` replaced an entry past its own deadline, which
                // no write looked at (a compute announces those itself).
                RemovalCause::Replaced if past_due && INSERTING.with(|flag| flag.get()) => true,
                // A creation replaced an entry moka hid from it: one past its deadline.
                RemovalCause::Replaced if REPLACING_HIDDEN.with(|flag| flag.get()) => true,
                // Removals and replacements are announced by the operation that made them.
                RemovalCause::Explicit | RemovalCause::Replaced => return,
            };
            let kind = if expired {
                stats.expirations.incr();
                EventKind::Expired
            } else {
                stats.evictions.incr();
                EventKind::Evicted
            };
            listener_events.emit(kind, || (*key).clone(), Some(slot.value), None);
        });
        Ok(LocalStore {
            cache: builder.build_with_hasher(Hasher::default()),
            expiry,
            events,
            stripes: (0..WRITE_STRIPES)
                .map(|_| parking_lot::Mutex::new(0))
                .collect(),
            leases: parking_lot::Mutex::default(),
            hasher: Hasher::default(),
            deadlines,
            stats,
        })
    }

    /// The value of `key`, read as an access: [`Store::get_now`] without its wrapping
    /// (a read of the local store cannot fail), for [`crate::Cache`]'s typed hit path.
    /// Where the store keeps deadlines, a hit looks at the clock only when the entry
    /// has one or another entry's is pending.
    #[inline]
    pub(crate) fn get_value(&self, key: &K) -> Option<Arc<V>> {
        let slot = self.cache.get(key)?;
        if let Some(deadlines) = &self.deadlines
            && (slot.due.is_some() || deadlines.pending())
        {
            return self.live_value(deadlines, slot);
        }
        Some(slot.value)
    }

    /// The value of a found entry while deadlines are pending: sweeps what is due, and
    /// `None` when the entry's own deadline has passed (the sweep removed it, or one
    /// before it did). Not a cold path: every hit of a cache whose entries carry their
    /// own TTL (the HTTP response cache's, for one) comes here.
    fn live_value(&self, deadlines: &Deadlines<K>, slot: Slot<V>) -> Option<Arc<V>> {
        let now = deadlines.nanos(Instant::now());
        self.sweep_some(deadlines, now);
        match slot.due {
            Some(due) if Deadlines::<K>::passed(due, now) => None,
            _ => Some(slot.value),
        }
    }

    /// Removes a batch of the entries whose own deadline is at or before `now`
    /// (nanoseconds of `deadlines`), if any is and no sweep is under way: reads and
    /// writes give back the memory of entries nobody reads (they check their own).
    #[inline]
    fn sweep_some(&self, deadlines: &Deadlines<K>, now: u64) {
        if deadlines.any_due(now) {
            deadlines.sweep_some(now, |key| self.expire_due(key));
        }
    }

    /// Removes every entry whose own deadline has passed, where the store keeps them:
    /// before an operation that does not look at each entry (`contains_key`, `len`).
    fn sweep(&self) {
        if let Some(deadlines) = &self.deadlines
            && deadlines.pending()
        {
            let now = deadlines.nanos(Instant::now());
            if deadlines.any_due(now) {
                deadlines.sweep(now, |key| self.expire_due(key));
            }
        }
    }

    /// `true` when `slot`'s own deadline (kept by the store) has passed.
    fn past_due(&self, slot: &Slot<V>) -> bool {
        match (&self.deadlines, slot.due) {
            (Some(deadlines), Some(due)) => {
                Deadlines::<K>::passed(due, deadlines.nanos(Instant::now()))
            }
            _ => false,
        }
    }

    /// Removes `key`'s entry if its own deadline has passed, announced as expired.
    fn expire_due(&self, key: &K) {
        let _stripe = self.stripe(key);
        self.cache
            .entry_by_ref(key)
            .and_compute_with(|current| match current {
                Some(entry) if self.past_due(entry.value()) => {
                    self.announce_expired(key, entry.into_value());
                    Op::Remove
                }
                _ => Op::Nop,
            });
    }

    /// Counts and announces an entry the store removes because its own deadline passed.
    fn announce_expired(&self, key: &K, slot: Slot<V>) {
        self.stats.expirations.incr();
        self.events
            .emit(EventKind::Expired, || key.clone(), Some(slot.value), None);
    }

    /// The entry a write found, if it is live: one past its own deadline is announced
    /// as expired and is absent for the write (`true`: the write must remove it if it
    /// stores nothing in its place).
    fn live(&self, key: &K, current: Option<Slot<V>>) -> (Option<Slot<V>>, bool) {
        match current {
            Some(slot) if self.past_due(&slot) => {
                self.announce_expired(key, slot);
                (None, true)
            }
            current => (current, false),
        }
    }

    /// Tracks a new entry's own deadline where the store keeps it (under `Modified`,
    /// moka's `time_to_live` keeps the policy's).
    fn track(&self, key: &K, fixed: FixedDeadlines) -> Option<Due> {
        let deadlines = self.deadlines.as_ref()?;
        Some(deadlines.track(key.clone(), fixed.ttl?))
    }

    /// Voids every lease ([`Store::lease`]): a load in flight read the system of
    /// record before a clear or a removal of everything.
    fn void_leases(&self) {
        for stripe in &self.stripes {
            *stripe.lock() += 1;
        }
    }

    fn stripe(&self, key: &K) -> parking_lot::MutexGuard<'_, u64> {
        let index = self.hasher.hash_one(key) as usize % self.stripes.len();
        self.stripes[index].lock()
    }

    /// A plain put nobody needs the details of (no condition, no previous value, no
    /// listener) can skip moka's compute machinery: an `insert` is about twice as fast.
    /// Only where the store keeps deadlines itself (moka's per-entry expiry hides an
    /// entry past its deadline from the store, and an `insert` replacing it could not
    /// count its expiry: see [`REPLACING_HIDDEN`]), and not when the entry would expire
    /// at once (create and update differ then).
    fn try_plain_insert(&self, key: &K, write: &Write<V>, now: Instant) -> bool {
        let Write {
            condition: Condition::Always,
            action: Action::Put { value, ttl },
            want_previous: false,
        } = write
        else {
            return false;
        };
        if self.deadlines.is_none() || self.events.is_listened() {
            return false;
        }
        let fixed = self.expiry.fixed_on_create(now, *ttl);
        if self.expiry.ttl_on_create(now, fixed) == Some(Duration::ZERO) {
            return false;
        }
        let mut slot = Slot::new(value.clone(), fixed, &self.expiry);
        slot.due = self.track(key, fixed);
        struct Inserting;
        impl Drop for Inserting {
            fn drop(&mut self) {
                INSERTING.with(|flag| flag.set(false));
            }
        }
        INSERTING.with(|flag| flag.set(true));
        let _inserting = Inserting;
        self.cache.insert(key.clone(), slot);
        true
    }

    fn write_sync(&self, key: &K, write: Write<V>) -> WriteOutcome<V> {
        let now = Instant::now();
        if let Some(deadlines) = &self.deadlines
            && deadlines.pending()
        {
            self.sweep_some(deadlines, deadlines.nanos(now));
        }
        let mut stripe = self.stripe(key);
        if matches!(write.action, Action::Remove) {
            // A removal, applied or not, voids the leases of its key (`lease`).
            *stripe += 1;
        }
        self.write_under_stripe(key, write, now)
    }

    /// [`LocalStore::write_sync`] with the key's stripe held.
    fn write_under_stripe(&self, key: &K, write: Write<V>, now: Instant) -> WriteOutcome<V> {
        if self.try_plain_insert(key, &write, now) {
            // `existed` is unknown here and no caller of a plain put reads it.
            return WriteOutcome {
                existed: false,
                applied: true,
                previous: None,
            };
        }
        let Write {
            condition,
            action,
            want_previous,
        } = write;
        let mut outcome = WriteOutcome {
            existed: false,
            applied: false,
            previous: None,
        };
        let compares = matches!(condition, Condition::IfEquals(..));
        // The value of a creation, announced once moka has stored it (after the expiry
        // of an entry it replaced, if any: see `REPLACING_HIDDEN`).
        let mut created = None;
        let reset = HiddenReset;
        without_access(|| {
            self.cache.entry_by_ref(key).and_compute_with(|current| {
                let shown_none = current.is_none();
                let (current, expired) = self.live(key, current.map(|entry| entry.into_value()));
                outcome.existed = current.is_some();
                if want_previous {
                    outcome.previous = current.as_ref().map(|slot| slot.value.clone());
                }
                let holds = match &condition {
                    Condition::Always => true,
                    Condition::IfAbsent => current.is_none(),
                    Condition::IfPresent => current.is_some(),
                    Condition::IfEquals(expected, eq) => current
                        .as_ref()
                        .is_some_and(|slot| eq(&slot.value, expected)),
                };
                let op = match (action, current) {
                    _ if !holds => Op::Nop,
                    (Action::Put { value, ttl }, None) => {
                        let op = self.create(key, value, ttl, now, &mut created);
                        outcome.applied = op.is_some();
                        op.unwrap_or(Op::Nop)
                    }
                    (Action::Put { value, ttl }, Some(old)) => {
                        outcome.applied = true;
                        self.update(key, old, value, ttl, now)
                    }
                    (Action::Remove, Some(old)) => {
                        outcome.applied = true;
                        self.remove_slot(key, old)
                    }
                    (Action::Remove, None) => Op::Nop,
                };
                mark_if_hidden(shown_none, &op);
                remove_if_expired(op, expired)
            })
        });
        drop(reset);
        self.announce_created(key, created);
        if compares && outcome.existed && !outcome.applied {
            // JSR-107 §6.4: `remove(k, v)` and `replace(k, v, new)` that find another
            // value are accesses.
            self.cache.get(key);
        }
        outcome
    }

    /// A creation inside `and_compute_with`: the slot to store, its value in `created`
    /// to announce once stored ([`LocalStore::announce_created`]); `None` when the
    /// creation expiry is zero (JSR-107: such an entry is never stored).
    fn create(
        &self,
        key: &K,
        value: Arc<V>,
        ttl: Option<Duration>,
        now: Instant,
        created: &mut Option<Arc<V>>,
    ) -> Option<Op<Slot<V>>> {
        let fixed = self.expiry.fixed_on_create(now, ttl);
        if self.expiry.ttl_on_create(now, fixed) == Some(Duration::ZERO) {
            return None;
        }
        if self.events.is_listened() {
            *created = Some(value.clone());
        }
        let mut slot = Slot::new(value, fixed, &self.expiry);
        slot.due = self.track(key, fixed);
        Some(Op::Put(slot))
    }

    /// Announces a creation a compute stored (see [`LocalStore::create`]).
    fn announce_created(&self, key: &K, created: Option<Arc<V>>) {
        if let Some(value) = created {
            self.events
                .emit(EventKind::Created, || key.clone(), Some(value), None);
        }
    }

    /// An update of `old` inside `and_compute_with`: the slot to store, announced.
    fn update(
        &self,
        key: &K,
        old: Slot<V>,
        value: Arc<V>,
        ttl: Option<Duration>,
        now: Instant,
    ) -> Op<Slot<V>> {
        let fixed = self.expiry.fixed_on_update(now, old.deadlines(), ttl);
        self.events.emit(
            EventKind::Updated,
            || key.clone(),
            Some(value.clone()),
            Some(old.value),
        );
        let mut slot = Slot::new(value, fixed, &self.expiry);
        if self.deadlines.is_some() && fixed.ttl.is_some_and(|deadline| deadline <= now) {
            // A zero TTL on an update: the entry expires at once (see `crate::expiry`),
            // as moka's per-entry expiry makes it.
            self.announce_expired(key, slot);
            return Op::Remove;
        }
        slot.due = self.track(key, fixed);
        Op::Put(slot)
    }

    /// A removal of `old` inside `and_compute_with`, announced.
    fn remove_slot(&self, key: &K, old: Slot<V>) -> Op<Slot<V>> {
        self.events
            .emit(EventKind::Removed, || key.clone(), Some(old.value), None);
        Op::Remove
    }

    fn compute_sync(&self, key: &K, processor: &mut Processor<'_, V>) -> Computed {
        let now = Instant::now();
        if let Some(deadlines) = &self.deadlines
            && deadlines.pending()
        {
            self.sweep_some(deadlines, deadlines.nanos(now));
        }
        let mut stripe = self.stripe(key);
        let mut computed = Computed::Unchanged;
        let mut accessed = false;
        let mut removes = false;
        let mut created = None;
        let reset = HiddenReset;
        without_access(|| {
            self.cache.entry_by_ref(key).and_compute_with(|current| {
                let shown_none = current.is_none();
                let (current, expired) = self.live(key, current.map(|entry| entry.into_value()));
                let decision = processor(current.as_ref().map(|slot| &slot.value));
                removes = matches!(decision, Decision::Remove);
                let op = match (decision, current) {
                    (Decision::Access, Some(_)) => {
                        accessed = true;
                        Op::Nop
                    }
                    (Decision::Keep | Decision::Access, _) | (Decision::Remove, None) => Op::Nop,
                    (Decision::Put(value, ttl), None) => {
                        match self.create(key, value, ttl, now, &mut created) {
                            Some(op) => {
                                computed = Computed::Created;
                                op
                            }
                            None => Op::Nop,
                        }
                    }
                    (Decision::Put(value, ttl), Some(old)) => {
                        computed = Computed::Updated;
                        self.update(key, old, value, ttl, now)
                    }
                    (Decision::Remove, Some(old)) => {
                        computed = Computed::Removed;
                        self.remove_slot(key, old)
                    }
                };
                mark_if_hidden(shown_none, &op);
                remove_if_expired(op, expired)
            })
        });
        drop(reset);
        if removes {
            // A removal, applied or not, voids the leases of its key (`lease`).
            *stripe += 1;
        }
        self.announce_created(key, created);
        if accessed {
            self.cache.get(key);
        }
        computed
    }
}

#[async_trait]
impl<K, V> Store<K, V> for LocalStore<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn events(&self) -> &EventSender<K, V> {
        &self.events
    }

    #[inline]
    fn get_now(&self, key: &K) -> Option<Result<Option<Arc<V>>>> {
        Some(Ok(self.get_value(key)))
    }

    #[inline]
    fn write_now(&self, key: &K, write: Write<V>) -> Result<WriteOutcome<V>, Write<V>> {
        Ok(self.write_sync(key, write))
    }

    async fn get_all(&self, keys: &[K]) -> Result<Vec<Option<Arc<V>>>> {
        Ok(keys.iter().map(|k| self.get_value(k)).collect())
    }

    async fn contains_all(&self, keys: &[K]) -> Result<Vec<bool>> {
        // `contains_key` sees no entry, so no deadline: none due may be left.
        self.sweep();
        Ok(keys.iter().map(|k| self.cache.contains_key(k)).collect())
    }

    async fn write(&self, key: &K, write: Write<V>) -> Result<WriteOutcome<V>> {
        Ok(self.write_sync(key, write))
    }

    async fn put_all(&self, entries: Vec<(K, Arc<V>)>, ttl: Option<Duration>) -> Result<u64> {
        let mut stored = 0;
        for (key, value) in entries {
            let outcome = self.write_sync(
                &key,
                Write {
                    condition: Condition::Always,
                    action: Action::Put { value, ttl },
                    want_previous: false,
                },
            );
            stored += u64::from(outcome.applied);
        }
        Ok(stored)
    }

    async fn remove_all(&self, keys: &[K]) -> Result<u64> {
        let mut removed = 0;
        for key in keys {
            let outcome = self.write_sync(
                key,
                Write {
                    condition: Condition::Always,
                    action: Action::Remove,
                    want_previous: false,
                },
            );
            removed += u64::from(outcome.applied);
        }
        Ok(removed)
    }

    async fn remove_everything(&self) -> Result<u64> {
        // Loads in flight are of keys with no entry: void them all, as `clear` does.
        self.void_leases();
        let keys: Vec<K> = self.cache.iter().map(|(k, _)| (*k).clone()).collect();
        self.remove_all(&keys).await
    }

    async fn clear(&self) -> Result<()> {
        self.void_leases();
        self.cache.invalidate_all();
        Ok(())
    }

    /// Reads `key` and, on a miss, grants `token` a lease: a load of a key this process
    /// alone sees needs no coordination (the local flight is that), but a removal of
    /// the key, or a clear, while the load runs must keep its value out, as on a store
    /// shared by several processes. The lease records its key's stripe epoch;
    /// [`Store::put_leased`] stores only if no removal of a key of that stripe came in
    /// between (checked under the stripe's lock, which every removal holds). A removal
    /// of another key of the stripe (one in 64) also keeps the value out: a value not
    /// cached, never a stale one.
    async fn lease(&self, key: &K, token: &str, ttl: Duration, _waited: bool) -> Result<Lease<V>> {
        if let Some(value) = self.get_value(key) {
            return Ok(Lease::Hit(value));
        }
        let epoch = *self.stripe(key);
        let now = Instant::now();
        let mut leases = self.leases.lock();
        if leases.granted.len() >= leases.prune_at.max(LEASES_KEPT) {
            leases.granted.retain(|_, (_, ends)| *ends > now);
            leases.prune_at = 2 * leases.granted.len();
        }
        leases.granted.insert(token.to_string(), (epoch, now + ttl));
        Ok(Lease::Granted)
    }

    async fn put_leased(
        &self,
        key: &K,
        token: &str,
        value: Arc<V>,
        ttl: Option<Duration>,
    ) -> Result<LeasedPut> {
        let Some((epoch, _)) = self.leases.lock().granted.remove(token) else {
            return Ok(LeasedPut::Lost);
        };
        let now = Instant::now();
        let stripe = self.stripe(key);
        if *stripe != epoch {
            return Ok(LeasedPut::Stale);
        }
        let write = Write {
            condition: Condition::IfAbsent,
            action: Action::Put { value, ttl },
            want_previous: false,
        };
        let outcome = self.write_under_stripe(key, write, now);
        drop(stripe);
        if outcome.existed && !outcome.applied {
            // Written meanwhile: that value is newer.
            return Ok(LeasedPut::Stale);
        }
        Ok(LeasedPut::Stored)
    }

    async fn release_lease(&self, _key: &K, token: &str) -> Result<()> {
        self.leases.lock().granted.remove(token);
        Ok(())
    }

    async fn compute(&self, key: &K, processor: &mut Processor<'_, V>) -> Result<Computed> {
        // moka releases its per-key lock while unwinding, so a panicking processor leaves
        // the entry as it was and the cache usable; the caller gets an error.
        std::panic::catch_unwind(AssertUnwindSafe(|| self.compute_sync(key, processor)))
            .map_err(|payload| Error::panicked("entry processor", payload))
    }

    fn entries(&self) -> BoxStream<'_, Result<(K, Arc<V>)>> {
        // A snapshot: moka's iterator borrows the cache and is not `Send` across awaits.
        // Each entry is read with `get`, which is an access (moka's iterator is not).
        let snapshot: Vec<_> = self
            .cache
            .iter()
            .filter_map(|(k, _)| self.get_value(&k).map(|value| Ok(((*k).clone(), value))))
            .collect();
        stream::iter(snapshot).boxed()
    }

    async fn len(&self) -> Result<u64> {
        self.sweep();
        self.cache.run_pending_tasks();
        if self.deadlines.is_none() {
            // moka's per-entry expiry removes an entry past its deadline at its timer
            // wheel's next tick (about a second later), and `entry_count` counts it
            // until then: the entries are counted one by one instead, as iteration
            // sees them (moka's iterator skips expired entries). O(entries).
            return Ok(self.cache.iter().count() as u64);
        }
        Ok(self.cache.entry_count())
    }

    async fn run_pending_tasks(&self) -> Result<()> {
        self.sweep();
        self.cache.run_pending_tasks();
        Ok(())
    }

    async fn destroy(&self) -> Result<()> {
        // The data lives in this process only: dropping it is destroying it.
        self.cache.invalidate_all();
        self.cache.run_pending_tasks();
        Ok(())
    }
}

impl<K, V> std::fmt::Debug for LocalConfig<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalConfig").finish_non_exhaustive()
    }
}

impl<K, V> std::fmt::Debug for LocalStore<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalStore").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod conformance {
    async fn local_manager() -> crate::CacheManager {
        crate::CacheManager::from_url("memory://").expect("memory:// is always available")
    }

    crate::conformance_suite!(local_manager);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventFilter, EventReceiver};
    use crate::expiry::{Custom, CustomExpiry};
    use crate::{Cache, CacheManager};
    use futures::TryStreamExt;

    const TTL: Duration = Duration::from_millis(200);

    async fn cache(label: &str, policy: ExpiryPolicy) -> Cache<String, String> {
        CacheManager::from_url("memory://")
            .expect("memory:// is always available")
            .cache::<String, String>(label)
            .expiry(policy)
            .build()
            .await
            .expect("a cache")
    }

    /// Whether `store` (one that keeps its own deadlines) still holds one.
    fn deadlines_pending(store: &LocalStore<String, String>) -> bool {
        store
            .deadlines
            .as_ref()
            .expect("a store that keeps its own deadlines")
            .pending()
    }

    /// Returns once the clock is past `deadline`.
    async fn pass(deadline: Instant) {
        tokio::time::sleep_until((deadline + Duration::from_millis(1)).into()).await;
    }

    fn drain(rx: &mut EventReceiver<String, String>) -> Vec<(EventKind, String, Option<String>)> {
        std::iter::from_fn(|| rx.try_recv())
            .map(|event| {
                let event = event.expect("no event lost");
                (event.kind, event.key, event.value.map(|v| (*v).clone()))
            })
            .collect()
    }

    /// `len` counts live entries only, whatever the policy: an entry past its own TTL
    /// is not counted (under the policies moka's per-entry expiry serves, moka's
    /// `entry_count` counted it until its timer wheel's next tick, about a second).
    #[tokio::test]
    async fn len_does_not_count_an_entry_past_its_ttl() {
        let mut failures = Vec::new();
        for policy in [
            ExpiryPolicy::Eternal,
            ExpiryPolicy::Modified(Duration::from_secs(60)),
            ExpiryPolicy::Created(Duration::from_secs(60)),
            ExpiryPolicy::Accessed(Duration::from_secs(60)),
            ExpiryPolicy::Touched(Duration::from_secs(60)),
        ] {
            let c = cache("len-ttl", policy).await;
            c.put("a".into(), "1".to_string()).await.unwrap();
            let short = Duration::from_millis(50);
            let written = Instant::now();
            c.put_with_ttl("b".into(), "1".to_string(), short)
                .await
                .unwrap();
            pass(written + short).await;
            let len = c.len().await.unwrap();
            if len != 1 {
                failures.push(format!("{policy:?}: len {len}, want 1"));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    fn store(policy: ExpiryPolicy) -> LocalStore<String, String> {
        LocalStore::new(LocalConfig {
            expiry: ExpirySettings::policy(policy),
            max_entries: None,
            weigher: None,
            max_weight: None,
            stats: Arc::default(),
            events: EventSender::new(16),
        })
        .expect("a store")
    }

    fn put(ttl: Option<Duration>) -> Write<String> {
        Write {
            condition: Condition::Always,
            action: Action::Put {
                value: Arc::new("v".to_string()),
                ttl,
            },
            want_previous: false,
        }
    }

    struct Hour;

    impl CustomExpiry for Hour {
        fn for_creation(&self) -> Option<Duration> {
            Some(Duration::from_secs(3600))
        }
    }

    #[test]
    fn only_policies_whose_deadlines_reads_never_move_run_without_per_entry_expiry() {
        let d = Duration::from_secs(60);
        let own = |policy| own_expiry(&ExpirySettings::policy(policy));
        assert_eq!(own(ExpiryPolicy::Eternal), Some(None));
        assert_eq!(own(ExpiryPolicy::Modified(d)), Some(Some(d)));
        assert_eq!(own(ExpiryPolicy::Modified(Duration::ZERO)), None);
        assert_eq!(own(ExpiryPolicy::Created(d)), None);
        assert_eq!(own(ExpiryPolicy::Accessed(d)), None);
        assert_eq!(own(ExpiryPolicy::Touched(d)), None);
        let idle = ExpirySettings {
            max_idle: Some(d),
            ..ExpirySettings::default()
        };
        assert_eq!(own_expiry(&idle), None);
        let custom = ExpirySettings {
            custom: Some(Custom(Arc::new(Hour))),
            ..ExpirySettings::default()
        };
        assert_eq!(own_expiry(&custom), None);
    }

    #[tokio::test]
    async fn an_entry_with_its_own_ttl_expires_at_its_deadline_under_moka_time_to_live() {
        let c = cache("own-ttl", ExpiryPolicy::Modified(Duration::from_secs(3600))).await;
        let mut rx = c.subscribe(EventFilter::kinds([EventKind::Expired]));
        c.put("long".into(), "1".to_string()).await.unwrap();
        let written = Instant::now();
        c.put_with_ttl("short".into(), "2".to_string(), TTL)
            .await
            .unwrap();
        let stored = Instant::now();
        let found = c.get(&"short".into()).await.unwrap();
        let len = c.len().await.unwrap();
        // Judged only while the clock is before the earliest deadline the entry can have.
        if Instant::now() < written + TTL {
            assert_eq!(found.as_deref().map(String::as_str), Some("2"));
            assert_eq!(len, 2);
        }
        pass(stored + TTL).await;
        // `contains_key` and `len` do not read the entry: they still leave it out.
        assert!(!c.contains_key(&"short".into()).await.unwrap());
        assert_eq!(c.len().await.unwrap(), 1);
        assert_eq!(c.get(&"short".into()).await.unwrap(), None);
        let keys: Vec<String> = c.entries().map_ok(|(k, _)| k).try_collect().await.unwrap();
        assert_eq!(keys, ["long"]);
        assert_eq!(
            drain(&mut rx),
            [(EventKind::Expired, "short".into(), Some("2".into()))]
        );
        assert_eq!(c.stats().expirations, 1);
        assert_eq!(
            c.get(&"long".into())
                .await
                .unwrap()
                .as_deref()
                .map(String::as_str),
            Some("1")
        );
    }

    #[tokio::test]
    async fn an_expired_entry_nobody_reads_is_removed_by_the_next_write() {
        let store = store(ExpiryPolicy::Eternal);
        let mut rx = store
            .events
            .subscribe(EventFilter::kinds([EventKind::Expired]));
        store.write_sync(&"a".into(), put(Some(TTL)));
        let stored = Instant::now();
        pass(stored + TTL).await;
        store.write_sync(&"b".into(), put(None));
        // Its memory is back: moka holds one entry, and no deadline is left to sweep.
        store.cache.run_pending_tasks();
        assert_eq!(store.cache.entry_count(), 1);
        assert!(!deadlines_pending(&store));
        assert_eq!(
            drain(&mut rx),
            [(EventKind::Expired, "a".into(), Some("v".into()))]
        );
        assert_eq!(store.stats.expirations.get(), 1);
    }

    #[tokio::test]
    async fn a_plain_put_over_an_expired_entry_no_sweep_took_counts_its_expiry() {
        let store = store(ExpiryPolicy::Eternal);
        store.write_sync(&"a".into(), put(Some(TTL)));
        let stored = Instant::now();
        pass(stored + TTL).await;
        {
            // Another sweep is under way: the put's own sweep skips, and the put (nobody
            // listens) is moka's plain `insert`, which looks at no deadline.
            let _busy = store.deadlines.as_ref().expect("own deadlines").sweeping();
            store.write_sync(&"a".into(), put(None));
            assert_eq!(store.stats.expirations.get(), 1);
        }
        assert!(
            store.get_value(&"a".into()).is_some(),
            "the new entry has no TTL"
        );
        store.write_sync(&"b".into(), put(None));
        assert_eq!(store.stats.expirations.get(), 1, "counted once");
        assert!(!deadlines_pending(&store));
    }

    #[tokio::test]
    async fn a_write_over_an_entry_moka_expired_announces_the_expiry_then_creates_it() {
        // Policies under moka's per-entry expiry, which hides an entry past its
        // deadline from the write that then replaces it.
        for policy in [
            ExpiryPolicy::Created(TTL),
            ExpiryPolicy::Accessed(TTL),
            ExpiryPolicy::Touched(TTL),
        ] {
            for write in ["put", "put_if_absent", "invoke"] {
                let c = cache("moka-rewrite", policy).await;
                let mut rx = c.subscribe(EventFilter::all());
                c.put("a".into(), "1".to_string()).await.unwrap();
                let stored = Instant::now();
                pass(stored + TTL).await;
                match write {
                    "put" => c.put("a".into(), "2".to_string()).await.unwrap(),
                    "put_if_absent" => {
                        assert!(c.put_if_absent("a".into(), "2".to_string()).await.unwrap())
                    }
                    _ => c
                        .invoke(&"a".into(), |e| e.set_value("2".to_string()))
                        .await
                        .unwrap(),
                }
                assert_eq!(
                    drain(&mut rx),
                    [
                        (EventKind::Created, "a".into(), Some("1".into())),
                        (EventKind::Expired, "a".into(), Some("1".into())),
                        (EventKind::Created, "a".into(), Some("2".into())),
                    ],
                    "{policy:?} {write}"
                );
                assert_eq!(c.stats().expirations, 1, "{policy:?} {write}");
                c.run_pending_tasks().await.unwrap();
                assert_eq!(c.stats().expirations, 1, "counted once: {policy:?} {write}");
                assert!(drain(&mut rx).is_empty(), "{policy:?} {write}");
            }
        }
    }

    #[tokio::test]
    async fn a_put_nobody_listens_to_over_an_entry_moka_expired_counts_its_expiry() {
        for policy in [ExpiryPolicy::Accessed(TTL), ExpiryPolicy::Touched(TTL)] {
            let c = cache("moka-silent-rewrite", policy).await;
            c.put("a".into(), "1".to_string()).await.unwrap();
            let stored = Instant::now();
            pass(stored + TTL).await;
            c.put("a".into(), "2".to_string()).await.unwrap();
            assert_eq!(c.stats().expirations, 1, "{policy:?}");
            c.run_pending_tasks().await.unwrap();
            assert_eq!(c.stats().expirations, 1, "counted once: {policy:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removal_or_clear_during_a_load_keeps_the_loaded_value_out() {
        for change in ["remove", "clear", "remove_all", "put"] {
            let c = cache("load-then-change", ExpiryPolicy::Eternal).await;
            // An entry of another key, for `remove_all` to remove.
            c.put("b".into(), "b".to_string()).await.unwrap();
            let loading = Arc::new(tokio::sync::Notify::new());
            let go = Arc::new(tokio::sync::Notify::new());
            let load = {
                let (c, loading, go) = (c.clone(), loading.clone(), go.clone());
                tokio::spawn(async move {
                    c.get_or_load(&"a".to_string(), |_| async move {
                        loading.notify_one();
                        go.notified().await;
                        Ok::<_, crate::BoxError>("old".to_string())
                    })
                    .await
                })
            };
            loading.notified().await;
            match change {
                "remove" => assert!(!c.remove(&"a".into()).await.unwrap()),
                "clear" => c.clear().await.unwrap(),
                "remove_all" => assert_eq!(c.remove_all().await.unwrap(), 1),
                _ => c.put("a".into(), "new".to_string()).await.unwrap(),
            }
            go.notify_one();
            let loaded = load.await.unwrap().unwrap();
            // The caller gets what its loader read, as without a cache.
            assert_eq!(loaded.as_str(), "old", "{change}");
            let now = c.get(&"a".into()).await.unwrap();
            let expected = if change == "put" { Some("new") } else { None };
            assert_eq!(now.as_deref().map(String::as_str), expected, "{change}");
            assert_eq!(c.stats().stale_sets_prevented, 1, "{change}");
        }
    }

    #[tokio::test]
    async fn leases_nobody_ended_are_forgotten_once_expired() {
        let store = store(ExpiryPolicy::Eternal);
        for i in 0..3 * LEASES_KEPT {
            let granted = store
                .lease(&format!("k{i}"), &format!("t{i}"), Duration::ZERO, false)
                .await
                .unwrap();
            assert!(matches!(granted, Lease::Granted));
        }
        let kept = store.leases.lock().granted.len();
        assert!(kept <= LEASES_KEPT, "{kept} expired leases kept");
        // A live lease is kept: its holder still stores under it.
        store
            .lease(&"live".to_string(), "live", Duration::from_secs(60), false)
            .await
            .unwrap();
        let stored = store
            .put_leased(&"live".to_string(), "live", Arc::new("v".to_string()), None)
            .await
            .unwrap();
        assert_eq!(stored, LeasedPut::Stored);
    }

    #[tokio::test]
    async fn a_write_finding_an_expired_entry_announces_the_expiry_then_creates_it() {
        let c = cache("own-rewrite", ExpiryPolicy::Eternal).await;
        let mut rx = c.subscribe(EventFilter::all());
        c.put_with_ttl("a".into(), "1".to_string(), TTL)
            .await
            .unwrap();
        let stored = Instant::now();
        pass(stored + TTL).await;
        assert!(c.put_if_absent("a".into(), "2".to_string()).await.unwrap());
        assert_eq!(
            drain(&mut rx),
            [
                (EventKind::Created, "a".into(), Some("1".into())),
                (EventKind::Expired, "a".into(), Some("1".into())),
                (EventKind::Created, "a".into(), Some("2".into())),
            ]
        );
        // The new entry has no TTL of its own.
        assert!(!deadlines_pending(c.inner.local.as_ref().unwrap()));
        assert_eq!(
            c.get(&"a".into())
                .await
                .unwrap()
                .as_deref()
                .map(String::as_str),
            Some("2")
        );
        assert_eq!(c.stats().expirations, 1);
    }

    #[tokio::test]
    async fn a_removal_finding_an_expired_entry_removes_it_as_expired() {
        let c = cache("own-remove", ExpiryPolicy::Eternal).await;
        let mut rx = c.subscribe(EventFilter::all());
        c.put_with_ttl("a".into(), "1".to_string(), TTL)
            .await
            .unwrap();
        let stored = Instant::now();
        pass(stored + TTL).await;
        assert!(
            !c.remove(&"a".into()).await.unwrap(),
            "nothing live to remove"
        );
        assert_eq!(
            drain(&mut rx),
            [
                (EventKind::Created, "a".into(), Some("1".into())),
                (EventKind::Expired, "a".into(), Some("1".into())),
            ]
        );
        assert_eq!((c.stats().removals, c.stats().expirations), (0, 1));
        assert_eq!(c.len().await.unwrap(), 0);
    }

    static KEY_TEXTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

    /// A key that counts how often it is turned into text (serialized).
    #[derive(Clone, PartialEq, Eq, Hash, serde::Deserialize)]
    struct Counted(String);

    impl serde::Serialize for Counted {
        fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            KEY_TEXTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0.serialize(serializer)
        }
    }

    #[tokio::test]
    async fn a_hit_builds_no_key_text_and_a_miss_still_checks_the_hashing_rules() {
        let texts = || KEY_TEXTS.load(std::sync::atomic::Ordering::Relaxed);
        let c = CacheManager::from_url("memory://")
            .unwrap()
            .cache::<Counted, String>("hashing-hits")
            .hashing_rules([r"user:(?<tag>\d+)"])
            .build()
            .await
            .unwrap();
        let user = Counted("user:1".into());
        c.put(user.clone(), "1".to_string()).await.unwrap();
        let before = texts();
        for _ in 0..3 {
            assert!(c.get(&user).await.unwrap().is_some());
        }
        assert_eq!(texts(), before, "a hit turned its key into text");
        let read = c.get(&Counted("session:1".into())).await;
        assert!(matches!(read, Err(crate::Error::Rejected(_))), "{read:?}");
        assert_eq!(c.stats().misses, 0, "a rejected read is no miss");
        assert_eq!(
            c.get(&Counted("user:2".into())).await.unwrap(),
            None,
            "a miss on a key the rules match"
        );
    }

    /// A key the hashing rules refuse is counted in `rejections` by every operation
    /// that refuses it, as a Redis store's refusal of the key is.
    #[tokio::test]
    async fn a_key_the_hashing_rules_refuse_counts_a_rejection_per_refused_call() {
        let c = CacheManager::from_url("memory://")
            .unwrap()
            .cache::<String, String>("hashing-rejections")
            .hashing_rules([r"user:(?<tag>\d+)"])
            .build()
            .await
            .unwrap();
        let refused = "session:1".to_string();
        assert!(matches!(
            c.get(&refused).await,
            Err(crate::Error::Rejected(_))
        ));
        assert!(matches!(
            c.put(refused.clone(), "1".to_string()).await,
            Err(crate::Error::Rejected(_))
        ));
        assert!(matches!(
            c.get_all(std::slice::from_ref(&refused)).await,
            Err(crate::Error::Rejected(_))
        ));
        let stats = c.stats();
        assert_eq!(stats.rejections, 3, "{stats:?}");
        assert_eq!((stats.hits, stats.misses, stats.puts), (0, 0, 0));
    }

    #[tokio::test]
    async fn an_update_with_a_zero_ttl_expires_the_entry_at_once() {
        let c = cache("own-zero", ExpiryPolicy::Eternal).await;
        let mut rx = c.subscribe(EventFilter::all());
        c.put("a".into(), "1".to_string()).await.unwrap();
        c.put_with_ttl("a".into(), "2".to_string(), Duration::ZERO)
            .await
            .unwrap();
        assert_eq!(
            drain(&mut rx),
            [
                (EventKind::Created, "a".into(), Some("1".into())),
                (EventKind::Updated, "a".into(), Some("2".into())),
                (EventKind::Expired, "a".into(), Some("2".into())),
            ]
        );
        assert_eq!(c.get(&"a".into()).await.unwrap(), None);
        assert_eq!(c.len().await.unwrap(), 0);
        assert_eq!(c.stats().expirations, 1);
    }
}
