//! axum glue: the purge endpoints and the statistics endpoint of a
//! [`ResponseCache`], ready to mount on a `Router`.

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use http::StatusCode;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};

use crate::ResponseCache;

impl ResponseCache {
    /// An axum `Router` of purge endpoints, to `nest` under an administration path
    /// behind the application's own authentication. Each endpoint takes its target
    /// as the plain-text request body, and accepts `POST` only (any other method is
    /// a `405`):
    ///
    /// | Route | Body | Calls |
    /// |---|---|---|
    /// | `POST /url` | `http://shop.example/products/42?page=2` | [`ResponseCache::purge_url`] |
    /// | `POST /path` | `/products/42` | [`ResponseCache::purge_path`] |
    /// | `POST /prefix` | `/products` or `http://shop.example/products` | [`ResponseCache::purge_prefix`] |
    /// | `POST /key` | a key from [`ResponseCache::key_for`] | [`ResponseCache::purge_key`] |
    /// | `POST /tag` | `product:42` | [`ResponseCache::purge_tag`] |
    ///
    /// Answers: `200` with `{"purged":N}` (entries removed; `0` is a success:
    /// nothing was stored), `400` for a body that is empty or not a URL/path,
    /// `422` for a target this cache cannot purge as configured (a prefix not
    /// tracked, a path without [`ResponseCacheBuilder::host`](crate::ResponseCacheBuilder::host)),
    /// `503` when the store failed or timed out (nothing may have been removed:
    /// retry). Errors are `{"error":"…"}`. No answer is cacheable.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use axum::{Router, routing::get};
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    /// use tower::ServiceExt as _;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(&manager, "http").build().await?;
    /// let app: Router = Router::new()
    ///     .route("/products/{id}", get(|| async { "a product" }))
    ///     .layer(cache.layer())
    ///     // After the cache layer: the admin endpoints are never cached.
    ///     .nest("/admin/cache", cache.purge_router())
    ///     .route("/admin/cache/stats", cache.stats_route());
    ///
    /// let purge = http::Request::post("/admin/cache/tag")
    ///     .body(axum::body::Body::from("product:42"))
    ///     .unwrap();
    /// let reply = app.clone().oneshot(purge).await.unwrap();
    /// assert_eq!(reply.status(), 200);
    /// let wrong = http::Request::get("/admin/cache/tag").body(axum::body::Body::empty()).unwrap();
    /// assert_eq!(app.oneshot(wrong).await.unwrap().status(), 405);
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub fn purge_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let url = self.clone();
        let path = self.clone();
        let prefix = self.clone();
        let key = self.clone();
        let tag = self.clone();
        Router::new()
            .route(
                "/url",
                post(move |body: String| async move {
                    let Some(target) = target(&body) else {
                        return empty_target();
                    };
                    answer(url.purge_url(target).await)
                }),
            )
            .route(
                "/path",
                post(move |body: String| async move {
                    let Some(target) = target(&body) else {
                        return empty_target();
                    };
                    answer(path.purge_path(target).await)
                }),
            )
            .route(
                "/prefix",
                post(move |body: String| async move {
                    let Some(target) = target(&body) else {
                        return empty_target();
                    };
                    answer(prefix.purge_prefix(target).await)
                }),
            )
            .route(
                "/key",
                post(move |body: String| async move {
                    let Some(target) = target(&body) else {
                        return empty_target();
                    };
                    answer(key.purge_key(target).await.map(u64::from))
                }),
            )
            .route(
                "/tag",
                post(move |body: String| async move {
                    let Some(target) = target(&body) else {
                        return empty_target();
                    };
                    answer(tag.purge_tag(target).await)
                }),
            )
    }

    /// A `GET` route answering with [`ResponseCache::stats`] as JSON (one flat
    /// object, see [`ResponseCacheStats`](crate::ResponseCacheStats)), never
    /// cached: mount it with `Router::route("/admin/cache/stats", cache.stats_route())`.
    /// Reading the counters costs a few atomic loads; nothing touches the store.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use axum::Router;
    /// use http_body_util::BodyExt as _;
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    /// use tower::ServiceExt as _;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(&manager, "http").build().await?;
    /// let app: Router = Router::new().route("/stats", cache.stats_route());
    /// let reply = app
    ///     .oneshot(http::Request::get("/stats").body(axum::body::Body::empty()).unwrap())
    ///     .await
    ///     .unwrap();
    /// assert_eq!(reply.headers()["content-type"], "application/json");
    /// let body = reply.into_body().collect().await.unwrap().to_bytes();
    /// let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    /// assert_eq!(stats["hits"], 0);
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub fn stats_route<S>(&self) -> MethodRouter<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let cache = self.clone();
        get(move || async move {
            match serde_json::to_vec(&cache.stats()) {
                Ok(body) => json(StatusCode::OK, body),
                Err(error) => failure(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
            }
        })
    }
}

/// The trimmed body, unless it is empty.
fn target(body: &str) -> Option<&str> {
    Some(body.trim()).filter(|target| !target.is_empty())
}

fn empty_target() -> Response {
    failure(
        StatusCode::BAD_REQUEST,
        "the request body must name what to purge",
    )
}

/// The answer to a purge.
fn answer(result: partcache::Result<u64>) -> Response {
    match result {
        Ok(n) => json(StatusCode::OK, format!("{{\"purged\":{n}}}").into_bytes()),
        Err(error) => {
            let status = match &error {
                partcache::Error::Rejected(_) => StatusCode::BAD_REQUEST,
                partcache::Error::Config(_) => StatusCode::UNPROCESSABLE_ENTITY,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            failure(status, &error.to_string())
        }
    }
}

fn failure(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    json(status, body.into_bytes())
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}
