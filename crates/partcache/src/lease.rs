//! Leases: one load per key across every process sharing a remote store, and no stale
//! sets.
//!
//! Within a process, concurrent misses of a key already share one load (the flight);
//! its leader then asks the store for the key's *lease*
//! ([`Store::lease`]), atomically with reading the key. Three answers:
//!
//! * a value (another process stored it meanwhile): no load at all;
//! * the lease: this process loads, and stores the value under the lease's token
//!   ([`Store::put_leased`]). Any write or removal of the key, by any process, while
//!   it loads invalidates the token, and the store refuses the put: the loaded value
//!   was read before that change (a *stale set*, counted in
//!   [`crate::CacheStats::stale_sets_prevented`]). The callers still get the value
//!   their load returned, as they would without a cache;
//! * held by another process: wait for its value, asking again after a short pause
//!   that doubles up to [`MAX_PAUSE`] and never outlasts the lease; a holder that died
//!   leaves a lease that expires after its time to live, and the next caller leads.
//!
//! This is the lease of memcache at Facebook (Nishtala et al., "Scaling Memcache at
//! Facebook", NSDI 2013, §3.2.1). Stores seen by one process only (`memory://`) keep no
//! leases: the flight alone is exact there. A store that cannot be reached fails open:
//! the flight's leader loads as without leases, so leases never add an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::stats::StatsCounters;
use crate::store::{Action, Condition, Lease, LeasedPut, Store, Write};

/// The longest pause between two asks of a waiter: bounds how late a waiter sees the
/// value after its holder stored it, and the load waiters put on the store (one small
/// call per pause per waiting process, as the flight lets one caller per process wait).
pub(crate) const MAX_PAUSE: Duration = Duration::from_millis(20);

/// The first pause of a waiter.
const FIRST_PAUSE: Duration = Duration::from_millis(2);

/// What a flight's leader may do with a missing key, after asking for its lease.
#[derive(Debug)]
pub(crate) enum Ticket<V> {
    /// Another process stored the value meanwhile.
    Hit(Arc<V>),
    /// This process holds the lease (its token): load, then store under it.
    Leased(String),
    /// No lease (the store keeps none, or it failed: fail open): load and store as
    /// without leases.
    Unleased,
    /// Waited a whole lease time for other processes' loads without a value: load,
    /// and store nothing (a value loaded without a lease may be stale).
    Unprotected,
}

/// A token unique to this lease: this process's random nonce and a counter (hex
/// digits only, which the store's tombstone marker never is).
fn token() -> String {
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nonce = *NONCE.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.finish()
    });
    format!("{nonce:016x}{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The lease of `key`, which this process's flight found missing (see the module
/// docs), for `ttl`. Waits while another process holds it, for at most `ttl`.
pub(crate) async fn take<K, V>(
    store: &dyn Store<K, V>,
    cache: &str,
    key: &K,
    ttl: Duration,
) -> Ticket<V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    if ttl.is_zero() {
        return Ticket::Unleased;
    }
    let token = token();
    let deadline = Instant::now() + ttl;
    let mut pause = FIRST_PAUSE;
    loop {
        match store.lease(key, &token, ttl).await {
            Ok(Lease::Hit(value)) => return Ticket::Hit(value),
            Ok(Lease::Granted) => return Ticket::Leased(token),
            Ok(Lease::Unsupported) => return Ticket::Unleased,
            Ok(Lease::Held { remaining }) => {
                let now = Instant::now();
                if now >= deadline {
                    tracing::debug!(
                        cache,
                        "waited a lease time for another process's load; loading without a lease"
                    );
                    return Ticket::Unprotected;
                }
                // Ask again just after the lease ends at the latest, so that a holder
                // that died is followed at once.
                let wait = pause
                    .min(remaining + Duration::from_millis(1))
                    .min(deadline - now);
                tokio::time::sleep(wait).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            Err(error) => {
                // Fail open: the store is down or refused; load as without leases.
                tracing::debug!(cache, %error, "lease not taken; loading without one");
                return Ticket::Unleased;
            }
        }
    }
}

/// Stores a loaded value under the lease `token`; a refusal is no error (the caller
/// has its value), a stale set prevented is counted.
pub(crate) async fn put<K, V>(
    store: &dyn Store<K, V>,
    stats: &StatsCounters,
    cache: &str,
    key: &K,
    token: &str,
    value: Arc<V>,
    ttl: Option<Duration>,
) -> Result<()>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    match store.put_leased(key, token, value.clone(), ttl).await? {
        LeasedPut::Stored => Ok(()),
        LeasedPut::Stale => {
            stats.stale_sets_prevented.incr();
            tracing::debug!(
                cache,
                "a write invalidated the load's lease: its value is not cached"
            );
            Ok(())
        }
        LeasedPut::Lost => {
            tracing::debug!(
                cache,
                "the load outlasted its lease: its value is not cached"
            );
            Ok(())
        }
        // A store without leases never grants one; store as without.
        LeasedPut::Unsupported => {
            let write = Write {
                condition: Condition::IfAbsent,
                action: Action::Put { value, ttl },
                want_previous: false,
            };
            store.write(key, write).await.map(drop)
        }
    }
}

/// Ends a lease without a value (the load failed or found none), so that the next
/// caller leads at once rather than after the lease's time to live.
pub(crate) async fn release<K, V>(store: &dyn Store<K, V>, cache: &str, key: &K, ticket: &Ticket<V>)
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    if let Ticket::Leased(token) = ticket
        && let Err(error) = store.release_lease(key, token).await
    {
        // The lease then ends with its time to live.
        tracing::debug!(cache, %error, "lease not released");
    }
}
