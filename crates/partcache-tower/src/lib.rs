#![doc = include_str!("../README.md")]
#![doc = include_str!("../docs/overview.md")]
#![doc = include_str!("../docs/layout.md")]

pub mod backlog;
pub mod cache;
pub mod coalesce;

pub use cache::{
    CacheLayer, CacheLayerBuilder, CacheService, CachedResponse, DEFAULT_STORE_TIMEOUT,
    KeyExtractor, LayerStats, ResponseFuture, StoreAll, StorePredicate,
};
