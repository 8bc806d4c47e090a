//! A circuit breaker per node: a node that times out again and again (a stopped
//! process, a network black hole) would otherwise cost every call to it a whole
//! response timeout, for as long as it lasts. After [`BreakerSettings::failures`]
//! timeouts in a row the breaker opens: calls to that node fail at once with
//! [`Error::CircuitOpen`] (adapters fail open at their origin's speed), while calls to
//! every other node go on as before. Once per [`BreakerSettings::probe_interval`] one
//! probe (a `PING`, in the background, never a caller's request) checks the node; the
//! breaker closes when the node answers.
//!
//! The hot path pays one atomic load per call (is the breaker closed?) and one per
//! reply (were there timeouts to forget?).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use partcache::Error;
use partcache::stats::{BreakerState, BreakerStats};

/// Default of [`BreakerSettings::failures`].
pub(crate) const DEFAULT_BREAKER_FAILURES: u32 = 3;
/// Default of [`BreakerSettings::probe_interval`].
pub(crate) const DEFAULT_BREAKER_PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// When a node's circuit breaker opens and how often it is probed: the URL parameters
/// `breaker_failures` and `breaker_probe_interval`, or
/// [`DeploymentUrl::breaker`](crate::url::DeploymentUrl::breaker) in code.
///
/// ```
/// use partcache_redis::BreakerSettings;
/// use std::time::Duration;
///
/// let settings = BreakerSettings::default()
///     .failures(5)
///     .probe_interval(Duration::from_millis(250));
/// assert_eq!(settings.failures, 5);
/// assert!(BreakerSettings::disabled().failures == 0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Timeouts in a row (with no reply from the node in between) that open the
    /// breaker (default 3); 0 turns breakers off.
    pub failures: u32,
    /// How often an open breaker probes its node (default 500 ms): caching through a
    /// node that answers again resumes within about this long.
    pub probe_interval: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failures: DEFAULT_BREAKER_FAILURES,
            probe_interval: DEFAULT_BREAKER_PROBE_INTERVAL,
        }
    }
}

impl BreakerSettings {
    /// Breakers that never open: every call to a silent node waits out its timeout.
    pub fn disabled() -> Self {
        BreakerSettings {
            failures: 0,
            ..BreakerSettings::default()
        }
    }

    /// Sets [`failures`](Self::failures).
    pub fn failures(mut self, failures: u32) -> Self {
        self.failures = failures;
        self
    }

    /// Sets [`probe_interval`](Self::probe_interval).
    pub fn probe_interval(mut self, interval: Duration) -> Self {
        self.probe_interval = interval;
        self
    }
}

/// What a call to the node may do (see [`Breaker::admit`]).
pub(crate) enum Admission {
    /// Go ahead.
    Go,
    /// Fail at once with this error.
    Refuse(Error),
    /// Fail at once with this error, and start the probe (the caller won the turn).
    Probe(Error),
}

/// One node's breaker. See the module docs.
pub(crate) struct Breaker {
    node: String,
    settings: BreakerSettings,
    /// Closed: the only thing a call reads.
    closed: AtomicBool,
    /// Timeouts since the node last answered.
    timeouts: AtomicU32,
    state: Mutex<Current>,
    opened: AtomicU64,
    closings: AtomicU64,
    rejected: AtomicU64,
    probes: AtomicU64,
}

struct Current {
    state: BreakerState,
    since: Instant,
    /// When the last probe started (or the breaker opened).
    probed: Instant,
}

impl Breaker {
    pub(crate) fn new(node: &str, settings: BreakerSettings) -> Breaker {
        let now = Instant::now();
        Breaker {
            node: node.to_string(),
            settings,
            closed: AtomicBool::new(true),
            timeouts: AtomicU32::new(0),
            state: Mutex::new(Current {
                state: BreakerState::Closed,
                since: now,
                probed: now,
            }),
            opened: AtomicU64::new(0),
            closings: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            probes: AtomicU64::new(0),
        }
    }

    /// Whether calls go to the node.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether a call may go to the node now; while open, the first caller after each
    /// probe interval gets the turn to start a probe.
    pub(crate) fn admit(&self) -> Admission {
        if self.is_closed() {
            return Admission::Go;
        }
        let mut current = self.state.lock();
        match current.state {
            BreakerState::Closed => Admission::Go,
            BreakerState::Open if current.probed.elapsed() >= self.settings.probe_interval => {
                current.state = BreakerState::Probing;
                current.probed = Instant::now();
                self.probes.fetch_add(1, Ordering::Relaxed);
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Admission::Probe(self.open_error())
            }
            BreakerState::Open | BreakerState::Probing => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
                Admission::Refuse(self.open_error())
            }
        }
    }

    fn open_error(&self) -> Error {
        Error::CircuitOpen {
            node: self.node.clone(),
            retry_in: self.settings.probe_interval,
        }
    }

    /// The node answered (any reply, an error reply included): forget its timeouts,
    /// and close the breaker if it was open.
    pub(crate) fn answered(&self) {
        if self.timeouts.load(Ordering::Relaxed) != 0 {
            self.timeouts.store(0, Ordering::Relaxed);
        }
        if !self.is_closed() {
            self.close();
        }
    }

    /// [`Breaker::answered`] if `answered`: a reply, rather than a failed call.
    pub(crate) fn answered_if(&self, answered: bool) {
        if answered {
            self.answered();
        }
    }

    /// A call to the node timed out; opens the breaker at the configured count.
    pub(crate) fn timed_out(&self) {
        if self.settings.failures == 0 || !self.is_closed() {
            return;
        }
        let timeouts = self.timeouts.fetch_add(1, Ordering::AcqRel) + 1;
        if timeouts < self.settings.failures {
            return;
        }
        let mut current = self.state.lock();
        if current.state != BreakerState::Closed {
            return;
        }
        let now = Instant::now();
        *current = Current {
            state: BreakerState::Open,
            since: now,
            probed: now,
        };
        self.closed.store(false, Ordering::Release);
        self.opened.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            node = %self.node,
            timeouts,
            probe_interval = ?self.settings.probe_interval,
            "circuit breaker opened: calls to the node fail at once until a probe finds it answering"
        );
    }

    /// The probe's outcome: close, or stay open until the next probe.
    pub(crate) fn probed(&self, answered: bool) {
        if answered {
            self.close();
            return;
        }
        let mut current = self.state.lock();
        if current.state == BreakerState::Probing {
            current.state = BreakerState::Open;
        }
    }

    fn close(&self) {
        let mut current = self.state.lock();
        if current.state == BreakerState::Closed {
            return;
        }
        let was_open = current.since.elapsed();
        current.state = BreakerState::Closed;
        current.since = Instant::now();
        self.timeouts.store(0, Ordering::Relaxed);
        self.closed.store(true, Ordering::Release);
        self.closings.fetch_add(1, Ordering::Relaxed);
        tracing::info!(node = %self.node, ?was_open, "circuit breaker closed: the node answers again");
    }

    /// The breaker's state and counters.
    pub(crate) fn stats(&self) -> BreakerStats {
        let current = self.state.lock();
        BreakerStats {
            node: self.node.clone(),
            state: current.state,
            since: current.since.elapsed(),
            opened: self.opened.load(Ordering::Relaxed),
            closed: self.closings.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            probes: self.probes.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings::default()
            .failures(3)
            .probe_interval(Duration::from_millis(30))
    }

    fn refused(admission: Admission) -> bool {
        matches!(admission, Admission::Refuse(Error::CircuitOpen { .. }))
    }

    #[test]
    fn opens_after_timeouts_in_a_row_and_a_reply_in_between_resets_the_count() {
        let breaker = Breaker::new("n:1", settings());
        breaker.timed_out();
        breaker.timed_out();
        breaker.answered();
        breaker.timed_out();
        breaker.timed_out();
        assert!(matches!(breaker.admit(), Admission::Go));
        breaker.timed_out();
        assert!(!breaker.is_closed());
        assert!(refused(breaker.admit()));
        let stats = breaker.stats();
        assert_eq!(stats.state, BreakerState::Open);
        assert_eq!((stats.opened, stats.rejected), (1, 1));
    }

    #[test]
    fn one_probe_per_interval_and_closes_when_the_node_answers() {
        let breaker = Breaker::new("n:1", settings());
        for _ in 0..3 {
            breaker.timed_out();
        }
        assert!(refused(breaker.admit()), "no probe before the interval");
        std::thread::sleep(Duration::from_millis(40));
        assert!(matches!(breaker.admit(), Admission::Probe(_)));
        assert!(refused(breaker.admit()), "one probe at a time");
        assert_eq!(breaker.stats().state, BreakerState::Probing);
        breaker.probed(false);
        assert!(
            refused(breaker.admit()),
            "a failed probe waits for the next interval"
        );
        std::thread::sleep(Duration::from_millis(40));
        assert!(matches!(breaker.admit(), Admission::Probe(_)));
        breaker.probed(true);
        assert!(matches!(breaker.admit(), Admission::Go));
        let stats = breaker.stats();
        assert_eq!(stats.state, BreakerState::Closed);
        assert_eq!((stats.opened, stats.closed, stats.probes), (1, 1, 2));
    }

    #[test]
    fn zero_failures_never_opens() {
        let breaker = Breaker::new("n:1", BreakerSettings::disabled());
        for _ in 0..100 {
            breaker.timed_out();
        }
        assert!(breaker.is_closed());
    }
}
