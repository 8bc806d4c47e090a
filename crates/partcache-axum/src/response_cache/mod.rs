//! The response cache middleware: [`ResponseCache`] (the handle, built with
//! [`ResponseCacheBuilder`]), its [`ResponseCacheLayer`] and [`ResponseCacheService`],
//! per-route overrides ([`RoutePolicy`]) and the response body ([`CacheBody`]).
//!
//! Files, each importing only those after it: `cache.rs` (handle and builder),
//! `layer.rs`, `service.rs` (one request's path), `future.rs`, then `shared.rs` (the
//! state every layer shares: settings, stores, store writes and purges), `stats.rs`,
//! `key.rs` (request → key), `policy.rs` (what is stored and for how long),
//! `status.rs` (`x-cache` and `Cache-Status`), `entry.rs` (what is stored) and
//! `body.rs` (bounded buffering).

mod body;
mod cache;
mod entry;
mod future;
mod key;
mod layer;
mod policy;
mod service;
mod shared;
mod stats;
mod status;

pub use body::{BoxError, CacheBody};
pub use cache::{
    DEFAULT_BYPASS_HEADERS, DEFAULT_CACHE_STATUS_NAME, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REFRESH_TIMEOUT, DEFAULT_STORE_TIMEOUT, ResponseCache, ResponseCacheBuilder,
};
pub use future::ResponseFuture;
pub use layer::ResponseCacheLayer;
pub use policy::RoutePolicy;
pub use service::ResponseCacheService;
pub use stats::ResponseCacheStats;
pub use status::{CACHE_STATUS, X_CACHE};
