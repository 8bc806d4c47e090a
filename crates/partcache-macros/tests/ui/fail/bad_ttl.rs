use partcache::cacheable;

#[cacheable(cache = "products", ttl = "5 minutes")]
async fn product(id: u64) -> String {
    format!("product {id}")
}

fn main() {
    let _ = product(1);
}
