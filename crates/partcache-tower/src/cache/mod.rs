//! The cache middleware: [`CacheLayer`] (with [`CacheLayerBuilder`]), the
//! [`CacheService`] it makes, and the two traits that adapt it to a service:
//! [`KeyExtractor`] (request → key) and [`CachedResponse`] (response ↔ stored value),
//! plus the [`StorePredicate`] that decides what is stored, and the [`LayerStats`] the
//! layer counts.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use partcache::CacheManager;
//! use partcache_tower::CacheLayer;
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//!
//! let manager = CacheManager::from_url("memory://")?;
//! let squares = manager.cache::<u64, u64>("squares").build().await?;
//! let layer = CacheLayer::builder(squares, |n: &u64| Some(*n))
//!     .store_when(|square: &u64| *square < 1_000_000)
//!     .build();
//! let service = ServiceBuilder::new()
//!     .layer(layer.clone())
//!     .service(service_fn(|n: u64| async move { Ok::<_, std::convert::Infallible>(n * n) }));
//!
//! assert_eq!(service.clone().oneshot(12).await.unwrap(), 144); // miss: computed, stored
//! # while layer.stats().cache.stored == 0 { tokio::task::yield_now().await; }
//! assert_eq!(service.oneshot(12).await.unwrap(), 144); // hit
//! let stats = layer.stats().cache;
//! assert_eq!((stats.misses, stats.hits), (1, 1));
//! # Ok::<(), partcache::Error>(()) }).unwrap();
//! ```

mod future;
mod key;
mod layer;
mod policy;
mod service;
mod shared;
mod stats;

pub use future::ResponseFuture;
pub use key::KeyExtractor;
pub use layer::{CacheLayer, CacheLayerBuilder, DEFAULT_STORE_TIMEOUT};
pub use policy::{CachedResponse, StoreAll, StorePredicate};
pub use service::CacheService;
pub use stats::LayerStats;
