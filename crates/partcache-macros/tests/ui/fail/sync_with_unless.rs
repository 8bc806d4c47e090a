use partcache::cacheable;

#[cacheable(cache = "products", sync, unless = result.is_empty())]
async fn product(id: u64) -> String {
    format!("product {id}")
}

fn main() {
    let _ = product(1);
}
