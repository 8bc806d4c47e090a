//! Fail-open: a store that is down never fails a request, and neither does a flood
//! of misses (background store work is bounded; what does not fit is not stored).
//!
//! Two kinds of store: a real backend registered through partcache's public store SPI
//! under the made-up scheme `down://` (every call waits `delay_ms`, then fails with
//! `Error::Unavailable`, as a Redis store does when its server is gone), and a real
//! Redis store whose server is killed (its port closed) or frozen, or was never up.

use crate::support;

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
use partcache_integration_tests::{Flavor, RedisServer, ServerOptions};
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
    async fn put_all(&self, _: Vec<(RawKey, Vec<u8>)>, _: Option<Duration>) -> Result<u64> {
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
    server_with(CacheManager::from_url(url).unwrap(), store_timeout).await
}

async fn server_with(manager: CacheManager, store_timeout: Duration) -> support::Server {
    let cache = ResponseCache::builder(&manager, "http")
        .default_ttl(Duration::from_secs(60))
        .store_timeout(store_timeout)
        .build()
        .await
        .unwrap();
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
        (
            stats.cache.store_errors,
            stats.cache.bypasses,
            stats.cache.hits
        ),
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
    assert_eq!(server.cache.stats().cache.store_timeouts, 20);
    // Writes by unsafe methods fail open too: the origin's answer goes through.
    let put = server.send(http::Method::PUT, "/p", &[]).await;
    assert_eq!((put.status, put.x_cache()), (StatusCode::OK, "BYPASS"));
}

/// A standalone Redis server of its own (this test kills or freezes it), and a manager
/// on it with 100 ms connect and response timeouts.
fn redis_with_short_timeouts() -> (RedisServer, CacheManager) {
    let server = tokio::task::block_in_place(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    });
    let manager = support::redis::manager(&format!(
        "redis://{}?connect_timeout=100ms&response_timeout=100ms",
        server.addr()
    ));
    (server, manager)
}

/// Sends `n` requests one after another; each must be answered by the origin (its
/// calls so far plus one), marked `BYPASS`, within `limit`.
async fn all_bypass(server: &support::Server, n: usize, limit: Duration) {
    let done = server.calls();
    for i in done + 1..=done + n {
        let start = Instant::now();
        let reply = server.get(&format!("/p/{}", i % 3)).await;
        let took = start.elapsed();
        assert_eq!(
            (reply.status, reply.x_cache(), reply.body.clone()),
            (StatusCode::OK, "BYPASS", format!("origin {i}")),
            "request {i}"
        );
        assert!(reply.header("cache-tag").is_none());
        assert!(took < limit, "request {i} took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_store_whose_port_closed_fails_open() {
    let (redis, manager) = redis_with_short_timeouts();
    let store_timeout = Duration::from_millis(250);
    let server = server_with(manager, store_timeout).await;
    // Working: a miss, then a hit.
    assert_eq!(server.get("/p/0").await.x_cache(), "MISS");
    server.stored(1).await;
    assert_eq!(server.get("/p/0").await.x_cache(), "HIT");
    assert_eq!(server.calls(), 1);

    // SIGKILL: the port is closed, connections are reset and refused.
    assert!(tokio::task::block_in_place(|| redis.kill()));
    let before = server.cache.stats();
    // Slack over the store timeout for a loaded test machine.
    all_bypass(&server, 10, store_timeout + Duration::from_millis(250)).await;
    assert_eq!(server.calls(), 11);
    let stats = server.cache.stats();
    let failures = (stats.cache.store_errors + stats.cache.store_timeouts)
        - (before.cache.store_errors + before.cache.store_timeouts);
    assert!(
        failures >= 10,
        "{failures} store failures counted: {stats:?}"
    );
    assert_eq!(
        (
            stats.cache.hits,
            stats.cache.bypasses - before.cache.bypasses
        ),
        (1, 10)
    );
    // Writes by unsafe methods fail open too.
    let put = server.send(http::Method::PUT, "/p/0", &[]).await;
    assert_eq!((put.status, put.x_cache()), (StatusCode::OK, "BYPASS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_store_is_given_up_on_within_the_store_timeout() {
    let (redis, manager) = redis_with_short_timeouts();
    let store_timeout = Duration::from_millis(250);
    let server = server_with(manager, store_timeout).await;
    assert_eq!(server.get("/p/0").await.x_cache(), "MISS");
    server.stored(1).await;

    // SIGSTOP: the port stays open, nothing is answered.
    tokio::task::block_in_place(|| redis.pause()).expect("pause");
    let paths: Vec<String> = (0..20).map(|i| format!("/p/{}", i % 3)).collect();
    let requests: Vec<_> = paths.iter().map(|path| server.get(path)).collect();
    let start = Instant::now();
    let replies = futures::future::join_all(requests).await;
    assert!(
        start.elapsed() < store_timeout + Duration::from_millis(750),
        "took {:?}",
        start.elapsed()
    );
    for reply in &replies {
        assert_eq!((reply.status, reply.x_cache()), (StatusCode::OK, "BYPASS"));
        assert!(reply.body.starts_with("origin "), "{}", reply.body);
    }
    assert_eq!(server.calls(), 21);
    let stats = server.cache.stats();
    assert!(
        stats.cache.store_errors + stats.cache.store_timeouts >= 20,
        "{stats:?}"
    );
    // The harness SIGKILLs the frozen server when `redis` drops.
}

/// A miss's lease is a store call like the others: with writes paused on the server
/// (`CLIENT PAUSE … WRITE`: the read answers, the lease's ask does not), the ask gives
/// up after the store timeout and the origin answers (before, the miss waited for the
/// Redis client's own response timeout, 3 s here), counted as a store timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_ask_is_given_up_on_after_the_store_timeout() {
    let redis = tokio::task::block_in_place(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    });
    let manager = support::redis::manager(&format!("redis://{}?response_timeout=3s", redis.addr()));
    let server = server_with(manager, Duration::from_millis(200)).await;
    // Connected, and the server's functions loaded, before the pause.
    assert_eq!(server.get("/p/0").await.x_cache(), "MISS");
    server.stored(1).await;
    tokio::task::block_in_place(|| redis.redis_cli(["CLIENT", "PAUSE", "2500", "WRITE"]));
    let start = Instant::now();
    let reply = server.get("/p/1").await;
    let took = start.elapsed();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (StatusCode::OK, "origin 2")
    );
    assert!(took < Duration::from_millis(1000), "a miss waited {took:?}");
    let stats = server.cache.stats();
    assert!(stats.cache.store_timeouts >= 1, "{stats:?}");
}

/// A `ResponseCache` can be created while Redis is down (the store opens lazily, once
/// the server answers): on a closed port `build()` succeeds within the connect timeout,
/// and every request is answered by the origin, marked `BYPASS`, within the store
/// timeout, each store failure counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cache_built_on_a_closed_port_fails_open() {
    let port = partcache_integration_tests::ports::free_port().expect("a free port");
    let manager = support::redis::manager(&format!(
        "redis://127.0.0.1:{port}?connect_timeout=100ms&response_timeout=100ms"
    ));
    let store_timeout = Duration::from_millis(250);
    let start = Instant::now();
    let server = server_with(manager, store_timeout).await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "building took {:?}",
        start.elapsed()
    );
    // Slack over the store timeout for a loaded test machine.
    all_bypass(&server, 10, store_timeout + Duration::from_millis(250)).await;
    assert_eq!(server.calls(), 10);
    let stats = server.cache.stats();
    assert!(
        stats.cache.store_errors + stats.cache.store_timeouts >= 10,
        "store failures not counted: {stats:?}"
    );
    assert_eq!((stats.cache.hits, stats.cache.bypasses), (0, 10));
    // Writes by unsafe methods fail open too.
    let put = server.send(http::Method::PUT, "/p/0", &[]).await;
    assert_eq!((put.status, put.x_cache()), (StatusCode::OK, "BYPASS"));
}

/// A flood of unique URLs (each one a miss with a storable response) never leaves more
/// store work pending than the bound, the cache stays within its capacity, and every
/// storable response is either stored or counted as dropped. 20 000 URLs by default
/// (a debug build answers about 1 500 a second); `PARTCACHE_FLOOD=200000` for the
/// full-size flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unique_urls_keeps_pending_store_work_bounded() {
    use axum::Router;
    use axum::routing::get;
    use futures::StreamExt;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let flood: usize = std::env::var("PARTCACHE_FLOOD")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000);
    const CONCURRENCY: usize = 64;
    const MAX_PENDING: u64 = 16;
    const MAX_BYTES: u64 = 8 * 1024;
    let manager = CacheManager::from_url("memory://").unwrap();
    let cache = ResponseCache::builder(&manager, "flood")
        .max_entries(10_000)
        .max_pending_stores(MAX_PENDING as usize)
        .max_pending_store_bytes(MAX_BYTES as usize)
        .build()
        .await
        .unwrap();
    let app = Router::new()
        .route(
            "/{*path}",
            get(|| async { ([("cache-control", "max-age=300")], "x".repeat(100)) }),
        )
        .layer(cache.layer());
    let mut most_pending = (0, 0);
    let mut answered = 0;
    let mut replies = futures::stream::iter(0..flood)
        .map(|i| {
            let request = http::Request::get(format!("/flood/{i}"))
                .header("host", "flood.test")
                .body(axum::body::Body::empty())
                .unwrap();
            let app = app.clone();
            async move {
                let response = app.oneshot(request).await.unwrap();
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, body.len())
            }
        })
        .buffer_unordered(CONCURRENCY);
    while let Some((status, length)) = replies.next().await {
        assert_eq!((status, length), (StatusCode::OK, 100));
        answered += 1;
        let stats = cache.stats();
        most_pending.0 = most_pending.0.max(stats.backlog.pending_stores);
        most_pending.1 = most_pending.1.max(stats.backlog.pending_store_bytes);
    }
    assert_eq!(answered, flood);
    assert!(
        most_pending.0 <= MAX_PENDING && most_pending.1 <= MAX_BYTES,
        "pending work past its bound: {most_pending:?}"
    );
    let stats = cache.stats();
    assert_eq!(stats.cache.misses, flood as u64, "{stats:?}");
    assert_eq!(
        stats.cache.stored + stats.backlog.stores_dropped,
        flood as u64,
        "{stats:?}"
    );
    assert_eq!(
        (
            stats.backlog.pending_stores,
            stats.backlog.pending_store_bytes
        ),
        (0, 0)
    );
    cache.run_pending_tasks().await.unwrap();
    assert!(cache.responses().len().await.unwrap() <= 10_000);
}

/// A response whose store write would hold more bytes than the pending-work limit is
/// sent whole and not stored: the next request for it is a miss again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_past_the_pending_byte_limit_is_sent_and_not_stored() {
    let manager = CacheManager::from_url("memory://").unwrap();
    let cache = ResponseCache::builder(&manager, "big")
        .max_pending_store_bytes(512)
        .build()
        .await
        .unwrap();
    let server = serve(cache, Duration::ZERO, |_, _| {
        respond(200, &[("cache-control", "max-age=300")], "y".repeat(1024))
    })
    .await;
    for _ in 0..2 {
        let reply = server.get("/big").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body.len(), 1024);
        assert_eq!(reply.headers["x-cache"], "MISS");
    }
    let stats = server.cache.stats();
    assert_eq!(
        (stats.cache.stored, stats.backlog.stores_dropped),
        (0, 2),
        "{stats:?}"
    );
}
