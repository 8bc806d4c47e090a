use partcache::cache_evict;

#[cache_evict(cache = "products", key = id)]
async fn delete(id: u64) -> Result<(), String> {
    let _ = id;
    Ok(())
}

fn main() {
    let _ = delete(1);
}
