//! A value type with neither derive: one error per missing derive, at the declaration.
use partcache::{CacheDecl, cacheable};

#[derive(Debug, Clone)]
struct Stats {
    views: u64,
}

static STATS: CacheDecl<i32, Stats> = CacheDecl::new("stats");

#[cacheable(cache = STATS)]
async fn stats(id: i32) -> Stats {
    Stats { views: id as u64 }
}

fn main() {
    let _ = stats(1);
}
