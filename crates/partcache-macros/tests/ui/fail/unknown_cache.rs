//! A cache name that is not declared (a typo) does not compile.
use partcache::{CacheDecl, cache_evict, cacheable};

static PRODUCTS: CacheDecl<u64, String> = CacheDecl::new("products");

#[cacheable(cache = PRODUCTS)]
async fn product(id: u64) -> String {
    format!("product {id}")
}

#[cache_evict(cache = PRODCUTS)]
async fn delete(id: u64) {
    let _ = id;
}

fn main() {
    let _ = product(1);
    let _ = delete(1);
}
