//! `sync` is alone on its function, as in Spring.
use partcache::{CacheDecl, cache_evict, cacheable};

static PRODUCTS: CacheDecl<u64, String> = CacheDecl::new("products");
static PAGES: CacheDecl<u64, String> = CacheDecl::new("pages");

#[cacheable(cache = PRODUCTS, sync)]
#[cache_evict(cache = PAGES, before)]
async fn product(id: u64) -> String {
    format!("product {id}")
}

fn main() {
    let _ = product(1);
}
