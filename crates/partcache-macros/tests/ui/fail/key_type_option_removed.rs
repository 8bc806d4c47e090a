//! The declaration gives the key and value types; the attributes do not.
use partcache::{CacheDecl, cache_evict};

static PRODUCTS: CacheDecl<u64, String> = CacheDecl::new("products");

#[cache_evict(cache = PRODUCTS, all_entries, key_type = u64, value_type = String)]
async fn clear() {}

fn main() {
    let _ = clear();
}
