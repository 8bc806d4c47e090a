#![doc = include_str!("../README.md")]
#![doc = include_str!("../docs/rules.md")]

#[cfg(feature = "axum")]
mod endpoints;
pub mod response_cache;

pub use response_cache::{
    BoxError, CACHE_STATUS, CacheBody, DEFAULT_BYPASS_HEADERS, DEFAULT_CACHE_STATUS_NAME,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_REFRESH_TIMEOUT, DEFAULT_STORE_TIMEOUT, ResponseCache,
    ResponseCacheBuilder, ResponseCacheLayer, ResponseCacheService, ResponseCacheStats,
    ResponseFuture, RoutePolicy, X_CACHE,
};
