//! The layer as a plain tower service, called by hand: on the local store a request
//! is decided while it is called (a hit, a stale answer), so `call` must work where a
//! caller makes the future before entering the runtime that polls it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use partcache::CacheManager;
use partcache_axum::ResponseCache;
use tower::{Layer, Service, service_fn};

fn request() -> Request<Body> {
    Request::get("/swr")
        .header("host", "svc.test")
        .body(Body::empty())
        .expect("request")
}

/// `x-cache` and the body of `response`, read in `runtime`.
fn read(
    runtime: &tokio::runtime::Runtime,
    response: Response<partcache_axum::CacheBody<http_body_util::Full<Bytes>>>,
) -> (String, String) {
    let label = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_string();
    let body = runtime
        .block_on(response.into_body().collect())
        .expect("body")
        .to_bytes();
    (label, String::from_utf8_lossy(&body).into_owned())
}

/// A runtime of one worker and a response cache `name` on `memory://` opened in it.
fn runtime_and_cache(name: &str) -> (tokio::runtime::Runtime, ResponseCache) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let manager = CacheManager::from_url("memory://").expect("manager");
    let cache = runtime
        .block_on(ResponseCache::builder(&manager, name).build())
        .expect("cache");
    (runtime, cache)
}

/// The origin: its `n`th call (counted in `calls`, from 1) answers `v<n>` with the
/// `Cache-Control` that `cache_control(n)` gives.
fn origin(
    calls: Arc<AtomicUsize>,
    cache_control: fn(usize) -> &'static str,
) -> impl Service<
    Request<Body>,
    Response = Response<http_body_util::Full<Bytes>>,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    service_fn(move |_: Request<Body>| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let cc = cache_control(n);
        async move {
            Ok::<_, std::convert::Infallible>(
                Response::builder()
                    .header("cache-control", cc)
                    .body(http_body_util::Full::new(Bytes::from(format!("v{n}"))))
                    .expect("response"),
            )
        }
    })
}

/// Asserts that `service` is ready, as tower asks before each `call`.
fn ready<S: Service<Request<Body>>>(service: &mut S) {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(matches!(service.poll_ready(&mut cx), Poll::Ready(Ok(()))));
}

/// A stale-while-revalidate answer starts its background refresh when its future is
/// polled, not in `call`: a future made outside the runtime is answered in it, and the
/// refresh then runs.
#[test]
fn a_stale_answer_called_outside_the_runtime_refreshes_in_it() {
    let (runtime, cache) = runtime_and_cache("outside-runtime");
    let calls = Arc::new(AtomicUsize::new(0));
    // Stale at once, usable stale for a minute; the refreshed one is fresh.
    let origin = origin(calls.clone(), |n| {
        if n == 1 {
            "max-age=0, stale-while-revalidate=60"
        } else {
            "max-age=60"
        }
    });
    let mut service = cache.layer().layer(origin);

    ready(&mut service);
    let first = runtime.block_on(service.call(request())).expect("response");
    assert_eq!(read(&runtime, first), ("MISS".into(), "v1".into()));

    // Called here, outside the runtime; polled in it.
    ready(&mut service);
    let stale = service.call(request());
    let stale = runtime.block_on(stale).expect("response");
    assert_eq!(read(&runtime, stale), ("STALE".into(), "v1".into()));

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        ready(&mut service);
        let response = runtime.block_on(service.call(request())).expect("response");
        let (label, body) = read(&runtime, response);
        if body == "v2" {
            assert_eq!(label, "HIT");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the background refresh never ran"
        );
        runtime.block_on(async { tokio::time::sleep(Duration::from_millis(10)).await });
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Misses of one URL called before either is polled make one origin call, and a miss
/// whose future is dropped unpolled leaves the key free (the next request calls the
/// origin itself, without waiting).
#[test]
fn misses_called_before_they_are_polled_share_one_origin_call() {
    let (runtime, cache) = runtime_and_cache("called-unpolled");
    let calls = Arc::new(AtomicUsize::new(0));
    let origin = origin(calls.clone(), |_| "max-age=60");
    let mut service = cache.layer().layer(origin);
    let at = |path: &str| {
        Request::get(path)
            .header("host", "svc.test")
            .body(Body::empty())
            .expect("request")
    };

    // Dropped before it is polled: nobody waits for it.
    ready(&mut service);
    drop(service.call(at("/dropped")));
    ready(&mut service);
    let next = service.call(at("/dropped"));
    let next = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), next).await })
        .expect("a dropped miss left its key's flight behind")
        .expect("response");
    assert_eq!(read(&runtime, next), ("MISS".into(), "v1".into()));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Two misses called, then polled: the second waits for the first's answer.
    ready(&mut service);
    let first = service.call(at("/shared"));
    ready(&mut service);
    let second = service.call(at("/shared"));
    let (first, second) = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(first, second)
        })
        .await
        .expect("the misses never answered")
    });
    assert_eq!(
        read(&runtime, first.expect("response")),
        ("MISS".into(), "v2".into())
    );
    let (label, body) = read(&runtime, second.expect("response"));
    assert_eq!(
        (label.as_str(), body.as_str()),
        ("HIT", "v2"),
        "one origin call"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// The futures of two calls for one URL may be polled in any order (tower's contract):
/// the later call, awaited alone while the earlier one is not polled yet, answers
/// instead of waiting for the earlier one's origin call.
#[test]
fn a_miss_awaited_before_an_earlier_call_of_its_url_is_polled_answers() {
    let (runtime, cache) = runtime_and_cache("polled-out-of-order");
    let origin = origin(Arc::default(), |_| "max-age=60");
    let mut service = cache.layer().layer(origin);
    let at = || {
        Request::get("/out-of-order")
            .header("host", "svc.test")
            .body(Body::empty())
            .expect("request")
    };
    ready(&mut service);
    let first = service.call(at());
    ready(&mut service);
    let second = service.call(at());
    let second = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), second).await })
        .expect("the later call waited for the earlier, unpolled one")
        .expect("response");
    assert_eq!(read(&runtime, second), ("MISS".into(), "v1".into()));
    let first = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), first).await })
        .expect("the earlier call never answered")
        .expect("response");
    assert_eq!(read(&runtime, first).1, "v1");
}

/// A stale answer's background refresh takes its key's flight only once it starts: a
/// request of the key that must reach the origin (its own `max-age=0`), awaited before
/// the stale answer's future is polled, answers instead of waiting for that refresh.
#[test]
fn a_revalidation_awaited_before_an_unpolled_stale_answer_answers() {
    let (runtime, cache) = runtime_and_cache("stale-out-of-order");
    // Stale at once, usable stale for a minute.
    let origin = origin(Arc::default(), |_| "max-age=0, stale-while-revalidate=60");
    let mut service = cache.layer().layer(origin);
    let at = |cache_control: Option<&str>| {
        let mut request = Request::get("/stale-out-of-order").header("host", "svc.test");
        if let Some(cc) = cache_control {
            request = request.header("cache-control", cc);
        }
        request.body(Body::empty()).expect("request")
    };

    ready(&mut service);
    let first = runtime.block_on(service.call(at(None))).expect("response");
    assert_eq!(read(&runtime, first), ("MISS".into(), "v1".into()));

    ready(&mut service);
    let stale = service.call(at(None));
    ready(&mut service);
    let revalidation = service.call(at(Some("max-age=0")));
    let revalidation = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), revalidation).await })
        .expect("the revalidation waited for the unpolled stale answer's refresh")
        .expect("response");
    assert_eq!(read(&runtime, revalidation).1, "v2");
    let stale = runtime.block_on(stale).expect("response");
    assert_eq!(read(&runtime, stale), ("STALE".into(), "v1".into()));
}
