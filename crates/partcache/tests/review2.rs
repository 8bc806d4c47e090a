//! Review probes: durations at their extremes must not panic.
use std::time::Duration;
use partcache::{CacheManager, expiry::ExpiryPolicy};

async fn cache(label: &str, policy: ExpiryPolicy) -> partcache::Cache<String, String> {
    CacheManager::from_url("memory://").unwrap()
        .cache::<String, String>(label).expiry(policy).build().await.unwrap()
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
