//! Fail-open: a store that is down never fails a request.
//!
//! The store is a real backend registered through partcache's public store SPI under
//! the made-up scheme `down://`: every call waits `delay_ms`, then fails with
//! `Error::Unavailable` (as a Redis store does when its server is gone).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use http::StatusCode;
use partcache::store::raw::{
    BackendFactory, RawCacheSpec, RawEvent, RawKey, RawStore, RawWrite, RawWriteOutcome,
    RemoteBackend, register_backend,
};
use partcache::{CacheManager, Error, Result};
use partcache_axum::ResponseCache;
use support::{respond, serve};
use tokio::sync::broadcast;

struct Down {
    delay: Duration,
    events: broadcast::Sender<RawEvent>,
}

impl Down {
    async fn fail<T>(&self) -> Result<T> {
        tokio::time::sleep(self.delay).await;
        Err(Error::Unavailable("down:// is always down".into()))
    }
}

#[async_trait]
impl RawStore for Down {
    fn describe(&self) -> String {
        "down".into()
    }
    async fn get_all(&self, _: &[RawKey]) -> Result<Vec<Option<Vec<u8>>>> {
        self.fail().await
    }
    async fn contains_all(&self, _: &[RawKey]) -> Result<Vec<bool>> {
        self.fail().await
    }
    async fn write(&self, _: &RawKey, _: RawWrite) -> Result<RawWriteOutcome> {
        self.fail().await
    }
    async fn put_all(&self, _: Vec<(RawKey, Vec<u8>)>, _: Option<Duration>) -> Result<()> {
        self.fail().await
    }
    async fn remove_all(&self, _: &[RawKey]) -> Result<u64> {
        self.fail().await
    }
    async fn remove_everything(&self) -> Result<u64> {
        self.fail().await
    }
    async fn clear(&self) -> Result<()> {
        self.fail().await
    }
    fn scan(&self) -> BoxStream<'_, Result<Vec<u8>>> {
        Box::pin(futures::stream::once(async {
            Err(Error::Unavailable("down".into()))
        }))
    }
    async fn len(&self) -> Result<u64> {
        self.fail().await
    }
    fn subscribe(&self) -> broadcast::Receiver<RawEvent> {
        self.events.subscribe()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

struct DownBackend {
    delay: Duration,
}

#[async_trait]
impl RemoteBackend for DownBackend {
    fn describe(&self) -> String {
        "down".into()
    }
    async fn open(&self, _: RawCacheSpec) -> Result<Arc<dyn RawStore>> {
        Ok(Arc::new(Down {
            delay: self.delay,
            events: broadcast::channel(4).0,
        }))
    }
}

struct DownFactory;

impl BackendFactory for DownFactory {
    fn schemes(&self) -> &'static [&'static str] {
        &["down"]
    }
    fn connect(&self, url: &str) -> Result<Arc<dyn RemoteBackend>> {
        let delay_ms = url
            .split_once("delay_ms=")
            .and_then(|(_, ms)| ms.parse().ok())
            .ok_or_else(|| Error::Config(format!("`{url}`: expected down://?delay_ms=N")))?;
        Ok(Arc::new(DownBackend {
            delay: Duration::from_millis(delay_ms),
        }))
    }
}

async fn server_on(url: &str, store_timeout: Duration) -> support::Server {
    register_backend(Arc::new(DownFactory));
    let manager = CacheManager::from_url(url).unwrap();
    let cache = ResponseCache::builder(manager.cache("http").build().await.unwrap())
        .tag_index(manager.cache("http:tags").build().await.unwrap())
        .default_ttl(Duration::from_secs(60))
        .store_timeout(store_timeout)
        .build();
    serve(cache, Duration::ZERO, |_, n| {
        respond(
            200,
            &[("cache-control", "max-age=60"), ("cache-tag", "t")],
            format!("origin {n}"),
        )
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_means_the_origin_answers_every_request() {
    let server = server_on("down://?delay_ms=20", Duration::from_millis(500)).await;
    for i in 1..=10 {
        let start = Instant::now();
        let reply = server.get("/p").await;
        assert_eq!(
            (reply.status, reply.body.clone()),
            (StatusCode::OK, format!("origin {i}"))
        );
        assert_eq!(reply.x_cache(), "BYPASS");
        assert!(reply.header("cache-tag").is_none());
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "took {:?}",
            start.elapsed()
        );
    }
    assert_eq!(server.calls(), 10);
    let stats = server.cache.stats();
    assert_eq!(
        (stats.store_errors, stats.bypasses, stats.hits),
        (10, 10, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_store_is_given_up_on_after_the_store_timeout() {
    let server = server_on("down://?delay_ms=10000", Duration::from_millis(100)).await;
    let requests: Vec<_> = (0..20).map(|_| server.get("/p")).collect();
    let start = Instant::now();
    let replies = futures::future::join_all(requests).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::OK && r.x_cache() == "BYPASS")
    );
    assert_eq!(server.calls(), 20);
    assert_eq!(server.cache.stats().store_timeouts, 20);
    // Writes by unsafe methods fail open too: the origin's answer goes through.
    let put = server.send(http::Method::PUT, "/p", &[]).await;
    assert_eq!((put.status, put.x_cache()), (StatusCode::OK, "BYPASS"));
}
