//! The background reaper of one cache: Redis' own expiry already makes expired entries
//! unreadable at their exact deadline; the reaper reclaims their bookkeeping (index,
//! deadline and fixed-deadline records) and announces each with an `Expired` event.
//!
//! One process reaps a cache for all that opened it: each process's reaper asks for
//! the cache's *reaping claim* (`lua/reaper_claim.lua`, a key beside the cache's
//! layout record holding the holder's id for [`CLAIM`]); the holder renews it every
//! [`RENEW`] and does the work. One other process is its *deputy* (a second claim
//! beside the first): it renews that every [`RENEW`] too, and asks for the holder's
//! claim as soon as it would lapse (its time left plus up to [`JITTER`]). Every
//! other process only reads the deputy's claim (a plain `PTTL`) every [`WAIT`] or so,
//! and asks once it is free. So the background commands of a cache are those of two
//! processes however many opened it, plus one cheap read per other process per
//! `WAIT`.
//!
//! When the holder dies, its deputy takes over within `CLAIM + JITTER`; when both
//! die at once, a waiting process becomes deputy within `WAIT` plus its jitter and
//! then takes over. A process that closes the cache gives up what it held. The
//! holder's events reach every listener: a process with listeners subscribes to the
//! cache's channels, and the reap function publishes to them (`lua/common.lua`,
//! emit). A cache that publishes nothing but has listeners in a process is reaped by
//! that process for itself too, so that they keep hearing its expiries.
//!
//! The holder's work is adaptive, so that an idle cache costs little: every
//! [`SURVEY`] it reads each partition's earliest deadline (one cheap `ZRANGE` per
//! partition, one pipeline per node), and every [`TICK`] it runs the reap function
//! only on partitions whose earliest deadline has passed; each visit handles at most
//! [`BATCH`](super::cache::BATCH) due entries and reports the partition's next
//! deadline, so no step ever scans a whole cache and the server is never blocked for
//! long. An entry's bookkeeping is reclaimed within about `SURVEY + TICK` of its
//! deadline while the holder lives, within [`TAKEOVER`] when it dies (plus the clock
//! skew between the hosts and the server).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use partcache::{Error, Result};
use redis::Value;

use super::cache::{BATCH, StoreInner};
use super::replies;
use crate::deployment::Deployment;
use crate::routing::Request;
use crate::scripts::scripts;

/// Pause between two reaper steps.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// How often every partition's earliest deadline is read again (deadlines written
/// since the last survey may be earlier than the ones known).
pub(crate) const SURVEY: Duration = Duration::from_secs(1);
/// Most partitions reaped per step (one pipeline per node).
pub(crate) const PARTITIONS_PER_TICK: usize = 64;
/// How long a cache's reaping claim lasts unless its holder renews it (see the crate
/// docs, Expiry).
pub const CLAIM: Duration = Duration::from_secs(3);
/// How often the holder renews the claim.
pub(crate) const RENEW: Duration = Duration::from_secs(1);
/// The most the deputy adds to the claim's time left before it asks again.
pub(crate) const JITTER: Duration = Duration::from_millis(250);
/// How often a process that is neither holder nor deputy reads the deputy's claim
/// (plus up to a quarter more, so that they do not all read at once).
pub(crate) const WAIT: Duration = Duration::from_secs(30);
/// The most an entry's bookkeeping (and its `Expired` event) lags its deadline when
/// the process reaping the cache dies without closing it: its claim lapses (at most
/// [`REAPER_CLAIM`](crate::REAPER_CLAIM) after its last renewal), its deputy asks
/// within 250 ms of that, surveys at once and reaps within 100 ms, and the one-second
/// survey covers an entry written after the last one: 4.35 s. While the holder
/// lives the lag is at most about 1.1 s; when the holder and its deputy die at once,
/// at most [`REAPER_TAKEOVER_BOTH`](crate::REAPER_TAKEOVER_BOTH) (see the crate docs,
/// Expiry).
pub const TAKEOVER: Duration = Duration::from_millis(
    (CLAIM.as_millis() + JITTER.as_millis() + SURVEY.as_millis() + TICK.as_millis()) as u64,
);
/// The most an entry's bookkeeping lags its deadline when the process reaping the
/// cache and its deputy die at once: their claims lapse, a waiting process reads the
/// deputy's claim within 37.5 s (30 s and up to a quarter more) and asks: the
/// holder's claim has lapsed too, so it becomes holder at once (the bound keeps one
/// renewal, 1 s, of slack for a deputy's turn first), surveys and reaps: 42.6 s.
pub const TAKEOVER_BOTH: Duration = Duration::from_millis(
    (CLAIM.as_millis()
        + WAIT.as_millis() * 5 / 4
        + RENEW.as_millis()
        + SURVEY.as_millis()
        + TICK.as_millis()) as u64,
);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Up to `most`, different in every call and process.
fn jitter(most: Duration) -> Duration {
    Duration::from_millis(fastrand::u64(..=most.as_millis() as u64))
}

/// What a process is to a cache's reaping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// It holds the claim: it reaps.
    Holder,
    /// It holds the deputy's claim: it takes over when the holder's lapses.
    Deputy,
    /// Neither: it reads the deputy's claim now and then.
    Waiting,
}

/// A cache's reaping claims as one process sees them: their keys, this process's id
/// for them, and whether it holds one.
struct Claim {
    deployment: Arc<Deployment>,
    key: String,
    deputy_key: String,
    slot: u16,
    /// Unique per opened store: two managers of one process are two holders.
    id: String,
    /// This process holds the claim or the deputy's (it gives it up on close).
    holds: AtomicBool,
    /// An ask is on its way: the server may have granted a claim that `holds` does not
    /// show yet, its reply unread (a close that stops the task then gives it up too).
    asking: AtomicBool,
    /// The reaper stopped: asks send nothing more.
    closed: AtomicBool,
}

impl Claim {
    fn new(store: &StoreInner) -> Claim {
        static OPENED: AtomicU64 = AtomicU64::new(0);
        let (key, deputy_key, slot) = store.layout.reaper_claim_keys();
        Claim {
            deployment: store.deployment.clone(),
            key,
            deputy_key,
            slot,
            id: format!(
                "{}.{}",
                store.deployment.origin(),
                OPENED.fetch_add(1, Ordering::Relaxed)
            ),
            holds: AtomicBool::new(false),
            asking: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }

    /// Whether some process is the deputy: what a waiting process reads, a plain
    /// `PTTL`, several times cheaper for the server than a function call. A deputy's
    /// claim without a deadline counts as none ([`Claim::ask`] takes it over).
    async fn deputy_present(&self) -> Result<bool> {
        let mut cmd = redis::cmd("PTTL");
        cmd.arg(&self.deputy_key);
        let reply = self
            .deployment
            .execute(vec![Request::new(self.slot, cmd)])
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        match reply {
            Value::Int(ms) => Ok(ms > 0),
            other => Err(Error::Store(format!("unexpected PTTL reply: {other:?}"))),
        }
    }

    /// Asks for (or renews) the claim, else the deputy's, for `ms` milliseconds, or
    /// gives up whichever this process holds (0): its role now and the time left of
    /// the holder's claim.
    async fn ask(&self, ms: u64) -> Result<(Role, Duration)> {
        if ms > 0 {
            // With `Reaper::stop`'s order (closed, then asking): either the close sees
            // this ask on its way and gives up what it may grant, or this ask sees the
            // close and sends nothing.
            self.asking.store(true, Ordering::SeqCst);
            if self.closed.load(Ordering::SeqCst) {
                self.asking.store(false, Ordering::SeqCst);
                return Ok((Role::Waiting, Duration::ZERO));
            }
        }
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&scripts().reaper_claim.function)
            .arg(2)
            .arg(&self.key)
            .arg(&self.deputy_key)
            .arg(&self.id)
            .arg(ms);
        let reply = self
            .deployment
            .execute(vec![Request::new(self.slot, cmd)])
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        let Value::Array(pair) = reply else {
            return Err(Error::Store(format!("unexpected claim reply: {reply:?}")));
        };
        let role = match replies::int(pair.first()) {
            1 => Role::Holder,
            2 => Role::Deputy,
            _ => Role::Waiting,
        };
        self.holds.store(role != Role::Waiting, Ordering::SeqCst);
        if ms > 0 {
            // After `holds`: a close that reads no ask on its way reads what it granted.
            // (A failed ask leaves `asking` set: it may have been granted all the same.)
            self.asking.store(false, Ordering::SeqCst);
        }
        Ok((role, Duration::from_millis(replies::int(pair.get(1)))))
    }
}

/// A cache's reaper in this process: its task and its claim.
pub(crate) struct Reaper {
    task: tokio::task::JoinHandle<()>,
    claim: Arc<Claim>,
}

impl Reaper {
    /// Stops the reaper; if it held the claim or the deputy's, gives it up so that
    /// another process takes over at its next ask rather than when it lapses.
    pub(crate) fn stop(&self) {
        // An aborted task may be past sending an ask whose reply it never reads: the
        // server granted a claim that `holds` does not show, which would otherwise lapse
        // only after `CLAIM`.
        self.task.abort();
        self.claim.closed.store(true, Ordering::SeqCst);
        let asking = self.claim.asking.load(Ordering::SeqCst);
        let held = self.claim.holds.swap(false, Ordering::SeqCst);
        if (held || asking)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let claim = self.claim.clone();
            runtime.spawn(async move {
                if let Err(e) = claim.ask(0).await {
                    tracing::debug!(error = %e, "giving the reaping claim up failed; it lapses");
                }
            });
        }
    }
}

/// Starts the reaper of `store`; it ends when the store is dropped.
pub(crate) fn spawn(store: &Arc<StoreInner>) -> Reaper {
    let claim = Arc::new(Claim::new(store));
    let task = tokio::spawn(run(Arc::downgrade(store), claim.clone()));
    Reaper { task, claim }
}

async fn run(store: Weak<StoreInner>, claim: Arc<Claim>) {
    // Per partition, the earliest deadline known (`None`: none).
    let mut earliest: Vec<Option<u64>> = Vec::new();
    let mut surveyed: Option<Instant> = None;
    let mut next: usize = 0;
    // When to ask or look next, what this process is, and until when it holds the
    // claim.
    let mut ask_at = Instant::now();
    let mut role = Role::Waiting;
    let mut held_until: Option<Instant> = None;
    loop {
        tokio::time::sleep(TICK).await;
        let Some(store) = store.upgrade() else { return };
        // A cache that publishes no events (`publish_events(false)`) but has listeners
        // here: they hear only this process's expiries, so it reaps for itself, as
        // each such process does.
        let solo = !store.publishes() && store.listened.is_listened();
        if !solo && Instant::now() >= ask_at {
            let sent = Instant::now();
            // A waiting process reads the deputy's claim first, and asks only once it
            // is free (the deputy took over, or died).
            let asked = match role {
                Role::Waiting => match claim.deputy_present().await {
                    Ok(true) => Ok((Role::Waiting, Duration::ZERO)),
                    Ok(false) => claim.ask(CLAIM.as_millis() as u64).await,
                    Err(e) => Err(e),
                },
                Role::Holder | Role::Deputy => claim.ask(CLAIM.as_millis() as u64).await,
            };
            match asked {
                Ok((now, left)) => {
                    role = now;
                    match now {
                        Role::Holder => {
                            held_until = Some(sent + CLAIM);
                            ask_at = sent + RENEW;
                        }
                        Role::Deputy => {
                            held_until = None;
                            // Renews its own claim, and asks as soon as the
                            // holder's would lapse.
                            ask_at = Instant::now() + RENEW.min(left + jitter(JITTER));
                        }
                        Role::Waiting => {
                            held_until = None;
                            ask_at = Instant::now() + WAIT + jitter(WAIT / 4);
                        }
                    }
                }
                Err(e) => {
                    // Transient (a failover, a timeout): a holder goes on until its
                    // claim would lapse (two reapers at once are harmless: the reap
                    // function is atomic and announces an entry once).
                    tracing::debug!(error = %e, "reaping claim request failed");
                    ask_at = Instant::now() + RENEW;
                }
            }
        }
        if !solo && held_until.is_none_or(|until| Instant::now() >= until) {
            // Not the holder: the next holder surveys afresh.
            surveyed = None;
            continue;
        }
        if surveyed.is_none_or(|at| at.elapsed() >= SURVEY) {
            match store.earliest_deadlines().await {
                Ok(found) => {
                    earliest = found;
                    surveyed = Some(Instant::now());
                }
                Err(e) => {
                    // Transient (a failover, a timeout): the next step tries again.
                    tracing::debug!(error = %e, "reaper survey failed");
                    continue;
                }
            }
        }
        let now = now_ms();
        let count = earliest.len();
        // Round-robin from `next`, so that a backlog is served fairly.
        let due: Vec<u16> = (0..count)
            .map(|i| (next + i) % count.max(1))
            .filter(|&p| earliest[p].is_some_and(|d| d <= now))
            .take(PARTITIONS_PER_TICK)
            .filter_map(|p| u16::try_from(p).ok())
            .collect();
        if due.is_empty() {
            continue;
        }
        next = (usize::from(due[due.len() - 1]) + 1) % count.max(1);
        match store.reap(&due).await {
            Ok(steps) => {
                for (p, (busy, left)) in due.into_iter().zip(steps) {
                    // A full batch: more may be due now.
                    earliest[usize::from(p)] = if busy { Some(0) } else { left };
                }
            }
            Err(e) => tracing::debug!(error = %e, "reaper step failed"),
        }
    }
}

impl StoreInner {
    /// Runs one reaper step on each of `partitions`; returns, per partition, whether
    /// it had a full batch due (more may be waiting) and its earliest deadline left
    /// (ms since the epoch, server clock).
    pub(super) async fn reap(&self, partitions: &[u16]) -> Result<Vec<(bool, Option<u64>)>> {
        let requests = partitions
            .iter()
            .map(|&p| {
                let mut r = self.script(&scripts().reap, p, std::iter::empty());
                r.cmd.arg(BATCH);
                r
            })
            .collect();
        let replies = self.execute(requests).await?;
        let mut out = Vec::with_capacity(partitions.len());
        for reply in replies {
            let Value::Array(pair) = self.outcome(reply)? else {
                return Err(Error::Store("unexpected reap reply".into()));
            };
            let earliest = match pair.get(1) {
                Some(Value::Int(i)) => u64::try_from(*i).ok(),
                other => other.and_then(replies::text).and_then(|t| t.parse().ok()),
            };
            out.push((replies::int(pair.first()) >= BATCH as u64, earliest));
        }
        Ok(out)
    }

    /// The earliest deadline (ms since the epoch, server clock) of every partition,
    /// `None` where nothing has one: one cheap `ZRANGE` per partition, pipelined per
    /// node, so that the reaper visits only partitions with something due. On a
    /// max-idle cache also the least recently used entry's idle deadline (its index
    /// score, microseconds of last use, plus max-idle), which entries without deadline
    /// records have (`lua/common.lua`, lean).
    pub(super) async fn earliest_deadlines(&self) -> Result<Vec<Option<u64>>> {
        let first = |key: String, p: u16| {
            let mut cmd = redis::cmd("ZRANGE");
            cmd.arg(key).arg(0).arg(0).arg("WITHSCORES");
            Request::new(self.layout.slot(p), cmd)
        };
        let mut requests = Vec::new();
        for p in 0..self.partitions() {
            let index = self.layout.index_key(p);
            requests.push(first(format!("{}dl", &index[..index.len() - 2]), p));
            if self.max_idle_ms.is_some() {
                requests.push(first(index.to_string(), p));
            }
        }
        let mut scores = Vec::with_capacity(requests.len());
        for reply in self.execute(requests).await? {
            scores.push(match reply {
                Value::ServerError(e) => {
                    return Err(Error::Store(format!("ZRANGE failed: {e:?}")));
                }
                reply => replies::first_score(&reply),
            });
        }
        Ok(match self.max_idle_ms {
            None => scores,
            Some(idle) => scores
                .chunks(2)
                .map(|pair| {
                    let idle_deadline = pair
                        .get(1)
                        .copied()
                        .flatten()
                        .map(|used_us| (used_us / 1000).saturating_add(idle));
                    match (pair[0], idle_deadline) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                })
                .collect(),
        })
    }

    /// Reaps every partition until none has due entries left.
    pub(super) async fn reap_all(&self) -> Result<()> {
        let mut partitions: Vec<u16> = (0..self.layout.partitions()).collect();
        while !partitions.is_empty() {
            let steps = self.reap(&partitions).await?;
            partitions = partitions
                .into_iter()
                .zip(steps)
                .filter_map(|(p, (busy, _))| busy.then_some(p))
                .collect();
        }
        Ok(())
    }
}
