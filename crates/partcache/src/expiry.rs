//! Expiry: the JCache (JSR-107) policies, max-idle, and per-entry TTL, and exactly when
//! each one moves an entry's deadline.
//!
//! | policy | set on create | moved on update | moved on read |
//! |---|---|---|---|
//! | [`ExpiryPolicy::Eternal`] | never expires | – | – |
//! | [`ExpiryPolicy::Created`] | `now + d` | no | no |
//! | [`ExpiryPolicy::Modified`] | `now + d` | yes | no |
//! | [`ExpiryPolicy::Accessed`] | `now + d` | no | yes |
//! | [`ExpiryPolicy::Touched`] | `now + d` | yes | yes |
//!
//! A [`CustomExpiry`] (JCache's `ExpiryPolicy` interface) replaces the table above
//! with its own answers: the time to live on creation, and optionally on access and on
//! update (`None`: the deadline stays).
//!
//! On top of the policy, a cache may have a *max-idle* time (reset by every read and
//! every write, as Caffeine's `expireAfterAccess`) and a single write may carry its own
//! TTL (`put_with_ttl`: a deadline `now + ttl` that reads do not move). All of them
//! combine: the entry expires at the earliest of its deadlines.
//!
//! A zero duration means "expired at once" (JSR-107): a create whose deadline is now
//! stores nothing, an update whose deadline is now removes the entry (an `Expired`
//! event), and a read whose deadline becomes now returns the value one last time.
//!
//! A duration longer than [`LONGEST_DEADLINE`] (about 10,000 years; `Duration::MAX`, the
//! usual way to write "forever", included) sets no deadline, on every store: a policy
//! of one is [`ExpiryPolicy::Eternal`], a max-idle of one is none, and a write with such
//! a TTL stores an entry that does not expire by it.
//!
//! Which operation is a creation, an update or an access follows JSR-107 §6.4 (and its
//! reference implementation), on every store:
//!
//! | operation | creation | update | access |
//! |---|---|---|---|
//! | `get`, `get_all`, iteration | load (read-through) | – | present |
//! | `contains_key`, `remove`, `get_and_remove`, `remove_all`, `clear` | – | – | – |
//! | `put`, `put_all`, `get_and_put` | absent | present | – |
//! | `put_if_absent` | absent | – | – (present: nothing) |
//! | `replace`, `get_and_replace` | – | present | – |
//! | `replace_if_equals` | – | equal | unequal |
//! | `remove_if_equals` | – | – | unequal |
//! | `invoke` | set on absent, or load | set on present | read only, present |
//! | `load_all` | absent | present, with `replace_existing` | – |
//!
//! This module is pure: stores call it with the clock reading they have. The Redis
//! store's scripts implement the same table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The longest duration that sets a deadline: a longer one sets none (see the module
/// docs). About 10,000 years: every store holds a deadline this far ahead (an
/// `Instant`, and a Redis expiry time in milliseconds, which its scripts compute
/// exactly), so a thousand-year TTL is still a deadline.
pub const LONGEST_DEADLINE: Duration = Duration::from_secs(10_000 * 365 * 24 * 3600);

/// The deadline `d` after `now`; `None` (no deadline) when `d` is longer than
/// [`LONGEST_DEADLINE`] or the clock cannot represent that instant.
pub fn deadline_after(now: Instant, d: Duration) -> Option<Instant> {
    if d > LONGEST_DEADLINE {
        return None;
    }
    now.checked_add(d)
}

/// `d` when it sets a deadline, `None` when it is longer than [`LONGEST_DEADLINE`] (no
/// deadline): how a store reads a TTL or a policy's duration.
pub fn bounded(d: Duration) -> Option<Duration> {
    (d <= LONGEST_DEADLINE).then_some(d)
}

/// A custom expiry policy, as JCache's `ExpiryPolicy` interface (and moka's `Expiry`):
/// the time to live an entry gets when it is created, accessed and updated. Set with
/// [`crate::CacheBuilder::expiry_policy`]; it replaces the cache's [`ExpiryPolicy`].
///
/// Each method is asked at the moment of the operation, by the process that runs it
/// (on a Redis store the client asks, and the partition's script applies the
/// answers). Which operation is a creation, an access or an update is the table in the
/// module docs. A zero duration means expired at once, and one longer than
/// [`LONGEST_DEADLINE`] no deadline, as for the standard policies.
///
/// ```
/// use partcache::expiry::CustomExpiry;
/// use std::time::Duration;
///
/// /// Lives an hour after it was written; reading it gives it a minute more at least.
/// struct Session;
///
/// impl CustomExpiry for Session {
///     fn for_creation(&self) -> Option<Duration> {
///         Some(Duration::from_secs(3600))
///     }
///     fn for_access(&self) -> Option<Duration> {
///         Some(Duration::from_secs(60))
///     }
///     fn for_update(&self) -> Option<Duration> {
///         Some(Duration::from_secs(3600))
///     }
/// }
/// ```
pub trait CustomExpiry: Send + Sync + 'static {
    /// Time to live of a new entry (`None`: it never expires; zero: it is not stored).
    fn for_creation(&self) -> Option<Duration>;
    /// Time to live from an access on (`None`, the default: the deadline stays where
    /// it is; zero: the entry expires, its value read one last time).
    fn for_access(&self) -> Option<Duration> {
        None
    }
    /// Time to live from an update on (`None`, the default: the deadline stays where
    /// it is; zero: the entry expires at once, with an `Expired` event).
    fn for_update(&self) -> Option<Duration> {
        None
    }
}

/// A shared [`CustomExpiry`] inside [`ExpirySettings`]; equal only to itself.
#[derive(Clone)]
pub struct Custom(pub Arc<dyn CustomExpiry>);

impl std::fmt::Debug for Custom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Custom(..)")
    }
}

impl PartialEq for Custom {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Custom {}

/// When an entry expires, as JCache defines the standard policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "policy", content = "duration", rename_all = "lowercase")]
pub enum ExpiryPolicy {
    /// Never expires (it can still be evicted).
    #[default]
    Eternal,
    /// Expires a fixed time after it was created; updates and reads do not extend it.
    #[serde(with = "crate::duration::serde")]
    Created(Duration),
    /// Expires a fixed time after it was last written (created or updated).
    #[serde(with = "crate::duration::serde")]
    Modified(Duration),
    /// Expires a fixed time after it was created or last read; updates do not extend it.
    #[serde(with = "crate::duration::serde")]
    Accessed(Duration),
    /// Expires a fixed time after it was last written or read.
    #[serde(with = "crate::duration::serde")]
    Touched(Duration),
}

impl ExpiryPolicy {
    /// The policy as stores apply it: one whose duration is longer than
    /// [`LONGEST_DEADLINE`] sets no deadline, which is [`ExpiryPolicy::Eternal`].
    pub fn effective(self) -> ExpiryPolicy {
        match self {
            ExpiryPolicy::Created(d)
            | ExpiryPolicy::Modified(d)
            | ExpiryPolicy::Accessed(d)
            | ExpiryPolicy::Touched(d)
                if bounded(d).is_none() =>
            {
                ExpiryPolicy::Eternal
            }
            policy => policy,
        }
    }
}

/// A cache's complete expiry settings: the policy, and an optional max-idle time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpirySettings {
    /// The JCache policy.
    pub policy: ExpiryPolicy,
    /// Expire an entry that was neither read nor written for this long.
    pub max_idle: Option<Duration>,
    /// A custom policy, which replaces `policy` when set. Its deadline is kept in
    /// [`FixedDeadlines::policy`], which accesses move too (see [`Self::on_access`]).
    pub custom: Option<Custom>,
}

/// The deadlines of one entry that reads do not move: the policy's (for `Created` and
/// `Modified`) and the per-entry TTL's. Stores keep this beside the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FixedDeadlines {
    /// Deadline set by a `Created`/`Modified` policy.
    pub policy: Option<Instant>,
    /// Deadline set by the TTL given to this entry's last write.
    pub ttl: Option<Instant>,
}

impl FixedDeadlines {
    fn earliest(&self) -> Option<Instant> {
        earliest(self.policy, self.ttl)
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

fn until(deadline: Option<Instant>, now: Instant) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(now))
}

impl ExpirySettings {
    /// Settings with only a policy.
    pub fn policy(policy: ExpiryPolicy) -> Self {
        ExpirySettings {
            policy,
            max_idle: None,
            custom: None,
        }
    }

    /// These settings as stores apply them: a policy or a max-idle whose duration is
    /// longer than [`LONGEST_DEADLINE`] sets no deadline, so is eternal or none.
    pub fn effective(self) -> Self {
        ExpirySettings {
            policy: self.policy.effective(),
            max_idle: self.max_idle.and_then(bounded),
            custom: self.custom,
        }
    }

    /// `true` when reads may move deadlines (so a read must tell the store it
    /// happened). Always for a custom policy, whose answers may change.
    pub fn reads_extend(&self) -> bool {
        self.max_idle.is_some()
            || self.custom.is_some()
            || matches!(
                self.policy,
                ExpiryPolicy::Accessed(_) | ExpiryPolicy::Touched(_)
            )
    }

    /// The deadline reads and writes slide forward, if any, measured from `now`.
    fn sliding(&self, now: Instant, on_update: bool) -> Option<Instant> {
        if self.custom.is_some() {
            // A custom policy's deadline is a fixed one that operations set.
            return self.max_idle.and_then(|i| deadline_after(now, i));
        }
        let policy = match self.policy {
            ExpiryPolicy::Touched(d) => deadline_after(now, d),
            ExpiryPolicy::Accessed(d) if !on_update => deadline_after(now, d),
            _ => None,
        };
        earliest(policy, self.max_idle.and_then(|i| deadline_after(now, i)))
    }

    /// The fixed deadlines of a newly created entry.
    pub fn fixed_on_create(&self, now: Instant, ttl: Option<Duration>) -> FixedDeadlines {
        if let Some(Custom(custom)) = &self.custom {
            return FixedDeadlines {
                policy: custom.for_creation().and_then(|d| deadline_after(now, d)),
                ttl: ttl.and_then(|t| deadline_after(now, t)),
            };
        }
        FixedDeadlines {
            policy: match self.policy {
                ExpiryPolicy::Created(d) | ExpiryPolicy::Modified(d) => deadline_after(now, d),
                _ => None,
            },
            ttl: ttl.and_then(|t| deadline_after(now, t)),
        }
    }

    /// The fixed deadlines after an update of an entry whose previous ones were `old`.
    pub fn fixed_on_update(
        &self,
        now: Instant,
        old: FixedDeadlines,
        ttl: Option<Duration>,
    ) -> FixedDeadlines {
        if let Some(Custom(custom)) = &self.custom {
            return FixedDeadlines {
                // An answer sets the deadline anew, none when it is beyond the longest.
                policy: match custom.for_update() {
                    Some(d) => deadline_after(now, d),
                    None => old.policy,
                },
                ttl: ttl.and_then(|t| deadline_after(now, t)),
            };
        }
        FixedDeadlines {
            policy: match self.policy {
                ExpiryPolicy::Created(_) => old.policy,
                ExpiryPolicy::Modified(d) => deadline_after(now, d),
                _ => None,
            },
            ttl: ttl.and_then(|t| deadline_after(now, t)),
        }
    }

    /// Time to live of a new entry with these fixed deadlines (`None`: no deadline;
    /// `Some(ZERO)`: do not store it).
    pub fn ttl_on_create(&self, now: Instant, fixed: FixedDeadlines) -> Option<Duration> {
        until(earliest(fixed.earliest(), self.sliding(now, false)), now)
    }

    /// Time to live after an update that set `fixed`, for an entry that had `remaining`
    /// to live before it.
    ///
    /// Under `Accessed` an update leaves the access deadline where it was; stores know
    /// only the entry's overall remaining time, which is that deadline exactly unless a
    /// max-idle or a per-entry TTL is combined with it (then it may be earlier).
    pub fn ttl_on_update(
        &self,
        now: Instant,
        fixed: FixedDeadlines,
        remaining: Option<Duration>,
    ) -> Option<Duration> {
        let kept_access = match self.policy {
            ExpiryPolicy::Accessed(_) => remaining.and_then(|r| deadline_after(now, r)),
            _ => None,
        };
        until(
            earliest(
                earliest(fixed.earliest(), self.sliding(now, true)),
                kept_access,
            ),
            now,
        )
    }

    /// Fixed deadlines and time to live of a new entry.
    pub fn on_create(
        &self,
        now: Instant,
        ttl: Option<Duration>,
    ) -> (FixedDeadlines, Option<Duration>) {
        let fixed = self.fixed_on_create(now, ttl);
        (fixed, self.ttl_on_create(now, fixed))
    }

    /// Fixed deadlines and time to live after an update (see [`Self::ttl_on_update`]).
    pub fn on_update(
        &self,
        now: Instant,
        old: FixedDeadlines,
        remaining: Option<Duration>,
        ttl: Option<Duration>,
    ) -> (FixedDeadlines, Option<Duration>) {
        let fixed = self.fixed_on_update(now, old, ttl);
        (fixed, self.ttl_on_update(now, fixed, remaining))
    }

    /// An access under a custom policy: the entry's new fixed deadlines (the policy
    /// deadline moved when [`CustomExpiry::for_access`] says so) and its time to live.
    /// `None` without a custom policy (see [`Self::on_read`]).
    pub fn on_access(
        &self,
        now: Instant,
        fixed: FixedDeadlines,
    ) -> Option<(FixedDeadlines, Option<Duration>)> {
        let Custom(custom) = self.custom.as_ref()?;
        let fixed = FixedDeadlines {
            policy: match custom.for_access() {
                Some(d) => deadline_after(now, d),
                None => fixed.policy,
            },
            ttl: fixed.ttl,
        };
        Some((
            fixed,
            until(earliest(fixed.earliest(), self.sliding(now, false)), now),
        ))
    }

    /// Time to live after a read, given the entry's fixed deadlines and the time it had
    /// left before the read.
    pub fn on_read(
        &self,
        now: Instant,
        fixed: FixedDeadlines,
        remaining: Option<Duration>,
    ) -> Option<Duration> {
        if !self.reads_extend() {
            return remaining;
        }
        until(earliest(fixed.earliest(), self.sliding(now, false)), now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(10);
    const S: Duration = Duration::from_secs(1);

    fn settings(policy: ExpiryPolicy) -> ExpirySettings {
        ExpirySettings::policy(policy)
    }

    #[test]
    fn eternal_entries_have_no_deadline() {
        let now = Instant::now();
        let (fixed, ttl) = settings(ExpiryPolicy::Eternal).on_create(now, None);
        assert_eq!(ttl, None);
        assert_eq!(
            settings(ExpiryPolicy::Eternal).on_read(now + D, fixed, None),
            None
        );
    }

    #[test]
    fn created_is_moved_by_neither_update_nor_read() {
        let s = settings(ExpiryPolicy::Created(D));
        let t0 = Instant::now();
        let (fixed, ttl) = s.on_create(t0, None);
        assert_eq!(ttl, Some(D));
        let (fixed2, ttl2) = s.on_update(t0 + 4 * S, fixed, Some(6 * S), None);
        assert_eq!(ttl2, Some(6 * S));
        assert_eq!(s.on_read(t0 + 5 * S, fixed2, Some(5 * S)), Some(5 * S));
    }

    #[test]
    fn modified_is_moved_by_update_only() {
        let s = settings(ExpiryPolicy::Modified(D));
        let t0 = Instant::now();
        let (fixed, _) = s.on_create(t0, None);
        assert_eq!(s.on_read(t0 + 4 * S, fixed, Some(6 * S)), Some(6 * S));
        let (_, ttl) = s.on_update(t0 + 4 * S, fixed, Some(6 * S), None);
        assert_eq!(ttl, Some(D));
    }

    #[test]
    fn accessed_is_moved_by_read_only() {
        let s = settings(ExpiryPolicy::Accessed(D));
        let t0 = Instant::now();
        let (fixed, _) = s.on_create(t0, None);
        assert_eq!(s.on_read(t0 + 4 * S, fixed, Some(6 * S)), Some(D));
        let (_, ttl) = s.on_update(t0 + 4 * S, fixed, Some(6 * S), None);
        assert_eq!(ttl, Some(6 * S));
    }

    #[test]
    fn touched_is_moved_by_update_and_read() {
        let s = settings(ExpiryPolicy::Touched(D));
        let t0 = Instant::now();
        let (fixed, _) = s.on_create(t0, None);
        assert_eq!(s.on_read(t0 + 4 * S, fixed, Some(6 * S)), Some(D));
        assert_eq!(s.on_update(t0 + 4 * S, fixed, Some(6 * S), None).1, Some(D));
    }

    #[test]
    fn max_idle_and_created_combine_whichever_comes_first() {
        let s = ExpirySettings {
            policy: ExpiryPolicy::Created(D),
            max_idle: Some(4 * S),
            custom: None,
        };
        let t0 = Instant::now();
        let (fixed, ttl) = s.on_create(t0, None);
        assert_eq!(ttl, Some(4 * S));
        // idle window slides on read...
        assert_eq!(s.on_read(t0 + 3 * S, fixed, Some(S)), Some(4 * S));
        // ...but never past the creation deadline.
        assert_eq!(s.on_read(t0 + 8 * S, fixed, Some(S)), Some(2 * S));
    }

    #[test]
    fn per_entry_ttl_is_a_deadline_reads_do_not_move() {
        let s = settings(ExpiryPolicy::Accessed(D));
        let t0 = Instant::now();
        let (fixed, ttl) = s.on_create(t0, Some(3 * S));
        assert_eq!(ttl, Some(3 * S));
        assert_eq!(s.on_read(t0 + 2 * S, fixed, Some(S)), Some(S));
    }

    #[test]
    fn zero_durations_mean_expired_at_once() {
        let t0 = Instant::now();
        assert_eq!(
            settings(ExpiryPolicy::Created(Duration::ZERO))
                .on_create(t0, None)
                .1,
            Some(Duration::ZERO)
        );
        assert_eq!(
            settings(ExpiryPolicy::Eternal)
                .on_create(t0, Some(Duration::ZERO))
                .1,
            Some(Duration::ZERO)
        );
    }

    struct Fixed(Option<Duration>, Option<Duration>, Option<Duration>);

    impl CustomExpiry for Fixed {
        fn for_creation(&self) -> Option<Duration> {
            self.0
        }
        fn for_access(&self) -> Option<Duration> {
            self.1
        }
        fn for_update(&self) -> Option<Duration> {
            self.2
        }
    }

    fn custom(policy: Fixed) -> ExpirySettings {
        ExpirySettings {
            custom: Some(Custom(Arc::new(policy))),
            ..ExpirySettings::default()
        }
    }

    #[test]
    fn a_custom_policy_sets_the_deadline_it_is_asked_for_and_keeps_it_on_none() {
        let t0 = Instant::now();
        let s = custom(Fixed(Some(D), Some(3 * S), None));
        let (fixed, ttl) = s.on_create(t0, None);
        assert_eq!(ttl, Some(D));
        // An access sets its own deadline, earlier or later than the creation's.
        let (accessed, ttl) = s.on_access(t0 + S, fixed).unwrap();
        assert_eq!(ttl, Some(3 * S));
        // An update that says nothing keeps the deadline the access set.
        let (_, ttl) = s.on_update(t0 + 2 * S, accessed, Some(2 * S), None);
        assert_eq!(ttl, Some(2 * S));
        // Eternal on creation; an update's duration then sets one.
        let s = custom(Fixed(None, None, Some(S)));
        let (fixed, ttl) = s.on_create(t0, None);
        assert_eq!(ttl, None);
        assert_eq!(s.on_access(t0 + D, fixed).unwrap().1, None);
        assert_eq!(s.on_update(t0 + D, fixed, None, None).1, Some(S));
        // Zero on creation: not stored.
        let s = custom(Fixed(Some(Duration::ZERO), None, None));
        assert_eq!(s.on_create(t0, None).1, Some(Duration::ZERO));
        assert!(s.reads_extend());
    }

    #[test]
    fn durations_beyond_the_longest_deadline_set_no_deadline() {
        let t0 = Instant::now();
        let forever = Duration::MAX;
        let beyond = LONGEST_DEADLINE + S;
        for d in [forever, beyond] {
            for policy in [
                ExpiryPolicy::Created(d),
                ExpiryPolicy::Modified(d),
                ExpiryPolicy::Accessed(d),
                ExpiryPolicy::Touched(d),
            ] {
                for s in [settings(policy), settings(policy).effective()] {
                    let (fixed, ttl) = s.on_create(t0, None);
                    assert_eq!(ttl, None, "{policy:?}: a creation");
                    assert_eq!(s.on_update(t0 + S, fixed, None, None).1, None, "{policy:?}");
                    assert_eq!(s.on_read(t0 + S, fixed, None), None, "{policy:?}: a read");
                }
                assert_eq!(policy.effective(), ExpiryPolicy::Eternal);
            }
            let idle = ExpirySettings {
                max_idle: Some(d),
                ..ExpirySettings::default()
            };
            assert_eq!(idle.on_create(t0, None).1, None, "max-idle");
            assert_eq!(idle.effective().max_idle, None);
            let (fixed, ttl) = settings(ExpiryPolicy::Eternal).on_create(t0, Some(d));
            assert_eq!((fixed.ttl, ttl), (None, None), "a per-entry TTL");
            // Under a policy with a deadline, the policy's deadline stays.
            let (_, ttl) = settings(ExpiryPolicy::Created(D)).on_create(t0, Some(d));
            assert_eq!(ttl, Some(D));
        }
        // The longest deadline and a thousand years are deadlines.
        let thousand_years = Duration::from_secs(1000 * 365 * 24 * 3600);
        for d in [thousand_years, LONGEST_DEADLINE] {
            assert_eq!(
                settings(ExpiryPolicy::Created(d)).on_create(t0, None).1,
                Some(d)
            );
            assert_eq!(
                settings(ExpiryPolicy::Eternal).on_create(t0, Some(d)).1,
                Some(d)
            );
            assert_eq!(
                ExpiryPolicy::Touched(d).effective(),
                ExpiryPolicy::Touched(d)
            );
        }
    }

    #[test]
    fn a_custom_answer_beyond_the_longest_deadline_removes_the_deadline() {
        let t0 = Instant::now();
        let s = custom(Fixed(Some(Duration::MAX), None, None));
        assert_eq!(s.on_create(t0, None).1, None, "a creation");
        // An access or an update that answers "forever" ends the deadline set before,
        // where `None` would keep it.
        let s = custom(Fixed(Some(D), Some(Duration::MAX), Some(Duration::MAX)));
        let (fixed, _) = s.on_create(t0, None);
        assert_eq!(s.on_access(t0 + S, fixed).unwrap().1, None, "an access");
        assert_eq!(
            s.on_update(t0 + S, fixed, Some(D), None).1,
            None,
            "an update"
        );
    }
}
