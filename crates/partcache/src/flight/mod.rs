//! Flights: one load per missing key, in this process and across every process that
//! shares the store.
//!
//! A flight has two parts.
//!
//! * **Local** ([`Flights`]): the first caller of a key in this process becomes the
//!   leader ([`Joined::Leader`], holding a [`Flight`]); callers that arrive while it
//!   runs get a [`Waiter`] and share the leader's value ([`Flight::complete`]). A leader
//!   dropped without a value (an error, a response that may not be shared, a cancelled
//!   request) wakes its waiters with `None`, and each then does the work itself: no
//!   waiter ever hangs. An invalidation in this process detaches the key's flight
//!   ([`Flights::cancel`]), and the leader sees [`Flight::is_cancelled`] before it
//!   writes. A flight stays joinable until its leader drops it (typically after the
//!   store write), so a caller arriving between the value and the write shares it too.
//! * **Remote** (the key's lease, [`crate::Cache::lease`]): the local leader asks the
//!   store for the key's lease, atomically with reading it. On a store that several
//!   processes share (Redis, Valkey) one leader in the whole deployment gets it and
//!   loads; the leaders of other processes wait for its value (asking again after
//!   pauses of 2 ms doubling to 20 ms, never past the lease's end), so the origin sees
//!   one call per key however many processes miss it. Any write or removal of the key,
//!   or a clear of the cache, by any process, while the load runs voids the lease, and the store refuses the
//!   loaded value ([`crate::HeldLease::store`]): it was read before that change (a
//!   *stale set*, counted in [`crate::CacheStats::stale_sets_prevented`]). A leader
//!   that ends without a value (its load failed or found nothing) releases the
//!   lease, and the leaders that waited for it load at once, side by side, storing
//!   nothing, as local waiters do. A leader that dies leaves a lease that ends after
//!   its time to live ([`crate::CacheBuilder::lease_ttl`], default 5 s), and the next
//!   caller leads. A
//!   store that cannot be reached fails open: the local leader loads as if there were
//!   no leases. On `memory://` the lease is the process's own (`LocalStore::lease`): nobody
//!   waits for it, and a removal of the key or a clear while the load runs keeps its
//!   value out there too.
//!
//! This is the lease of memcache at Facebook (Nishtala et al., "Scaling Memcache at
//! Facebook", NSDI 2013, §3.2.1).
//!
//! [`crate::Cache::get_or_load`], [`crate::Cache::get_with`], the read-through loader
//! and `#[cacheable(sync)]` use both parts by themselves. An adapter that decides after
//! the fact whether a value may be stored (the tower layer, the HTTP response cache)
//! runs its own [`Flights`] and asks for the lease in its leader:
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//!
//! use partcache::CacheManager;
//! use partcache::flight::{Flights, Joined};
//!
//! let manager = CacheManager::from_url("memory://")?;
//! let pages = manager.cache::<String, String>("flight-doc").build().await?;
//! let flights = Arc::new(Flights::<String, Arc<String>>::new());
//! let key = "/home".to_string();
//!
//! let Joined::Leader(flight) = flights.join(&key) else { unreachable!() };
//! // A second caller of this process waits for the leader.
//! let Joined::Waiter(waiter) = flights.join(&key) else { unreachable!() };
//!
//! // The leader asks for the key's lease: another process may have stored it.
//! let lease = pages.lease(&key).await;
//! let page = match lease.hit() {
//!     Some(page) => page.clone(),
//!     None => {
//!         let page = Arc::new("<html>".to_string()); // the origin's answer
//!         flight.complete(page.clone()); // waiters get it now
//!         lease.store(page.clone(), None).await;
//!         page
//!     }
//! };
//! drop(flight); // the key is free again
//! assert_eq!(waiter.wait().await, Some(page));
//! assert_eq!(pages.get(&key).await?.as_deref().map(String::as_str), Some("<html>"));
//! # Ok::<(), partcache::Error>(()) }).unwrap();
//! ```

mod lease;
mod load;
mod local;

pub use local::{Flight, Flights, Joined, Waiter};

pub(crate) use lease::{Kind, Ticket, put, release, take};
pub(crate) use load::{Loaded, Outcome};
