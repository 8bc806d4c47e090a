use partcache::{CacheDecl, cacheable};

static PRODUCTS: CacheDecl<u64, String> = CacheDecl::new("products");

#[cacheable(cache = PRODUCTS, ttl = "300")]
async fn product(id: u64) -> String {
    format!("product {id}")
}

fn main() {
    let _ = &PRODUCTS;
    let _ = product(1);
}
