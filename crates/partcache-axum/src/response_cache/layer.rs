//! [`ResponseCache`] (the handle: layer, purges, statistics), its builder, and
//! [`ResponseCacheLayer`].

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, Method, Request, Uri};
use partcache::Cache;
use partcache_tower::backlog::{Backlog, DEFAULT_MAX_PENDING, DEFAULT_MAX_PENDING_BYTES};
use partcache_tower::coalesce::{Coalescer, Flight};
use tower_layer::Layer;

use super::entry::{CachedEntry, EntryKind, TagKeys, VaryIndex};
use super::key::{
    ParamFilter, RequestKey, key_under_prefix, normalize_host, path_of, request_host, under_prefix,
    variant_key,
};
use super::policy::RoutePolicy;
use super::service::ResponseCacheService;
use super::stats::{Counters, ResponseCacheStats, incr};

/// Default largest body stored: larger ones stream through uncached.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// The name the cache gives itself in `Cache-Status` unless told otherwise.
pub const DEFAULT_CACHE_STATUS_NAME: &str = "partcache";

/// Default store timeout: past it a read or write gives up and the origin answers.
pub const DEFAULT_STORE_TIMEOUT: Duration = Duration::from_millis(250);

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

pub(crate) struct Config {
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) routes: Vec<(String, RoutePolicy)>,
    pub(crate) methods: Vec<Method>,
    pub(crate) ignored_params: Vec<String>,
    pub(crate) keyed_headers: Vec<HeaderName>,
    pub(crate) bypass_headers: Vec<HeaderName>,
    pub(crate) tag_header: HeaderName,
    pub(crate) max_body_bytes: usize,
    pub(crate) store_timeout: Duration,
    pub(crate) store_set_cookie: bool,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) stale_retention: Duration,
    pub(crate) max_keys_per_tag: usize,
    pub(crate) max_pending: usize,
    pub(crate) max_pending_bytes: usize,
    /// The name this cache gives itself in `Cache-Status`; `None`: no header.
    pub(crate) cache_status: Option<String>,
    /// The host paths given without one are on ([`ResponseCache::purge_path`]).
    pub(crate) host: Option<String>,
    /// The path prefixes whose responses are listed in the tag index, so that
    /// [`ResponseCache::purge_prefix`] finds them.
    pub(crate) tracked_prefixes: Vec<String>,
}

impl Config {
    /// The policy of the longest route prefix matching `path` (at a segment boundary).
    pub(crate) fn route_for(&self, path: &str) -> Option<&RoutePolicy> {
        self.routes
            .iter()
            .filter(|(prefix, _)| under_prefix(path, prefix))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, policy)| policy)
    }

    /// The query parameters the key of a request for `path` keeps.
    pub(crate) fn params_for(&self, path: &str) -> ParamFilter<'_> {
        ParamFilter {
            ignored: &self.ignored_params,
            route: self.route_for(path).and_then(|r| r.query.as_ref()),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) responses: Cache<String, CachedEntry>,
    pub(crate) tags: Option<Cache<String, TagKeys>>,
    pub(crate) config: Config,
    pub(crate) flights: Arc<Coalescer<String, Arc<CachedEntry>>>,
    pub(crate) counters: Counters,
    /// The local store answers without I/O: no timeout is needed around it.
    pub(crate) local: bool,
    /// Bounds the store writes and refreshes still running after their answer.
    pub(crate) backlog: Arc<Backlog>,
    /// Store writes finished (counted whatever their outcome): a miss that finds it
    /// unchanged since its read knows no flight stored anything in between.
    pub(crate) writes: AtomicU64,
}

/// The failure a store call ended with (already logged and counted).
pub(crate) struct StoreFailed;

impl Inner {
    async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = partcache::Result<T>>,
    ) -> Result<T, StoreFailed> {
        let result = if self.local {
            call.await
        } else {
            match tokio::time::timeout(self.config.store_timeout, call).await {
                Ok(result) => result,
                Err(_) => {
                    incr(&self.counters.store_timeouts);
                    tracing::warn!(cache = %self.responses.name(), operation = what, timeout = ?self.config.store_timeout,
                        "response cache store timed out; serving from the origin");
                    return Err(StoreFailed);
                }
            }
        };
        result.map_err(|error| {
            incr(&self.counters.store_errors);
            // Fail-open: logged and counted, never the request's error.
            tracing::warn!(cache = %self.responses.name(), operation = what, %error,
                "response cache store failed; serving from the origin");
            StoreFailed
        })
    }

    /// Reads an entry; `Err` when the store failed (the caller bypasses the cache).
    pub(crate) async fn read(&self, key: &String) -> Result<Option<Arc<CachedEntry>>, StoreFailed> {
        self.bounded("get", self.responses.get(key)).await
    }

    /// Stores a response (and its Vary index and tags) beside the request that produced
    /// it: the flight, if any, stays joinable until the write ends. On the local store
    /// the write runs before this returns (it does no I/O, and a task per miss cost
    /// more than the write); on a remote store it runs in a task of its own. Either
    /// way it must fit in the backlog, or it is not made (and counted as dropped).
    pub(crate) async fn store(
        self: &Arc<Self>,
        key: RequestKey,
        entry: Arc<CachedEntry>,
        keep_for: Duration,
        flight: Option<Flight<String, Arc<CachedEntry>>>,
    ) {
        let Some(stored) = entry.as_response() else {
            return;
        };
        let Some(admitted) = self.backlog.admit(stored.weight() + key.weight()) else {
            return;
        };
        if self.local {
            self.write(key, entry, keep_for, flight).await;
            drop(admitted);
            return;
        }
        let inner = self.clone();
        tokio::spawn(async move {
            inner.write(key, entry, keep_for, flight).await;
            drop(admitted);
        });
    }

    async fn write(
        &self,
        key: RequestKey,
        entry: Arc<CachedEntry>,
        keep_for: Duration,
        flight: Option<Flight<String, Arc<CachedEntry>>>,
    ) {
        self.write_entry(key, entry, keep_for, flight.as_ref())
            .await;
        // Before the flight ends (the caller drops it): a request that joins no flight
        // afterwards sees this count changed and reads the store again.
        self.writes.fetch_add(1, Ordering::AcqRel);
        drop(flight);
    }

    async fn write_entry(
        &self,
        key: RequestKey,
        entry: Arc<CachedEntry>,
        keep_for: Duration,
        flight: Option<&Flight<String, Arc<CachedEntry>>>,
    ) {
        let inner = self;
        let cancelled = || flight.is_some_and(Flight::is_cancelled);
        if cancelled() {
            return;
        }
        let Some(stored) = entry.as_response() else {
            return;
        };
        let storage_key = if stored.vary.is_empty() {
            key.primary.clone()
        } else {
            let Ok(nonce) = inner.vary_index(&key.primary, &stored.vary, keep_for).await else {
                return;
            };
            variant_key(&key.primary, nonce, &stored.vary)
        };
        if let Some(tags) = &inner.tags {
            for tag in &stored.tags {
                let max = inner.config.max_keys_per_tag;
                let add = tags.invoke(tag, |entry| {
                    let mut keys = entry.value().cloned().unwrap_or_default();
                    if !keys.keys.contains(&storage_key) {
                        if keys.keys.len() >= max {
                            keys.keys.remove(0);
                        }
                        keys.keys.push(storage_key.clone());
                        entry.set_value(keys);
                    }
                });
                if inner.bounded("tag index update", add).await.is_err() {
                    // Untracked, it could not be purged by tag: better not stored.
                    return;
                }
            }
        }
        let path = path_of(&key.normalized_uri);
        for prefix in inner
            .config
            .tracked_prefixes
            .iter()
            .filter(|p| under_prefix(path, p))
        {
            if inner
                .track_under_prefix(prefix, &storage_key)
                .await
                .is_err()
            {
                // Untracked, a prefix purge would miss it: better not stored.
                return;
            }
        }
        // An invalidation since the origin answered: storing now would resurrect
        // what it removed.
        if cancelled() {
            return;
        }
        let put = inner
            .responses
            .put_with_ttl(storage_key, entry.clone(), keep_for);
        if inner.bounded("put", put).await.is_ok() {
            incr(&inner.counters.stored);
        }
    }

    /// The nonce of the resource's Vary index for these header names, creating (or
    /// replacing, when the names changed) the index and extending its life.
    ///
    /// One atomic read-modify-write (an entry processor): two variants stored at once
    /// must agree on one nonce. Read, then put, let the second writer replace the
    /// first's fresh index with a nonce of its own, so the first variant became
    /// unreachable the moment it was stored.
    async fn vary_index(
        &self,
        primary: &String,
        selected: &[(String, Vec<bytes::Bytes>)],
        keep_for: Duration,
    ) -> Result<u64, StoreFailed> {
        let names: Vec<String> = selected.iter().map(|(n, _)| n.clone()).collect();
        let fresh_nonce = random_nonce();
        let update = self.responses.invoke(primary, |entry| {
            let now = SystemTime::now();
            let expires_at = now + keep_for;
            let index = match entry.value().map(|e| &e.kind) {
                Some(EntryKind::Variants(index))
                    if index.names == names && index.expires_at > now =>
                {
                    VaryIndex {
                        names: names.clone(),
                        nonce: index.nonce,
                        expires_at: index.expires_at.max(expires_at),
                    }
                }
                _ => VaryIndex {
                    names: names.clone(),
                    nonce: fresh_nonce,
                    expires_at,
                },
            };
            let nonce = index.nonce;
            let ttl = index.expires_at.duration_since(now).unwrap_or(keep_for);
            entry.set_value_with_ttl(CachedEntry::variants(index), ttl);
            nonce
        });
        self.bounded("update vary index", update).await
    }

    /// Lists `storage_key` under the tracked `prefix` in the tag index. A full list
    /// drops its oldest key, and that response leaves the cache with it: a prefix
    /// purge must never miss a stored response.
    async fn track_under_prefix(
        &self,
        prefix: &str,
        storage_key: &String,
    ) -> Result<(), StoreFailed> {
        let Some(tags) = &self.tags else {
            return Ok(());
        };
        let max = self.config.max_keys_per_tag;
        let tag = prefix_tag(prefix);
        let add = tags.invoke(&tag, |entry| {
            let mut keys = entry.value().cloned().unwrap_or_default();
            if keys.keys.contains(storage_key) {
                return None;
            }
            let dropped = (keys.keys.len() >= max).then(|| keys.keys.remove(0));
            keys.keys.push(storage_key.clone());
            entry.set_value(keys);
            dropped
        });
        if let Some(dropped) = self.bounded("prefix index update", add).await? {
            let remove = self.responses.remove(&dropped);
            self.bounded("remove untracked response", remove).await?;
        }
        Ok(())
    }

    /// Removes every response under `prefix` (on `host`, or every host), and detaches
    /// the misses in progress under it.
    pub(crate) async fn purge_prefix(
        &self,
        host: Option<&str>,
        prefix: &str,
    ) -> partcache::Result<u64> {
        let Some(tags) = &self.tags else {
            return Err(partcache::Error::Config(
                "purge_prefix needs a tag index: give one with ResponseCacheBuilder::tag_index"
                    .into(),
            ));
        };
        if !self.config.tracked_prefixes.iter().any(|p| p == prefix) {
            return Err(partcache::Error::Config(format!(
                "prefix `{prefix}` is not tracked: declare it with \
                 ResponseCacheBuilder::track_prefix or RoutePolicy::invalidates_prefix"
            )));
        }
        // A response stored from now on under the prefix may predate the change.
        self.flights
            .cancel_matching(|flight| key_under_prefix(flight, host, prefix));
        let tag = prefix_tag(prefix);
        let take = tags.invoke(&tag, |entry| {
            let mut keys = entry.value().cloned().unwrap_or_default();
            let (taken, kept): (Vec<String>, Vec<String>) = keys
                .keys
                .drain(..)
                .partition(|k| key_under_prefix(k, host, prefix));
            if kept.is_empty() {
                entry.remove();
            } else if !taken.is_empty() {
                entry.set_value(TagKeys { keys: kept });
            }
            taken
        });
        let taken = take.await?;
        self.invalidate(&taken).await
    }

    /// Removes every response that carried `tag`.
    pub(crate) async fn purge_tag(&self, tag: &str) -> partcache::Result<u64> {
        let Some(tags) = &self.tags else {
            return Err(partcache::Error::Config(
                "purge_tag needs a tag index: give one with ResponseCacheBuilder::tag_index".into(),
            ));
        };
        let Some(keys) = tags.get_and_remove(&tag.to_string()).await? else {
            self.flights.cancel_all();
            return Ok(0);
        };
        self.invalidate(&keys.keys).await
    }

    /// Removes entries by key, after detaching every miss in progress (its response
    /// may predate the change that caused this invalidation).
    pub(crate) async fn invalidate(&self, keys: &[String]) -> partcache::Result<u64> {
        // Only the flights of these resources (a primary key, or one of its variants:
        // `key::variant_key`): another resource's response still being stored is not
        // made stale by this write. (Cancelling every flight made an unrelated write
        // drop a pending store, found by a CI-style run: the next request missed.)
        self.flights
            .cancel_matching(|flight| keys.iter().any(|k| is_flight_of(flight, k)));
        let removed = self.responses.remove_all_keys(keys).await?;
        self.counters
            .invalidated
            .fetch_add(removed, std::sync::atomic::Ordering::Relaxed);
        Ok(removed)
    }

    /// The GET and HEAD primary keys of `uri` on `host`, keyed headers from `headers`.
    pub(crate) fn resource_keys(&self, host: &str, uri: &Uri, headers: &HeaderMap) -> Vec<String> {
        let key = RequestKey::new(
            &Method::GET,
            host,
            uri,
            headers,
            self.config.params_for(uri.path()),
            &self.config.keyed_headers,
        );
        vec![key.with_method(&Method::HEAD), key.primary]
    }
}

/// The tag-index entry listing a tracked prefix's responses. Tags from a tag header
/// are split on whitespace, so none can name this one.
fn prefix_tag(prefix: &str) -> String {
    format!("path prefix {prefix}")
}

fn random_nonce() -> u64 {
    // std's RandomState is seeded randomly per process and per instance.
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    hasher.finish()
}

/// An RFC 9111 shared HTTP response cache over a [`partcache::Cache`]: the layer to put
/// in front of a router or service, and the purge operations. Cheap to clone.
///
/// See the [crate docs](crate) for the rules it applies and an example.
#[derive(Clone)]
pub struct ResponseCache {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("responses", &self.inner.responses)
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// A builder over `responses`, the cache that holds responses (any store).
    pub fn builder(responses: Cache<String, CachedEntry>) -> ResponseCacheBuilder {
        ResponseCacheBuilder {
            responses,
            tags: None,
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

    /// The tower layer (cheap to clone; every layer of one `ResponseCache` shares its
    /// entries, in-flight misses and counters).
    pub fn layer(&self) -> ResponseCacheLayer {
        ResponseCacheLayer {
            inner: self.inner.clone(),
        }
    }

    /// Removes the GET and HEAD responses of an absolute URL
    /// (`http://example.com/products/42?x=1`); returns how many entries went away.
    /// Every variant (`Vary`) goes with them. The query is normalized as requests'
    /// are. Keyed headers, if configured, are taken as absent.
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

    /// Removes the entry under `key` (as [`ResponseCache::key_for`] gives it); returns
    /// whether there was one.
    pub async fn purge_key(&self, key: &str) -> partcache::Result<bool> {
        Ok(self.inner.invalidate(&[key.to_string()]).await? > 0)
    }

    /// Removes every response that carried `tag` in the tag header; returns how many
    /// entries went away. Needs a tag index ([`ResponseCacheBuilder::tag_index`]).
    pub async fn purge_tag(&self, tag: &str) -> partcache::Result<u64> {
        self.inner.purge_tag(tag).await
    }

    /// Removes the GET and HEAD responses of a path (`/products/42?x=1`, every
    /// variant) on the host given by [`ResponseCacheBuilder::host`]; an absolute URL
    /// is taken as [`ResponseCache::purge_url`] takes it. Returns how many entries
    /// went away.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(manager.cache("http").build().await?)
    ///     .host("shop.example")
    ///     .build();
    /// assert_eq!(cache.purge_path("/products/42").await?, 0);
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
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
    /// in the tag index ([`ResponseCacheBuilder::tag_index`]) as they are stored.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use partcache::CacheManager;
    /// use partcache_axum::ResponseCache;
    ///
    /// let manager = CacheManager::from_url("memory://")?;
    /// let cache = ResponseCache::builder(manager.cache("http").build().await?)
    ///     .tag_index(manager.cache("http:tags").build().await?)
    ///     .track_prefix("/notes")
    ///     .build();
    /// assert_eq!(cache.purge_prefix("/notes").await?, 0);
    /// assert!(cache.purge_prefix("/other").await.is_err()); // not tracked
    /// # Ok::<(), partcache::Error>(()) }).unwrap();
    /// ```
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

    /// The primary key a request is cached under (`None` if it would bypass the cache
    /// for its host). Variants of a resource that `Vary` live under longer keys that
    /// start with this one.
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

    /// A snapshot of the counters.
    pub fn stats(&self) -> ResponseCacheStats {
        self.inner.counters.snapshot(&self.inner.backlog)
    }

    /// The cache holding the responses.
    pub fn responses(&self) -> &Cache<String, CachedEntry> {
        &self.inner.responses
    }
}

/// Builds a [`ResponseCache`]; one method per setting. From [`ResponseCache::builder`].
pub struct ResponseCacheBuilder {
    responses: Cache<String, CachedEntry>,
    tags: Option<Cache<String, TagKeys>>,
    config: Config,
}

impl std::fmt::Debug for ResponseCacheBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCacheBuilder")
            .field("responses", &self.responses)
            .finish_non_exhaustive()
    }
}

impl ResponseCacheBuilder {
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

    /// The cache holding the tag → keys index that [`ResponseCache::purge_tag`] uses.
    /// On a shared store every process sees the same index. Without one, tags are
    /// still stripped, but cannot be purged by.
    pub fn tag_index(mut self, tags: Cache<String, TagKeys>) -> Self {
        self.tags = Some(tags);
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
    /// [`ResponseCacheStats::stores_dropped`] (and the
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

    /// The response cache.
    pub fn build(mut self) -> ResponseCache {
        let local = self.responses.raw_store().is_none();
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
        if self.tags.is_none() && !tracked.is_empty() {
            tracing::warn!(cache = %self.responses.name(), prefixes = ?tracked,
                "path prefixes cannot be tracked without a tag index: purges by prefix will fail");
        }
        let backlog = Arc::new(Backlog::new(
            self.responses.name(),
            self.config.max_pending,
            self.config.max_pending_bytes,
        ));
        ResponseCache {
            inner: Arc::new(Inner {
                backlog,
                writes: AtomicU64::new(0),
                responses: self.responses,
                tags: self.tags,
                config: self.config,
                flights: Arc::new(Coalescer::new()),
                counters: Counters::default(),
                local,
            }),
        }
    }
}

/// The tower layer of a [`ResponseCache`]: `Router::layer(cache.layer())`, or around
/// any `Service<http::Request<B>>` whose responses have `Bytes` bodies.
#[derive(Clone)]
pub struct ResponseCacheLayer {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for ResponseCacheLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCacheLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for ResponseCacheLayer {
    type Service = ResponseCacheService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ResponseCacheService {
            inner,
            shared: self.inner.clone(),
        }
    }
}

/// Whether `flight` (a flight key: a primary key, or a variant key `<primary>|v:…`,
/// see `key::variant_key`) is one of resource `primary`'s.
fn is_flight_of(flight: &str, primary: &str) -> bool {
    flight
        .strip_prefix(primary)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with("|v:"))
}

#[cfg(test)]
mod flight_match_tests {
    use super::is_flight_of;

    #[test]
    fn a_resource_owns_its_primary_and_variant_flights_only() {
        let primary = "GET|h|/items/1";
        assert!(is_flight_of(primary, primary));
        assert!(is_flight_of(
            "GET|h|/items/1|v:0000000000000001:ab",
            primary
        ));
        // A longer path that starts with the same characters is another resource.
        assert!(!is_flight_of("GET|h|/items/10", primary));
        assert!(!is_flight_of(
            "GET|h|/items/10|v:0000000000000001:ab",
            primary
        ));
        assert!(!is_flight_of("GET|h|/other", primary));
    }
}
