//! Every supported shape compiles, and the generated code's futures are `Send`.
use partcache::{CacheManager, cache_evict, cache_put, cacheable};

pub struct Db;

#[cacheable(cache = "a")]
async fn plain(id: u64) -> String {
    format!("{id}")
}

#[cacheable(cache = "b", key = (tenant, id), ttl = "1h30m", sync)]
async fn tuple(db: &Db, tenant: &str, id: u32) -> Result<Vec<u8>, std::io::Error> {
    let _ = db;
    if id == 0 {
        return Err(std::io::Error::other("zero"));
    }
    Ok(format!("{tenant}{id}").into_bytes())
}

#[cacheable(cache = "c", key = format!("{a}:{b}"), key_type = String, condition = a > 0)]
async fn computed(a: i32, b: i32) -> Option<i64> {
    Some(i64::from(a) * i64::from(b))
}

#[cacheable(cache = "d", ttl = std::time::Duration::from_secs(5))]
async fn generic_db<C: ConnectionTrait>(db: &C, id: u64) -> std::io::Result<Option<String>> {
    db.ping();
    Ok(Some(id.to_string()))
}

pub trait ConnectionTrait: Sync {
    fn ping(&self) {}
}
impl ConnectionTrait for Db {}

#[cacheable(cache = "e")]
async fn no_args() -> u64 {
    7
}

struct Service {
    caches: std::sync::Arc<CacheManager>,
}

impl Service {
    #[cacheable(cache = "f", manager = self.caches)]
    async fn method(&self, id: u64) -> u64 {
        id
    }

    #[cache_put(cache = "f", manager = self.caches, key = id)]
    async fn store(&self, id: u64) -> u64 {
        id
    }

    #[cache_evict(cache = "f", manager = self.caches, value_type = u64)]
    async fn evict(&self, id: u64) {
        let _ = id;
    }

    #[cache_evict(cache = "f", manager = self.caches, all_entries, key_type = u64, value_type = u64, before)]
    async fn evict_all(&self) {}
}

fn assert_send<T: Send>(_: T) {}

fn main() {
    let service = Service {
        caches: std::sync::Arc::new(CacheManager::from_url("memory://").unwrap()),
    };
    assert_send(plain(1));
    assert_send(tuple(&Db, "t", 1));
    assert_send(computed(1, 2));
    assert_send(generic_db(&Db, 1));
    assert_send(no_args());
    assert_send(service.method(1));
    assert_send(service.store(1));
    assert_send(service.evict(1));
    assert_send(service.evict_all());
}
