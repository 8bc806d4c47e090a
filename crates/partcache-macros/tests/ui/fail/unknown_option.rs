use partcache::cacheable;

#[cacheable(cache = "products", expire_after = "5m")]
async fn product(id: u64) -> String {
    format!("product {id}")
}

fn main() {
    let _ = product(1);
}
