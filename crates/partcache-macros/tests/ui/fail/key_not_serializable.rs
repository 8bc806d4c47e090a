use partcache::{CacheDecl, cacheable};

#[derive(Clone, PartialEq, Eq, Hash)]
struct Filter {
    name: String,
}

static SEARCHES: CacheDecl<(Filter, u32), Vec<String>> = CacheDecl::new("searches");

#[cacheable(cache = SEARCHES)]
async fn search(filter: Filter, page: u32) -> Vec<String> {
    vec![format!("{}:{page}", filter.name)]
}

fn main() {
    let _ = search(Filter { name: String::new() }, 1);
}
