use partcache::cacheable;

#[cacheable(cache = "products", key = (tenant, product_id))]
async fn product(tenant: String, id: u64) -> String {
    format!("{tenant}/{id}")
}

fn main() {
    let _ = product(String::new(), 1);
}
