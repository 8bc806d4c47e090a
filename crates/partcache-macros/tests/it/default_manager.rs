//! Free functions without `manager = ...` use the process-wide default manager. (The
//! only test of the binary that sets it or calls such a function: the default manager
//! is set once per process.)

use std::sync::atomic::{AtomicUsize, Ordering};

use partcache::{CacheDecl, CacheManager, cache_evict, cacheable};

static CALLS: AtomicUsize = AtomicUsize::new(0);
static USERS: CacheDecl<u64, String> = CacheDecl::new("users");

#[cacheable(cache = USERS)]
async fn user(id: u64) -> String {
    CALLS.fetch_add(1, Ordering::SeqCst);
    format!("user {id}")
}

#[cache_evict(cache = USERS)]
async fn forget(id: u64) {
    let _ = id;
}

#[tokio::test]
async fn free_functions_use_the_default_manager() {
    // Before a default manager is set, the function runs uncached (and logs why).
    assert_eq!(user(1).await, "user 1");
    assert_eq!(user(1).await, "user 1");
    assert_eq!(CALLS.load(Ordering::SeqCst), 2);

    let manager = CacheManager::from_url("memory://").expect("valid url");
    partcache::set_default_manager(manager.clone()).expect("first set");
    assert!(partcache::set_default_manager(manager.clone()).is_err());

    assert_eq!(user(1).await, "user 1");
    assert_eq!(user(1).await, "user 1");
    assert_eq!(CALLS.load(Ordering::SeqCst), 3);
    let users = manager
        .get_cache::<u64, String>("users")
        .expect("built on first use");
    assert!(users.get(&1).await.expect("get").is_some());

    forget(1).await;
    assert!(users.get(&1).await.expect("get").is_none());
    assert_eq!(user(1).await, "user 1");
    assert_eq!(CALLS.load(Ordering::SeqCst), 4);
}
