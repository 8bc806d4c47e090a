//! [`ResponseCacheService`]: how one request goes through the cache.
//!
//! 1. Unsafe methods go to the origin; a non-error answer invalidates the target URI
//!    and same-host `Location` / `Content-Location` (RFC 9111 §4.4).
//! 2. Requests the cache must not answer bypass it: other methods, bypassed routes,
//!    `Range`, a body on a GET, unkeyed headers that could poison a shared entry,
//!    a `Host` that disagrees with the URI, a store that fails or times out.
//!    (`only-if-cached` turns every trip to the origin into a `504`.)
//! 3. Lookup by primary key; a Vary index sends it on to the variant key. A `HEAD`
//!    is answered by a fresh stored `GET` first.
//! 4. Fresh → `HIT`. Stale within `stale-while-revalidate` → `STALE`, with one
//!    background revalidation. Otherwise revalidate now (a conditional request when
//!    the entry has a validator); a 304 refreshes the entry (`HIT`); a failing origin
//!    within `stale-if-error` gets the stale entry served (`STALE`). A `HEAD` the
//!    origin answers with a 200 updates or invalidates the stored `GET` (RFC 9111
//!    §4.3.5).
//! 5. Miss → the origin, once for all concurrent misses of a key; a storable response
//!    within the body limit is stored beside the reply (`MISS`); larger bodies stream
//!    through unbuffered.
//!
//! On the local store steps 1–4 wait for nothing: they run in `call` (`begin`, then
//! `next`). A fresh hit (or `only-if-cached`'s `504`) returns a ready future, without
//! the origin service (which stays ready for the next call) or a boxed future; a
//! request to the origin runs in one boxed future, and so does a stale answer whose
//! refresh is spawned when it is polled (`call` may run outside the runtime). On a
//! remote store the lookup runs in the boxed future (`read_then`).

use std::cell::Cell;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_cache_semantics::{AfterResponse, BeforeRequest};
use partcache::flight::{Flight, Joined};
use tower_service::Service;

use super::body::{BoxError, Buffered, CacheBody, read_limited};
use super::entry::{CachedEntry, EntryKind, StoredResponse};
use super::future::ResponseFuture;
use super::key::{
    ParamFilter, RequestKey, cookie_pairs, normalize_host, request_host, request_host_of,
    resolve_reference, same_variant, selected_values, strip_ignored, variant_key, with_normalized,
};
use super::policy::{
    CookieRule, Exchange, LayerRoute, NOT_MODIFIED_HEADERS, RequestView, ResponseView, RoutePolicy,
    StoreRules, has_request_directives, lowercase_request_directives, merge_not_modified,
    not_modified, only_if_cached, policy_of, same_representation, storable,
};
use super::shared::{Lease, Shared, StoreFailed};
use super::status::{CACHE_STATUS, Fwd, Label, Outcome, X_CACHE, ttl_seconds};

/// The service a [`ResponseCacheLayer`](super::ResponseCacheLayer) wraps around an
/// origin service.
pub struct ResponseCacheService<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared>,
    /// The settings of a per-route layer, if this is one.
    pub(crate) route: Option<Arc<RoutePolicy>>,
}

/// Marks a request a layer of this cache (the `Shared` at this address) has taken
/// in hand: a layer of the same cache further in passes it through, or two lookups
/// of one key would wait on each other's flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Handled(usize);

impl Handled {
    fn by(shared: &Shared) -> Self {
        Handled(std::ptr::from_ref(shared) as usize)
    }
}

/// Sends `request` to the origin past this cache: it carries the mark that makes a
/// route layer of this cache under this one stand aside and hand its settings up with
/// the response. Returns the response and the request's per-route settings: those a
/// route layer handed up, else those of the layer that caches.
async fn forward<S, ReqB, ResB>(
    shared: &Shared,
    inner: &mut S,
    mut request: Request<ReqB>,
) -> Result<(Response<ResB>, Option<LayerRoute>), S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    let requested = handing_over(shared, &mut request);
    let response = inner.call(request).await?;
    Ok(handed_up(response, requested))
}

/// The first half of [`forward`]: marks `request` as handled by this cache, and
/// returns the per-route settings it carries.
fn handing_over<ReqB>(shared: &Shared, request: &mut Request<ReqB>) -> Option<LayerRoute> {
    let requested = request.extensions().get::<LayerRoute>().cloned();
    request.extensions_mut().insert(Handled::by(shared));
    requested
}

/// The second half of [`forward`]: the response, with the settings a route layer
/// handed up, else those the request carried (`requested`).
fn handed_up<ResB>(
    mut response: Response<ResB>,
    requested: Option<LayerRoute>,
) -> (Response<ResB>, Option<LayerRoute>) {
    let layered = response
        .extensions_mut()
        .remove::<LayerRoute>()
        .or(requested);
    (response, layered)
}

impl<S: Clone> Clone for ResponseCacheService<S> {
    fn clone(&self) -> Self {
        ResponseCacheService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            route: self.route.clone(),
        }
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for ResponseCacheService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCacheService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for ResponseCacheService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<CacheBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        if request.extensions().get::<Handled>() == Some(&Handled::by(&self.shared)) {
            // An outer layer of this cache handles the request: this route's settings
            // go up with the response.
            let route = self.route.clone();
            let call = self.take_ready().call(request);
            return ResponseFuture::boxed(async move {
                let mut response = call.await?;
                if let Some(route) = route {
                    response.extensions_mut().insert(LayerRoute(route));
                }
                Ok(response.map(CacheBody::origin))
            });
        }
        if let Some(route) = &self.route {
            request.extensions_mut().insert(LayerRoute(route.clone()));
        }
        // A fresh hit on the local store is answered here: the origin service is not
        // used, so it stays ready for the next call, and nothing is boxed.
        let later = match begin(&self.shared, &mut request) {
            Begun::Answered(response) => return ResponseFuture::ready(response),
            Begun::Later(later) => later,
        };
        let inner = self.take_ready();
        let shared = self.shared.clone();
        match later {
            Later::Unsafe => {
                ResponseFuture::boxed(async move { write_through(&shared, inner, request).await })
            }
            Later::Pass(outcome) => {
                ResponseFuture::boxed(async move { pass(&shared, inner, request, outcome).await })
            }
            // The local store was read: what comes next is known now.
            Later::Keyed(Keyed {
                key,
                directives,
                cached_only,
                found: Some(found),
            }) => {
                match next(&shared, inner, request, key, directives, cached_only, found) {
                    Next::Answered(response) => ResponseFuture::ready(response),
                    Next::Stale(response, refresh) => ResponseFuture::boxed(async move {
                        tokio::spawn(refresh);
                        Ok(response)
                    }),
                    Next::Fetch(fetching) => fetching.start(shared),
                    Next::Pass(inner, request, outcome) => ResponseFuture::boxed(async move {
                        pass(&shared, inner, request, outcome).await
                    }),
                }
            }
            Later::Keyed(keyed) => ResponseFuture::boxed(read_then(shared, inner, request, keyed)),
        }
    }
}

impl<S: Clone> ResponseCacheService<S> {
    /// The ready service, for a request that goes to the origin (tower's rule for
    /// services used from a spawned or boxed future); its clone waits for the next
    /// `poll_ready`.
    fn take_ready(&mut self) -> S {
        let clone = self.inner.clone();
        std::mem::replace(&mut self.inner, clone)
    }
}

type Reply<B, E> = Result<Response<CacheBody<B>>, E>;

/// What [`begin`] made of a request.
enum Begun<B> {
    /// Answered without the origin: a fresh hit on the local store, or a `504` for
    /// `only-if-cached`.
    Answered(Response<CacheBody<B>>),
    /// The rest happens in [`next`], or in [`read_then`] on a remote store.
    Later(Later),
}

/// How a request goes on after [`begin`].
enum Later {
    /// An unsafe method: the origin, then the invalidations it causes.
    Unsafe,
    /// Past the cache.
    Pass(Outcome),
    /// Through the cache.
    Keyed(Keyed),
}

/// A request that uses the cache, with what [`begin`] found out.
struct Keyed {
    key: RequestKey,
    /// The request has its own cache directives ([`has_request_directives`]).
    directives: bool,
    /// `only-if-cached` (RFC 9111 §5.2.1.7): nothing may come from the origin.
    cached_only: bool,
    /// What the local store held, read in place (nothing in it was a fresh answer);
    /// `None` when the store is still to be read.
    found: Option<Result<Lookup, StoreFailed>>,
}

/// The steps of a request that wait for nothing: whether and how it uses the cache,
/// its key, and, on the local store (which answers in place), its lookup and a fresh
/// hit's response. A hit, the common answer, so needs neither the origin service nor
/// a boxed future.
fn begin<ReqB, ResB>(shared: &Shared, request: &mut Request<ReqB>) -> Begun<ResB>
where
    ReqB: Body,
{
    let config = &shared.config;
    if !request.method().is_safe() {
        return Begun::Later(Later::Unsafe);
    }
    let carried = Carried::of(request.headers(), &config.bypass_headers);
    // The request's own cache directives (most requests have none).
    let directives = carried.directives;
    let conditional = carried.conditional;
    // RFC 9111 §5.2.1.7: the client wants nothing from the origin.
    let cached_only = directives && only_if_cached(request.headers());
    // On the local store a hit needs no key of its own: it is built in the buffers
    // of an earlier one.
    let mut key = if shared.local {
        SPARE_KEY.try_with(Cell::take).unwrap_or_default()
    } else {
        RequestKey::default()
    };
    let outcome = match (
        request_host_of(request.uri(), carried.host),
        bypass_reason(shared, request, carried),
    ) {
        (Some(host), None) => {
            key.rebuild(
                request.method(),
                &host,
                request.uri(),
                request.headers(),
                config.params_for(request.uri().path()),
                &config.keyed_headers,
            );
            None
        }
        // No reason but no host: `Host` and the URI's authority disagree.
        (_, reason) => Some(reason.unwrap_or(Outcome::bypass("host"))),
    };
    match outcome {
        None => {}
        Some(_) if cached_only => return Begun::Answered(gateway_timeout(shared)),
        Some(outcome) => return Begun::Later(Later::Pass(outcome)),
    }
    let route = config.route_for(request.uri().path());
    let forwarded_params = ParamFilter {
        ignored: &config.ignored_params,
        route: route
            .filter(|r| !r.forward_unkeyed_params)
            .and_then(|r| r.query.as_ref()),
    };
    if !forwarded_params.keeps_all() {
        strip_ignored_params(request, forwarded_params);
    }
    if let Some(CookieRule::Key(names)) = route.map(|r| &r.cookies) {
        keep_only_cookies(request.headers_mut(), names);
    }
    let found = if shared.local {
        match read_in_place(shared, &key, request, directives, conditional) {
            InPlace::Hit(response) => {
                if key.weight() <= SPARE_KEY_BYTES {
                    let _ = SPARE_KEY.try_with(|spare| spare.set(key));
                }
                return Begun::Answered(response);
            }
            InPlace::Read(found) => Some(found),
            InPlace::Pending => None,
        }
    } else {
        None
    };
    Begun::Later(Later::Keyed(Keyed {
        key,
        directives,
        cached_only,
        found,
    }))
}

thread_local! {
    /// The key of this thread's latest fresh hit on a local store, whose buffers the
    /// next request's key is built in.
    static SPARE_KEY: Cell<RequestKey> = const {
        Cell::new(RequestKey {
            primary: String::new(),
            normalized_uri: String::new(),
        })
    };
}

/// The largest key whose buffers are kept for the next request.
const SPARE_KEY_BYTES: usize = 4096;

/// A lookup on the local store, made in place.
enum InPlace<B> {
    /// A fresh stored response answers the request.
    Hit(Response<CacheBody<B>>),
    /// What the store holds: nothing fresh for this request.
    Read(Result<Lookup, StoreFailed>),
    /// The store did not answer in place: the lookup is made again in [`read_then`].
    Pending,
}

fn read_in_place<ReqB, ResB>(
    shared: &Shared,
    key: &RequestKey,
    request: &Request<ReqB>,
    directives: bool,
    conditional: bool,
) -> InPlace<ResB> {
    // A HEAD is answered by a fresh stored GET (RFC 9110 §9.3.2: the same header
    // fields, no content) before its own entry is looked for.
    if request.method() == Method::HEAD {
        match lookup_now(shared, &key.with_method(&Method::GET), request.headers()) {
            None => return InPlace::Pending,
            Some(Ok(get)) => {
                if let Some(response) =
                    fresh_answer(shared, key, request, directives, conditional, &get)
                {
                    return InPlace::Hit(response);
                }
            }
            Some(Err(StoreFailed)) => {}
        }
    }
    let Some(found) = lookup_now(shared, &key.primary, request.headers()) else {
        return InPlace::Pending;
    };
    if let Ok(lookup) = &found
        && let Some(response) = fresh_answer(shared, key, request, directives, conditional, lookup)
    {
        return InPlace::Hit(response);
    }
    InPlace::Read(found)
}

/// [`read_in_place`] on a store that does not answer in place (never `Pending`).
async fn read_remote<ResB>(
    shared: &Shared,
    key: &RequestKey,
    request: &Request<()>,
    directives: bool,
) -> InPlace<ResB> {
    let conditional = has_conditions(request.headers());
    if request.method() == Method::HEAD
        && let Ok(get) = lookup(shared, &key.with_method(&Method::GET), request.headers()).await
        && let Some(response) = fresh_answer(shared, key, request, directives, conditional, &get)
    {
        return InPlace::Hit(response);
    }
    let found = lookup(shared, &key.primary, request.headers()).await;
    if let Ok(lookup) = &found
        && let Some(response) = fresh_answer(shared, key, request, directives, conditional, lookup)
    {
        return InPlace::Hit(response);
    }
    InPlace::Read(found)
}

/// The hit `lookup` gives `request`, if it found a stored response fresh for it.
fn fresh_answer<ReqB, ResB>(
    shared: &Shared,
    key: &RequestKey,
    request: &Request<ReqB>,
    directives: bool,
    conditional: bool,
    lookup: &Lookup,
) -> Option<Response<CacheBody<ResB>>> {
    let stored = lookup.entry.as_deref()?.as_response()?;
    let now = SystemTime::now();
    let age = stored.age(now);
    let fresh = if directives {
        fresh_for(stored, key, request, directives, now)
    } else {
        age < stored.lifetime
    };
    fresh.then(|| {
        fresh_hit(
            stored,
            request.headers(),
            conditional,
            request.method(),
            (now, age),
            shared,
        )
    })
}

/// A request whose store has still to be read (a remote one): the lookup, then what
/// [`next`] says.
async fn read_then<S, ReqB, ResB>(
    shared: Arc<Shared>,
    inner: S,
    request: Request<ReqB>,
    keyed: Keyed,
) -> Reply<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let Keyed {
        key,
        directives,
        cached_only,
        ..
    } = keyed;
    // The request without its body, which need not be `Sync`.
    let (parts, body) = request.into_parts();
    let head = Request::from_parts(parts, ());
    let read = read_remote(&shared, &key, &head, directives).await;
    let request = Request::from_parts(head.into_parts().0, body);
    let found = match read {
        InPlace::Hit(response) => return Ok(response),
        InPlace::Read(found) => found,
        InPlace::Pending => unreachable!("a remote lookup is awaited"),
    };
    // The paths to the origin are boxed futures: a hit, the common answer, then moves
    // and allocates only the small future of this function.
    match next(&shared, inner, request, key, directives, cached_only, found) {
        Next::Answered(response) => Ok(response),
        Next::Stale(response, refresh) => {
            tokio::spawn(refresh);
            Ok(response)
        }
        Next::Fetch(fetching) => {
            let boxed = Box::pin(fetching.run(&shared));
            boxed.await
        }
        Next::Pass(inner, request, outcome) => {
            let boxed = Box::pin(pass(&shared, inner, request, outcome));
            boxed.await
        }
    }
}

/// A stale-while-revalidate refresh, to spawn.
type Refresh = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a request whose lookup found nothing fresh for it does next.
enum Next<S, ReqB, B> {
    /// Answered now: `only-if-cached` with nothing usable.
    Answered(Response<CacheBody<B>>),
    /// A stale response within `stale-while-revalidate`, and the refresh to spawn (it
    /// does nothing when one is under way).
    Stale(Response<CacheBody<B>>, Refresh),
    /// To the origin through the cache.
    Fetch(Fetching<S, ReqB>),
    /// Past the cache (the store failed).
    Pass(S, Request<ReqB>, Outcome),
}

/// The arguments of [`fetch`].
struct Fetching<S, ReqB> {
    inner: S,
    request: Request<ReqB>,
    key: RequestKey,
    /// The variant key when the resource varies; `None`: the primary key.
    flight_key: Option<String>,
    stale: Option<Arc<CachedEntry>>,
    fwd: Fwd,
    writes_before: Option<u64>,
}

impl<S, ReqB> Fetching<S, ReqB> {
    async fn run<ResB>(self, shared: &Arc<Shared>) -> Reply<ResB, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqB: Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let joined = shared
            .flights
            .join(self.flight_key.as_ref().unwrap_or(&self.key.primary));
        fetch(
            shared.clone(),
            self.inner,
            self.request,
            self.key,
            (joined, self.flight_key),
            self.stale,
            self.fwd,
            self.writes_before,
        )
        .await
    }

    /// The response future of a request that goes to the origin through the cache,
    /// made where the local store's lookup was: one boxed future that joins the key's
    /// flight when first polled and, when nothing is left to look at before the origin
    /// call (the usual miss), runs that call directly.
    fn start<ResB>(self, shared: Arc<Shared>) -> ResponseFuture<ResB, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Send + 'static,
        ReqB: Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
        ResB::Error: Into<BoxError>,
    {
        let Fetching {
            inner,
            request,
            key,
            flight_key,
            stale,
            fwd,
            writes_before,
        } = self;
        // The flight is joined when the future is first polled, not here: a caller may
        // poll its calls' futures in any order (or drop them unpolled), and a future
        // waiting on a leader nobody polls yet would wait for ever.
        ResponseFuture::boxed(async move {
            let joined = shared
                .flights
                .join(flight_key.as_ref().unwrap_or(&key.primary));
            match joined {
                Joined::Leader(flight)
                    if shared.local
                        && !looks_again(&shared, stale.as_ref(), writes_before, &request) =>
                {
                    let (parts, body) = request.into_parts();
                    origin(
                        shared,
                        inner,
                        parts,
                        body,
                        key,
                        stale,
                        Some(flight),
                        fwd,
                        None,
                    )
                    .await
                }
                joined => {
                    fetch(
                        shared,
                        inner,
                        request,
                        key,
                        (joined, flight_key),
                        stale,
                        fwd,
                        writes_before,
                    )
                    .await
                }
            }
        })
    }
}

/// Whether the leader of a miss's flight reads the store again before calling the
/// origin ([`stored_meanwhile`]): a miss (no stale entry) without directives of its
/// own, when a write may have finished since its read. On the local store only this
/// cache writes: no write finished since the read means nothing new to find.
fn looks_again<ReqB>(
    shared: &Shared,
    stale: Option<&Arc<CachedEntry>>,
    writes_before: Option<u64>,
    request: &Request<ReqB>,
) -> bool {
    let written_since =
        !shared.local || writes_before.is_none_or(|w| shared.writes.load(Ordering::Acquire) != w);
    stale.is_none() && written_since && !has_request_directives(request.headers())
}

/// Decides what a request does after its lookup (`found`), when nothing stored was
/// fresh for it: a `504` for `only-if-cached`; a stale answer within
/// `stale-while-revalidate` with one background refresh; else the origin (a miss, or
/// a revalidation of the stale entry).
fn next<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    inner: S,
    request: Request<ReqB>,
    key: RequestKey,
    directives: bool,
    cached_only: bool,
    found: Result<Lookup, StoreFailed>,
) -> Next<S, ReqB, ResB>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let Ok(Lookup {
        flight_key,
        entry,
        fwd,
        writes_before,
    }) = found
    else {
        if cached_only {
            return Next::Answered(gateway_timeout(shared));
        }
        return Next::Pass(inner, request, Outcome::bypass("store-error"));
    };
    let stored = entry.as_deref().and_then(CachedEntry::as_response);
    let Some(stored) = stored else {
        if cached_only {
            return Next::Answered(gateway_timeout(shared));
        }
        if entry.is_none() {
            shared.counters.cache.misses.incr();
        }
        return Next::Fetch(Fetching {
            inner,
            request,
            key,
            flight_key,
            stale: None,
            fwd,
            writes_before: Some(writes_before),
        });
    };
    // Not fresh for this request (see `fresh_answer`).
    let now = SystemTime::now();
    if cached_only {
        return Next::Answered(gateway_timeout(shared));
    }
    if !directives && stored.within_stale_window(now, stored.stale_while_revalidate) {
        shared.counters.stale.incr();
        let outcome = Outcome::hit(ttl_seconds(stored.lifetime, stored.age(now)))
            .label(Label::Stale)
            .detail("stale-while-revalidate");
        let method = request.method().clone();
        let response = from_stored(stored, request.headers(), &method, now, shared, outcome);
        // One background refresh per key: a running flight means one is under way. The
        // flight is joined when the refresh starts (at the response future's first
        // poll), not here: a request of the key that waited on a leader its caller has
        // not polled yet would wait for ever (tower lets a caller poll its calls'
        // futures in any order).
        let flight_key = flight_key.unwrap_or_else(|| key.primary.clone());
        let shared = shared.clone();
        let entry = entry.clone();
        // Spawned when the response future is polled: `call` may run outside the
        // runtime. No client waits on it, so nothing but its own deadline ends it: past
        // the refresh timeout it is dropped, and with it its flight (the requests
        // waiting on it ask the origin themselves) and its pending-work slot.
        let refresh = Box::pin(async move {
            let Joined::Leader(flight) = shared.flights.join(&flight_key) else {
                return;
            };
            let Some(admitted) = shared.backlog.admit(0) else {
                return;
            };
            let timeout = shared.config.refresh_timeout;
            let refreshing = async {
                if let Some(refreshed) =
                    stored_meanwhile(&shared, &flight_key, request.headers()).await
                {
                    flight.complete(refreshed);
                    return;
                }
                let (parts, body) = request.into_parts();
                let _ = origin(
                    shared.clone(),
                    inner,
                    parts,
                    body,
                    key,
                    entry,
                    Some(flight),
                    Fwd::Stale,
                    None,
                )
                .await;
            };
            let mut refreshing = std::pin::pin!(refreshing);
            let given_up = tokio::time::timeout(timeout, refreshing.as_mut())
                .await
                .is_err();
            // The slot is given back and the refresh counted before its flight ends
            // (when `refreshing` is dropped, at the end of this block): the requests
            // that flight's end wakes see both.
            drop(admitted);
            if given_up {
                shared.counters.refreshes_abandoned.incr();
                tracing::warn!(
                    cache = shared.responses.name(),
                    key = %flight_key,
                    ?timeout,
                    "partcache-axum: a background refresh outlasted the refresh timeout; given up"
                );
            }
        }) as Refresh;
        return Next::Stale(response, refresh);
    }
    // Fresh for the cache, ruled out by the request's own directives: `fwd=request`.
    let fwd = if stored.is_fresh(now) {
        Fwd::Request
    } else {
        Fwd::Stale
    };
    Next::Fetch(Fetching {
        inner,
        request,
        key,
        flight_key,
        stale: entry.clone(),
        fwd,
        writes_before: None,
    })
}

/// Why a request does not use the cache, if it does not.
fn bypass_reason<B: Body>(
    shared: &Shared,
    request: &Request<B>,
    carried: Carried<'_>,
) -> Option<Outcome> {
    let config = &shared.config;
    if !config.methods.contains(request.method()) {
        return Some(Outcome::forwarded(Label::Bypass, Fwd::Method));
    }
    let layer = request.extensions().get::<LayerRoute>();
    let detail = if config
        .route_for(request.uri().path())
        .is_some_and(|r| r.bypass)
        || layer.is_some_and(|l| l.0.bypass)
    {
        "route"
    } else if carried.range {
        "range"
    } else if carried.unkeyed {
        "unkeyed-header"
    } else if carried.cookie
        && config
            .route_for(request.uri().path())
            .is_none_or(|r| r.cookies == CookieRule::Bypass)
    {
        // A response to a request with cookies may be built for that user (Varnish's
        // built-in policy passes them too), unless the route keys on or ignores them.
        "cookie"
    } else if !request.body().is_end_stream() {
        // A body on a GET is not part of the key, so it must not shape a shared answer.
        "request-body"
    } else {
        return None;
    };
    Some(Outcome::bypass(detail))
}

/// Which of the fields the cache asks about a request carries: its own cache
/// directives (`Cache-Control`, `Pragma`), `Range`, `Cookie`, and any of the bypass
/// names (unkeyed headers that could poison a shared entry).
#[derive(Debug, Clone, Copy, Default)]
struct Carried<'a> {
    directives: bool,
    range: bool,
    cookie: bool,
    unkeyed: bool,
    /// `If-None-Match` or `If-Modified-Since` ([`has_conditions`]).
    conditional: bool,
    /// The first `Host` field.
    host: Option<&'a HeaderValue>,
}

impl<'a> Carried<'a> {
    /// A request with few fields (API clients send three or four) is read in one pass
    /// over them; one with more, by a hash lookup per name asked about.
    fn of(headers: &'a HeaderMap, bypass: &[header::HeaderName]) -> Self {
        const FEW: usize = 8;
        if headers.keys_len() > FEW {
            return Carried {
                directives: has_request_directives(headers),
                range: headers.contains_key(header::RANGE),
                cookie: headers.contains_key(header::COOKIE),
                unkeyed: bypass.iter().any(|name| headers.contains_key(name)),
                conditional: has_conditions(headers),
                host: headers.get(header::HOST),
            };
        }
        let mut carried = Carried::default();
        for (name, value) in headers {
            if name == header::HOST {
                carried.host = carried.host.or(Some(value));
            } else if name == header::CACHE_CONTROL || name == header::PRAGMA {
                carried.directives = true;
            } else if name == header::RANGE {
                carried.range = true;
            } else if name == header::COOKIE {
                carried.cookie = true;
            } else if name == header::IF_NONE_MATCH || name == header::IF_MODIFIED_SINCE {
                carried.conditional = true;
            }
            if bypass.contains(name) {
                carried.unkeyed = true;
            }
        }
        carried
    }
}

/// What the store holds for a request.
struct Lookup {
    /// The key concurrent misses of this response share: the variant key when the
    /// resource varies, else `None` for the primary key (a hit needs none).
    flight_key: Option<String>,
    /// The stored response, if any.
    entry: Option<Arc<CachedEntry>>,
    /// Why the request goes forward if nothing usable was found.
    fwd: Fwd,
    /// [`Shared::writes`] before the store was read.
    writes_before: u64,
}

/// [`lookup`] on the local store, made in place: `None` when it did not answer at
/// once (then nothing was read: a read changes nothing, and is made again).
fn lookup_now(
    shared: &Shared,
    primary: &String,
    headers: &HeaderMap,
) -> Option<Result<Lookup, StoreFailed>> {
    let writes_before = shared.writes.load(Ordering::Acquire);
    let found = match shared.read_now(primary)? {
        Ok(found) => found,
        Err(failed) => return Some(Err(failed)),
    };
    let Some(found) = found else {
        return Some(Ok(Lookup {
            flight_key: None,
            entry: None,
            fwd: Fwd::UriMiss,
            writes_before,
        }));
    };
    let EntryKind::Variants(index) = &found.kind else {
        return Some(Ok(Lookup {
            flight_key: None,
            entry: Some(found),
            fwd: Fwd::UriMiss,
            writes_before,
        }));
    };
    let variant = variant_key(
        primary,
        index.nonce,
        &selected_values(headers, &index.names),
    );
    let entry = match shared.read_now(&variant)? {
        Ok(entry) => entry.filter(|e| e.as_response().is_some()),
        Err(failed) => return Some(Err(failed)),
    };
    Some(Ok(Lookup {
        flight_key: Some(variant),
        entry,
        fwd: Fwd::VaryMiss,
        writes_before,
    }))
}

/// Reads `primary` and, when it holds a Vary index, the variant `headers` select.
async fn lookup(
    shared: &Shared,
    primary: &String,
    headers: &HeaderMap,
) -> Result<Lookup, StoreFailed> {
    let writes_before = shared.writes.load(Ordering::Acquire);
    let Some(found) = shared.read(primary).await? else {
        return Ok(Lookup {
            flight_key: None,
            entry: None,
            fwd: Fwd::UriMiss,
            writes_before,
        });
    };
    match &found.kind {
        EntryKind::Response(_) => Ok(Lookup {
            flight_key: None,
            entry: Some(found),
            fwd: Fwd::UriMiss,
            writes_before,
        }),
        EntryKind::Variants(index) => {
            let variant = variant_key(
                primary,
                index.nonce,
                &selected_values(headers, &index.names),
            );
            let entry = shared
                .read(&variant)
                .await?
                .filter(|e| e.as_response().is_some());
            Ok(Lookup {
                flight_key: Some(variant),
                entry,
                fwd: Fwd::VaryMiss,
                writes_before,
            })
        }
    }
}

/// Whether `stored` may answer `request` without the origin: fresh, and fresh for the
/// request's own directives (`max-age`, `min-fresh`, `no-cache`, `max-stale`) when it
/// has any (`directives`: [`has_request_directives`] of the request).
fn fresh_for<B>(
    stored: &StoredResponse,
    key: &RequestKey,
    request: &Request<B>,
    directives: bool,
    now: SystemTime,
) -> bool {
    if !directives {
        return stored.is_fresh(now);
    }
    // Vary-selected headers in the normalized form the stored policy holds.
    let names: Vec<String> = stored.vary.iter().map(|(n, _)| n.clone()).collect();
    let headers = lowercase_request_directives(with_normalized(
        request.headers(),
        request.headers(),
        &names,
    ));
    let view = view_of(key, request.method(), &headers, request.uri());
    // A request's `max-stale` never outranks a response that must not be served
    // stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`: RFC 9111 §5.2.2.2).
    matches!(
        policy_of(stored, &view).before_request(&view, now),
        BeforeRequest::Fresh(_)
    ) && (!stored.must_revalidate || stored.is_fresh(now))
}

/// The answer to `only-if-cached` with nothing usable stored (RFC 9111 §5.2.1.7).
fn gateway_timeout<B>(shared: &Shared) -> Response<CacheBody<B>> {
    shared.counters.cache.misses.incr();
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    Outcome::forwarded(Label::Miss, Fwd::UriMiss)
        .detail("only-if-cached")
        .without_fwd()
        .apply(
            response.headers_mut(),
            shared.config.cache_status.as_deref(),
        );
    response
}

/// The fresh entry the store holds now for `flight_key`, if a request with `headers`
/// may use it. A request that read the store (a miss, or a stale entry) and then
/// became the leader of a flight asks this before calling the origin: a flight that
/// ended in between has stored its response by now (a flight lasts until its store
/// write is done), and calling the origin again would be a second call for one
/// change (a miss, or a stale-while-revalidate refresh, each made one origin call too
/// many under load without it).
async fn stored_meanwhile(
    shared: &Shared,
    flight_key: &String,
    headers: &HeaderMap,
) -> Option<Arc<CachedEntry>> {
    let entry = shared.read(flight_key).await.ok()??;
    let stored = entry.as_response()?;
    (stored.is_fresh(SystemTime::now()) && same_variant(headers, &stored.vary)).then_some(entry)
}

/// Sends a miss or a revalidation to the origin once for all concurrent callers of
/// its flight key (`joined`: this request's place in that flight). `writes_before` is
/// [`Shared::writes`] as the miss read the store.
#[allow(clippy::too_many_arguments)]
async fn fetch<S, ReqB, ResB>(
    shared: Arc<Shared>,
    inner: S,
    request: Request<ReqB>,
    key: RequestKey,
    (mut joined, flight_key): (Joined<String, Arc<CachedEntry>>, Option<String>),
    stale: Option<Arc<CachedEntry>>,
    fwd: Fwd,
    writes_before: Option<u64>,
) -> Reply<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let shared = &shared;
    let mut rejoins = 0;
    let flight = loop {
        let waiter = match joined {
            Joined::Leader(flight) => break Some(flight),
            Joined::Waiter(waiter) => waiter,
        };
        if let Some(entry) = waiter.wait().await
            && let Some(stored) = entry.as_response()
            && reusable_for(stored, &key, &request)
        {
            return Ok(coalesced(shared, &request, stored, fwd));
        }
        // The leader's response does not answer this request (another variant, or not
        // fresh enough for its own directives), or the leader went away: this request
        // asks the origin itself, in the key's flight again, so that an invalidation
        // meanwhile detaches its store as it does the leader's (outside a flight a
        // store could not be told). Each round waited for another leader's origin call;
        // past a few, the call goes out alone.
        if rejoins == MAX_REJOINS {
            break None;
        }
        rejoins += 1;
        joined = shared
            .flights
            .join(flight_key.as_ref().unwrap_or(&key.primary));
    };
    drop(flight_key);
    match flight {
        Some(flight) => {
            if looks_again(shared, stale.as_ref(), writes_before, &request)
                && let Some(entry) = stored_meanwhile(shared, flight.key(), request.headers()).await
                && let Some(stored) = entry.as_response()
            {
                flight.complete(entry.clone());
                return Ok(coalesced(shared, &request, stored, fwd));
            }
            // A miss, across instances: the key's lease. Another instance may have
            // stored the response meanwhile, or be asking the origin for it (this
            // waits for its response then).
            let lease = match stale {
                Some(_) => None,
                // The local store is one process's: its flight is all the collapsing
                // there is (and its store stays the synchronous fast path).
                None if shared.local => None,
                None => {
                    // Each ask gives up after the store timeout; waiting for another
                    // instance's response is not a store call (at most the lease time).
                    let lease = shared
                        .responses
                        .lease_within(flight.key(), shared.config.store_timeout)
                        .await;
                    if let Some(error) = lease.failure() {
                        shared.fail_open().failed_or_timed_out("lease", error);
                    }
                    if let Some(entry) = lease.hit()
                        && let Some(stored) = entry.as_response()
                        && reusable_for(stored, &key, &request)
                    {
                        flight.complete(entry.clone());
                        return Ok(coalesced(shared, &request, stored, fwd));
                    }
                    Some(lease)
                }
            };
            let (parts, body) = request.into_parts();
            origin(
                shared.clone(),
                inner,
                parts,
                body,
                key,
                stale,
                Some(flight),
                fwd,
                lease,
            )
            .await
        }
        None => {
            let (parts, body) = request.into_parts();
            origin(
                shared.clone(),
                inner,
                parts,
                body,
                key,
                stale,
                None,
                fwd,
                None,
            )
            .await
        }
    }
}

/// How many times a request whose leader's response did not answer it joins its
/// key's flight again before it asks the origin outside the flight ([`fetch`]).
const MAX_REJOINS: u32 = 8;

/// Whether a response another request fetched may answer `request` as if it came
/// from the store (RFC 9111 §4): its Vary-selected headers match, and it is fresh for
/// a shared cache, for this request's own directives too. A response that must be
/// revalidated (`no-cache`, `max-age=0`, `s-maxage=0`) is not: the request asks the
/// origin itself.
fn reusable_for<B>(stored: &StoredResponse, key: &RequestKey, request: &Request<B>) -> bool {
    same_variant(request.headers(), &stored.vary)
        && fresh_for(
            stored,
            key,
            request,
            has_request_directives(request.headers()),
            SystemTime::now(),
        )
}

/// A request answered by the cache layer with another request's response, without an
/// origin call of its own: a hit (as a hit on a busy object is in other shared caches),
/// counted as coalesced; `Cache-Status` says `collapsed`.
fn coalesced<ReqB, ResB>(
    shared: &Shared,
    request: &Request<ReqB>,
    stored: &StoredResponse,
    fwd: Fwd,
) -> Response<CacheBody<ResB>> {
    shared.counters.cache.coalesced.incr();
    let now = SystemTime::now();
    let outcome = Outcome::forwarded(Label::Hit, fwd)
        .fwd_status(stored.status)
        .ttl(ttl_seconds(stored.lifetime, stored.age(now)))
        .collapsed();
    from_stored(
        stored,
        request.headers(),
        request.method(),
        now,
        shared,
        outcome,
    )
}

/// Asks the origin (conditionally when `stale` has a validator) and stores what may
/// be stored (under `lease` when a miss took the key's lease).
#[allow(clippy::too_many_arguments)]
#[allow(clippy::manual_async_fn)] // see the comment on the block
fn origin<S, ReqB, ResB>(
    shared: Arc<Shared>,
    mut inner: S,
    mut parts: http::request::Parts,
    body: ReqB,
    key: RequestKey,
    stale: Option<Arc<CachedEntry>>,
    flight: Option<Flight<String, Arc<CachedEntry>>>,
    fwd: Fwd,
    lease: Option<Lease>,
) -> impl Future<Output = Reply<ResB, S::Error>> + Send + 'static
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    // A block rather than an `async fn`: the arguments are the future's own fields,
    // not copied again into locals of its body (which made every miss's future, allocated
    // and copied per miss, hundreds of bytes larger).
    async move {
        let shared = &shared;
        let client_headers = parts.headers.clone();
        // The cache wants a full response to store; the client's own conditions are
        // answered from it afterwards.
        let conditional = has_conditions(&parts.headers);
        let unconditional = conditional.then(|| {
            for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
                parts.headers.remove(name);
            }
            parts.headers.clone()
        });
        let request_headers = unconditional.as_ref().unwrap_or(&client_headers);
        let method = parts.method.clone();
        let stale_response = stale.as_deref().and_then(CachedEntry::as_response);
        if let Some(stored) = stale_response.filter(|s| s.has_validator()) {
            shared.counters.revalidations.incr();
            let view = view_of(&key, &method, request_headers, &parts.uri);
            if let BeforeRequest::Stale {
                request: conditional,
                ..
            } = policy_of(stored, &view).before_request(&view, SystemTime::now())
            {
                parts.headers = conditional.headers;
            }
        }
        let uri = parts.uri.clone();
        // `forward`, inline: a miss's future holds the origin's future alone here.
        let mut request = Request::from_parts(parts, body);
        let requested = handing_over(shared, &mut request);
        let sent = SystemTime::now();
        let result = match inner.call(request).await {
            Ok(response) => Ok(handed_up(response, requested)),
            Err(error) => Err(error),
        };
        let now = SystemTime::now();
        let exchange = Exchange {
            sent,
            received: now,
        };
        let usable_on_error =
            stale_response.filter(|s| s.within_stale_window(now, s.stale_if_error));
        // The stale response served because the origin failed (RFC 5861 §4).
        let serve_stale = |stored: &StoredResponse, status: Option<StatusCode>| {
            shared.counters.stale.incr();
            let mut outcome = Outcome::forwarded(Label::Stale, Fwd::Stale)
                .ttl(ttl_seconds(stored.lifetime, stored.age(now)))
                .detail("stale-if-error");
            outcome.fwd_status = status;
            from_stored(stored, &client_headers, &method, now, shared, outcome)
        };
        let (response, layered) = match result {
            Ok(forwarded) => forwarded,
            Err(error) => {
                if let Some(stored) = usable_on_error {
                    return Ok(serve_stale(stored, None));
                }
                return Err(error);
            }
        };
        let status = response.status();
        if status.is_server_error()
            && let Some(stored) = usable_on_error
        {
            return Ok(serve_stale(stored, Some(status)));
        }
        let view = view_of(&key, &method, request_headers, &uri);
        let route = shared.config.route_for(uri.path());
        let layered = layered.map(|l| l.0.layered(route));
        let rules = StoreRules {
            default_ttl: shared.config.default_ttl,
            route: layered.as_ref().or(route),
            store_set_cookie: shared.config.store_set_cookie,
            stale_while_revalidate: shared.config.stale_while_revalidate,
            stale_if_error: shared.config.stale_if_error,
            stale_retention: shared.config.stale_retention,
            tag_header: &shared.config.tag_header,
        };
        let forwarded = Outcome::forwarded(Label::Miss, fwd).fwd_status(status);
        if method == Method::HEAD && status == StatusCode::OK {
            // Boxed: only a HEAD's future carries it.
            let freshen = freshen_stored_get(
                shared,
                &key,
                (request_headers, &uri),
                response.headers(),
                &rules,
                exchange,
            );
            Box::pin(freshen).await;
        }

        if status == StatusCode::NOT_MODIFIED
            && let Some(stored) = stale_response
        {
            let answer = ResponseView {
                status,
                headers: response.headers(),
            };
            if !matches!(
                policy_of(stored, &view).after_response(&view, &answer, now),
                AfterResponse::NotModified(..)
            ) {
                // A 304 for validators we do not hold: the stored body is all we have.
                shared.counters.stale.incr();
                let outcome = forwarded
                    .label(Label::Stale)
                    .ttl(ttl_seconds(stored.lifetime, stored.age(now)))
                    .detail("unmatched-304");
                return Ok(from_stored(
                    stored,
                    &client_headers,
                    &method,
                    now,
                    shared,
                    outcome,
                ));
            }
            shared.counters.not_modified.incr();
            let mut merged = merge_not_modified(&stored.headers, response.headers());
            if !response.headers().contains_key(header::DATE) {
                // The stored `Date` would age the refreshed response by the time it was
                // stored (RFC 9111 §4.2.3): it gets the time of this 304 instead.
                merged.remove(header::DATE);
            }
            let refreshed = match storable(&view, stored.status, &merged, &rules, exchange) {
                Ok(refreshed) => refreshed,
                Err(reason) => {
                    // No longer storable: this answer uses the stored body one last time.
                    let mut refreshed = stored.clone();
                    refreshed.headers = merged;
                    shared.counters.cache.not_stored.incr();
                    let outcome = forwarded.detail(reason);
                    return Ok(from_stored(
                        &refreshed,
                        &client_headers,
                        &method,
                        now,
                        shared,
                        outcome,
                    ));
                }
            };
            let mut fresh = refreshed.response;
            fresh.body = stored.body.clone();
            // The answer is built from the refreshed response before it moves into the entry
            // (building it reads nothing the store changes).
            let outcome = forwarded
                .label(Label::Hit)
                .ttl(ttl_seconds(fresh.lifetime, fresh.age(now)))
                .stored();
            let answer = from_stored(&fresh, &client_headers, &method, now, shared, outcome);
            let entry = Arc::new(CachedEntry::response(fresh));
            if let Some(flight) = &flight {
                flight.complete(entry.clone());
            }
            if let Some(later) = shared.store(key, entry, refreshed.keep_for, flight, lease) {
                later.await;
            }
            shared.counters.cache.hits.incr();
            return Ok(answer);
        }

        let (mut parts, body) = response.into_parts();
        let judged = storable(&view, parts.status, &parts.headers, &rules, exchange);
        // Not used past this point: dropped now, so that the miss's future does not hold
        // them across the awaits below (their size is allocated and copied on every miss).
        drop(view);
        drop(layered);
        drop(uri);
        drop(unconditional);
        parts.headers.remove(&shared.config.tag_header);
        let limit = shared.config.max_body_bytes;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let judged = judged.and_then(|j| {
            if declared.is_none_or(|len| len <= limit as u64) {
                Ok(j)
            } else {
                Err("too-large")
            }
        });
        let judged = match judged {
            Ok(judged) => judged,
            Err(reason) => {
                shared.counters.cache.not_stored.incr();
                drop(flight); // waiters ask the origin themselves
                forwarded
                    .detail(reason)
                    .apply(&mut parts.headers, shared.config.cache_status.as_deref());
                return Ok(Response::from_parts(parts, CacheBody::origin(body)));
            }
        };
        let bytes = match read_limited(body, limit).await {
            Buffered::Complete(bytes) => bytes,
            Buffered::Streaming(body) => {
                shared.counters.cache.not_stored.incr();
                drop(flight);
                forwarded
                    .detail("too-large")
                    .apply(&mut parts.headers, shared.config.cache_status.as_deref());
                return Ok(Response::from_parts(parts, body));
            }
            Buffered::Failed(body) => {
                // Never stored, and never presented as complete: the client gets what was
                // read, then the error (the connection is aborted). A stale entry usable
                // on error answers instead (RFC 5861 §4: a failed upstream body is a 502
                // to any proxy).
                shared.counters.cache.not_stored.incr();
                drop(flight);
                if let Some(stored) = usable_on_error {
                    return Ok(serve_stale(stored, Some(status)));
                }
                forwarded
                    .detail("body-failed")
                    .apply(&mut parts.headers, shared.config.cache_status.as_deref());
                return Ok(Response::from_parts(parts, body));
            }
        };
        let mut stored = judged.response;
        // The length is known now: a HEAD answered from this entry carries it too. An
        // origin that answers HEAD with its GET body (as axum handlers do) gives it for a
        // HEAD as well; an empty HEAD body says nothing of the length.
        let known_length = (method == Method::GET || !bytes.is_empty())
            && stored.status != StatusCode::NO_CONTENT
            && !stored.headers.contains_key(header::CONTENT_LENGTH);
        if known_length {
            let length = HeaderValue::from(bytes.len());
            stored
                .headers
                .insert(header::CONTENT_LENGTH, length.clone());
            if method == Method::HEAD {
                parts.headers.insert(header::CONTENT_LENGTH, length);
            }
        }
        stored.body = bytes.clone();
        let ttl = ttl_seconds(stored.lifetime, stored.initial_age);
        let entry = Arc::new(CachedEntry::response(stored));
        if let Some(flight) = &flight {
            flight.complete(entry.clone());
        }
        if let Some(later) = shared.store(key, entry, judged.keep_for, flight, lease) {
            later.await;
        }
        forwarded
            .ttl(ttl)
            .stored()
            .apply(&mut parts.headers, shared.config.cache_status.as_deref());
        // The client whose request reached the origin gets the origin's own headers
        // (its Set-Cookie included), with its conditions answered.
        if parts.status == StatusCode::OK
            && conditional
            && not_modified(&client_headers, &parts.headers, now)
        {
            let mut response = not_modified_response(&parts.headers, None);
            for name in [X_CACHE, CACHE_STATUS] {
                if let Some(value) = parts.headers.get(&name) {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            return Ok(response);
        }
        let body = if method == Method::HEAD {
            CacheBody::empty()
        } else {
            CacheBody::full(bytes)
        };
        Ok(Response::from_parts(parts, body))
    }
}

/// RFC 9111 §4.3.5: the origin's 200 to a `HEAD` (`head`: its fields, received in
/// `exchange`) freshens the stored `GET` response that request could have been
/// answered by. When the `HEAD` describes the same representation
/// ([`same_representation`]) the stored response's fields are updated as a 304 updates
/// them, `Content-Length` kept, and its age and freshness start over from the `HEAD`
/// response; otherwise (another representation, a stored status other than 200, or an
/// updated response that may not be stored) it is invalidated. `(headers, uri)`: the
/// request's fields as the origin got them (without the client's conditions), and its
/// target.
async fn freshen_stored_get(
    shared: &Arc<Shared>,
    key: &RequestKey,
    (headers, uri): (&HeaderMap, &Uri),
    head: &HeaderMap,
    rules: &StoreRules<'_>,
    exchange: Exchange,
) {
    let get = RequestKey {
        primary: key.with_method(&Method::GET),
        normalized_uri: key.normalized_uri.clone(),
    };
    let Ok(found) = lookup(shared, &get.primary, headers).await else {
        return;
    };
    let Some(stored) = found.entry.as_deref().and_then(CachedEntry::as_response) else {
        return;
    };
    let view = view_of(&get, &Method::GET, headers, uri);
    let updated = (stored.status == StatusCode::OK && same_representation(&stored.headers, head))
        .then(|| {
            let mut merged = merge_not_modified(&stored.headers, head);
            if !head.contains_key(header::DATE) {
                // Dated when received, as a 304 without `Date` is: the stored `Date`
                // would age the updated response by the time it was stored.
                merged.remove(header::DATE);
            }
            storable(&view, stored.status, &merged, rules, exchange).ok()
        })
        .flatten();
    let Some(updated) = updated else {
        let storage_key = found.flight_key.unwrap_or_else(|| get.primary.clone());
        let _ = shared
            .fail_open()
            .call(
                "invalidate after a HEAD",
                shared.invalidate(std::slice::from_ref(&storage_key)),
            )
            .await;
        return;
    };
    let mut fresh = updated.response;
    fresh.body = stored.body.clone();
    let entry = Arc::new(CachedEntry::response(fresh));
    if let Some(later) = shared.store(get, entry, updated.keep_for, None, None) {
        later.await;
    }
}

/// Unsafe methods: the origin answers; a non-error answer invalidates what it changed.
async fn write_through<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    mut inner: S,
    request: Request<ReqB>,
) -> Reply<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    ResB: Body<Data = Bytes>,
{
    let host = request_host(request.uri(), request.headers());
    let target = request.uri().clone();
    let request_headers = host.as_ref().map(|_| request.headers().clone());
    let (response, layered) = forward(shared, &mut inner, request).await?;
    shared.counters.cache.bypasses.incr();
    let status = response.status();
    if let (Some(host), Some(request_headers)) = (host, request_headers)
        && (status.is_success() || status.is_redirection())
    {
        let mut keys = shared.resource_keys(&host, &target, &request_headers);
        // Location and Content-Location only on the same host (RFC 9111 §4.4), so a
        // response cannot make the cache drop another site's entries.
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            for value in response.headers().get_all(name) {
                let Some(uri) = resolve_reference(&target, value.as_bytes()) else {
                    continue;
                };
                let same_host = uri
                    .authority()
                    .is_none_or(|a| normalize_host(a.as_str()) == host);
                if same_host && uri.path().starts_with('/') {
                    keys.extend(shared.resource_keys(&host, &uri, &request_headers));
                }
            }
        }
        // What the route declares the write also changes: lists under a prefix,
        // tagged responses.
        let route = shared.config.route_for(target.path());
        let layered = layered.map(|l| l.0.layered(route));
        let route = layered.as_ref().or(route);
        let invalidation = async {
            let mut removed = shared.invalidate(&keys).await?;
            if let Some(route) = route {
                for prefix in &route.invalidates_prefixes {
                    removed += shared.purge_prefix(Some(&host), prefix).await?;
                }
                for tag in &route.invalidates_tags {
                    removed += shared.purge_tag(tag).await?;
                }
            }
            Ok::<u64, partcache::Error>(removed)
        };
        // Fail-open: the write already happened; a failed invalidation is logged and
        // counted, never the request's error.
        let _ = shared
            .fail_open()
            .call("invalidate after an unsafe request", invalidation)
            .await;
    }
    let outcome = Outcome::forwarded(Label::Bypass, Fwd::Method).fwd_status(status);
    Ok(finish(response, shared, &outcome))
}

/// Sends the request to the origin past the cache.
async fn pass<S, ReqB, ResB>(
    shared: &Shared,
    mut inner: S,
    request: Request<ReqB>,
    outcome: Outcome,
) -> Reply<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    shared.counters.cache.bypasses.incr();
    let (response, _) = forward(shared, &mut inner, request).await?;
    let outcome = outcome.fwd_status(response.status());
    Ok(finish(response, shared, &outcome))
}

fn finish<B>(response: Response<B>, shared: &Shared, outcome: &Outcome) -> Response<CacheBody<B>> {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(&shared.config.tag_header);
    outcome.apply(&mut parts.headers, shared.config.cache_status.as_deref());
    Response::from_parts(parts, CacheBody::origin(body))
}

/// A fresh stored response served as a hit: counted, and answered from the store.
/// `conditional`: the request has `If-None-Match` or `If-Modified-Since`; `now` is
/// when the store was read, `age` the response's age then.
fn fresh_hit<B>(
    stored: &StoredResponse,
    client: &HeaderMap,
    conditional: bool,
    method: &Method,
    (now, age): (SystemTime, Duration),
    shared: &Shared,
) -> Response<CacheBody<B>> {
    shared.counters.cache.hits.incr();
    let ttl = ttl_seconds(stored.lifetime, age);
    if conditional {
        return from_stored(stored, client, method, now, shared, Outcome::hit(ttl));
    }
    // Every plain hit within one second sends the same fields: the latest one's are
    // cloned whole (setting `Age`, `x-cache` and `Cache-Status` cost a third of a hit).
    let cache = std::ptr::from_ref(shared) as usize;
    if let Some(headers) = stored.last_hit(cache, age.as_secs(), ttl) {
        let mut response = Response::new(if *method == Method::HEAD {
            CacheBody::empty()
        } else {
            CacheBody::full(stored.body.clone())
        });
        *response.status_mut() = stored.status;
        *response.headers_mut() = headers;
        return response;
    }
    let response = from_stored(stored, client, method, now, shared, Outcome::hit(ttl));
    stored.remember_hit(cache, age.as_secs(), ttl, response.headers());
    response
}

/// A response from a stored one: a 304 when the client's conditions hold, else the
/// stored status, headers and (shared, uncopied) body; `Age`, `x-cache` and
/// `Cache-Status` added.
fn from_stored<B>(
    stored: &StoredResponse,
    client: &HeaderMap,
    method: &Method,
    now: SystemTime,
    shared: &Shared,
    outcome: Outcome,
) -> Response<CacheBody<B>> {
    let age = age_value(stored.age(now).as_secs());
    let status_name = shared.config.cache_status.as_deref();
    if stored.status == StatusCode::OK
        && has_conditions(client)
        && not_modified(client, &stored.headers, stored.stored_at)
    {
        let mut response = not_modified_response(&stored.headers, Some(age));
        outcome.apply(response.headers_mut(), status_name);
        return response;
    }
    let mut response = Response::new(if *method == Method::HEAD {
        CacheBody::empty()
    } else {
        CacheBody::full(stored.body.clone())
    });
    *response.status_mut() = stored.status;
    // A clone copies the map's table as it is (no rehash per field), with room for the
    // three fields set here.
    *response.headers_mut() = stored.served_headers(served_headers).clone();
    let headers = response.headers_mut();
    headers.insert(header::AGE, age);
    outcome.apply_after(headers, status_name, stored.headers.get(&CACHE_STATUS));
    response
}

/// A stored response's fields with those a hit sets (`Age`, `x-cache`,
/// `Cache-Status` unless an upstream cache's is there) added with placeholder values.
fn served_headers(stored: &HeaderMap) -> HeaderMap {
    let mut served = HeaderMap::with_capacity(stored.keys_len() + 3);
    for (name, value) in stored {
        served.append(name.clone(), value.clone());
    }
    let placeholder = HeaderValue::from_static("");
    served.insert(header::AGE, placeholder.clone());
    served.insert(X_CACHE, placeholder.clone());
    if !served.contains_key(&CACHE_STATUS) {
        served.insert(CACHE_STATUS, placeholder);
    }
    served
}

/// An `Age` field value. Small ones, those of most hits, come from a per-thread table
/// rather than being formatted into a new allocation per response.
fn age_value(secs: u64) -> HeaderValue {
    const KEPT: usize = 1024;
    thread_local! {
        static AGES: std::cell::RefCell<Vec<Option<HeaderValue>>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    let Some(index) = usize::try_from(secs).ok().filter(|&s| s < KEPT) else {
        return HeaderValue::from(secs);
    };
    AGES.with_borrow_mut(|ages| {
        if ages.is_empty() {
            ages.resize(KEPT, None);
        }
        ages[index]
            .get_or_insert_with(|| HeaderValue::from(secs))
            .clone()
    })
}

/// A 304 built from a response's headers (`x-cache` and `Cache-Status` left to the
/// caller; on a miss they are among `headers` already).
fn not_modified_response<B>(
    stored: &HeaderMap,
    age: Option<HeaderValue>,
) -> Response<CacheBody<B>> {
    let mut response = Response::new(CacheBody::empty());
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    let headers = response.headers_mut();
    for name in NOT_MODIFIED_HEADERS {
        for value in stored.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Some(age) = age {
        headers.insert(header::AGE, age);
    }
    response
}

fn has_conditions(headers: &HeaderMap) -> bool {
    headers.contains_key(header::IF_NONE_MATCH) || headers.contains_key(header::IF_MODIFIED_SINCE)
}

/// The request as the stored policy sees it: keyed on the normalized URI.
fn view_of<'a>(
    key: &RequestKey,
    method: &'a Method,
    headers: &'a HeaderMap,
    uri: &Uri,
) -> RequestView<'a> {
    // The request's own URI when it is the normalized one already (origin form, query
    // in key order: most requests), without parsing that again.
    let same = uri.scheme().is_none()
        && uri.authority().is_none()
        && uri
            .path_and_query()
            .is_some_and(|pq| pq.as_str() == key.normalized_uri);
    let uri = if same {
        uri.clone()
    } else {
        key.normalized_uri.parse().unwrap_or_else(|_| uri.clone())
    };
    RequestView {
        uri,
        method,
        headers,
    }
}

/// Removes the cookies a route does not key on from the request the origin gets
/// (RFC 6265 §5.4 pairs; the kept ones go on one `Cookie` line).
fn keep_only_cookies(headers: &mut HeaderMap, names: &[String]) {
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let mut kept = Vec::new();
    for (name, value) in cookie_pairs(headers) {
        if names.iter().any(|n| n.as_bytes() == name) {
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(name);
            kept.push(b'=');
            kept.extend_from_slice(value);
        }
    }
    headers.remove(header::COOKIE);
    if let Ok(value) = HeaderValue::from_bytes(&kept)
        && !kept.is_empty()
    {
        headers.insert(header::COOKIE, value);
    }
}

/// Removes the query parameters the key leaves out from the request the origin gets.
fn strip_ignored_params<B>(request: &mut Request<B>, filter: ParamFilter<'_>) {
    let Some(query) = request.uri().query() else {
        return;
    };
    let kept = strip_ignored(query, filter);
    if kept.len() == query.len() {
        return;
    }
    let path_and_query = if kept.is_empty() {
        request.uri().path().to_string()
    } else {
        format!("{}?{kept}", request.uri().path())
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    use http::header::{HeaderMap, HeaderName, HeaderValue};

    use super::Carried;
    use crate::DEFAULT_BYPASS_HEADERS;

    /// The pass over a few fields and the lookups for many find the same fields.
    #[test]
    fn carried_fields_are_found_however_many_the_request_has() {
        let bypass: Vec<HeaderName> = DEFAULT_BYPASS_HEADERS
            .iter()
            .map(|h| HeaderName::from_static(h))
            .chain([HeaderName::from_static("cookie")])
            .collect();
        let asked = [
            "cache-control",
            "pragma",
            "range",
            "cookie",
            "x-forwarded-host",
            "if-none-match",
            "if-modified-since",
        ];
        for mask in 0..(1u32 << asked.len()) {
            for filler in [0, 3, 12] {
                let mut headers = HeaderMap::new();
                if mask % 2 == 0 {
                    headers.insert("host", HeaderValue::from_static("h"));
                }
                for i in 0..filler {
                    headers.insert(
                        HeaderName::try_from(format!("x-filler-{i}")).unwrap(),
                        HeaderValue::from_static("v"),
                    );
                }
                for (i, name) in asked.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        headers.append(*name, HeaderValue::from_static("1"));
                    }
                }
                let carried = Carried::of(&headers, &bypass);
                assert_eq!(carried.host, headers.get("host"));
                let has = |name: &str| headers.contains_key(name);
                assert_eq!(
                    (
                        carried.directives,
                        carried.range,
                        carried.cookie,
                        carried.unkeyed,
                        carried.conditional,
                    ),
                    (
                        has("cache-control") || has("pragma"),
                        has("range"),
                        has("cookie"),
                        has("x-forwarded-host") || has("cookie"),
                        has("if-none-match") || has("if-modified-since"),
                    ),
                    "{headers:?}"
                );
            }
        }
    }
}
