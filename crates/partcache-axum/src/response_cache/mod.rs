//! The response cache middleware: [`ResponseCache`] (the handle, built with
//! [`ResponseCacheBuilder`]), its [`ResponseCacheLayer`] and [`ResponseCacheService`],
//! per-route overrides ([`RoutePolicy`]), the stored format ([`CachedEntry`],
//! [`TagKeys`]) and the response body ([`CacheBody`]).
//!
//! Files: `layer.rs` (handle, builder, layer, store writes and purges), `service.rs`
//! (one request's path), `future.rs`, `key.rs` (request → key), `policy.rs` (what is
//! stored and for how long), `status.rs` (`x-cache` and `Cache-Status`), `entry.rs` (what is stored), `body.rs` (bounded
//! buffering), `stats.rs`.

mod body;
mod entry;
mod future;
mod key;
mod layer;
mod policy;
mod service;
mod stats;
mod status;

pub use body::{BoxError, CacheBody};
pub use entry::{CachedEntry, TagKeys};
pub use future::ResponseFuture;
pub use layer::{
    DEFAULT_BYPASS_HEADERS, DEFAULT_CACHE_STATUS_NAME, DEFAULT_MAX_BODY_BYTES,
    DEFAULT_STORE_TIMEOUT, ResponseCache, ResponseCacheBuilder, ResponseCacheLayer,
};
pub use policy::RoutePolicy;
pub use service::ResponseCacheService;
pub use stats::ResponseCacheStats;
pub use status::{CACHE_STATUS, X_CACHE};
