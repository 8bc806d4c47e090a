//! The behaviour suite on the embedded store (`memory://`).

mod suite;

fn local_manager() -> partcache::CacheManager {
    partcache::CacheManager::from_url("memory://").expect("memory:// is always valid")
}

behaviour_suite!(crate::local_manager());
