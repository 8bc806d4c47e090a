//! # partcache-tower
//!
//! A tower [`Layer`](tower_layer::Layer) that caches any `Service`'s responses in a
//! [`partcache::Cache`], on any store (local or Redis):
//!
//! * the key comes from the request: a [`KeyExtractor`] or a closure
//!   `Fn(&Req) -> Option<K>` (`None` sends the request to the service uncached);
//! * a predicate ([`StorePredicate`], or a closure `Fn(&Resp) -> bool`) decides which
//!   responses are stored, and [`CachedResponse`] says how a response is stored (any
//!   `Clone + Serialize` response is its own stored form);
//! * concurrent misses of one key call the service once; the others get the same
//!   response ([`coalesce`]);
//! * fail-open: a store that errors or exceeds the store timeout never fails a
//!   request; the service is called, the error logged with `tracing` and counted
//!   ([`LayerStats`], serialisable as it is for a stats endpoint), by the same
//!   [`partcache::adapter::FailOpen`] every partcache adapter uses.
//!
//! The layout follows tower-http: the middleware lives in [`cache`] (`layer.rs`,
//! `service.rs`, `future.rs`, `key.rs`, `policy.rs`). For HTTP with RFC 9111 rules, see
//! the `partcache-axum` crate, which builds on [`coalesce`].
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod backlog;
pub mod cache;
pub mod coalesce;
mod stats;

pub use cache::{
    CacheLayer, CacheLayerBuilder, CacheService, CachedResponse, DEFAULT_STORE_TIMEOUT,
    KeyExtractor, ResponseFuture, StoreAll, StorePredicate,
};
pub use stats::LayerStats;
