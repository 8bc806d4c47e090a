//! The backend conformance suite on a real 3-master + 3-replica Redis Cluster.

use crate::common;

async fn manager() -> partcache::CacheManager {
    let url = tokio::task::block_in_place(|| common::cluster().seed_url());
    common::manager(&url)
}

partcache::conformance_suite!(manager);
