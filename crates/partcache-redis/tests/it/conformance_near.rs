//! The backend conformance suite, unchanged, with a near cache in front of every cache
//! of a 3-master + 3-replica Redis cluster (from the manager's `[defaults]`; caches whose
//! reads extend expiry, which cannot have a near cache, run without one).

use crate::common;

async fn manager() -> partcache::CacheManager {
    partcache_redis::install();
    let url = tokio::task::block_in_place(|| common::cluster().seed_url());
    let config = format!(
        "url = \"{url}\"\n[defaults]\nnear_cache = {{ max_entries = 10000, max_staleness = \"1s\" }}\n"
    );
    partcache::CacheManager::from_config_str(&config).expect("manager")
}

partcache::conformance_suite!(manager);
