//! # partcache
//!
//! Typed, async caches with JCache semantics, over an embedded store (moka) or a Redis /
//! Valkey deployment across which every cache is partitioned. The same code runs on
//! both: the backend is a URL.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use partcache::{CacheManager, ExpiryPolicy};
//! use std::time::Duration;
//!
//! let manager = CacheManager::from_url("memory://")?; // or CacheManager::from_env()
//! let users = manager
//!     .cache::<u64, String>("users")
//!     .expiry(ExpiryPolicy::Accessed(Duration::from_secs(300)))
//!     .max_entries(100_000)
//!     .build()
//!     .await?;
//!
//! users.put(7, "alice".to_string()).await?;
//! assert!(users.get(&7).await?.is_some());
//!
//! // Read-through with single-flight: concurrent misses of key 8 load it once.
//! let bob = users.get_or_load(&8, |id| async move { Ok::<_, std::io::Error>(format!("user {id}")) }).await?;
//! assert_eq!(*bob, "user 8");
//!
//! let stats = users.stats();
//! assert_eq!((stats.hits, stats.misses, stats.puts, stats.load_successes), (1, 1, 1, 1));
//! # Ok::<(), partcache::Error>(()) }).unwrap();
//! ```
//!
//! Where things live: [`Cache`] (the typed handle), [`CacheManager`] and
//! [`CacheBuilder`] (named caches, per-cache settings, the backend URL), [`AnyCache`]
//! (every cache of a manager, typeless, for dashboards), [`expiry`]
//! (JCache policies), [`event`], [`stats`], [`loader`] (read-/write-through),
//! [`adapter`] (what adapters over a cache share: failing open, their counters),
//! [`codec`], [`duration`] (the one duration grammar), [`partition`] (how keys spread
//! over a cluster), [`store`] (the SPI backends implement), and `conformance` (feature
//! `conformance`: the suite every backend must pass).
//!
//! Declarative caching (feature `macros`, on by default): `#[cacheable]`, `#[cache_put]`
//! and `#[cache_evict]` on async functions, with Spring's semantics, over caches
//! declared once with their types as a [`CacheDecl`]; each attribute's page holds the
//! whole grammar.
//!
//! # JCache (JSR-107) semantics
//!
//! The operations, statistics, events and expiry rules follow JSR-107 1.1 on every
//! store; where the specification is silent its reference implementation decides.
//! Statistics are counted as [`stats`] lists (a read-through load is a miss and a load,
//! never a put); which operation moves which deadline is the table in [`expiry`];
//! the conformance suite checks each rule on each store.
//!
//! ## Departures from JSR-107
//!
//! Deliberate, each for a reason:
//!
//! * **Keys are compared by their canonical text on remote stores**, not by `Eq`:
//!   keys whose serialization is not canonical (a `HashSet` or `HashMap`, whose
//!   iteration order differs between equal instances) may be two entries there
//!   ([`key_text`] says which types are canonical). A remote store has only bytes.
//! * **`Updated` events carry no old value on remote stores**: sending it would cost
//!   every update a read and twice the bytes on the channel to every process.
//! * **Events of remote stores arrive asynchronously** for other processes' writes (a
//!   process's own events are delivered before its call returns).
//! * **An entry processor's write-through may repeat**: with a writer, the processor's
//!   decision is written through, then applied only if the entry is still what the
//!   processor saw; when another process changed it meanwhile, the processor and the
//!   writer run again (see [`Cache::invoke`]). JCache holds one lock for both, which a
//!   store shared by processes cannot.
//! * **Per-entry TTL and max-idle are extensions** that combine with the policy (the
//!   earliest deadline wins); under `Accessed` an update keeps the entry's remaining
//!   time, which is the access deadline unless one of these is earlier.
//! * **A read-through load is stored only if the key is still absent**: the load runs
//!   outside any lock, and a value written meanwhile is newer.
//! * **Batch writers**: [`CacheWriter::write_all`]/[`CacheWriter::delete_all`] report
//!   failed entries by index ([`BatchError`]) instead of leaving them in a mutable
//!   collection; the default implementations stop at the first failure.
//! * **Removing through the iterator** is [`Entries::remove`] (a stream cannot
//!   remove); calling it with no entry to remove is [`Error::Rejected`], JCache's
//!   `IllegalStateException`.
//! * **`load_all` returns per-key results** instead of calling a completion listener;
//!   it returns once every load is done.
//! * **Closing a cache on the embedded store drops its entries** (they live in the
//!   closed handle); on a remote store they stay. Other processes' handles are not
//!   closed by [`CacheManager::destroy_cache`]; a write through one recreates data.
//! * **A near cache cannot front a cache whose reads move deadlines** (`Accessed`,
//!   `Touched`, max-idle): a local hit cannot move the store's deadline without the
//!   round trip the near cache exists to avoid.

pub mod adapter;
mod any_cache;
pub mod balance;
mod cache;
mod cache_decl;
pub mod codec;
pub mod config;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod default_manager;
pub mod duration;
mod entries;
pub mod error;
pub mod event;
pub mod expiry;
pub mod key_text;
pub mod loader;
#[doc(hidden)]
pub mod macro_support;
mod manager;
pub mod partition;
mod single_flight;
pub mod stats;
pub mod store;

pub use adapter::{AdapterCounters, AdapterStats, FailOpen};
pub use any_cache::AnyCache;
pub use balance::{BalanceReport, MasterBalance};
pub use cache::{Cache, CacheKey, CacheValue, MutableEntry};
pub use cache_decl::CacheDecl;
pub use codec::Codec;
pub use config::{CacheConfig, ManagerConfig, NearCache};
pub use default_manager::{default_manager, set_default_manager};
pub use entries::Entries;
pub use error::{Error, LayoutMismatch, Result};
pub use event::{CacheEvent, EventFilter, EventKind, EventReceiver};
pub use expiry::{CustomExpiry, ExpiryPolicy, ExpirySettings};
pub use loader::{BatchError, BoxError, CacheLoader, CacheWriter};
#[doc(hidden)]
pub use macro_support as __private;
pub use manager::{CacheBuilder, CacheManager, URL_ENV};
pub use partition::HashingPolicy;
pub use stats::CacheStats;

// Declarative caching: each attribute's page holds the whole grammar.
#[cfg(feature = "macros")]
pub use partcache_macros::{cache_evict, cache_put, cacheable};

/// The crate README's example, compiled and run as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
