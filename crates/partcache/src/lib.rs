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
//! assert_eq!((stats.hits, stats.misses, stats.puts), (1, 1, 2));
//! # Ok::<(), partcache::Error>(()) }).unwrap();
//! ```
//!
//! Where things live: [`Cache`] (the typed handle), [`CacheManager`] and
//! [`CacheBuilder`] (named caches, per-cache settings, the backend URL), [`AnyCache`]
//! (every cache of a manager, typeless, for dashboards), [`expiry`]
//! (JCache policies), [`event`], [`stats`], [`loader`] (read-/write-through),
//! [`codec`], [`partition`] (how keys spread over a cluster), [`store`] (the SPI
//! backends implement), and [`conformance`] (the suite every backend must pass).
//!
//! Declarative caching (feature `macros`, on by default): `#[cacheable]`, `#[cache_put]`
//! and `#[cache_evict]` on async functions, with Spring's semantics, over caches
//! declared once with their types as a [`CacheDecl`]; each attribute's page holds the
//! whole grammar.

#![warn(missing_docs)]

mod any_cache;
pub mod balance;
mod cache;
mod cache_decl;
pub mod codec;
pub mod config;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod default_manager;
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

pub use any_cache::AnyCache;
pub use balance::{BalanceReport, MasterBalance};
pub use cache::{Cache, CacheKey, CacheValue, MutableEntry};
pub use cache_decl::CacheDecl;
pub use codec::Codec;
pub use config::{CacheConfig, ManagerConfig, NearCache};
pub use default_manager::{default_manager, set_default_manager};
pub use error::{Error, Result};
pub use event::{CacheEvent, EventFilter, EventKind, EventReceiver};
pub use expiry::{ExpiryPolicy, ExpirySettings};
pub use loader::{BoxError, CacheLoader, CacheWriter};
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
