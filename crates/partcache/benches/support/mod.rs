//! What the benchmarks of function-result hits share: the function, its declared
//! cache, and the raw moka cache it is measured against, filled alike.

use std::time::Duration;

use partcache::{CacheDecl, ExpiryPolicy, cacheable};
use serde::{Deserialize, Serialize};

/// Keys of the function-result benchmarks.
pub(crate) const HIT_KEYS: u64 = 1_000;
/// Time to live on both sides of the function-result benchmarks.
pub(crate) const HIT_TTL: Duration = Duration::from_secs(3600);

/// A small struct, as a function's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Item {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) price_cents: u64,
}

/// The function's result for `id`.
pub(crate) fn item(id: u64) -> Item {
    Item {
        id,
        name: format!("item {id}"),
        price_cents: id * 100,
    }
}

/// The function's cache.
pub(crate) static ITEMS: CacheDecl<u64, Item> = CacheDecl::new("bench-items")
    .expiry(ExpiryPolicy::Modified(HIT_TTL))
    .max_entries(HIT_KEYS * 10);

/// The memoized function.
#[cacheable(cache = ITEMS, key = id)]
pub(crate) async fn cached_item(id: u64) -> Item {
    item(id)
}

/// Raw moka with the same capacity and lifetime, holding every key's result, after
/// one call of the function per key has filled its cache.
pub(crate) async fn filled_moka() -> moka::future::Cache<u64, Item> {
    let moka = moka::future::Cache::builder()
        .max_capacity(HIT_KEYS * 10)
        .time_to_live(HIT_TTL)
        .build();
    for k in 0..HIT_KEYS {
        assert_eq!(cached_item(k).await, item(k));
        moka.insert(k, item(k)).await;
    }
    moka
}
