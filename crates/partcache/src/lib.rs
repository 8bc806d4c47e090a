#![doc = include_str!("../docs/overview.md")]

pub mod adapter;
mod any_cache;
pub mod balance;
mod cache;
mod cache_decl;
pub mod codec;
pub mod config;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod credentials;
mod default_manager;
pub mod duration;
mod entries;
pub mod error;
pub mod event;
pub mod expiry;
pub mod flight;
pub mod key_text;
pub mod loader;
#[doc(hidden)]
pub mod macro_support;
mod manager;
pub mod partition;
pub mod stats;
pub mod store;

pub use adapter::{AdapterCounters, AdapterStats, FailOpen};
pub use any_cache::AnyCache;
pub use balance::{BalanceReport, MasterBalance};
pub use cache::{Cache, CacheKey, CacheValue, HeldLease, MutableEntry};
pub use cache_decl::CacheDecl;
pub use codec::Codec;
pub use config::{CacheConfig, ManagerConfig, NearCache};
pub use credentials::mask_url;
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
