//! The store SPI: what a cache needs from the thing that holds its entries.
//!
//! [`Store`] is typed (`K`, `Arc<V>`) so that the local store keeps decoded values and
//! a local hit never serializes. Remote stores implement the byte-level
//! [`RawStore`](raw::RawStore) instead, and [`EncodedStore`](encoded::EncodedStore)
//! turns one into a typed `Store` by encoding with the cache's codec and routing keys to
//! partitions. [`NearStore`](near::NearStore) keeps local copies of decoded values in
//! front of an `EncodedStore` (the near cache).
//!
//! The SPI is batch-first: every read and removal takes many keys, so remote stores can
//! group them by partition and node. Every operation is atomic per key; none is atomic
//! across keys. Every error is a typed [`Error`](crate::Error).
//!
//! Stores own expiry, eviction, and events: they apply the cache's
//! [`ExpirySettings`](crate::ExpirySettings), count evictions and expirations in the
//! shared [`StatsCounters`](crate::stats::StatsCounters), and emit every
//! [`CacheEvent`](crate::CacheEvent) (a remote store's events reach every process).
//! Hits, misses, puts and removals are counted by the cache, from the outcomes below.

mod deadlines;
pub mod encoded;
pub mod local;
pub mod near;
pub mod raw;
mod spi;

pub use spi::*;
