//! A storefront on a real socket (127.0.0.1:0) and a hyper client for it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use storefront::{Config, Dashboard, Storefront};
use tokio::sync::oneshot;

/// A running storefront; dropping it shuts the server down.
pub(crate) struct Running {
    pub addr: SocketAddr,
    pub manager: partcache::CacheManager,
    /// The storefront's plain database connection (its pool, uncached).
    pub database: sea_orm::DatabaseConnection,
    client: Client<HttpConnector, Full<Bytes>>,
    _shutdown: oneshot::Sender<()>,
}

/// One response, body read whole.
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
}

/// Starts a storefront on `config` (the embedded store by default) on a free port.
pub(crate) async fn start(config: Config) -> Running {
    let storefront = Storefront::start(&config).await.expect("storefront starts");
    let manager = storefront.manager().clone();
    let database = storefront.database().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let (tx, rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        storefront
            .serve(listener, async move {
                let _ = rx.await;
            })
            .await
            .expect("serve");
    });
    Running {
        addr,
        manager,
        database,
        client: Client::builder(TokioExecutor::new()).build_http(),
        _shutdown: tx,
    }
}

impl Running {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) async fn request(&self, method: Method, path: &str, json: Option<&str>) -> Reply {
        let mut request = Request::builder().method(method).uri(self.url(path));
        if json.is_some() {
            request = request.header("content-type", "application/json");
        }
        let body = Full::new(Bytes::from(json.unwrap_or("").to_string()));
        let request = request.body(body).expect("request");
        let response = tokio::time::timeout(Duration::from_secs(20), self.client.request(request))
            .await
            .unwrap_or_else(|_| panic!("{path}: no answer within 20 s"))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, None).await
    }

    pub(crate) async fn put_json(&self, path: &str, json: &str) -> Reply {
        self.request(Method::PUT, path, Some(json)).await
    }

    pub(crate) async fn dashboard(&self) -> Dashboard {
        let reply = self.get("/admin/caches.json").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
    }
}

impl Running {
    /// Waits (up to 5 s) until the response cache has stored `n` responses since start.
    ///
    /// The response cache stores a page after streaming it to the client, so a client
    /// that asks again at once may find the first request's flight still open and be
    /// answered from it (`x-cache: HIT`, counted as a coalesced miss). Tests that
    /// check counters wait for the store instead, as a person at a terminal would.
    pub(crate) async fn wait_for_stored_pages(&self, n: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stored = self.dashboard().await.http.stored;
            if stored >= n {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the response cache stored {stored} pages, not {n}, within 5 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// The figures of cache `name` in `dashboard`.
pub(crate) fn cache<'d>(dashboard: &'d Dashboard, name: &str) -> &'d storefront::CacheFigures {
    dashboard
        .caches
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            let names: Vec<&str> = dashboard.caches.iter().map(|c| c.name.as_str()).collect();
            panic!("no cache `{name}` on the dashboard; it has {names:?}")
        })
}

/// The ids of the product cards in a page, in order.
pub(crate) fn card_ids(html: &str) -> Vec<i32> {
    html.split("<li class=\"card\" data-product=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect()
}
