use partcache::cacheable;

#[derive(Clone, PartialEq, Eq, Hash)]
struct Filter {
    name: String,
}

#[cacheable(cache = "products")]
async fn search(filter: Filter, page: u32) -> Vec<String> {
    vec![format!("{}:{page}", filter.name)]
}

fn main() {
    let _ = search(Filter { name: String::new() }, 1);
}
