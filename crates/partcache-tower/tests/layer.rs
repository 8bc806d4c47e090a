//! The `CacheLayer` scenarios (`scenarios/mod.rs`) on the local store.

mod scenarios;

async fn local_manager() -> partcache::CacheManager {
    partcache::CacheManager::from_url("memory://").unwrap()
}

layer_suite!(local_manager);

/// Responses whose pending store writes would exceed the byte limit are returned as
/// usual, not stored, and counted.
#[tokio::test]
async fn responses_past_the_pending_byte_limit_are_returned_and_not_stored() {
    use partcache_tower::CacheLayer;
    use tower::{ServiceBuilder, ServiceExt, service_fn};

    let manager = local_manager().await;
    let cache = manager
        .cache::<u64, String>("bounded")
        .build()
        .await
        .unwrap();
    let layer = CacheLayer::builder(cache, |n: &u64| Some(*n))
        .pending_weigher(|value: &String| value.len())
        .max_pending_store_bytes(100)
        .build();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|n: u64| async move {
            let size = if n.is_multiple_of(2) { 10 } else { 1000 };
            Ok::<_, std::convert::Infallible>("x".repeat(size))
        }));
    for n in 0..10u64 {
        let expected = if n.is_multiple_of(2) { 10 } else { 1000 };
        assert_eq!(service.clone().oneshot(n).await.unwrap().len(), expected);
    }
    let stats = layer.stats();
    assert_eq!(
        (stats.cache.stored, stats.backlog.stores_dropped),
        (5, 5),
        "{stats:?}"
    );
    assert_eq!(
        (
            stats.backlog.pending_stores,
            stats.backlog.pending_store_bytes
        ),
        (0, 0)
    );
    assert!(layer.cache().contains_key(&0).await.unwrap());
    assert!(!layer.cache().contains_key(&1).await.unwrap());
}
