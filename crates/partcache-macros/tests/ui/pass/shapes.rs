//! Every supported shape compiles without a warning in the user's code (a body of one
//! expression included), and the generated code's futures are `Send`.
#![deny(warnings)]

use partcache::{CacheDecl, CacheManager, cache_evict, cache_put, cacheable};

static A: CacheDecl<u64, String> = CacheDecl::new("a");
static B: CacheDecl<(String, u32), Vec<u8>> = CacheDecl::new("b");
static C: CacheDecl<String, i64> = CacheDecl::new("c");
static D: CacheDecl<u64, String> = CacheDecl::new("d");
static E: CacheDecl<(), u64> = CacheDecl::new("e");
static F: CacheDecl<u64, u64> = CacheDecl::new("f");

pub struct Db;

#[cacheable(cache = A)]
async fn plain(id: u64) -> String {
    format!("{id}")
}

#[cacheable(cache = B, key = (tenant, id), ttl = "1h30m", sync)]
async fn tuple(db: &Db, tenant: &str, id: u32) -> Result<Vec<u8>, std::io::Error> {
    let _ = db;
    if id == 0 {
        return Err(std::io::Error::other("zero"));
    }
    Ok(format!("{tenant}{id}").into_bytes())
}

#[cacheable(cache = C, key = format!("{a}:{b}"), condition = a > 0)]
async fn computed(a: i32, b: i32) -> Option<i64> {
    Some(i64::from(a) * i64::from(b))
}

#[cacheable(cache = D, ttl = std::time::Duration::from_secs(5))]
async fn generic_db<C: ConnectionTrait>(db: &C, id: u64) -> std::io::Result<Option<String>> {
    db.ping();
    Ok(Some(id.to_string()))
}

pub trait ConnectionTrait: Sync {
    fn ping(&self) {}
}
impl ConnectionTrait for Db {}

// A body of one expression on one line: `unused_braces` would flag the braces if the
// expansion kept the body's block as the tail of another block.
#[rustfmt::skip]
#[cacheable(cache = A)]
async fn one_line(id: u64) -> String { id.to_string() }

#[cacheable(cache = E)]
async fn no_args() -> u64 {
    7
}

struct Service {
    caches: std::sync::Arc<CacheManager>,
}

impl Service {
    #[cacheable(cache = F, manager = self.caches)]
    async fn method(&self, id: u64) -> u64 {
        id
    }

    #[cache_put(cache = F, manager = self.caches, key = id)]
    async fn store(&self, id: u64) -> u64 {
        id
    }

    #[cache_evict(cache = F, manager = self.caches)]
    async fn evict(&self, id: u64) {
        let _ = id;
    }

    #[cache_evict(cache = F, manager = self.caches, all_entries, before)]
    async fn evict_all(&self) {}

    /// Stacked, with a single-expression body.
    #[cache_evict(cache = A, manager = self.caches, key = id, before)]
    #[cacheable(cache = F, manager = self.caches)]
    #[cache_put(cache = F, manager = self.caches, key = result)]
    #[cache_evict(cache = D, manager = self.caches, all_entries)]
    async fn stacked(&self, id: u64) -> u64 {
        id + 1
    }
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    let service = Service {
        caches: std::sync::Arc::new(CacheManager::from_url("memory://").unwrap()),
    };
    assert_send(plain(1));
    assert_send(one_line(1));
    assert_send(tuple(&Db, "t", 1));
    assert_send(computed(1, 2));
    assert_send(generic_db(&Db, 1));
    assert_send(no_args());
    assert_send(service.method(1));
    assert_send(service.store(1));
    assert_send(service.evict(1));
    assert_send(service.evict_all());
    assert_send(service.stacked(1));
}
