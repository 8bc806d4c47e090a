//! The stale windows of RFC 5861 (`stale-while-revalidate`, `stale-if-error`) count
//! from the end of a response's freshness lifetime, also for a response that arrives
//! aged (its `Age`, or a `Date` in the past); and a window of `Duration::MAX` ("always")
//! is a setting like any other. The layer is a tower service over an in-process origin.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;

use crate::support::{cache_on, call_in_process, local_manager};
use partcache_axum::{CacheBody, ResponseCache, ResponseCacheBuilder};
use tower::{Layer, Service, service_fn};

/// Status, `x-cache` and body of a response.
type Reply = (StatusCode, String, String);

async fn get<S>(service: &S, path: &str) -> Reply
where
    S: Service<Request<Body>, Response = Response<CacheBody<Full<Bytes>>>, Error = Infallible>
        + Clone,
{
    let request = Request::get(path)
        .header("host", "windows.test")
        .body(Body::empty())
        .expect("request");
    call_in_process(service, request).await
}

async fn built(
    settings: impl FnOnce(ResponseCacheBuilder) -> ResponseCacheBuilder,
) -> ResponseCache {
    cache_on(&local_manager().await, settings).await
}

/// An origin that answers `v<n>` with `fields` until `failing` is set, then 503.
fn origin(
    fields: Vec<(&'static str, String)>,
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Body>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send {
    service_fn(move |_: Request<Body>| {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut response = Response::builder();
        if failing.load(Ordering::SeqCst) {
            response = response.status(StatusCode::SERVICE_UNAVAILABLE);
        } else {
            for (name, value) in &fields {
                response = response.header(*name, value.as_str());
            }
        }
        let response = response
            .body(Full::new(Bytes::from(format!("v{n}"))))
            .expect("response");
        async move { Ok::<_, Infallible>(response) }
    })
}

/// `max-age=60, stale-while-revalidate=30` with `Age: 1000`: the response is 910 s
/// past its stale window on arrival, so the next request goes to the origin (before,
/// the lifetime was stretched to the age and the window counted from the arrival).
#[tokio::test]
async fn an_aged_response_past_its_revalidate_window_is_not_served_stale() {
    let calls = Arc::new(AtomicUsize::new(0));
    let fields = vec![
        (
            "cache-control",
            "max-age=60, stale-while-revalidate=30".to_string(),
        ),
        ("age", "1000".to_string()),
    ];
    let cache = built(|b| b).await;
    let service = cache
        .layer()
        .layer(origin(fields, Arc::default(), calls.clone()));
    assert_eq!(get(&service, "/aged").await.1, "MISS");
    let second = get(&service, "/aged").await;
    assert_eq!(second.1, "MISS", "{second:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

/// Within the window, an aged response is served stale as before: `Age: 70` with
/// `max-age=60, stale-while-revalidate=30` has 20 s of its window left.
#[tokio::test]
async fn an_aged_response_within_its_revalidate_window_is_served_stale() {
    let fields = vec![
        (
            "cache-control",
            "max-age=60, stale-while-revalidate=30".to_string(),
        ),
        ("age", "70".to_string()),
    ];
    let cache = built(|b| b).await;
    let service = cache
        .layer()
        .layer(origin(fields, Arc::default(), Arc::default()));
    assert_eq!(get(&service, "/aged").await.1, "MISS");
    assert_eq!(get(&service, "/aged").await.1, "STALE");
}

/// `max-age=60, stale-if-error=300` dated 600 s ago: 240 s past its stale-if-error
/// window on arrival, so the origin's 503 goes to the client (before, the stale 200
/// was served in its place).
#[tokio::test]
async fn a_response_dated_past_its_error_window_is_not_served_on_error() {
    let failing = Arc::new(AtomicBool::new(false));
    let date = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(600));
    let fields = vec![
        (
            "cache-control",
            "max-age=60, stale-if-error=300".to_string(),
        ),
        ("date", date),
    ];
    let cache = built(|b| b).await;
    let service = cache
        .layer()
        .layer(origin(fields, failing.clone(), Arc::default()));
    assert_eq!(get(&service, "/old").await.1, "MISS");
    failing.store(true, Ordering::SeqCst);
    let second = get(&service, "/old").await;
    assert_eq!(second.0, StatusCode::SERVICE_UNAVAILABLE, "{second:?}");
}

/// Windows of `Duration::MAX` ("always"): a response is stored, and served stale when
/// the origin fails (before, the miss panicked adding the windows to the lifetime).
#[tokio::test]
async fn windows_of_duration_max_mean_always() {
    let failing = Arc::new(AtomicBool::new(false));
    let fields = vec![
        ("cache-control", "max-age=0".to_string()),
        ("etag", "\"e\"".to_string()),
    ];
    let cache = built(|b| {
        b.stale_if_error(Duration::MAX)
            .stale_while_revalidate(Duration::MAX)
            .stale_retention(Duration::MAX)
    })
    .await;
    let service = cache
        .layer()
        .layer(origin(fields, failing.clone(), Arc::default()));
    let first = tokio::spawn({
        let service = service.clone();
        async move { get(&service, "/always").await }
    })
    .await
    .expect("the miss did not panic");
    assert_eq!(first.1, "MISS");
    failing.store(true, Ordering::SeqCst);
    let second = get(&service, "/always").await;
    assert_eq!(
        (second.0, second.1.as_str()),
        (StatusCode::OK, "STALE"),
        "{second:?}"
    );
}
