//! The `CacheLayer` scenarios over a real `tower` service, each a function taking the
//! `CacheManager` whose store holds the cache: `layer_suite!(make_manager)` expands to
//! one test per scenario (`layer.rs` runs them on the local store, `layer_redis.rs` on a
//! Redis cluster). Every scenario opens caches under names of its own, so scenarios
//! sharing one Redis deployment never see each other's entries.

#![allow(dead_code)] // Each test binary uses the part of the suite it needs.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use partcache::CacheManager;
use partcache_tower::{CacheLayer, CachedResponse, KeyExtractor};
use serde::{Deserialize, Serialize};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

/// `label` made unique within this process.
pub(crate) fn unique(label: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!("{label}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A service that counts its calls and answers `n * n` after `delay`.
fn squares(
    calls: Arc<AtomicUsize>,
    delay: Duration,
) -> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone {
    service_fn(move |n: u64| {
        let calls = calls.clone();
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            Ok::<_, Infallible>(n * n)
        }
    })
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) async fn a_hit_does_not_call_the_service_and_none_bypasses(manager: CacheManager) {
    let layer = CacheLayer::new(
        manager
            .cache::<u64, u64>(&unique("sq"))
            .build()
            .await
            .unwrap(),
        |n: &u64| (*n != 0).then_some(*n),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(squares(calls.clone(), Duration::ZERO));

    assert_eq!(service.clone().oneshot(3).await.unwrap(), 9);
    wait_until("the write", || layer.stats().cache.stored == 1).await;
    assert_eq!(service.clone().oneshot(3).await.unwrap(), 9);
    assert_eq!(service.clone().oneshot(0).await.unwrap(), 0);
    assert_eq!(service.clone().oneshot(0).await.unwrap(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let stats = layer.stats().cache;
    assert_eq!((stats.hits, stats.misses, stats.bypasses), (1, 1, 2));

    assert!(layer.invalidate(&3).await.unwrap());
    assert_eq!(service.oneshot(3).await.unwrap(), 9);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

pub(crate) async fn the_predicate_decides_what_is_stored(manager: CacheManager) {
    let layer = CacheLayer::builder(
        manager
            .cache::<u64, u64>(&unique("sq"))
            .build()
            .await
            .unwrap(),
        |n: &u64| Some(*n),
    )
    .store_when(|square: &u64| *square < 100)
    .build();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(squares(calls.clone(), Duration::ZERO));
    for _ in 0..3 {
        assert_eq!(service.clone().oneshot(20).await.unwrap(), 400);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(layer.stats().cache.not_stored, 3);
}

pub(crate) async fn a_hundred_concurrent_misses_call_the_service_once(manager: CacheManager) {
    let layer = CacheLayer::new(
        manager
            .cache::<u64, u64>(&unique("sq"))
            .build()
            .await
            .unwrap(),
        |n: &u64| Some(*n),
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(squares(calls.clone(), Duration::from_millis(200)));
    let tasks: Vec<_> = (0..100)
        .map(|_| tokio::spawn(service.clone().oneshot(7)))
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 49);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.stats().cache.coalesced, 99);
}

pub(crate) async fn a_failing_store_fails_open(manager: CacheManager) {
    // A hashing rule no key matches: every store call is rejected, as a broken store's are.
    let cache = manager
        .cache::<u64, u64>(&unique("sq"))
        .hashing_rules([r"^never(?<tag>\d+)"])
        .build()
        .await
        .unwrap();
    let layer = CacheLayer::new(cache, |n: &u64| Some(*n));
    let calls = Arc::new(AtomicUsize::new(0));
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(squares(calls.clone(), Duration::ZERO));
    for i in 1..=5 {
        assert_eq!(service.clone().oneshot(4).await.unwrap(), 16);
        // The failed write ends the flight; the next request must call the service again.
        wait_until("the failed write", || layer.stats().cache.store_errors == i).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    // Each request is counted once: a hit, a miss, or a bypass of the failing store.
    let stats = layer.stats().cache;
    assert_eq!(stats.hits + stats.misses + stats.bypasses, 5, "{stats:?}");
}

/// A response that does not serialize, and its stored form.
struct Page {
    title: String,
    _handle: Arc<()>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredPage {
    title: String,
}

impl CachedResponse<Page> for StoredPage {
    async fn from_response(page: Page) -> Result<Self, Page> {
        if page.title.is_empty() {
            Err(page)
        } else {
            Ok(StoredPage { title: page.title })
        }
    }

    fn to_response(stored: &Arc<Self>) -> Page {
        Page {
            title: stored.title.clone(),
            _handle: Arc::new(()),
        }
    }
}

struct ByPath;

impl KeyExtractor<String> for ByPath {
    type Key = String;
    fn extract(&self, path: &String) -> Option<String> {
        Some(path.trim_end_matches('/').to_string())
    }
}

pub(crate) async fn a_stored_form_and_a_key_extractor_type(manager: CacheManager) {
    let layer = CacheLayer::new(
        manager
            .cache::<String, StoredPage>(&unique("pages"))
            .build()
            .await
            .unwrap(),
        ByPath,
    );
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let service = ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(move |path: String| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                Ok::<_, Infallible>(Page {
                    title: format!("page {path}"),
                    _handle: Arc::new(()),
                })
            }
        }));
    assert_eq!(
        service.clone().oneshot("/a/".into()).await.unwrap().title,
        "page /a/"
    );
    wait_until("the write", || layer.stats().cache.stored == 1).await;
    assert_eq!(
        service.oneshot("/a".into()).await.unwrap().title,
        "page /a/"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// One test per scenario, each on a manager from `$make().await` (called once per test,
/// inside the test's runtime: a remote store's connections live on that runtime).
#[macro_export]
macro_rules! layer_suite {
    ($make:path) => {
        $crate::layer_suite!(@tests $make;
            a_hit_does_not_call_the_service_and_none_bypasses,
            the_predicate_decides_what_is_stored,
            a_hundred_concurrent_misses_call_the_service_once,
            a_failing_store_fails_open,
            a_stored_form_and_a_key_extractor_type,
        );
    };
    (@tests $make:path; $($name:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::scenarios::$name($make().await).await;
            }
        )*
    };
}
