//! A cache named by a string cannot be checked against the other users of the cache.
use partcache::cacheable;

#[cacheable(cache = "products")]
async fn product(id: u64) -> String {
    format!("product {id}")
}

fn main() {
    let _ = product(1);
}
