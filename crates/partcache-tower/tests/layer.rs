//! The `CacheLayer` scenarios (`scenarios/mod.rs`) on the local store.

mod scenarios;

async fn local_manager() -> partcache::CacheManager {
    partcache::CacheManager::from_url("memory://").unwrap()
}

layer_suite!(local_manager);
