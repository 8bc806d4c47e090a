//! Review probes: durations at their extremes must not panic.
use std::time::Duration;
use partcache::{CacheManager, expiry::ExpiryPolicy};

async fn cache(label: &str, policy: ExpiryPolicy) -> partcache::Cache<String, String> {
    CacheManager::from_url("memory://").unwrap()
        .cache::<String, String>(label).expiry(policy).build().await.unwrap()
}

#[tokio::test]
async fn put_with_ttl_of_duration_max_does_not_panic() {
    let c = cache("ttlmax", ExpiryPolicy::Eternal).await;
    c.put_with_ttl("k".into(), "v".to_string(), Duration::MAX).await.unwrap();
    assert_eq!(c.get(&"k".to_string()).await.unwrap().as_deref().map(String::as_str), Some("v"));
}

#[tokio::test]
async fn a_policy_of_duration_max_does_not_panic() {
    for p in [ExpiryPolicy::Created(Duration::MAX), ExpiryPolicy::Modified(Duration::MAX), ExpiryPolicy::Accessed(Duration::MAX), ExpiryPolicy::Touched(Duration::MAX)] {
        let c = cache(&format!("pmax{p:?}").replace(['(', ')', ' ', '.', ','], ""), p).await;
        c.put("k".into(), "v".to_string()).await.unwrap();
        c.put("k".into(), "w".to_string()).await.unwrap();
        assert_eq!(c.get(&"k".to_string()).await.unwrap().as_deref().map(String::as_str), Some("w"), "{p:?}");
    }
}
