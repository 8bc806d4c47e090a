//! [`ResponseCacheLayer`]: the tower layer of a [`ResponseCache`](super::ResponseCache),
//! for a whole router or service, or for one route with its own freshness.

use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::policy::RoutePolicy;
use super::service::ResponseCacheService;
use super::shared::Shared;

/// The tower layer of a [`ResponseCache`](super::ResponseCache), from
/// [`ResponseCache::layer`](super::ResponseCache::layer): around a whole axum
/// `Router` (`Router::layer`), one route (`MethodRouter::route_layer`), or any
/// `Service<http::Request<B>>` whose responses have `Bytes` bodies. Cheap to clone;
/// every layer of one cache shares its entries, misses in flight and counters.
///
/// A layer may carry a route's own freshness ([`ttl`](Self::ttl),
/// [`default_ttl`](Self::default_ttl), [`error_ttl`](Self::error_ttl),
/// [`bypass`](Self::bypass)) and invalidations ([`invalidates_tag`](Self::invalidates_tag)):
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use axum::{Router, routing::get};
/// use partcache::CacheManager;
/// use partcache_axum::ResponseCache;
///
/// let manager = CacheManager::from_url("memory://")?;
/// let cache = ResponseCache::builder(&manager, "http").build().await?;
/// let app: Router = Router::new()
///     .route("/products/{id}", get(|| async { "a product" })
///         .route_layer(cache.layer().ttl(Duration::from_secs(60))))
///     .route("/news", get(|| async { "today" })
///         .route_layer(cache.layer().default_ttl(Duration::from_secs(5))));
/// # let _ = app;
/// # Ok::<(), partcache::Error>(()) }).unwrap();
/// ```
///
/// Per-route layers and one `Router::layer(cache.layer())` of the same cache work
/// together: the outer layer caches, and a route's layer under it only hands its
/// settings up with the response (so its `bypass` means "never stored" there, since
/// the lookup happened before routing). The settings that shape keys (query
/// parameters, cookies) and prefix invalidations stay on the builder's
/// [`route`](super::ResponseCacheBuilder::route), so that purges by URL compute the
/// same keys as requests.
#[derive(Clone)]
pub struct ResponseCacheLayer {
    shared: Arc<Shared>,
    route: Option<Arc<RoutePolicy>>,
}

impl std::fmt::Debug for ResponseCacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCacheLayer")
            .field("cache", &self.shared.responses.name())
            .field("route", &self.route)
            .finish()
    }
}

impl ResponseCacheLayer {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        ResponseCacheLayer {
            shared,
            route: None,
        }
    }

    fn with_route(mut self, change: impl FnOnce(&mut RoutePolicy)) -> Self {
        let mut route = self.route.as_deref().cloned().unwrap_or_default();
        change(&mut route);
        self.route = Some(Arc::new(route));
        self
    }

    /// Storable responses through this layer are fresh for `ttl`, whatever freshness
    /// the origin gives (as [`RoutePolicy::ttl`]).
    pub fn ttl(self, ttl: Duration) -> Self {
        self.with_route(|route| route.ttl = Some(ttl))
    }

    /// Responses through this layer whose origin gives no freshness are fresh for
    /// `ttl` (as [`RoutePolicy::default_ttl`]).
    pub fn default_ttl(self, ttl: Duration) -> Self {
        self.with_route(|route| route.default_ttl = Some(ttl))
    }

    /// 404 and 410 answers through this layer are kept at most `ttl` (as
    /// [`RoutePolicy::error_ttl`]).
    pub fn error_ttl(self, ttl: Duration) -> Self {
        self.with_route(|route| route.error_ttl = Some(ttl))
    }

    /// Requests through this layer never use the cache (as [`RoutePolicy::bypass`]).
    pub fn bypass(self) -> Self {
        self.with_route(|route| route.bypass = true)
    }

    /// A successful unsafe request through this layer also purges `tag` (as
    /// [`RoutePolicy::invalidates_tag`]).
    pub fn invalidates_tag(self, tag: impl Into<String>) -> Self {
        let tag = tag.into();
        self.with_route(|route| route.invalidates_tags.push(tag))
    }
}

impl<S> Layer<S> for ResponseCacheLayer {
    type Service = ResponseCacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCacheService {
            inner,
            shared: self.shared.clone(),
            route: self.route.clone(),
        }
    }
}
