//! The backend conformance suite on one real `redis-server`.

use crate::common;

async fn manager() -> partcache::CacheManager {
    let url = tokio::task::block_in_place(|| common::standalone().url());
    common::manager(&url)
}

partcache::conformance_suite!(manager);
