//! The integration tests of partcache-tower in one test binary: the `CacheLayer`
//! scenarios (`scenarios`) on the local store (`layer`) and on a Redis cluster
//! (`layer_redis`).
//!
//! `cargo test -p partcache-tower --test it layer_redis::` runs one module.

#[macro_use]
mod scenarios;

mod layer;
mod layer_redis;
