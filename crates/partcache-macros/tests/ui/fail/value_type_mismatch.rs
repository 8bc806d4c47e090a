//! A function whose output is not the declared value type does not compile.
use partcache::{CacheDecl, cacheable};

static STATS: CacheDecl<i32, String> = CacheDecl::new("stats");

#[cacheable(cache = STATS)]
async fn stats(id: i32) -> Result<u64, std::io::Error> {
    Ok(id as u64)
}

fn main() {
    let _ = stats(1);
}
