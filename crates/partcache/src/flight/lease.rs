//! The remote part of a flight: the key's lease on a store shared by several processes
//! (see the module docs of [`crate::flight`]).

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

/// The longest lease: a longer `lease_ttl` is taken as this.
pub(crate) const MAX_LEASE_TTL: Duration = Duration::from_secs(3600);

/// The first pause of a waiter.
const FIRST_PAUSE: Duration = Duration::from_millis(2);

/// What the leader of a flight may do with a missing key, once the store answered for
/// the key's lease (held in a [`crate::HeldLease`]): use the value another process
/// stored meanwhile ([`Ticket::hit`]), or load it and store it under the lease (or,
/// without a value, end the lease).
#[derive(Debug)]
pub(crate) struct Ticket<V>(pub(crate) Kind<V>);

#[derive(Debug)]
pub(crate) enum Kind<V> {
    /// Another process stored the value meanwhile.
    Hit(Arc<V>),
    /// This process holds the lease (its token): load, then store under it.
    Leased(String),
    /// No lease: the store keeps none (and read nothing). Load and store as without
    /// leases.
    Unsupported,
    /// No lease: the store failed (fail open). Load and store as without leases.
    Unleased,
    /// Waited a whole lease time for other processes' loads without a value, or the
    /// holder ended its lease without one: load, and store nothing (a value loaded
    /// without a lease may be stale).
    Unprotected,
    /// An ask (under this token) did not answer in time: it may have been granted all
    /// the same. [`take`]'s caller ends it and loads as without leases.
    Unanswered(String),
}

impl<V> Ticket<V> {
    /// The value another process stored while this one waited: serve it, load nothing.
    pub(crate) fn hit(&self) -> Option<&Arc<V>> {
        match &self.0 {
            Kind::Hit(value) => Some(value),
            _ => None,
        }
    }

    /// Whether this process holds the key's lease: its store write is refused if any
    /// process writes or removes the key before it.
    pub(crate) fn is_leased(&self) -> bool {
        matches!(self.0, Kind::Leased(_))
    }

    /// Whether the store keeps no lease for this load (one process, or the store
    /// failed): the caller stores as it would without leases.
    pub(crate) fn is_unleased(&self) -> bool {
        matches!(self.0, Kind::Unleased | Kind::Unsupported)
    }
}

/// A token unique to this lease: this process's random nonce and a counter (hex
/// digits only, which the store's tombstone marker never is).
fn token() -> String {
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nonce = *NONCE.get_or_init(|| fastrand::u64(..));
    format!("{nonce:016x}{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The lease of `key`, which this process's flight found missing (see the module
/// docs), for `ttl`, under a new token. Waits while another process holds it, for at
/// most `ttl`. Each ask gives up after `each_ask`, if given ([`Kind::Unanswered`]). An
/// error is the store's: the caller counts it and fails open ([`Kind::Unleased`]).
pub(crate) async fn take<K, V>(
    store: &dyn Store<K, V>,
    cache: &str,
    key: &K,
    ttl: Duration,
    each_ask: Option<Duration>,
) -> Result<Ticket<V>>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    if ttl.is_zero() {
        return Ok(Ticket(Kind::Unsupported));
    }
    // A lease time no load needs is still a bounded one (and a deadline that fits).
    let ttl = ttl.min(MAX_LEASE_TTL);
    let token = token();
    let deadline = Instant::now() + ttl;
    let mut pause = FIRST_PAUSE;
    let mut waited = false;
    loop {
        let ask = store.lease(key, &token, ttl, waited);
        let answer = match each_ask {
            None => ask.await?,
            Some(limit) => match tokio::time::timeout(limit, ask).await {
                Ok(answer) => answer?,
                Err(_) => return Ok(Ticket(Kind::Unanswered(token))),
            },
        };
        match answer {
            Lease::Hit(value) => return Ok(Ticket(Kind::Hit(value))),
            Lease::Granted => return Ok(Ticket(Kind::Leased(token))),
            Lease::Unsupported => return Ok(Ticket(Kind::Unsupported)),
            // The holder stored nothing: load beside the other waiters rather than
            // after them, one process at a time; unprotected, so store nothing.
            Lease::Released => return Ok(Ticket(Kind::Unprotected)),
            Lease::Held { remaining } => {
                let now = Instant::now();
                if now >= deadline {
                    tracing::debug!(
                        cache,
                        "waited a lease time for another process's load; loading without a lease"
                    );
                    return Ok(Ticket(Kind::Unprotected));
                }
                // Ask again just after the lease ends at the latest, so that a holder
                // that died is followed at once.
                let wait = pause
                    .min(remaining + Duration::from_millis(1))
                    .min(deadline - now);
                tokio::time::sleep(wait).await;
                pause = (pause * 2).min(MAX_PAUSE);
                waited = true;
            }
        }
    }
}

/// Stores a loaded value under the lease `token`; whether it was stored. A refusal
/// is no error (the caller has its value); a stale set prevented is counted.
pub(crate) async fn put<K, V>(
    store: &dyn Store<K, V>,
    stats: &StatsCounters,
    cache: &str,
    key: &K,
    token: &str,
    value: Arc<V>,
    ttl: Option<Duration>,
) -> Result<bool>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    match store.put_leased(key, token, value.clone(), ttl).await? {
        LeasedPut::Stored => Ok(true),
        LeasedPut::Stale => {
            stats.stale_sets_prevented.incr();
            tracing::debug!(
                cache,
                "a write invalidated the load's lease: its value is not cached"
            );
            Ok(false)
        }
        LeasedPut::Lost => {
            tracing::debug!(
                cache,
                "the load outlasted its lease: its value is not cached"
            );
            Ok(false)
        }
        // A store without leases never grants one; store as without.
        LeasedPut::Unsupported => {
            let write = Write {
                condition: Condition::IfAbsent,
                action: Action::Put { value, ttl },
                want_previous: false,
            };
            store.write(key, write).await.map(|outcome| outcome.applied)
        }
    }
}

/// Ends a lease without a value (the load failed or found none), so that the next
/// caller leads at once rather than after the lease's time to live. An error is the
/// store's (the lease then ends with its time to live): the caller counts it.
pub(crate) async fn release<K, V>(
    store: &dyn Store<K, V>,
    key: &K,
    ticket: &Ticket<V>,
) -> Result<()>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    match &ticket.0 {
        Kind::Leased(token) => store.release_lease(key, token).await,
        _ => Ok(()),
    }
}
