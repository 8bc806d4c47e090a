//! [`ResponseCacheService`]: how one request goes through the cache.
//!
//! 1. Unsafe methods go to the origin; a non-error answer invalidates the target URI
//!    and same-host `Location` / `Content-Location` (RFC 9111 §4.4).
//! 2. Requests the cache must not answer bypass it: other methods, bypassed routes,
//!    `Range`, a body on a GET, unkeyed headers that could poison a shared entry,
//!    a `Host` that disagrees with the URI, a store that fails or times out.
//! 3. Lookup by primary key; a Vary index sends it on to the variant key.
//! 4. Fresh → `HIT`. Stale within `stale-while-revalidate` → `STALE`, with one
//!    background revalidation. Otherwise revalidate now (a conditional request when
//!    the entry has a validator); a 304 refreshes the entry (`HIT`); a failing origin
//!    within `stale-if-error` gets the stale entry served (`STALE`).
//! 5. Miss → the origin, once for all concurrent misses of a key; a storable response
//!    within the body limit is stored beside the reply (`MISS`); larger bodies stream
//!    through unbuffered.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_cache_semantics::{AfterResponse, BeforeRequest};
use partcache_tower::coalesce::{Flight, Joined};
use tower_service::Service;

use super::body::{BoxError, Buffered, CacheBody, read_limited};
use super::entry::{CachedEntry, EntryKind, StoredResponse};
use super::future::ResponseFuture;
use super::key::{
    RequestKey, request_host, same_variant, selected_values, strip_ignored, variant_key,
};
use super::layer::Inner;
use super::policy::{
    NOT_MODIFIED_HEADERS, RequestView, ResponseView, StoreRules, has_request_directives,
    merge_not_modified, not_modified, storable,
};
use super::stats::incr;

/// The header every response carries: `HIT`, `MISS`, `STALE` or `BYPASS`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

#[derive(Clone, Copy)]
enum Label {
    Hit,
    Miss,
    Stale,
    Bypass,
}

impl Label {
    fn value(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            Label::Hit => "HIT",
            Label::Miss => "MISS",
            Label::Stale => "STALE",
            Label::Bypass => "BYPASS",
        })
    }
}

/// The service a [`ResponseCacheLayer`](super::ResponseCacheLayer) wraps around an
/// origin service.
pub struct ResponseCacheService<S> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Inner>,
}

impl<S: Clone> Clone for ResponseCacheService<S> {
    fn clone(&self) -> Self {
        ResponseCacheService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
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

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The ready service goes with this request (tower's rule for services used
        // from a spawned or boxed future); the clone waits for the next poll_ready.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture {
            inner: Box::pin(handle(self.shared.clone(), inner, request)),
        }
    }
}

type Reply<B, E> = Result<Response<CacheBody<B>>, E>;

async fn handle<S, ReqB, ResB>(
    shared: Arc<Inner>,
    inner: S,
    mut request: Request<ReqB>,
) -> Reply<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Body + Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let config = &shared.config;
    let method = request.method().clone();
    if !method.is_safe() {
        return write_through(&shared, inner, request).await;
    }
    let host = request_host(request.uri(), request.headers());
    let bypass = host.is_none()
        || !config.methods.contains(&method)
        || config.route_for(request.uri().path()).is_some_and(|r| r.bypass)
        || request.headers().contains_key(header::RANGE)
        || config.bypass_headers.iter().any(|h| request.headers().contains_key(h))
        // A body on a GET is not part of the key, so it must not shape a shared answer.
        || !request.body().is_end_stream();
    let Some(host) = host.filter(|_| !bypass) else {
        return pass(&shared, inner, request, Label::Bypass).await;
    };
    let key = RequestKey::new(
        &method,
        &host,
        request.uri(),
        request.headers(),
        &config.ignored_params,
        &config.keyed_headers,
    );
    if !config.ignored_params.is_empty() {
        strip_ignored_params(&mut request, &config.ignored_params);
    }

    let Ok(found) = shared.read(&key.primary).await else {
        return pass(&shared, inner, request, Label::Bypass).await;
    };
    let (flight_key, found) = match found {
        Some(entry) => match &entry.kind {
            EntryKind::Response(_) => (key.primary.clone(), Some(entry)),
            EntryKind::Variants(index) => {
                let variant = variant_key(
                    &key.primary,
                    index.nonce,
                    &selected_values(request.headers(), &index.names),
                );
                let Ok(found) = shared.read(&variant).await else {
                    return pass(&shared, inner, request, Label::Bypass).await;
                };
                (variant, found.filter(|e| e.as_response().is_some()))
            }
        },
        None => (key.primary.clone(), None),
    };

    let Some(entry) = found else {
        incr(&shared.counters.misses);
        return fetch(&shared, inner, request, key, flight_key, None).await;
    };
    let Some(stored) = entry.as_response() else {
        return fetch(&shared, inner, request, key, flight_key, None).await;
    };
    let now = SystemTime::now();
    let directives = has_request_directives(request.headers());
    let fresh = if directives {
        let view = view_of(&key, &method, request.headers(), request.uri());
        matches!(
            stored.policy.before_request(&view, now),
            BeforeRequest::Fresh(_)
        )
    } else {
        stored.is_fresh(now)
    };
    if fresh {
        incr(&shared.counters.hits);
        return Ok(from_stored(
            stored,
            request.headers(),
            &method,
            now,
            Label::Hit,
        ));
    }
    if !directives && stored.within_stale_window(now, stored.stale_while_revalidate) {
        incr(&shared.counters.stale);
        let response = from_stored(stored, request.headers(), &method, now, Label::Stale);
        // One background refresh per key: a running flight means one is under way.
        if let Joined::Leader(flight) = shared.flights.join(&flight_key) {
            let shared = shared.clone();
            let entry = entry.clone();
            tokio::spawn(async move {
                if let Some(refreshed) =
                    stored_meanwhile(&shared, &flight_key, request.headers()).await
                {
                    flight.complete(refreshed);
                    return;
                }
                let _ = origin(&shared, inner, request, key, Some(entry), Some(flight)).await;
            });
        }
        return Ok(response);
    }
    fetch(&shared, inner, request, key, flight_key, Some(entry)).await
}

/// The fresh entry the store holds now for `flight_key`, if a request with `headers`
/// may use it. A request that read the store (a miss, or a stale entry) and then
/// became the leader of a flight asks this before calling the origin: a flight that
/// ended in between has stored its response by now (a flight lasts until its store
/// write is done), and calling the origin again would be a second call for one
/// change. Found by CI-style runs: a miss (session 2) and a stale-while-revalidate
/// refresh (session 3) each made one origin call too many.
async fn stored_meanwhile(
    shared: &Inner,
    flight_key: &String,
    headers: &HeaderMap,
) -> Option<Arc<CachedEntry>> {
    let entry = shared.read(flight_key).await.ok()??;
    let stored = entry.as_response()?;
    (stored.is_fresh(SystemTime::now()) && same_variant(headers, &stored.vary)).then_some(entry)
}

/// Sends a miss or a revalidation to the origin once for all concurrent callers of
/// `flight_key`.
async fn fetch<S, ReqB, ResB>(
    shared: &Arc<Inner>,
    inner: S,
    request: Request<ReqB>,
    key: RequestKey,
    flight_key: String,
    stale: Option<Arc<CachedEntry>>,
) -> Reply<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    match shared.flights.join(&flight_key) {
        Joined::Leader(flight) => {
            if stale.is_none()
                && !has_request_directives(request.headers())
                && let Some(entry) = stored_meanwhile(shared, &flight_key, request.headers()).await
                && let Some(stored) = entry.as_response()
            {
                flight.complete(entry.clone());
                return Ok(coalesced(shared, &request, stored));
            }
            origin(shared, inner, request, key, stale, Some(flight)).await
        }
        Joined::Waiter(waiter) => {
            if let Some(entry) = waiter.wait().await
                && let Some(stored) = entry.as_response()
                && same_variant(request.headers(), &stored.vary)
            {
                return Ok(coalesced(shared, &request, stored));
            }
            // The leader's response was not shareable with this request: ask ourselves.
            origin(shared, inner, request, key, stale, None).await
        }
    }
}

/// A request answered by the cache layer with another request's response, without an
/// origin call of its own: a hit (as a hit on a busy object is in other shared caches),
/// counted as coalesced.
fn coalesced<ReqB, ResB>(
    shared: &Inner,
    request: &Request<ReqB>,
    stored: &StoredResponse,
) -> Response<CacheBody<ResB>> {
    incr(&shared.counters.coalesced);
    from_stored(
        stored,
        request.headers(),
        request.method(),
        SystemTime::now(),
        Label::Hit,
    )
}

/// Asks the origin (conditionally when `stale` has a validator) and stores what may
/// be stored.
async fn origin<S, ReqB, ResB>(
    shared: &Arc<Inner>,
    mut inner: S,
    request: Request<ReqB>,
    key: RequestKey,
    stale: Option<Arc<CachedEntry>>,
    flight: Option<Flight<String, Arc<CachedEntry>>>,
) -> Reply<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    let (mut parts, body) = request.into_parts();
    let client_headers = parts.headers.clone();
    // The cache wants a full response to store; the client's own conditions are
    // answered from it afterwards.
    for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
        parts.headers.remove(name);
    }
    let request_headers = parts.headers.clone();
    let method = parts.method.clone();
    let stale_response = stale.as_deref().and_then(CachedEntry::as_response);
    if let Some(stored) = stale_response.filter(|s| s.has_validator()) {
        incr(&shared.counters.revalidations);
        let view = view_of(&key, &method, &request_headers, &parts.uri);
        if let BeforeRequest::Stale {
            request: conditional,
            ..
        } = stored.policy.before_request(&view, SystemTime::now())
        {
            parts.headers = conditional.headers;
        }
    }
    let uri = parts.uri.clone();
    let result = inner.call(Request::from_parts(parts, body)).await;
    let now = SystemTime::now();
    let usable_on_error = stale_response.filter(|s| s.within_stale_window(now, s.stale_if_error));
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            if let Some(stored) = usable_on_error {
                incr(&shared.counters.stale);
                return Ok(from_stored(
                    stored,
                    &client_headers,
                    &method,
                    now,
                    Label::Stale,
                ));
            }
            return Err(error);
        }
    };
    if response.status().is_server_error()
        && let Some(stored) = usable_on_error
    {
        incr(&shared.counters.stale);
        return Ok(from_stored(
            stored,
            &client_headers,
            &method,
            now,
            Label::Stale,
        ));
    }
    let view = view_of(&key, &method, &request_headers, &uri);
    let rules = StoreRules {
        default_ttl: shared.config.default_ttl,
        route: shared.config.route_for(uri.path()),
        store_set_cookie: shared.config.store_set_cookie,
        stale_while_revalidate: shared.config.stale_while_revalidate,
        stale_if_error: shared.config.stale_if_error,
        stale_retention: shared.config.stale_retention,
        tag_header: &shared.config.tag_header,
    };

    if response.status() == StatusCode::NOT_MODIFIED
        && let Some(stored) = stale_response
    {
        let answer = ResponseView {
            status: response.status(),
            headers: response.headers(),
        };
        if !matches!(
            stored.policy.after_response(&view, &answer, now),
            AfterResponse::NotModified(..)
        ) {
            // A 304 for validators we do not hold: the stored body is all we have.
            incr(&shared.counters.stale);
            return Ok(from_stored(
                stored,
                &client_headers,
                &method,
                now,
                Label::Stale,
            ));
        }
        incr(&shared.counters.not_modified);
        let merged = merge_not_modified(&stored.headers, response.headers());
        let Some(refreshed) = storable(&view, stored.status, &merged, &rules, now) else {
            // No longer storable: this answer uses the stored body one last time.
            let mut refreshed = stored.clone();
            refreshed.headers = merged;
            incr(&shared.counters.not_stored);
            return Ok(from_stored(
                &refreshed,
                &client_headers,
                &method,
                now,
                Label::Miss,
            ));
        };
        let mut fresh = refreshed.response;
        fresh.body = stored.body.clone();
        let entry = Arc::new(CachedEntry::response(fresh));
        if let Some(flight) = &flight {
            flight.complete(entry.clone());
        }
        shared.spawn_store(key, entry.clone(), refreshed.keep_for, flight);
        incr(&shared.counters.hits);
        let Some(stored) = entry.as_response() else {
            unreachable!("built as a response above")
        };
        return Ok(from_stored(
            stored,
            &client_headers,
            &method,
            now,
            Label::Hit,
        ));
    }

    let (mut parts, body) = response.into_parts();
    let judged = storable(&view, parts.status, &parts.headers, &rules, now);
    parts.headers.remove(&shared.config.tag_header);
    parts.headers.insert(X_CACHE, Label::Miss.value());
    let limit = shared.config.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let Some(judged) = judged.filter(|_| declared.is_none_or(|len| len <= limit as u64)) else {
        incr(&shared.counters.not_stored);
        drop(flight); // waiters ask the origin themselves
        return Ok(Response::from_parts(parts, CacheBody::origin(body)));
    };
    let bytes = match read_limited(body, limit).await {
        Buffered::Complete(bytes) => bytes,
        Buffered::Streaming(body) => {
            incr(&shared.counters.not_stored);
            drop(flight);
            return Ok(Response::from_parts(parts, body));
        }
    };
    let mut stored = judged.response;
    stored.body = bytes.clone();
    let entry = Arc::new(CachedEntry::response(stored));
    if let Some(flight) = &flight {
        flight.complete(entry.clone());
    }
    shared.spawn_store(key, entry, judged.keep_for, flight);
    // The client whose request reached the origin gets the origin's own headers
    // (its Set-Cookie included), with its conditions answered.
    if parts.status == StatusCode::OK
        && has_conditions(&client_headers)
        && not_modified(&client_headers, &parts.headers)
    {
        return Ok(not_modified_response(&parts.headers, None, Label::Miss));
    }
    let body = if method == Method::HEAD {
        CacheBody::empty()
    } else {
        CacheBody::full(bytes)
    };
    Ok(Response::from_parts(parts, body))
}

/// Unsafe methods: the origin answers; a non-error answer invalidates what it changed.
async fn write_through<S, ReqB, ResB>(
    shared: &Arc<Inner>,
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
    let response = inner.call(request).await?;
    incr(&shared.counters.bypasses);
    let status = response.status();
    if let (Some(host), Some(request_headers)) = (host, request_headers)
        && (status.is_success() || status.is_redirection())
    {
        let mut keys = shared.resource_keys(&host, &target, &request_headers);
        // Location and Content-Location only on the same host (RFC 9111 §4.4), so a
        // response cannot make the cache drop another site's entries.
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            for value in response.headers().get_all(name) {
                let Ok(uri) = Uri::try_from(value.as_bytes()) else {
                    continue;
                };
                let same_host = uri
                    .authority()
                    .is_none_or(|a| a.as_str().eq_ignore_ascii_case(&host));
                if same_host && uri.path().starts_with('/') {
                    keys.extend(shared.resource_keys(&host, &uri, &request_headers));
                }
            }
        }
        let invalidation = shared.invalidate(&keys);
        let result = if shared.local {
            invalidation.await.map(|_| ())
        } else {
            tokio::time::timeout(shared.config.store_timeout, invalidation)
                .await
                .unwrap_or(Err(partcache::Error::Timeout(shared.config.store_timeout)))
                .map(|_| ())
        };
        if let Err(error) = result {
            incr(&shared.counters.store_errors);
            tracing::warn!(cache = %shared.responses.name(), %error, "could not invalidate after an unsafe request");
        }
    }
    Ok(finish(response, &shared.config.tag_header, Label::Bypass))
}

/// Sends the request to the origin past the cache.
async fn pass<S, ReqB, ResB>(
    shared: &Inner,
    mut inner: S,
    request: Request<ReqB>,
    label: Label,
) -> Reply<ResB, S::Error>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
{
    incr(&shared.counters.bypasses);
    let response = inner.call(request).await?;
    Ok(finish(response, &shared.config.tag_header, label))
}

fn finish<B>(
    response: Response<B>,
    tag_header: &HeaderName,
    label: Label,
) -> Response<CacheBody<B>> {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(tag_header);
    parts.headers.insert(X_CACHE, label.value());
    Response::from_parts(parts, CacheBody::origin(body))
}

/// A response from a stored one: a 304 when the client's conditions hold, else the
/// stored status, headers and (shared, uncopied) body; `Age` and `x-cache` added.
fn from_stored<B>(
    stored: &StoredResponse,
    client: &HeaderMap,
    method: &Method,
    now: SystemTime,
    label: Label,
) -> Response<CacheBody<B>> {
    let age = HeaderValue::from(stored.age(now).as_secs());
    if stored.status == StatusCode::OK
        && has_conditions(client)
        && not_modified(client, &stored.headers)
    {
        return not_modified_response(&stored.headers, Some(age), label);
    }
    let mut response = Response::new(if *method == Method::HEAD {
        CacheBody::empty()
    } else {
        CacheBody::full(stored.body.clone())
    });
    *response.status_mut() = stored.status;
    let headers = response.headers_mut();
    headers.reserve(stored.headers.len() + 2);
    for (name, value) in &stored.headers {
        headers.append(name, value.clone());
    }
    headers.insert(header::AGE, age);
    headers.insert(X_CACHE, label.value());
    response
}

fn not_modified_response<B>(
    stored: &HeaderMap,
    age: Option<HeaderValue>,
    label: Label,
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
    headers.insert(X_CACHE, label.value());
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
    let uri = key.normalized_uri.parse().unwrap_or_else(|_| uri.clone());
    RequestView {
        uri,
        method,
        headers,
    }
}

/// Removes ignored query parameters from the request the origin gets.
fn strip_ignored_params<B>(request: &mut Request<B>, ignored: &[String]) {
    let Some(query) = request.uri().query() else {
        return;
    };
    let kept = strip_ignored(query, ignored);
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
