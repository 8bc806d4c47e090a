//! The background reaper of one cache: Redis' own expiry already makes expired entries
//! unreadable at their exact deadline; the reaper reclaims their bookkeeping (index,
//! deadline and fixed-deadline records) and announces each with an `Expired` event.
//!
//! It visits a few partitions per tick, round-robin, and each visit handles at most
//! [`BATCH`](crate::store::BATCH) due entries, so no step ever scans a whole cache and
//! the server is never blocked for long. A full cycle takes about
//! `ceil(P / PARTITIONS_PER_TICK) × TICK` (231 partitions: about 1 s).

use std::sync::Weak;
use std::time::Duration;

use crate::store::StoreInner;

/// Pause between two reaper steps.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// Partitions visited per step (one pipeline per node).
pub(crate) const PARTITIONS_PER_TICK: u16 = 24;

/// Starts the reaper of `store`; it ends when the store is dropped.
pub(crate) fn spawn(store: Weak<StoreInner>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut next: u16 = 0;
        loop {
            tokio::time::sleep(TICK).await;
            let Some(store) = store.upgrade() else { return };
            let partitions = store.partitions();
            let batch = PARTITIONS_PER_TICK.min(partitions);
            let visit = (0..batch).map(|i| (next + i) % partitions);
            if let Err(e) = store.reap(visit).await {
                // Transient (a failover, a timeout): the next cycle tries again.
                tracing::debug!(error = %e, "reaper step failed");
            }
            next = (next + batch) % partitions;
        }
    })
}
