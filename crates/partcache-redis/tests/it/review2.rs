//! Review probes (branch review2).

use crate::common;
use common::unique;
use std::time::Duration;

use partcache::Cache;
use partcache::expiry::ExpiryPolicy;

fn standalone_url() -> String {
    tokio::task::block_in_place(|| common::standalone().url())
}

fn cluster_url() -> String {
    tokio::task::block_in_place(|| common::cluster().seed_url())
}

async fn ttl_max(url: &str) {
    let cache: Cache<String, String> = common::manager(url)
        .cache(&unique("ttlmax"))
        .build()
        .await
        .unwrap();
    cache
        .put_with_ttl("k".into(), "v".to_string(), Duration::MAX)
        .await
        .expect("a put with the longest TTL");
    assert_eq!(
        cache.get(&"k".to_string()).await.unwrap().as_deref().map(String::as_str),
        Some("v")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_a_put_with_a_ttl_of_duration_max_is_stored() {
    ttl_max(&standalone_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_a_put_with_a_ttl_of_a_thousand_years_is_stored() {
    let cache: Cache<String, String> = common::manager(&standalone_url())
        .cache(&unique("ttl1000y"))
        .build()
        .await
        .unwrap();
    cache
        .put_with_ttl("k".into(), "v".to_string(), Duration::from_secs(1000 * 365 * 86_400))
        .await
        .expect("a put with a long TTL");
    assert_eq!(
        cache.get(&"k".to_string()).await.unwrap().as_deref().map(String::as_str),
        Some("v")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_policies_of_duration_max_store_and_update() {
    let url = standalone_url();
    for (i, p) in [
        ExpiryPolicy::Created(Duration::MAX),
        ExpiryPolicy::Modified(Duration::MAX),
        ExpiryPolicy::Accessed(Duration::MAX),
        ExpiryPolicy::Touched(Duration::MAX),
    ]
    .into_iter()
    .enumerate()
    {
        let cache: Cache<String, String> = common::manager(&url)
            .cache(&unique(&format!("pmax{i}")))
            .expiry(p)
            .build()
            .await
            .unwrap();
        cache.put("k".into(), "v".to_string()).await.unwrap_or_else(|e| panic!("{p:?} create: {e}"));
        cache.put("k".into(), "w".to_string()).await.unwrap_or_else(|e| panic!("{p:?} update: {e}"));
        assert_eq!(
            cache.get(&"k".to_string()).await.unwrap().as_deref().map(String::as_str),
            Some("w"),
            "{p:?}"
        );
    }
}
