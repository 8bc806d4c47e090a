use partcache::cacheable;

#[cacheable(cache = "products", cache_none)]
async fn product(id: u64) -> String {
    format!("product {id}")
}

fn main() {
    let _ = product(1);
}
