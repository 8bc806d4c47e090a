//! [`ResponseCache`] (the handle: layers, purges, statistics) and its builder.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use http::{HeaderMap, HeaderName, Method, Request, Uri};
use partcache::flight::Flights;
use partcache::{
    AnyCache, CacheBuilder, CacheConfig, CacheKey, CacheManager, CacheValue, NearCache,
};
use partcache_tower::backlog::{Backlog, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES};

use super::entry::{CachedEntry, TagKeys};
use super::key::{RequestKey, normalize_host, request_host};
use super::layer::ResponseCacheLayer;
use super::policy::RoutePolicy;
use super::shared::{Config, Shared};
use super::stats::{Counters, ResponseCacheStats};

/// Default largest body stored: larger ones stream through uncached.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The name the cache gives itself in `Cache-Status` unless told otherwise.
pub const DEFAULT_CACHE_STATUS_NAME: &str = "partcache";

/// Default store timeout: past it a read or write gives up and the origin answers.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(250);

/// Default time a background refresh (`stale-while-revalidate`) may take: past it the
/// refresh is given up, so that the requests waiting for it ask the origin themselves.
pub const DEFAULT_REFRESH_TIMEOUT: Duration = Duration::from_secs(30);

/// Unkeyed request headers that frameworks commonly let override the host, scheme,
/// path or method an application sees. A response to a request carrying one could
/// reflect it, and a shared cache would then hand that to every client (web cache
/// poisoning), so such requests bypass the cache unless the header is keyed
/// ([`ResponseCacheBuilder::key_header`]) or allowed
/// ([`ResponseCacheBuilder::allow_unkeyed_header`]).
pub const DEFAULT_BYPASS_HEADERS: [&str; 12] = [
    "forwarded",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-scheme",
    "x-forwarded-port",
    "x-forwarded-prefix",
    "x-host",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

#[doc = include_str!("../../docs/response_cache.md")]
///
/// See the [crate docs](crate) for the rules it applies.
#[derive(Clone)]
pub struct ResponseCache {
    pub(crate) inner: Arc<Shared>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("responses", &self.inner.responses)
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// A builder of the response cache `name` of `manager`: its responses are kept in
    /// the manager's cache `name`, and its tag index (what [`ResponseCache::purge_tag`]
    /// and [`ResponseCache::purge_prefix`] read) in the cache `<name>:tags`, on
    /// whatever store the manager uses (every process on one Redis deployment shares
    /// them). Those caches take their settings from the manager's configuration
    /// (`[caches.<name>]`, `[caches."<name>:tags"]`, `[defaults]`), then from
    /// [`ResponseCacheBuilder::max_entries`], [`ResponseCacheBuilder::partitions`],
    /// [`ResponseCacheBuilder::cache_config`] and
    /// [`ResponseCacheBuilder::tag_index_config`].
    ///
    /// Nothing is opened until [`ResponseCacheBuilder::build`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(&manager, "http")
    ///     .max_entries(50_000)
    ///     .default_ttl(Duration::from_secs(30))
    ///     .build()
    ///     .await?;
    /// assert_eq!(cache.name(), "http");
    /// assert_eq!(manager.cache_names().len(), 2); // `http` and `http:tags`
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub fn builder(manager: &CacheManager, name: impl Into<String>) -> ResponseCacheBuilder {
        ResponseCacheBuilder {
            manager: manager.clone(),
            name: name.into(),
            responses: CacheConfig::default(),
            tags: CacheConfig::default(),
            config: Config {
                default_ttl: None,
                routes: Vec::new(),
                methods: vec![Method::GET, Method::HEAD],
                ignored_params: Vec::new(),
                keyed_headers: Vec::new(),
                bypass_headers: DEFAULT_BYPASS_HEADERS
                    .iter()
                    .map(|h| HeaderName::from_static(h))
                    .collect(),
                tag_header: HeaderName::from_static("cache-tag"),
                max_body_bytes: DEFAULT_MAX_BODY_BYTES,
                store_timeout: DEFAULT_STORE_TIMEOUT,
                refresh_timeout: DEFAULT_REFRESH_TIMEOUT,
                store_set_cookie: false,
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                stale_retention: Duration::from_secs(60),
                max_keys_per_tag: 10_000,
                max_pending: DEFAULT_MAX_PENDING,
                max_pending_bytes: DEFAULT_MAX_PENDING_BYTES,
                cache_status: Some(DEFAULT_CACHE_STATUS_NAME.to_string()),
                host: None,
                tracked_prefixes: Vec::new(),
            },
        }
    }

    /// The tower layer, for `Router::layer`, `MethodRouter::route_layer` or any
    /// `Service<http::Request<B>>`. Cheap (an `Arc` clone); every layer of one
    /// `ResponseCache` shares its entries, misses in flight and counters, so one
    /// route's miss waits for another route's identical request. A layer may carry its
    /// route's own freshness ([`ResponseCacheLayer::ttl`] and the other settings).
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
    ///     .route("/", get(|| async { "home" }))
    ///     .route("/prices", get(|| async { "live" })
    ///         .route_layer(cache.layer().ttl(Duration::from_secs(2))))
    ///     .layer(cache.layer());
    /// # let _ = app;
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub fn layer(&self) -> ResponseCacheLayer {
        ResponseCacheLayer::new(self.inner.clone())
    }

    /// Removes the GET and HEAD responses of an absolute URL
    /// (`http://example.com/products/42?x=1`); returns how many entries went away.
    /// Every variant (`Vary`) goes with them. The query is normalized as requests'
    /// are. Keyed headers, if configured, are taken as absent.
    ///
    /// **Concurrency.** Misses of the resource in flight are detached first: a
    /// response the origin gave before the purge is sent to its requests but not
    /// stored, so the purge cannot be undone by a request already under way. Other
    /// resources are untouched. On Redis the removal is seen by every instance.
    ///
    /// **Cost.** One multi-key removal (per partition on a Redis cluster).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(&manager, "http").build().await?;
    /// assert_eq!(cache.purge_url("http://shop.example/products/42?b=2&a=1").await?, 0);
    /// assert!(cache.purge_url("/products/42").await.is_err()); // no host
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`partcache::Error::Rejected`] for a string that is not an absolute URL; the
    /// store's error (a timeout, an unreachable node) when the removal failed, in which
    /// case some entries may remain: retry.
    pub async fn purge_url(&self, url: &str) -> partcache::Result<u64> {
        let uri: Uri = url
            .parse()
            .map_err(|e| partcache::Error::Rejected(format!("purge URL `{url}`: {e}")))?;
        let host = uri
            .authority()
            .map(|a| normalize_host(a.as_str()))
            .ok_or_else(|| partcache::Error::Rejected(format!("purge URL `{url}` has no host")))?;
        let keys = self.inner.resource_keys(&host, &uri, &HeaderMap::new());
        self.inner.invalidate(&keys).await
    }

    /// Removes the entry under `key` (as [`ResponseCache::key_for`] gives it; the
    /// variants of a `Vary` resource become unreachable with its primary key, as a
    /// new index starts a new generation of variant keys); returns whether there was
    /// one. Misses of that resource in flight are detached first (see
    /// [`ResponseCache::purge_url`]). Cost: one removal.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(&manager, "http").build().await?;
    /// let request = http::Request::get("http://shop.example/a?x=1").body(()).unwrap();
    /// let key = cache.key_for(&request).expect("cacheable");
    /// assert!(!cache.purge_key(&key).await?); // nothing stored yet
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// The store's error when the removal failed.
    pub async fn purge_key(&self, key: &str) -> partcache::Result<bool> {
        Ok(self.inner.invalidate(&[key.to_string()]).await? > 0)
    }

    /// Removes every response that carried `tag` in the tag header
    /// ([`ResponseCacheBuilder::tag_header`], `cache-tag` by default); returns how
    /// many entries went away.
    ///
    /// The tag index (the cache `<name>:tags`) lists the keys stored under each tag,
    /// at most [`ResponseCacheBuilder::max_keys_per_tag`]; the list is taken and
    /// removed atomically, so two concurrent purges of one tag remove each response
    /// once. Every miss in flight is detached (its response may carry the tag).
    /// Cost: one read-and-remove of the list, one multi-key removal.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(&manager, "http").build().await?;
    /// assert_eq!(cache.purge_tag("product:42").await?, 0);
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// The store's error when the tag index or the removal failed.
    pub async fn purge_tag(&self, tag: &str) -> partcache::Result<u64> {
        self.inner.purge_tag(tag).await
    }

    /// Removes the GET and HEAD responses of a path (`/products/42?x=1`, every
    /// variant) on the host given by [`ResponseCacheBuilder::host`]; an absolute URL
    /// is taken as [`ResponseCache::purge_url`] takes it. Returns how many entries
    /// went away. Concurrency and cost as [`ResponseCache::purge_url`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(&manager, "http")
    ///     .host("shop.example")
    ///     .build()
    ///     .await?;
    /// assert_eq!(cache.purge_path("/products/42").await?, 0);
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`partcache::Error::Config`] for a path when no host was given to the builder;
    /// [`partcache::Error::Rejected`] for a string that is not a path or URL; the
    /// store's error when the removal failed.
    pub async fn purge_path(&self, path: &str) -> partcache::Result<u64> {
        if !path.starts_with('/') {
            return self.purge_url(path).await;
        }
        let Some(host) = &self.inner.config.host else {
            return Err(partcache::Error::Config(format!(
                "purge_path(`{path}`) needs the host: give it with ResponseCacheBuilder::host \
                 (or purge an absolute URL with purge_url)"
            )));
        };
        let uri: Uri = path
            .parse()
            .map_err(|e| partcache::Error::Rejected(format!("purge path `{path}`: {e}")))?;
        let keys = self.inner.resource_keys(host, &uri, &HeaderMap::new());
        self.inner.invalidate(&keys).await
    }

    /// Removes every response whose path is `prefix` or below it (`/notes` covers
    /// `/notes?tag=a` and `/notes/42`, not `/notesx`), with every query and variant,
    /// on every host, or on one when `prefix` is an absolute URL
    /// (`http://shop.example/notes`). Returns how many entries went away.
    ///
    /// The prefix must be tracked ([`ResponseCacheBuilder::track_prefix`], or named
    /// by a route's [`RoutePolicy::invalidates_prefix`]): responses under it are listed
    /// in the tag index as they are stored (a store write more per response).
    ///
    /// **Concurrency.** Misses in flight under the prefix are detached first; the
    /// list is updated atomically, so a response stored meanwhile is either removed
    /// or listed for the next purge. **Cost.** One entry-processor call on the list,
    /// one multi-key removal.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(&manager, "http")
    ///     .track_prefix("/notes")
    ///     .build()
    ///     .await?;
    /// assert_eq!(cache.purge_prefix("/notes").await?, 0);
    /// assert!(cache.purge_prefix("/other").await.is_err()); // not tracked
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// [`partcache::Error::Config`] for a prefix that is not tracked;
    /// [`partcache::Error::Rejected`] for a string that is neither a path nor an
    /// absolute URL; the store's error when the list or the removal failed.
    pub async fn purge_prefix(&self, prefix: &str) -> partcache::Result<u64> {
        if prefix.starts_with('/') {
            return self.inner.purge_prefix(None, prefix).await;
        }
        let uri: Uri = prefix
            .parse()
            .map_err(|e| partcache::Error::Rejected(format!("purge prefix `{prefix}`: {e}")))?;
        let host = uri
            .authority()
            .map(|a| normalize_host(a.as_str()))
            .ok_or_else(|| {
                partcache::Error::Rejected(format!(
                    "purge prefix `{prefix}` is neither a path nor an absolute URL"
                ))
            })?;
        self.inner.purge_prefix(Some(&host), uri.path()).await
    }

    /// The primary key a request is cached under (`None` when the request has no
    /// host). Variants of a resource that `Vary` live under longer keys that start
    /// with this one. Pure computation: no store call.
    pub fn key_for<B>(&self, request: &Request<B>) -> Option<String> {
        let host = request_host(request.uri(), request.headers())?;
        let config = &self.inner.config;
        Some(
            RequestKey::new(
                request.method(),
                &host,
                request.uri(),
                request.headers(),
                config.params_for(request.uri().path()),
                &config.keyed_headers,
            )
            .primary,
        )
    }

    /// A snapshot of the counters: requests by outcome, store writes, fail-open
    /// events, purges and the pending store writes. A few atomic loads, no store
    /// call; counters are read one by one, so a snapshot taken under load may be off
    /// by the requests finishing meanwhile. See [`ResponseCacheStats`] for how these
    /// relate to the store's own [`CacheStats`](partcache::CacheStats).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(&manager, "http").build().await?;
    /// let json = serde_json::to_string(&cache.stats()).unwrap();
    /// assert!(json.starts_with(r#"{"hits":0,"misses":0,"bypasses":0"#));
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub fn stats(&self) -> ResponseCacheStats {
        self.inner.counters.snapshot(&self.inner.backlog)
    }

    /// The name given to [`ResponseCache::builder`]: the name of the cache holding
    /// the responses (the tag index is `<name>:tags`).
    pub fn name(&self) -> &str {
        self.inner.responses.name()
    }

    /// The cache holding the responses, without its types: its name, the store's
    /// own statistics ([`CacheStats`](partcache::CacheStats), see
    /// [`ResponseCacheStats`] for how they relate), its length and its store's
    /// circuit breakers.
    pub fn responses(&self) -> &dyn AnyCache {
        &self.inner.responses
    }

    /// The cache holding the tag index, without its types.
    pub fn tag_index(&self) -> &dyn AnyCache {
        &self.inner.tags
    }

    /// Removes every stored response and the whole tag index, and detaches every miss
    /// in progress (its response would predate the clear). Statistics are kept.
    ///
    /// Cost: one clear of each of the two caches (on a Redis store, a scan of every
    /// partition).
    ///
    /// # Errors
    ///
    /// The store's error when it fails or cannot be reached; entries may then be left.
    pub async fn clear(&self) -> partcache::Result<()> {
        self.inner.flights.cancel_all();
        self.inner.responses.clear().await?;
        self.inner.tags.clear().await
    }

    /// Runs the stores' pending housekeeping now (the embedded store applies
    /// evictions lazily), so that [`AnyCache::len`] on [`ResponseCache::responses`]
    /// is exact. Useful in tests.
    ///
    /// # Errors
    ///
    /// The store's error when it fails.
    pub async fn run_pending_tasks(&self) -> partcache::Result<()> {
        self.inner.responses.run_pending_tasks().await?;
        self.inner.tags.run_pending_tasks().await
    }
}

/// Builds a [`ResponseCache`]; one method per setting. From [`ResponseCache::builder`].
pub struct ResponseCacheBuilder {
    manager: CacheManager,
    name: String,
    responses: CacheConfig,
    tags: CacheConfig,
    config: Config,
}

impl std::fmt::Debug for ResponseCacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCacheBuilder")
            .field("name", &self.name)
            .field("responses", &self.responses)
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

impl ResponseCacheBuilder {
    /// The most responses kept (the cache `name`'s `max_entries`; variants count one
    /// each, a resource's Vary index one more). Beyond it the store evicts.
    pub fn max_entries(mut self, max: u64) -> Self {
        self.responses.max_entries = Some(max);
        self
    }

    /// Partitions of the responses' cache on a partitioned (Redis cluster) store
    /// (default 231, at least 3); ignored by the embedded store.
    pub fn partitions(mut self, partitions: u16) -> Self {
        self.responses.partitions = Some(partitions);
        self
    }

    /// A near cache (local copies of hot responses) in front of a remote store.
    pub fn near_cache(mut self, near: NearCache) -> Self {
        self.responses.near_cache = Some(near);
        self
    }

    /// Settings of the cache holding the responses, over those of the manager's
    /// configuration (set fields win). Every [`CacheConfig`] field applies, e.g. an
    /// `expiry` bounding how long any response is kept whatever its freshness, except
    /// `max_weight`, which needs a weigher the response cache does not set.
    pub fn cache_config(mut self, config: CacheConfig) -> Self {
        self.responses = merge(config, self.responses);
        self
    }

    /// Settings of the cache `<name>:tags` holding the tag index, as
    /// [`cache_config`](Self::cache_config) for the responses.
    pub fn tag_index_config(mut self, config: CacheConfig) -> Self {
        self.tags = merge(config, self.tags);
        self
    }

    /// Freshness for storable responses whose origin gives none (no `s-maxage`,
    /// `max-age` or `Expires`). Default: none, so only RFC 9111's heuristic (a tenth of
    /// the time since `Last-Modified`) applies. Whole seconds.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.config.default_ttl = Some(ttl);
        self
    }

    /// Overrides caching for paths under `prefix` (`/products` covers `/products` and
    /// `/products/42`, not `/productsx`); the longest matching prefix wins.
    pub fn route(mut self, prefix: impl Into<String>, policy: RoutePolicy) -> Self {
        self.config.routes.push((prefix.into(), policy));
        self
    }

    /// The methods whose responses are cached (default GET and HEAD). Unsafe methods
    /// listed here are still never cached.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.config.methods = methods.into_iter().filter(Method::is_safe).collect();
        self
    }

    /// Query parameters left out of the key (and out of the request the origin gets,
    /// so it cannot reflect them): tracking parameters such as `utm_source`.
    pub fn ignore_query_params<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config
            .ignored_params
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// Makes a request header part of every key (e.g. `x-forwarded-proto` behind a
    /// TLS-terminating proxy). A keyed header no longer makes requests bypass.
    pub fn key_header(mut self, name: HeaderName) -> Self {
        self.config.bypass_headers.retain(|h| *h != name);
        self.config.keyed_headers.push(name);
        self
    }

    /// Makes requests carrying `name` bypass the cache (see [`DEFAULT_BYPASS_HEADERS`],
    /// which are on the list from the start).
    pub fn bypass_header(mut self, name: HeaderName) -> Self {
        self.config.bypass_headers.push(name);
        self
    }

    /// Lets requests carrying `name` (one of [`DEFAULT_BYPASS_HEADERS`]) use the cache
    /// although the header is not keyed: only when a trusted proxy in front sets it
    /// and the application's responses cannot depend on it.
    pub fn allow_unkeyed_header(mut self, name: HeaderName) -> Self {
        self.config.bypass_headers.retain(|h| *h != name);
        self
    }

    /// The response header carrying purge tags (default `cache-tag`; `surrogate-key`
    /// is the other common one). It is always removed before a response leaves.
    pub fn tag_header(mut self, name: HeaderName) -> Self {
        self.config.tag_header = name;
        self
    }

    /// Most keys remembered per tag (default 10 000); the oldest go first.
    pub fn max_keys_per_tag(mut self, max: usize) -> Self {
        self.config.max_keys_per_tag = max.max(1);
        self
    }

    /// Most store writes and stale-while-revalidate refreshes left running after their
    /// responses were sent (default [`DEFAULT_MAX_PENDING`]). A response that finds
    /// the limit reached is sent as usual but not stored, and counted in
    /// `stores_dropped` of [`ResponseCacheStats::backlog`] (and the
    /// `partcache_background_dropped_total` metric): a flood of unique URLs costs at
    /// most this many tasks.
    pub fn max_pending_stores(mut self, max: usize) -> Self {
        self.config.max_pending = max;
        self
    }

    /// Most bytes (bodies, headers and keys) the pending store writes hold together
    /// (default [`DEFAULT_MAX_PENDING_BYTES`]); past it responses are not stored, as
    /// with [`max_pending_stores`](Self::max_pending_stores).
    pub fn max_pending_store_bytes(mut self, max: usize) -> Self {
        self.config.max_pending_bytes = max;
        self
    }

    /// Largest body stored (default [`DEFAULT_MAX_BODY_BYTES`]). Larger bodies stream
    /// through uncached; at most this many bytes are ever buffered per response.
    pub fn max_body_bytes(mut self, limit: usize) -> Self {
        self.config.max_body_bytes = limit;
        self
    }

    /// How long a remote store may take per call before the cache gives up on it and
    /// the origin answers (default [`DEFAULT_STORE_TIMEOUT`]).
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// How long a background refresh of a stale response (`stale-while-revalidate`)
    /// may take, origin and store together (default [`DEFAULT_REFRESH_TIMEOUT`]).
    /// No client waits on a refresh, so no client's timeout or disconnect ends one:
    /// without this bound an origin that never answered it would hold the response's
    /// key (requests past the stale window wait for the refresh) and a pending-store
    /// slot for ever. A refresh given up on is logged and counted in
    /// [`ResponseCacheStats::refreshes_abandoned`](super::ResponseCacheStats); the next
    /// request for the key asks the origin itself.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(&manager, "http")
    ///     .stale_while_revalidate(Duration::from_secs(30))
    ///     .refresh_timeout(Duration::from_secs(5))
    ///     .build()
    ///     .await?;
    /// assert_eq!(cache.stats().refreshes_abandoned, 0);
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
    pub fn refresh_timeout(mut self, timeout: Duration) -> Self {
        self.config.refresh_timeout = timeout;
        self
    }

    /// Store responses that set cookies (default: no). Their `Set-Cookie` is removed
    /// from the stored copy, so only the client whose request reached the origin
    /// gets the cookie.
    pub fn store_set_cookie(mut self, store: bool) -> Self {
        self.config.store_set_cookie = store;
        self
    }

    /// Serve responses this long past their freshness while one background request
    /// refreshes them, when the origin does not say (`stale-while-revalidate`).
    pub fn stale_while_revalidate(mut self, window: Duration) -> Self {
        self.config.stale_while_revalidate = window;
        self
    }

    /// Serve responses this long past their freshness when the origin fails or
    /// answers 5xx, when the origin does not say (`stale-if-error`).
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.config.stale_if_error = window;
        self
    }

    /// How long stale responses that carry a validator (`ETag`, `Last-Modified`) are
    /// kept, so that a conditional request can refresh them (default 60 s).
    pub fn stale_retention(mut self, retention: Duration) -> Self {
        self.config.stale_retention = retention;
        self
    }

    /// The name this cache gives itself in the `Cache-Status` header (RFC 9211) of
    /// every response (default [`DEFAULT_CACHE_STATUS_NAME`]). The header says whether
    /// the response came from the cache (`hit`), why the request went to the origin
    /// (`fwd=uri-miss|vary-miss|stale|request|bypass|method`, `fwd-status`), the
    /// freshness left (`ttl`, negative once stale), whether the response was `stored`
    /// or `collapsed` into another request's, and with `detail` why it was not
    /// stored or why the cache was bypassed. The crate README lists every `detail`.
    pub fn cache_status_name(mut self, name: impl Into<String>) -> Self {
        self.config.cache_status = Some(name.into());
        self
    }

    /// The host of the service, for paths given without one
    /// ([`ResponseCache::purge_path`]).
    pub fn host(mut self, host: impl AsRef<str>) -> Self {
        self.config.host = Some(normalize_host(host.as_ref()));
        self
    }

    /// Lists the responses under a path prefix in the tag index as they are stored,
    /// so that [`ResponseCache::purge_prefix`] can remove them all. Prefixes named by
    /// a route's [`RoutePolicy::invalidates_prefix`] are tracked without this call.
    /// A tracked prefix holds at most [`max_keys_per_tag`](Self::max_keys_per_tag)
    /// responses: past that, the oldest leaves the cache, so that a purge never
    /// misses one.
    pub fn track_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.tracked_prefixes.push(prefix.into());
        self
    }

    /// Sends no `Cache-Status` header (`x-cache` stays).
    pub fn without_cache_status(mut self) -> Self {
        self.config.cache_status = None;
        self
    }

    /// Opens the caches (see [`ResponseCache::builder`]) and returns the response
    /// cache.
    ///
    /// Cost: on the embedded store, nothing leaves the process; on a remote store the
    /// first build of a name makes one round trip per cache (see
    /// [`CacheBuilder::build`]), and an unreachable store does not fail it (the cache
    /// serves from the origin, fail-open, until the store answers).
    ///
    /// # Errors
    ///
    /// [`partcache::Error::Config`] for settings the store refuses, or for a name
    /// already built by this manager with other settings or types;
    /// [`partcache::Error::Mismatch`] for a store holding the cache with another
    /// layout (partition count, codec).
    pub async fn build(mut self) -> partcache::Result<ResponseCache> {
        let responses = configured(
            self.manager.cache::<String, CachedEntry>(&self.name),
            &self.responses,
        )
        .build()
        .await?;
        let tags = configured(
            self.manager
                .cache::<String, TagKeys>(&format!("{}:tags", self.name)),
            &self.tags,
        )
        .build()
        .await?;
        let local = responses.raw_store().is_none();
        let declared: Vec<String> = self
            .config
            .routes
            .iter()
            .flat_map(|(_, policy)| policy.invalidates_prefixes.iter().cloned())
            .collect();
        let tracked = &mut self.config.tracked_prefixes;
        tracked.extend(declared);
        tracked.sort();
        tracked.dedup();
        let backlog = Arc::new(Backlog::new(
            responses.name(),
            self.config.max_pending,
            self.config.max_pending_bytes,
        ));
        Ok(ResponseCache {
            inner: Arc::new(Shared {
                backlog,
                writes: AtomicU64::new(0),
                responses,
                tags,
                config: self.config,
                flights: Arc::new(Flights::new()),
                counters: Counters::default(),
                local,
            }),
        })
    }
}

/// `over`'s fields where set, else `under`'s.
fn merge(over: CacheConfig, under: CacheConfig) -> CacheConfig {
    CacheConfig {
        expiry: over.expiry.or(under.expiry),
        max_idle: over.max_idle.or(under.max_idle),
        max_entries: over.max_entries.or(under.max_entries),
        max_weight: over.max_weight.or(under.max_weight),
        codec: over.codec.or(under.codec),
        partitions: over.partitions.or(under.partitions),
        hashing_rules: over.hashing_rules.or(under.hashing_rules),
        max_value_bytes: over.max_value_bytes.or(under.max_value_bytes),
        event_capacity: over.event_capacity.or(under.event_capacity),
        publish_events: over.publish_events.or(under.publish_events),
        near_cache: over.near_cache.or(under.near_cache),
        lease_ttl: over.lease_ttl.or(under.lease_ttl),
    }
}

/// The cache builder with the settings made in code (the manager's configuration
/// already applied by [`CacheManager::cache`]).
fn configured<K: CacheKey, V: CacheValue>(
    mut builder: CacheBuilder<K, V>,
    config: &CacheConfig,
) -> CacheBuilder<K, V> {
    if let Some(expiry) = config.expiry {
        builder = builder.expiry(expiry);
    }
    if let Some(idle) = config.max_idle {
        builder = builder.max_idle(idle);
    }
    if let Some(max) = config.max_entries {
        builder = builder.max_entries(max);
    }
    if let Some(codec) = config.codec {
        builder = builder.codec(codec);
    }
    if let Some(partitions) = config.partitions {
        builder = builder.partitions(partitions);
    }
    if let Some(rules) = config.hashing_rules.clone() {
        builder = builder.hashing_rules(rules);
    }
    if let Some(limit) = config.max_value_bytes {
        builder = builder.max_value_bytes(limit);
    }
    if let Some(capacity) = config.event_capacity {
        builder = builder.event_capacity(capacity);
    }
    if let Some(publish) = config.publish_events {
        builder = builder.publish_events(publish);
    }
    if let Some(near) = config.near_cache {
        builder = builder.near_cache(near);
    }
    if let Some(ttl) = config.lease_ttl {
        builder = builder.lease_ttl(ttl);
    }
    builder
}
