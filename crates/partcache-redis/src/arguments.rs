//! The arguments the function library takes (`lua/common.lua`), named: every
//! function's cache settings ([`CacheSettings`]: policy, duration, max-idle, budget),
//! a custom policy's durations asked for a call ([`Asked`]), its event arguments'
//! [`EventMode`], and the codes of a conditional write. The wire
//! form is the decimal text of each value, as the Lua side reads it.

use std::time::Duration;

use partcache::expiry::{Custom, CustomExpiry, ExpiryPolicy, LONGEST_DEADLINE, bounded};
use partcache::store::raw::RawCacheSpec;
use redis::Cmd;

/// Milliseconds of `d`, rounded up so that a tiny non-zero duration is not zero, and
/// at most [`LONGEST_DEADLINE`]'s: the scripts compute a deadline (`NOW + ms`) in Lua
/// numbers, exact only up to 2^53, and Redis refuses an expire time past its range
/// (`ERR invalid expire time`). Callers that can say "no deadline" say so for longer
/// durations instead ([`ttl_arg`]); capping is for those that cannot.
pub(crate) fn millis(d: Duration) -> u64 {
    let d = d.min(LONGEST_DEADLINE);
    // At most LONGEST_DEADLINE's milliseconds, about 3 * 10^14: it fits.
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 && !d.is_zero() { 1 } else { ms }
}

/// A TTL argument: milliseconds, or -1 for none (also for a TTL longer than
/// [`LONGEST_DEADLINE`], which sets no deadline on every store).
pub(crate) fn ttl_arg(ttl: Option<Duration>) -> String {
    ttl.and_then(bounded)
        .map_or_else(|| "-1".to_string(), |t| millis(t).to_string())
}

/// The per-partition entry budget: `floor(max / P)`, at least 1, so the cache as a whole
/// never holds more than `max_entries` (when `max_entries >= P`). 0: unbounded.
pub(crate) fn budget(max_entries: Option<u64>, partitions: u16) -> u64 {
    max_entries.map_or(0, |max| (max / u64::from(partitions)).max(1))
}

/// The expiry policy argument (`lua/common.lua`, settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PolicyCode {
    Eternal = 0,
    Created = 1,
    Modified = 2,
    Accessed = 3,
    Touched = 4,
    /// A custom policy, whose durations stand in the duration's place, each only once a
    /// call needs it ([`Asked`]).
    Custom = 5,
}

/// The settings every function takes first (`ARGV[1..=4]`): the expiry policy, its
/// duration (ms), the max-idle (ms, -1 for none) and the per-partition budget (0 for
/// none), kept as the text they go on the wire as, so a call formats nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheSettings {
    pub policy: String,
    pub duration: String,
    pub max_idle: String,
    pub budget: String,
}

impl CacheSettings {
    /// The settings of the cache `spec` describes.
    pub(crate) fn new(spec: &RawCacheSpec) -> CacheSettings {
        let (policy, duration) = match &spec.expiry.custom {
            Some(_) => (PolicyCode::Custom, Asked::default().arg()),
            None => {
                // A duration beyond the longest deadline is none: eternal.
                let (policy, duration) = match spec.expiry.policy.effective() {
                    ExpiryPolicy::Eternal => (PolicyCode::Eternal, Duration::ZERO),
                    ExpiryPolicy::Created(d) => (PolicyCode::Created, d),
                    ExpiryPolicy::Modified(d) => (PolicyCode::Modified, d),
                    ExpiryPolicy::Accessed(d) => (PolicyCode::Accessed, d),
                    ExpiryPolicy::Touched(d) => (PolicyCode::Touched, d),
                };
                (policy, millis(duration).to_string())
            }
        };
        CacheSettings {
            policy: (policy as u8).to_string(),
            duration,
            max_idle: spec
                .expiry
                .max_idle
                .and_then(bounded)
                .map_or_else(|| "-1".to_string(), |i| millis(i).to_string()),
            budget: budget(spec.max_entries, spec.partitions.partitions()).to_string(),
        }
    }

    /// Appends the four settings to `cmd`; with `asked`, a custom policy's durations
    /// asked for this call in the duration's place (none asked without).
    #[inline]
    pub(crate) fn write(&self, cmd: &mut Cmd, asked: Option<&Asked>) {
        cmd.arg(&self.policy);
        match asked {
            Some(asked) => cmd.arg(asked.arg()),
            None => cmd.arg(&self.duration),
        };
        cmd.arg(&self.max_idle).arg(&self.budget);
    }

    /// The four settings, comma-separated (an identity of caches whose settings are
    /// the same).
    pub(crate) fn joined(&self) -> String {
        format!(
            "{},{},{},{}",
            self.policy, self.duration, self.max_idle, self.budget
        )
    }
}

/// A duration of a custom policy, as a function names the one it needs (`lua/common.lua`,
/// need).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needed {
    Creation,
    Access,
    Update,
}

impl Needed {
    /// The kind a function's `need <kind>` result names; `None` for any other result.
    pub(crate) fn parse(result: &[u8]) -> Option<Needed> {
        match result.strip_prefix(b"need ")? {
            b"creation" => Some(Needed::Creation),
            b"access" => Some(Needed::Access),
            b"update" => Some(Needed::Update),
            _ => None,
        }
    }
}

/// The durations of a custom policy one call carries: each asked of the policy only once
/// a function said the call needs it (JSR-107 §6.4: a policy is asked only what an
/// operation applies). `None`: not asked; `Some(None)`: the policy's `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Asked {
    creation: Option<Option<Duration>>,
    access: Option<Option<Duration>>,
    update: Option<Option<Duration>>,
}

impl Asked {
    /// Asks `policy` for the duration `kind`. `false`, asking nothing, when it was asked
    /// already: a function that needs it again did not read it.
    pub(crate) fn ask(&mut self, kind: Needed, policy: &Custom) -> bool {
        let policy = &policy.0;
        let (slot, ask): (_, fn(&dyn CustomExpiry) -> Option<Duration>) = match kind {
            Needed::Creation => (&mut self.creation, |p| p.for_creation()),
            Needed::Access => (&mut self.access, |p| p.for_access()),
            Needed::Update => (&mut self.update, |p| p.for_update()),
        };
        if slot.is_some() {
            return false;
        }
        *slot = Some(ask(policy.as_ref()));
        true
    }

    /// The durations as the functions take them (`lua/common.lua`, settings):
    /// `<creation>:<access>:<update>` in ms, -1 for `None` (eternal; unchanged), blank
    /// when not asked.
    pub(crate) fn arg(&self) -> String {
        let ms = |d: Option<Option<Duration>>| match d {
            None => String::new(),
            Some(None) => "-1".to_string(),
            Some(Some(d)) => millis(d).to_string(),
        };
        // A creation's -1 is "never expires", as a duration beyond the longest deadline
        // is; an access's or an update's -1 is "unchanged", so theirs are capped.
        let creation = self.creation.map(|d| d.and_then(bounded));
        format!("{}:{}:{}", ms(creation), ms(self.access), ms(self.update))
    }
}

/// How a cache's functions publish its events (the event-mode argument).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventMode {
    /// Not at all (`publish_events(false)`).
    Silent = 0,
    /// `PUBLISH`, on a standalone server.
    Publish = 1,
    /// `SPUBLISH` (sharded pub/sub), on a cluster.
    ShardPublish = 2,
}

impl EventMode {
    /// The mode of a cache that publishes its events or not, on a cluster or not.
    pub(crate) fn new(publish_events: bool, cluster: bool) -> EventMode {
        match (publish_events, cluster) {
            (false, _) => EventMode::Silent,
            (true, false) => EventMode::Publish,
            (true, true) => EventMode::ShardPublish,
        }
    }

    /// Whether the functions publish.
    pub(crate) fn publishes(self) -> bool {
        self != EventMode::Silent
    }

    /// The argument: the mode, plus 3 when the reply is to return the events as well
    /// (the cache has listeners in this process).
    #[inline]
    pub(crate) fn arg(self, return_events: bool) -> u8 {
        self as u8 + if return_events { 3 } else { 0 }
    }
}

/// The condition argument of the `write` function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConditionCode {
    Always = 0,
    IfAbsent = 1,
    IfPresent = 2,
    IfEquals = 3,
}

/// The action argument of the `write` function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ActionCode {
    Put = 1,
    Remove = 2,
}

/// A flag argument: `"1"` or `"0"`.
pub(crate) fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The functions read these numbers (`lua/common.lua`): they must not move.
    #[test]
    fn codes_keep_their_wire_values() {
        assert_eq!(EventMode::new(false, true).arg(false), 0);
        assert_eq!(EventMode::new(true, false).arg(false), 1);
        assert_eq!(EventMode::new(true, true).arg(false), 2);
        assert_eq!(EventMode::new(true, true).arg(true), 5);
        assert_eq!(EventMode::Silent.arg(true), 3);
        assert_eq!(PolicyCode::Custom as u8, 5);
        assert_eq!(ConditionCode::IfEquals as u8, 3);
        assert_eq!(ActionCode::Remove as u8, 2);
        assert_eq!(Needed::parse(b"need update"), Some(Needed::Update));
        assert_eq!(Needed::parse(b"need"), None);
        let mut cmd = Cmd::new();
        cmd.arg(ConditionCode::IfAbsent as u8)
            .arg(ActionCode::Put as u8);
        let packed = cmd.get_packed_command();
        assert!(packed.ends_with(b"$1\r\n1\r\n$1\r\n1\r\n"));
    }

    struct Answers;

    impl CustomExpiry for Answers {
        fn for_creation(&self) -> Option<Duration> {
            Some(Duration::from_micros(1))
        }
        fn for_access(&self) -> Option<Duration> {
            None
        }
        fn for_update(&self) -> Option<Duration> {
            Some(Duration::ZERO)
        }
    }

    /// A call carries blanks for what it did not ask, `-1` for the policy's `None`, and
    /// asks each duration once at most.
    #[test]
    fn a_custom_policys_durations_are_sent_as_asked() {
        let policy = Custom(std::sync::Arc::new(Answers));
        let mut asked = Asked::default();
        assert_eq!(asked.arg(), "::");
        assert!(asked.ask(Needed::Update, &policy));
        assert_eq!(asked.arg(), "::0");
        assert!(asked.ask(Needed::Creation, &policy));
        assert!(asked.ask(Needed::Access, &policy));
        assert_eq!(asked.arg(), "1:-1:0");
        assert!(!asked.ask(Needed::Access, &policy));
    }

    struct Forever;

    impl CustomExpiry for Forever {
        fn for_creation(&self) -> Option<Duration> {
            Some(Duration::MAX)
        }
        fn for_access(&self) -> Option<Duration> {
            Some(Duration::MAX)
        }
        fn for_update(&self) -> Option<Duration> {
            Some(Duration::MAX)
        }
    }

    /// A duration beyond the longest deadline goes as none (`-1`) where the argument
    /// can say none, and as the longest deadline where `-1` means something else; a
    /// thousand years goes as it is.
    #[test]
    fn durations_beyond_the_longest_deadline_go_as_none_or_capped() {
        let longest = LONGEST_DEADLINE.as_millis().to_string();
        assert_eq!(ttl_arg(Some(Duration::MAX)), "-1");
        let thousand_years = Duration::from_secs(1000 * 365 * 24 * 3600);
        assert_eq!(
            ttl_arg(Some(thousand_years)),
            thousand_years.as_millis().to_string()
        );
        assert_eq!(millis(Duration::MAX).to_string(), longest);
        // The scripts add it to the server's clock in Lua numbers: exact below 2^53.
        assert!(millis(Duration::MAX) < 1 << 52);
        let policy = Custom(std::sync::Arc::new(Forever));
        let mut asked = Asked::default();
        for kind in [Needed::Creation, Needed::Access, Needed::Update] {
            asked.ask(kind, &policy);
        }
        assert_eq!(asked.arg(), format!("-1:{longest}:{longest}"));
    }
}
