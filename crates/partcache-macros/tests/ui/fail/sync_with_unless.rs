use partcache::{CacheDecl, cacheable};

static PRODUCTS: CacheDecl<u64, String> = CacheDecl::new("products");

#[cacheable(cache = PRODUCTS, sync, unless = result.is_empty())]
async fn product(id: u64) -> String {
    format!("product {id}")
}

fn main() {
    let _ = &PRODUCTS;
    let _ = product(1);
}
