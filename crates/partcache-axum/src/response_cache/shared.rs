//! The state every layer and handle of one [`ResponseCache`](super::ResponseCache)
//! shares: its settings, its stores, its misses in flight and its counters, with the
//! store operations (fail-open reads and writes, purges, invalidations) that the
//! handle and the service both use.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, Method, Uri};
use partcache::adapter::FailOpen;
use partcache::flight::{Flight, Flights};
use partcache::{Cache, HeldLease};
use partcache_tower::backlog::{Admitted, Backlog};

use super::entry::{CachedEntry, EntryKind, TagKeys, VaryIndex};
use super::key::{ParamFilter, RequestKey, key_under_prefix, path_of, under_prefix, variant_key};
use super::policy::RoutePolicy;
use super::stats::Counters;

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
    pub(crate) refresh_timeout: Duration,
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

/// The adapter's name in fail-open log lines.
const ADAPTER: &str = "partcache-axum";

/// The state behind every handle and layer of one response cache.
pub(crate) struct Shared {
    pub(crate) responses: Cache<String, CachedEntry>,
    pub(crate) tags: Cache<String, TagKeys>,
    pub(crate) config: Config,
    pub(crate) flights: Arc<Flights<String, Arc<CachedEntry>>>,
    pub(crate) counters: Counters,
    /// The local store answers without I/O: no timeout is needed around it.
    pub(crate) local: bool,
    /// Bounds the store writes and refreshes still running after their answer.
    pub(crate) backlog: Arc<Backlog>,
    /// Store writes finished (counted whatever their outcome): a miss that finds it
    /// unchanged since its read knows no flight stored anything in between.
    pub(crate) writes: AtomicU64,
}

/// The part of a [`Shared::store`] call left to await.
pub(crate) type StoreLater<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The failure a store call ended with (already logged and counted).
pub(crate) struct StoreFailed;

/// The lease of a miss's key (see `partcache::flight`): its response is stored under
/// it, and refused if another instance's unsafe request or purge removed the key
/// while the origin answered. Dropped unused (an error, a response not stored, a
/// request future dropped mid-way), it ends the lease at once, so that the other
/// instances waiting for it go on.
pub(crate) type Lease = HeldLease<String, CachedEntry>;

impl Shared {
    /// Where this cache calls its store: failures are logged as the `partcache-axum`
    /// adapter's, counted in [`ResponseCacheStats`](super::ResponseCacheStats), and
    /// never the request's; a remote store's calls give up after the store timeout
    /// (the local store answers without I/O: no timer for it).
    pub(crate) fn fail_open(&self) -> FailOpen<'_> {
        FailOpen::new(ADAPTER, self.responses.name())
            .timeout_opt((!self.local).then_some(self.config.store_timeout))
            .counters(&self.counters.cache)
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = partcache::Result<T>>,
    ) -> Result<T, StoreFailed> {
        self.fail_open().call(what, call).await.ok_or(StoreFailed)
    }

    /// A local store call made on its first poll (see [`ready`]), its failure logged
    /// and counted as [`bounded`](Self::bounded) does (the local store needs no
    /// timeout); `None` when it is still pending.
    fn local_now<T, F: Future<Output = partcache::Result<T>>>(
        &self,
        what: &'static str,
        make: impl FnOnce() -> F,
    ) -> Option<Result<T, StoreFailed>> {
        let result = ready(make)?;
        Some(result.map_err(|error| {
            self.fail_open().failed(what, &error);
            StoreFailed
        }))
    }

    /// Reads an entry; `Err` when the store failed (the caller bypasses the cache).
    ///
    /// The local store answers on the first poll: its read runs here, so the future of
    /// the caller does not hold the store call's (large) future across its awaits. A
    /// remote store's call is boxed, and so is a local read still pending at its first
    /// poll (one with a read-through loader, which this cache's own caches never have),
    /// made again: a read changes nothing.
    pub(crate) async fn read(&self, key: &String) -> Result<Option<Arc<CachedEntry>>, StoreFailed> {
        if self.local
            && let Some(found) = self.local_now("get", || self.responses.get(key))
        {
            return found;
        }
        let boxed = Box::pin(self.bounded("get", self.responses.get(key)));
        boxed.await
    }

    /// [`read`](Self::read) made in place: `None` unless the store is the local one
    /// and answered at once (when it did not, nothing was read).
    pub(crate) fn read_now(
        &self,
        key: &String,
    ) -> Option<Result<Option<Arc<CachedEntry>>, StoreFailed>> {
        if !self.local {
            return None;
        }
        self.local_now("get", || self.responses.get(key))
    }

    /// Stores a response (and its Vary index and tags) beside the request that produced
    /// it: the flight, if any, stays joinable until the write ends. On the local store
    /// a plain response's write runs before this returns (it does no I/O, and a task per
    /// miss cost more than the write); on a remote store it runs in a task of its own.
    /// Either way it must fit in the backlog, or it is not made (and counted as dropped).
    ///
    /// What is left to await, if anything: a local write with a Vary index, tags or
    /// tracked prefixes (or a put the store did not make at once). Returned boxed, so
    /// that the future of a miss carries no store call of its own (it is polled on
    /// every miss, and its size is allocated and copied on every miss).
    #[must_use = "the write is made when the returned future is awaited"]
    pub(crate) fn store(
        self: &Arc<Self>,
        key: RequestKey,
        entry: Arc<CachedEntry>,
        keep_for: Duration,
        flight: Option<Flight<String, Arc<CachedEntry>>>,
        lease: Option<Lease>,
    ) -> Option<StoreLater<'_>> {
        let stored = entry.as_response()?;
        let admitted = self.backlog.admit(stored.weight() + key.weight())?;
        if !self.local {
            let inner = self.clone();
            tokio::spawn(async move {
                inner.write(key, entry, keep_for, flight, lease).await;
                drop(admitted);
            });
            return None;
        }
        if stored.vary.is_empty()
            && stored.tags.is_empty()
            && self.config.tracked_prefixes.is_empty()
            && !flight.as_ref().is_some_and(Flight::is_cancelled)
            && lease.is_none()
        {
            // A plain response: one put, made on the first poll (see `read`). A put
            // still pending then has not reached the store (only a writer's key lock
            // makes it wait, and this cache has no writer): it is made again, boxed.
            let put = || {
                self.responses
                    .put_with_ttl(key.primary.clone(), entry.clone(), keep_for)
            };
            if let Some(put) = self.local_now("put", put) {
                let stored =
                    put.is_ok() && !self.cancelled_meanwhile(&key.primary, flight.as_ref());
                self.put_done(stored, flight, admitted);
                return None;
            }
            return Some(Box::pin(async move {
                let put = self
                    .responses
                    .put_with_ttl(key.primary.clone(), entry, keep_for);
                let put = self.bounded("put", put).await;
                let stored =
                    put.is_ok() && !self.cancelled_meanwhile(&key.primary, flight.as_ref());
                self.put_done(stored, flight, admitted);
            }));
        }
        Some(Box::pin(async move {
            self.write(key, entry, keep_for, flight, lease).await;
            drop(admitted);
        }))
    }

    /// Whether an invalidation detached `flight` while its response was being put under
    /// `key`, in which case the put is undone. The check before the put leaves a window:
    /// an invalidation that cancels the flight and removes the key between that check
    /// and the put would otherwise leave the older response stored after it. Checked
    /// after the put, a cancel that came first is seen here, and one that comes later
    /// is followed by its removal. (Undoing may remove a newer flight's response put
    /// meanwhile: a miss later, never a stale hit.)
    fn cancelled_meanwhile(
        &self,
        key: &String,
        flight: Option<&Flight<String, Arc<CachedEntry>>>,
    ) -> bool {
        if !flight.is_some_and(Flight::is_cancelled) {
            return false;
        }
        if self
            .local_now("remove cancelled put", || self.responses.remove(key))
            .is_none()
        {
            // Not made on the first poll (as a put, see `store`): made in a task.
            let (responses, key) = (self.responses.clone(), key.clone());
            tokio::spawn(async move { responses.remove(&key).await });
        }
        true
    }

    /// The end of a plain local put: counted, then the flight ends (after the write
    /// count moved: see [`Shared::writes`]) and the backlog gives its room back.
    fn put_done(
        &self,
        stored: bool,
        flight: Option<Flight<String, Arc<CachedEntry>>>,
        admitted: Admitted,
    ) {
        if stored {
            self.counters.cache.stored.incr();
        }
        self.writes.fetch_add(1, Ordering::AcqRel);
        drop(flight);
        drop(admitted);
    }

    async fn write(
        &self,
        key: RequestKey,
        entry: Arc<CachedEntry>,
        keep_for: Duration,
        flight: Option<Flight<String, Arc<CachedEntry>>>,
        lease: Option<Lease>,
    ) {
        self.write_entry(key, entry, keep_for, flight.as_ref(), lease)
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
        mut lease: Option<Lease>,
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
        let tags = &inner.tags;
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
        // Under the lease when it is the key's (a variant stored under another key
        // than its flight's is not covered): the store refuses it if another instance
        // removed the key since the origin call began.
        // A lease whose wait found a response that this request could not use (a
        // hit) guards nothing: the response is put as without one.
        if let Some(lease) =
            lease.take_if(|l| l.key() == &storage_key && !l.is_unleased() && l.hit().is_none())
        {
            // Under the store timeout; a timeout drops the lease, which ends it.
            let put = async { Ok(lease.store(entry.clone(), Some(keep_for)).await) };
            if matches!(inner.bounded("put", put).await, Ok(true)) {
                inner.counters.cache.stored.incr();
            }
            return;
        }
        drop(lease);
        let put = inner
            .responses
            .put_with_ttl(storage_key.clone(), entry.clone(), keep_for);
        if inner.bounded("put", put).await.is_err() {
            return;
        }
        if cancelled() {
            // Detached while the put was on its way (see `cancelled_meanwhile`).
            let remove = inner.responses.remove(&storage_key);
            let _ = inner.bounded("remove cancelled put", remove).await;
            return;
        }
        inner.counters.cache.stored.incr();
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
            let expires_at = now.checked_add(keep_for).unwrap_or(now);
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
        let tags = &self.tags;
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
        let tags = &self.tags;
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

    /// Removes every response that carried `tag`, after detaching every miss in
    /// progress: a miss's tags are known only once its response is in, so any of them
    /// may carry the tag (whether or not the tag has entries yet).
    pub(crate) async fn purge_tag(&self, tag: &str) -> partcache::Result<u64> {
        self.flights.cancel_all();
        let Some(keys) = self.tags.get_and_remove(&tag.to_string()).await? else {
            return Ok(0);
        };
        self.remove(&keys.keys).await
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
        self.remove(keys).await
    }

    /// Removes entries by key, counted as invalidated (the caller detached the misses
    /// in progress its change concerns).
    async fn remove(&self, keys: &[String]) -> partcache::Result<u64> {
        let removed = self.responses.remove_all_keys(keys).await?;
        self.counters.invalidated.add(removed);
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

/// The output of the future `make` makes, if it has one at its first poll. A call that
/// the local store answers in place runs here, its future on this stack frame rather
/// than inside the caller's (an async caller holding it would carry its size across
/// every await).
fn ready<F: Future>(make: impl FnOnce() -> F) -> Option<F::Output> {
    let future = std::pin::pin!(make());
    match future.poll(&mut std::task::Context::from_waker(std::task::Waker::noop())) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

/// The tag-index entry listing a tracked prefix's responses. Tags from a tag header
/// are split on whitespace, so none can name this one.
fn prefix_tag(prefix: &str) -> String {
    format!("path prefix {prefix}")
}

fn random_nonce() -> u64 {
    fastrand::u64(..)
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

#[cfg(test)]
mod cancelled_put_tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use http::{HeaderMap, Method, StatusCode};
    use partcache::CacheManager;
    use partcache::flight::Joined;

    use crate::ResponseCache;
    use crate::response_cache::entry::{CachedEntry, Served, StoredResponse};

    /// A put whose flight an invalidation detached while it was made (after the check
    /// before it) is undone: the invalidation's removal may have come first.
    #[tokio::test]
    async fn a_put_detached_meanwhile_is_undone() {
        let manager = CacheManager::from_url("memory://").expect("manager");
        let cache = ResponseCache::builder(&manager, "cancelled-put")
            .build()
            .await
            .expect("cache");
        let shared = &cache.inner;
        let key = "GET|h|/p".to_string();
        let Joined::Leader(flight) = shared.flights.join(&key) else {
            panic!("the first join leads");
        };
        let entry = Arc::new(CachedEntry::response(Box::new(StoredResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: bytes::Bytes::from_static(b"old"),
            method: Method::GET,
            ttl_override: None,
            stored_at: SystemTime::now(),
            initial_age: Duration::ZERO,
            lifetime: Duration::from_secs(60),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
            tags: Vec::new(),
            vary: Vec::new(),
            served: Served::default(),
        })));
        assert!(!shared.cancelled_meanwhile(&key, Some(&flight)));
        // The invalidation's removal came before the put; its cancel is seen after it.
        shared.flights.cancel(&key);
        shared.responses.put(key.clone(), entry).await.expect("put");
        assert!(shared.cancelled_meanwhile(&key, Some(&flight)));
        assert!(shared.responses.get(&key).await.expect("get").is_none());
    }
}
