//! Misses in flight and what ends them: a background refresh whose origin never
//! answers, a tag purge while a miss is on its way, an invalidation while a request
//! that waited on another variant asks the origin itself. The layer is a tower service
//! over an in-process origin whose calls the tests hold and release.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};

use crate::support::{cache_on, call_in_process, local_manager};
use partcache_axum::{CacheBody, ResponseCache, ResponseCacheBuilder};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt, service_fn};

/// `x-cache` and the body of a response.
type Reply = (String, String);

fn request(method: Method, path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "flights.test");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Body::empty()).expect("request")
}

async fn send<S>(service: &S, request: Request<Body>) -> Reply
where
    S: Service<Request<Body>, Response = Response<CacheBody<Full<Bytes>>>, Error = Infallible>
        + Clone,
{
    let (_, label, body) = call_in_process(service, request).await;
    (label, body)
}

async fn get<S>(service: &S, path: &str) -> Reply
where
    S: Service<Request<Body>, Response = Response<CacheBody<Full<Bytes>>>, Error = Infallible>
        + Clone,
{
    send(service, request(Method::GET, path, &[])).await
}

fn response(cache_control: &str, extra: &[(&str, &str)], body: String) -> Response<Full<Bytes>> {
    let mut response = Response::builder().header("cache-control", cache_control);
    for (name, value) in extra {
        response = response.header(*name, *value);
    }
    response
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

async fn built(
    settings: impl FnOnce(ResponseCacheBuilder) -> ResponseCacheBuilder,
) -> ResponseCache {
    cache_on(&local_manager().await, settings).await
}

/// Waits until `done` holds, for at most `within`.
async fn until(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// An origin call held until the test releases it: `started` gets a permit when the
/// call begins, the call waits for a permit of `release`.
#[derive(Clone)]
struct Gate {
    started: Arc<Semaphore>,
    release: Arc<Semaphore>,
}

impl Gate {
    fn new() -> Gate {
        Gate {
            started: Arc::new(Semaphore::new(0)),
            release: Arc::new(Semaphore::new(0)),
        }
    }

    /// In the origin: says the call began, then waits to be let go.
    async fn pass(&self) {
        self.started.add_permits(1);
        self.release.acquire().await.expect("gate").forget();
    }

    /// In the test: waits (at most 5 s) for a call to begin.
    async fn started(&self) {
        tokio::time::timeout(Duration::from_secs(5), self.started.acquire())
            .await
            .expect("the origin call began within 5 s")
            .expect("gate")
            .forget();
    }

    fn open(&self) {
        self.release.add_permits(1);
    }
}

/// The origin of the refresh tests: `/r` is fresh for 1 s and may be served stale for
/// 1 s more; its second call (the background refresh) never answers. Other paths are
/// fresh for a minute.
fn hanging_refresh_origin(
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Body>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send {
    service_fn(move |request: Request<Body>| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let refreshed = request.uri().path() == "/r";
        async move {
            if n == 2 {
                // A hung upstream connection.
                std::future::pending::<()>().await;
            }
            let cache_control = if refreshed {
                "max-age=1, stale-while-revalidate=1"
            } else {
                "max-age=60"
            };
            Ok::<_, Infallible>(response(cache_control, &[], format!("v{n}")))
        }
    })
}

/// A refresh whose origin never answers is given up at the refresh timeout: a request
/// past the stale window, which waits on the refresh, then asks the origin itself
/// (before, it waited for ever, and so did every later request of the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_refresh_is_given_up_and_its_waiters_ask_the_origin() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = built(|b| b.refresh_timeout(Duration::from_secs(2))).await;
    let service = cache.layer().layer(hanging_refresh_origin(calls.clone()));
    assert_eq!(get(&service, "/r").await, ("MISS".into(), "v1".into()));
    // Stale (age ≥ 1 s) within its 1 s stale-while-revalidate window: served stale, and
    // the refresh (the origin's second call) starts and hangs.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(&service, "/r").await.0, "STALE");
    until(
        Duration::from_secs(5),
        "the refresh called the origin",
        || calls.load(Ordering::SeqCst) == 2,
    )
    .await;
    // Past the stale window: this request goes to the origin through the key's flight,
    // which the hung refresh leads until the refresh timeout.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let late = tokio::time::timeout(Duration::from_secs(10), get(&service, "/r")).await;
    assert_eq!(
        late.expect("answered once the refresh was given up"),
        ("MISS".into(), "v3".into())
    );
    let stats = cache.stats();
    assert_eq!(stats.refreshes_abandoned, 1, "{stats:?}");
    assert_eq!(stats.backlog.pending_stores, 0, "{stats:?}");
}

/// A hung refresh also held a slot of the pending work for ever: with one slot, the
/// cache stored nothing more. Given up at the refresh timeout, the slot is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_refresh_gives_its_pending_slot_back() {
    let calls = Arc::new(AtomicUsize::new(0));
    let cache = built(|b| {
        b.max_pending_stores(1)
            .refresh_timeout(Duration::from_millis(300))
    })
    .await;
    let service = cache.layer().layer(hanging_refresh_origin(calls.clone()));
    assert_eq!(get(&service, "/r").await.0, "MISS");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(get(&service, "/r").await.0, "STALE");
    until(Duration::from_secs(5), "the refresh given up", || {
        cache.stats().refreshes_abandoned == 1
    })
    .await;
    assert_eq!(cache.stats().backlog.pending_stores, 0);
    assert_eq!(get(&service, "/other").await.0, "MISS");
    let again = get(&service, "/other").await;
    assert_eq!(again.0, "HIT", "{again:?} {:?}", cache.stats());
}

/// `purge_tag` detaches every miss in flight, whether or not the tag has entries: a
/// response fetched before the purge and stored after it would carry content the purge
/// meant to remove (before, misses were detached only when the tag had no entries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_purge_detaches_misses_in_flight_when_the_tag_has_entries() {
    let gate = Gate::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let (origin_gate, origin_calls) = (gate.clone(), calls.clone());
    let origin = service_fn(move |request: Request<Body>| {
        let n = origin_calls.fetch_add(1, Ordering::SeqCst) + 1;
        let held = request.uri().path() == "/b" && n == 2;
        let gate = origin_gate.clone();
        async move {
            if held {
                gate.pass().await;
            }
            Ok::<_, Infallible>(response(
                "max-age=60",
                &[("cache-tag", "t")],
                format!("v{n}"),
            ))
        }
    });
    let cache = built(|b| b).await;
    let service = cache.layer().layer(origin);
    assert_eq!(get(&service, "/a").await.0, "MISS");
    assert_eq!(get(&service, "/a").await.0, "HIT");
    let in_flight = tokio::spawn({
        let service = service.clone();
        async move { get(&service, "/b").await }
    });
    gate.started().await;
    // `/b`'s response, read before the purge, must not be stored after it.
    assert_eq!(cache.purge_tag("t").await.expect("purge"), 1);
    gate.open();
    assert_eq!(in_flight.await.expect("task"), ("MISS".into(), "v2".into()));
    assert_eq!(get(&service, "/b").await, ("MISS".into(), "v3".into()));
    assert_eq!(get(&service, "/a").await, ("MISS".into(), "v4".into()));
}

/// A request that waited on another variant's miss asks the origin in the key's flight
/// again, so that an unsafe request's invalidation (RFC 9111 §4.4) during that call
/// keeps its response, read before the write, out of the cache (before, it called the
/// origin outside any flight and stored what it read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_asking_the_origin_itself_is_detached_by_an_invalidation() {
    let version = Arc::new(AtomicUsize::new(0));
    let (en_gate, fr_gate) = (Gate::new(), Gate::new());
    let origin = service_fn({
        let (version, en_gate, fr_gate) = (version.clone(), en_gate.clone(), fr_gate.clone());
        move |request: Request<Body>| {
            let language = request
                .headers()
                .get("accept-language")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let (method, version) = (request.method().clone(), version.clone());
            let gate = if language == "en" {
                en_gate.clone()
            } else {
                fr_gate.clone()
            };
            async move {
                if method == Method::POST {
                    version.fetch_add(1, Ordering::SeqCst);
                    return Ok::<_, Infallible>(response("no-store", &[], "posted".into()));
                }
                // Reads the data, then takes its time to render it.
                let seen = version.load(Ordering::SeqCst);
                gate.pass().await;
                Ok(response(
                    "max-age=60",
                    &[("vary", "accept-language")],
                    format!("{language} version {seen}"),
                ))
            }
        }
    });
    let cache = built(|b| b).await;
    let service = cache.layer().layer(origin);
    let at = |language| request(Method::GET, "/v", &[("accept-language", language)]);
    let en = tokio::spawn({
        let service = service.clone();
        async move { send(&service, at("en")).await }
    });
    en_gate.started().await;
    // `fr` joins the key's flight behind `en` (one poll: it is waiting), then runs on.
    let mut fr = Box::pin(service.clone().oneshot(at("fr")));
    assert!(futures::poll!(fr.as_mut()).is_pending());
    let fr = tokio::spawn(async move {
        let response = fr.await.expect("response");
        let body = response.into_body().collect().await.expect("body");
        String::from_utf8_lossy(&body.to_bytes()).into_owned()
    });
    // `en`'s response is another variant: `fr` asks the origin itself, and reads
    // version 0 there; the write lands while its call is held.
    en_gate.open();
    assert_eq!(en.await.expect("task").1, "en version 0");
    fr_gate.started().await;
    assert_eq!(
        send(&service, request(Method::POST, "/v", &[])).await.1,
        "posted"
    );
    fr_gate.open();
    assert_eq!(fr.await.expect("task"), "fr version 0");
    // The next `fr` request must not get the response read before the write.
    let after = tokio::spawn({
        let service = service.clone();
        async move { send(&service, at("fr")).await }
    });
    fr_gate.started().await;
    fr_gate.open();
    assert_eq!(
        after.await.expect("task"),
        ("MISS".into(), "fr version 1".into())
    );
}
