//! The behaviour suite on the embedded store (`memory://`).

fn local_manager() -> partcache::CacheManager {
    partcache::CacheManager::from_url("memory://").expect("memory:// is always valid")
}

behaviour_suite!(local_manager());
