//! Two functions that share a cache with keys of different types do not compile.
use partcache::{CacheDecl, cache_evict, cacheable};

static STATS: CacheDecl<i32, String> = CacheDecl::new("stats");

#[cacheable(cache = STATS)]
async fn stats(id: i32) -> String {
    format!("stats of {id}")
}

#[cache_evict(cache = STATS)]
async fn delete(id: i64) {
    let _ = id;
}

fn main() {
    let _ = stats(1);
    let _ = delete(1);
}
