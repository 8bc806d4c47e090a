use partcache::{CacheDecl, cacheable};

static PRODUCTS: CacheDecl<(String, u64), String> = CacheDecl::new("products");

#[cacheable(cache = PRODUCTS, key = (tenant, product_id))]
async fn product(tenant: String, id: u64) -> String {
    format!("{tenant}/{id}")
}

fn main() {
    let _ = &PRODUCTS;
    let _ = product(String::new(), 1);
}
