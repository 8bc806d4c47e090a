//! A value type without `Serialize`: one error, at the declaration, naming the derive.
use partcache::{CacheDecl, cache_evict, cacheable};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct Stats {
    views: u64,
}

static STATS: CacheDecl<i32, Stats> = CacheDecl::new("stats");

#[cacheable(cache = STATS)]
async fn stats(id: i32) -> Stats {
    Stats { views: id as u64 }
}

#[cache_evict(cache = STATS)]
async fn reset(id: i32) {
    let _ = id;
}

fn main() {
    let _ = stats(1);
    let _ = reset(1);
}
