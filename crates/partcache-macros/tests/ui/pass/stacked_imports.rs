//! An attribute used only stacked under another is still a used import.
#![deny(warnings)]

use partcache::{CacheDecl, cache_evict, cacheable};

static PRODUCTS: CacheDecl<u64, String> = CacheDecl::new("products");
static PAGES: CacheDecl<u64, String> = CacheDecl::new("pages");

#[cacheable(cache = PAGES)]
#[cache_evict(cache = PRODUCTS, key = id, before)]
async fn page(id: u64) -> String {
    format!("page {id}")
}

#[cacheable(cache = PRODUCTS)]
#[partcache::cache_put(cache = PAGES, key = id)]
async fn product(id: u64) -> String {
    format!("product {id}")
}

fn main() {
    let _ = page(1);
    let _ = product(1);
}
