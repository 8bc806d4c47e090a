//! The background reaper of one cache: Redis' own expiry already makes expired entries
//! unreadable at their exact deadline; the reaper reclaims their bookkeeping (index,
//! deadline and fixed-deadline records) and announces each with an `Expired` event.
//!
//! It is adaptive, so that an idle cache costs little (it used to send about 240
//! scripts a second whatever the cache held): every [`SURVEY`] it reads each
//! partition's earliest deadline (one cheap `ZRANGE` per partition, one pipeline per
//! node), and every [`TICK`] it runs the reap script only on partitions whose earliest
//! deadline has passed; each visit handles at most [`BATCH`](super::BATCH) due
//! entries and reports the partition's next deadline, so no step ever scans a whole
//! cache and the server is never blocked for long. An entry's bookkeeping is reclaimed
//! within about `SURVEY + TICK` of its deadline (plus the clock skew between this
//! host and the server).

use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::StoreInner;

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
