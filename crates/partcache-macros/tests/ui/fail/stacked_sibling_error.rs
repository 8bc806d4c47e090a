//! A mistake in a stacked attribute is reported once, at that attribute.
use partcache::{CacheDecl, cache_evict, cacheable};

static PRODUCTS: CacheDecl<u64, String> = CacheDecl::new("products");

#[cacheable(cache = PRODUCTS)]
#[cache_evict(cache = PRODUCTS, key = id, befor)]
async fn product(id: u64) -> String {
    format!("product {id}")
}

fn main() {
    let _ = product(1);
}
