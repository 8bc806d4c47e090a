//! The background reaper of one cache: Redis' own expiry already makes expired entries
//! unreadable at their exact deadline; the reaper reclaims their bookkeeping (index,
//! deadline and fixed-deadline records) and announces each with an `Expired` event.
//!
//! It is adaptive, so that an idle cache costs little (it used to send about 240
//! scripts a second whatever the cache held): every [`SURVEY`] it reads each
//! partition's earliest deadline (one cheap `ZRANGE` per partition, one pipeline per
//! node), and every [`TICK`] it runs the reap script only on partitions whose earliest
//! deadline has passed; each visit handles at most [`BATCH`](super::cache::BATCH) due
//! entries and reports the partition's next deadline, so no step ever scans a whole
//! cache and the server is never blocked for long. An entry's bookkeeping is reclaimed
//! within about `SURVEY + TICK` of its deadline (plus the clock skew between this
//! host and the server).

use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use partcache::{Error, Result};
use redis::Value;

use super::cache::{BATCH, StoreInner};
use super::replies;
use crate::routing::Request;
use crate::scripts::scripts;

/// Pause between two reaper steps.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// How often every partition's earliest deadline is read again (deadlines written
/// since the last survey may be earlier than the ones known).
pub(crate) const SURVEY: Duration = Duration::from_secs(1);
/// Most partitions reaped per step (one pipeline per node).
pub(crate) const PARTITIONS_PER_TICK: usize = 64;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the reaper of `store`; it ends when the store is dropped.
pub(crate) fn spawn(store: Weak<StoreInner>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Per partition, the earliest deadline known (`None`: none).
        let mut earliest: Vec<Option<u64>> = Vec::new();
        let mut surveyed: Option<Instant> = None;
        let mut next: usize = 0;
        loop {
            tokio::time::sleep(TICK).await;
            let Some(store) = store.upgrade() else { return };
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
    })
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
