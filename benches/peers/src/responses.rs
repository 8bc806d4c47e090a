//! `peer_http_miss` and `peer_http_hit`: the HTTP response caches on one axum route, in
//! process (`tower::ServiceExt::oneshot`, no sockets), set up as
//! `cargo bench -p partcache-axum --bench http` sets up `http_miss` and
//! `http_hit_inproc`:
//!
//! * miss: every request a new URL, a cache of 10 000 entries (fresh each round), the
//!   time including the wait until the cache's background store work has drained;
//! * hit: one URL, every request after the first a hit.
//!
//! Every contender serves the same handler: 1 KiB, `Cache-Control: max-age=300`,
//! `Content-Type: text/plain` (tower-http-cache never stores `application/octet-stream`,
//! what axum gives raw bytes, so a plain-text body keeps every contender caching). Each
//! peer gets its documented set-up with a 300-second lifetime; what each one does not
//! do (`Vary`, `Cache-Control` from the response) is listed in `docs/benchmarks.md`.

use std::fmt::Debug;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::BodyExt;
use partcache::CacheManager;
use partcache_axum::ResponseCache;
use sync_wrapper::SyncWrapper;
use tower::{Service, ServiceExt};

use crate::report::{Board, Measured, Meter, PARTCACHE, order, schedule};

const PAYLOAD: &[u8] = &[b'x'; 1024];
const CAPACITY: u64 = 10_000;
const LIFETIME: Duration = Duration::from_secs(300);
const MISSES_PER_ROUND: usize = 20_000;
const HITS_PER_ROUND: usize = 50_000;

const BARE: &str = "bare";
const TOWER_HTTP_CACHE: &str = "tower_http_cache";
const HITBOX: &str = "hitbox";
const AXUM_RESPONSE_CACHE: &str = "axum_response_cache";
const CONTENDERS: [&str; 5] = [
    BARE,
    PARTCACHE,
    TOWER_HTTP_CACHE,
    HITBOX,
    AXUM_RESPONSE_CACHE,
];

/// Requests that reached the handler: a cache hit must not add to it.
static ORIGIN_CALLS: AtomicU64 = AtomicU64::new(0);

async fn origin() -> ([(http::HeaderName, &'static str); 2], Bytes) {
    ORIGIN_CALLS.fetch_add(1, Ordering::Relaxed);
    (
        [(CACHE_CONTROL, "max-age=300"), (CONTENT_TYPE, "text/plain")],
        Bytes::from_static(PAYLOAD),
    )
}

fn route() -> Router {
    Router::new().route("/{*path}", get(origin))
}

/// Requests per second of `count` sequential `oneshot` calls on `service` for the URIs
/// `uri(i)`, each body read to its end; `drained` is awaited before the clock stops.
async fn requests<S, B>(
    service: &S,
    count: usize,
    uri: impl Fn(usize) -> String,
    drained: &impl AsyncFn(),
) -> Measured
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: Debug,
    B: http_body::Body,
    B::Error: Debug,
{
    let meter = Meter::start();
    for i in 0..count {
        let request = Request::get(uri(i))
            .header("host", "bench")
            .body(Body::empty())
            .expect("request");
        let response = service.clone().oneshot(request).await.expect("response");
        assert!(response.status().is_success(), "{}", response.status());
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body.len(), PAYLOAD.len());
    }
    drained().await;
    meter.stop(count as u64)
}

/// The miss then the hit figure of one contender in round `round`. Checks that every
/// miss reached the handler once (distinct URLs are distinct entries) and, for a
/// cache, that the hits did not.
async fn misses_then_hits<S, B>(
    name: &str,
    service: S,
    round: usize,
    drained: impl AsyncFn(),
) -> (Measured, Measured)
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: Debug,
    B: http_body::Body,
    B::Error: Debug,
{
    let before = ORIGIN_CALLS.load(Ordering::Relaxed);
    let miss_uri = |i: usize| format!("/m/{round}/{i}");
    let miss = requests(&service, MISSES_PER_ROUND, miss_uri, &drained).await;
    let misses = ORIGIN_CALLS.load(Ordering::Relaxed) - before;
    assert_eq!(misses, MISSES_PER_ROUND as u64, "{name}: misses");
    let before = ORIGIN_CALLS.load(Ordering::Relaxed);
    let hit = requests(&service, HITS_PER_ROUND, |_| "/hit".into(), &drained).await;
    let origin_calls = ORIGIN_CALLS.load(Ordering::Relaxed) - before;
    if name != BARE {
        assert!(
            origin_calls <= 1,
            "{name}: {origin_calls} hits reached the handler"
        );
    }
    (miss, hit)
}

async fn nothing_pending() {}

async fn partcache(manager: &CacheManager, round: usize) -> (Measured, Measured) {
    let cache = ResponseCache::builder(manager, format!("peers-{round}"))
        .max_entries(CAPACITY)
        .build()
        .await
        .expect("cache");
    let app = route().layer(cache.layer());
    let drained = async || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while cache.stats().backlog.pending_stores > 0 {
            assert!(Instant::now() < deadline, "background work never drained");
            tokio::task::yield_now().await;
        }
    };
    let figures = misses_then_hits(PARTCACHE, app, round, drained).await;
    let stats = cache.stats();
    assert!(stats.cache.hits >= HITS_PER_ROUND as u64 - 1, "{stats:?}");
    figures
}

/// axum's response body made `Sync`, which tower-http-cache requires of the bodies it
/// wraps. A body is only polled through `&mut`, so `SyncWrapper` costs nothing; the
/// size hint is kept aside, since tower-http-cache does not store a body of unknown
/// size.
struct SyncBody {
    inner: SyncWrapper<Body>,
    size_hint: http_body::SizeHint,
}

impl SyncBody {
    fn new(body: Body) -> SyncBody {
        let size_hint = http_body::Body::size_hint(&body);
        SyncBody {
            inner: SyncWrapper::new(body),
            size_hint,
        }
    }
}

impl http_body::Body for SyncBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(self.get_mut().inner.get_mut()).poll_frame(cx)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.size_hint
    }
}

/// tower-http-cache stores before it answers (no background work). Its error type is
/// a `BoxError`, which `Router::layer` does not take, so it wraps the router as its
/// README shows (`ServiceBuilder::new().layer(cache).service(..)`), which means a hit
/// skips the routing the other contenders pay for.
async fn tower_http_cache(round: usize) -> (Measured, Measured) {
    use tower_http_cache::prelude::{CacheLayer, InMemoryBackend};
    let layer = CacheLayer::builder(InMemoryBackend::new(CAPACITY))
        .ttl(LIFETIME)
        .build();
    let app = tower::ServiceBuilder::new()
        .layer(layer)
        .map_response(|response: Response<Body>| response.map(SyncBody::new))
        .service(route());
    misses_then_hits(TOWER_HTTP_CACHE, app, round, nothing_pending).await
}

/// hitbox with its in-memory (moka) backend and the fastest value format its docs
/// list (rkyv; the default is JSON, some 30 times slower on this body): GET requests,
/// 200 responses, keyed by method and path.
async fn hitbox(round: usize) -> (Measured, Measured) {
    use hitbox::policy::PolicyConfig;
    use hitbox_http::extractors::{Method as MethodKey, path::PathExtractor};
    use hitbox_http::predicates::request::Method;
    use hitbox_http::predicates::response::StatusCode;
    let backend = hitbox_moka::MokaBackend::builder()
        .max_entries(CAPACITY)
        .value_format(hitbox_backend::format::RkyvFormat::default())
        .build();
    let config = hitbox::Config::builder()
        .request_predicate(Method::new(http::Method::GET).expect("GET"))
        .response_predicate(StatusCode::new(http::StatusCode::OK))
        .extractor(MethodKey::new().path("/{path}*"))
        .policy(PolicyConfig::builder().ttl(LIFETIME).build())
        .build();
    let layer = hitbox_tower::Cache::builder()
        .backend(backend)
        .config(config)
        .build();
    let app = route().layer(layer);
    misses_then_hits(HITBOX, app, round, nothing_pending).await
}

/// axum-response-cache over the store its docs suggest for a bounded cache with a
/// lifetime (`cached`'s LRU with a TTL), keyed by method and URI.
async fn axum_response_cache(round: usize) -> (Measured, Measured) {
    let store = cached_v1::LruTtlCache::with_size_and_ttl(CAPACITY as usize, LIFETIME);
    let app = route().layer(axum_response_cache::CacheLayer::with(store));
    misses_then_hits(AXUM_RESPONSE_CACHE, app, round, nothing_pending).await
}

/// Prints `BENCH peer_http_miss` and `BENCH peer_http_hit`.
pub async fn run() {
    let manager = CacheManager::from_url("memory://").expect("memory store");
    let mut miss = Board::new("http_miss", &[BARE]);
    let mut hit = Board::new("http_hit", &[BARE]);
    for (round, kind) in schedule(7) {
        for name in order(round, &CONTENDERS) {
            let (m, h) = match name {
                BARE => misses_then_hits(BARE, route(), round, nothing_pending).await,
                PARTCACHE => partcache(&manager, round).await,
                TOWER_HTTP_CACHE => tower_http_cache(round).await,
                HITBOX => hitbox(round).await,
                _ => axum_response_cache(round).await,
            };
            miss.record(kind, name, m);
            hit.record(kind, name, h);
        }
    }
    miss.print();
    hit.print();
}
