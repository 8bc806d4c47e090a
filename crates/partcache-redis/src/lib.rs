#![doc = include_str!("../docs/overview.md")]
#![doc = include_str!("../docs/urls.md")]
#![doc = include_str!("../docs/circuit-breakers.md")]
#![doc = include_str!("../docs/tls.md")]
#![doc = include_str!("../docs/layout-and-atomicity.md")]
#![doc = include_str!("../docs/costs.md")]
#![doc = include_str!("../docs/expiry.md")]
#![doc = include_str!("../docs/eviction.md")]
#![doc = include_str!("../docs/events.md")]
#![doc = include_str!("../docs/joined-deployments.md")]
#![doc = include_str!("../docs/balance.md")]

mod arguments;
mod backend;
mod batching;
mod breaker;
mod connection;
mod delivery;
mod deployment;
mod events;
mod feed;
pub mod joined;
mod layout;
mod push;
mod refusal;
mod routing;
mod scripts;
mod settings;
mod slots;
mod store;
mod subscriber;
mod tls;
mod transport;
pub mod url;

pub use backend::{RedisBackend, RedisBackendFactory, SCHEMES};
pub use batching::bound::{BatchingStats, SENT_ALONE_METRIC};
pub use breaker::BreakerSettings;
pub use settings::{
    BatchingSettings, DEFAULT_MAX_PENDING_BATCHED, DEFAULT_MAX_PENDING_BATCHED_BYTES,
};
pub use store::{REAPER_CLAIM, REAPER_TAKEOVER, REAPER_TAKEOVER_BOTH, RedisStore};
pub use tls::{ClientCertificate, PemFile, TlsOptions};

use std::sync::Arc;

/// Registers the Redis / Valkey schemes ([`SCHEMES`] and the joined
/// [`joined::SCHEMES`]) with [`partcache::CacheManager::from_url`]. Idempotent; call it
/// once at start-up.
pub fn install() {
    partcache::store::raw::register_backend(Arc::new(RedisBackendFactory));
    partcache::store::raw::register_backend(Arc::new(joined::JoinedBackendFactory));
}

/// The crate README's example, compiled as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
