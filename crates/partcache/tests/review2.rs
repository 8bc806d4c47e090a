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


/// `len` counts live entries only: an entry past its own TTL is not counted, whatever
/// the policy (on memory:// under the policies moka's per-entry expiry serves, moka's
/// `entry_count` still counts it until its timer wheel's next tick, about a second).
#[tokio::test]
async fn len_does_not_count_an_entry_past_its_ttl() {
    let mut failures = Vec::new();
    for policy in [
        ExpiryPolicy::Eternal,
        ExpiryPolicy::Modified(Duration::from_secs(60)),
        ExpiryPolicy::Created(Duration::from_secs(60)),
        ExpiryPolicy::Accessed(Duration::from_secs(60)),
        ExpiryPolicy::Touched(Duration::from_secs(60)),
    ] {
        let c = cache("len-ttl", policy).await;
        c.put("a".into(), "1".to_string()).await.unwrap();
        c.put_with_ttl("b".into(), "1".to_string(), Duration::from_millis(50)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        c.run_pending_tasks().await.unwrap();
        let len = c.len().await.unwrap();
        if len != 1 {
            failures.push(format!("{policy:?}: len {len}, want 1"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn a_max_idle_of_duration_max_does_not_panic() {
    let c = CacheManager::from_url("memory://").unwrap()
        .cache::<String, String>("idlemax").max_idle(Duration::MAX).build().await.unwrap();
    c.put("k".into(), "v".to_string()).await.unwrap();
    assert_eq!(c.get(&"k".to_string()).await.unwrap().as_deref().map(String::as_str), Some("v"));
}

/// An `event_capacity` past what tokio's broadcast channel takes is a configuration
/// error, not a panic at `build()`. (A large one that fits, e.g. 10^12 from a config
/// file, is allocated up front: the process aborts on the allocation.)
#[tokio::test]
async fn a_huge_event_capacity_is_refused_not_a_panic() {
    let built = tokio::spawn(async {
        CacheManager::from_url("memory://").unwrap()
            .cache::<String, String>("evcap").event_capacity(usize::MAX).build().await.map(drop)
    })
    .await;
    assert!(matches!(built, Ok(Err(partcache::Error::Config(_)))), "{built:?}");
}
