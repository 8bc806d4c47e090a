//! A real axum origin behind the response cache, on 127.0.0.1:0, and a hyper client.

#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::MethodFilter;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use partcache::CacheManager;
use partcache_axum::{ResponseCache, ResponseCacheBuilder};

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
}

pub(crate) type Handler = dyn Fn(&Seen, usize) -> Response<Body> + Send + Sync;

pub(crate) struct Server {
    pub addr: SocketAddr,
    pub cache: ResponseCache,
    pub calls: Arc<AtomicUsize>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    client: Client<HttpConnector, Full<Bytes>>,
    /// A client that opens a connection per request, for requests whose response may
    /// be aborted (a pooled connection the server aborted would fail the next request
    /// sent on it).
    unpooled: Client<HttpConnector, Full<Bytes>>,
}

pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub(crate) fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("<none>")
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn age(&self) -> Option<u64> {
        self.header("age")?.parse().ok()
    }
}

/// Builds the response cache (plus tag index) over fresh caches of `manager`: every call
/// uses new cache names, so scenarios sharing one Redis deployment never see each
/// other's entries. On a remote store the store timeout is raised from its 250 ms
/// default to 2 s, so that a slow round trip on a loaded test machine is not a spurious
/// `BYPASS` (the fail-open tests cover the timeout itself).
pub(crate) async fn cache_on(
    manager: &CacheManager,
    configure: impl FnOnce(ResponseCacheBuilder) -> ResponseCacheBuilder,
) -> ResponseCache {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!("http-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut builder = ResponseCache::builder(manager, name);
    if !manager.is_local() {
        builder = builder.store_timeout(Duration::from_secs(2));
    }
    configure(builder).build().await.unwrap()
}

/// A manager over the embedded store.
pub(crate) async fn local_manager() -> CacheManager {
    CacheManager::from_url("memory://").unwrap()
}

/// Starts an origin whose every route runs `handler` (after `delay`), behind `cache`.
pub(crate) async fn serve(
    cache: ResponseCache,
    delay: Duration,
    handler: impl Fn(&Seen, usize) -> Response<Body> + Send + Sync + 'static,
) -> Server {
    serve_routed(cache, delay, handler, |origin, cache| {
        Router::new().fallback_service(origin).layer(cache.layer())
    })
    .await
}

/// Starts the router `app` builds from the origin (a `MethodRouter` running
/// `handler` after `delay`, for any method) and the cache: for routes of their own
/// and per-route layers.
pub(crate) async fn serve_routed(
    cache: ResponseCache,
    delay: Duration,
    handler: impl Fn(&Seen, usize) -> Response<Body> + Send + Sync + 'static,
    app: impl FnOnce(axum::routing::MethodRouter, &ResponseCache) -> Router,
) -> Server {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Arc<Handler> = Arc::new(handler);
    let origin = {
        let (calls, seen) = (calls.clone(), seen.clone());
        move |request: axum::extract::Request| {
            let (calls, seen, handler) = (calls.clone(), seen.clone(), handler.clone());
            async move {
                let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
                let record = Seen {
                    method: request.method().clone(),
                    uri: request.uri().to_string(),
                    headers: request.headers().clone(),
                };
                seen.lock().push(record.clone());
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                handler(&record, n)
            }
        }
    };
    // Every method as a route of its own (`any` is a fallback, which `route_layer`
    // does not wrap).
    let methods = MethodFilter::GET
        .or(MethodFilter::POST)
        .or(MethodFilter::PUT)
        .or(MethodFilter::PATCH)
        .or(MethodFilter::DELETE)
        .or(MethodFilter::OPTIONS);
    let app = app(axum::routing::on(methods, origin), &cache);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = Client::builder(TokioExecutor::new()).build_http();
    let unpooled = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    Server {
        addr,
        cache,
        calls,
        seen,
        client,
        unpooled,
    }
}

impl Server {
    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[]).await
    }

    pub(crate) async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.send(Method::GET, path, headers).await
    }

    pub(crate) async fn send(&self, method: Method, path: &str, headers: &[(&str, &str)]) -> Reply {
        Self::exchange(&self.client, self.addr, method, path, headers, "")
            .await
            .expect("the response body")
    }

    /// A `POST` of the plain-text `body`.
    pub(crate) async fn post(&self, path: &str, body: &str) -> Reply {
        Self::exchange(&self.client, self.addr, Method::POST, path, &[], body)
            .await
            .expect("the response body")
    }

    /// Like [`Server::send`] on a connection of its own, but a body that fails to
    /// arrive whole (the connection is aborted before the message ends) is an `Err`
    /// with what the client saw.
    pub(crate) async fn try_send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        Self::exchange(&self.unpooled, self.addr, method, path, headers, "").await
    }

    async fn exchange(
        client: &Client<HttpConnector, Full<Bytes>>,
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Reply, String> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::copy_from_slice(body.as_bytes())))
            .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
            .await
            .expect("request timed out")
            // The server may abort before the head is flushed: also a failure the
            // client sees.
            .map_err(|error| format!("no response: {error:?}"))?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|error| {
            format!(
                "status {} with content-length {:?}: {error:?}",
                parts.status,
                parts.headers.get("content-length")
            )
        })?;
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        })
    }

    /// Waits until the cache has written `n` responses (writes run beside replies).
    pub(crate) async fn stored(&self, n: u64) {
        let cache = self.cache.clone();
        eventually("responses stored", || {
            let cache = cache.clone();
            async move { cache.stats().cache.stored >= n }
        })
        .await;
    }
}

/// Calls `service` (the layer over an in-process origin, no sockets) with `request`:
/// the status, `x-cache` and body of its response.
pub(crate) async fn call_in_process<S>(
    service: &S,
    request: Request<Body>,
) -> (StatusCode, String, String)
where
    S: tower::Service<
            Request<Body>,
            Response = Response<partcache_axum::CacheBody<Full<Bytes>>>,
            Error = std::convert::Infallible,
        > + Clone,
{
    use tower::ServiceExt;
    let response = service.clone().oneshot(request).await.expect("response");
    let label = response
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("<none>")
        .to_string();
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, label, String::from_utf8_lossy(&body).into_owned())
}

/// Polls `condition` every 10 ms until it holds; panics after 10 s.
pub(crate) async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A response with these headers and body.
pub(crate) fn respond(
    status: u16,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> Response<Body> {
    let mut response = Response::builder().status(status);
    for (name, value) in headers {
        response = response.header(*name, *value);
    }
    response.body(body.into()).unwrap()
}

/// Redis servers shared by the tests of one test binary. They live in statics for the
/// whole process; the harness starts every server with `PR_SET_PDEATHSIG = SIGKILL`, so
/// they die with the test process (statics are never dropped).
pub(crate) mod redis {
    use std::sync::OnceLock;

    use partcache::CacheManager;
    use partcache_integration_tests::{Flavor, RedisCluster};

    /// One 3-master + 3-replica cluster per test binary, started by the first caller.
    pub(crate) fn cluster() -> &'static RedisCluster {
        static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
        CLUSTER
            .get_or_init(|| RedisCluster::start(Flavor::Redis, 3, 1).expect("start redis cluster"))
    }

    /// A manager for `url`, with the Redis schemes installed.
    pub(crate) fn manager(url: &str) -> CacheManager {
        partcache_redis::install();
        CacheManager::from_url(url).expect("manager")
    }

    /// A fresh manager on the binary's cluster (call it from a multi-threaded runtime:
    /// starting the cluster blocks).
    pub(crate) async fn cluster_manager() -> CacheManager {
        let url = tokio::task::block_in_place(|| cluster().seed_url());
        manager(&url)
    }
}
