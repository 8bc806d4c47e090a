//! What may be stored, for how long, and when a stored response answers a request.
//!
//! The RFC 9111 rules come from `http-cache-semantics` in shared-cache mode:
//! [`CachePolicy::is_storable`] (method, status, `no-store`, `private`,
//! `Authorization`), the freshness lifetime and `Age` (`time_to_live`, `age`),
//! [`CachePolicy::before_request`] for requests with their own `Cache-Control` and to
//! build revalidation requests, and [`CachePolicy::after_response`] to decide whether a
//! 304 refreshes the stored response. What it does not cover is here: `Set-Cookie`
//! (never stored unless allowed, and then stripped), `Vary: *`, default and per-route
//! TTLs (given to the policy as an `s-maxage` on a copy of the headers), the RFC 5861
//! `stale-while-revalidate` / `stale-if-error` directives, and the 304 a cache sends
//! for a client's own `If-None-Match` / `If-Modified-Since` (RFC 9110 §13.1).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_cache_semantics::{CacheOptions, CachePolicy, RequestLike};

use super::entry::{Served, StoredResponse};
use super::key::{COOKIE_PREFIX, QueryRule, selected_values, vary_names, with_normalized};

/// How a route's responses are cached, overriding the origin or the defaults.
///
/// A route's policy is whole: settings not made on it take their defaults, not those
/// of a shorter route prefix.
///
/// ```
/// use partcache_axum::RoutePolicy;
/// use std::time::Duration;
///
/// let products = RoutePolicy::ttl(Duration::from_secs(60)); // whatever the origin says
/// let news = RoutePolicy::default_ttl(Duration::from_secs(5)); // when the origin is silent
/// let account = RoutePolicy::bypass(); // never cached
/// // Keyed on `page` and `tag` only; a `lang` cookie selects the variant; a write to
/// // `/notes/...` also drops every `/notes?...` list; a 404 is kept 5 s.
/// let notes = RoutePolicy::cached()
///     .key_query_params(["page", "tag"])
///     .key_cookies(["lang"])
///     .invalidates_prefix("/notes")
///     .error_ttl(Duration::from_secs(5));
/// # let _ = (products, news, account, notes);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutePolicy {
    pub(crate) ttl: Option<Duration>,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) bypass: bool,
    pub(crate) cookies: CookieRule,
    pub(crate) query: Option<QueryRule>,
    pub(crate) forward_unkeyed_params: bool,
    pub(crate) error_ttl: Option<Duration>,
    pub(crate) invalidates_prefixes: Vec<String>,
    pub(crate) invalidates_tags: Vec<String>,
}

/// What a route does with requests that carry `Cookie`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum CookieRule {
    /// They bypass the cache (the default: the response may be built for that user).
    #[default]
    Bypass,
    /// The named cookies select the variant, as a `Vary` would; the others are
    /// removed from the request the origin sees.
    Key(Vec<String>),
    /// The route's responses do not depend on cookies: they are not keyed, and the
    /// origin sees them unchanged.
    Ignore,
}

impl RoutePolicy {
    /// Cached by the cache-wide rules, with no override: the start of a chain of the
    /// settings below.
    pub fn cached() -> Self {
        RoutePolicy::default()
    }

    /// Storable responses are fresh for `ttl`, whatever freshness the origin gives.
    /// What may be stored is unchanged: `no-store`, `private` and the other rules
    /// still apply.
    pub fn ttl(ttl: Duration) -> Self {
        RoutePolicy {
            ttl: Some(ttl),
            ..RoutePolicy::default()
        }
    }

    /// Responses whose origin gives no freshness (`s-maxage`, `max-age`, `Expires`)
    /// are fresh for `ttl` (instead of the cache-wide default).
    pub fn default_ttl(ttl: Duration) -> Self {
        RoutePolicy {
            default_ttl: Some(ttl),
            ..RoutePolicy::default()
        }
    }

    /// Requests on the route never touch the cache (`x-cache: BYPASS`).
    pub fn bypass() -> Self {
        RoutePolicy {
            bypass: true,
            ..RoutePolicy::default()
        }
    }

    /// Requests carrying `Cookie` use the cache, keyed on these cookies' values (as a
    /// `Vary` on each would). Every other cookie is removed from the request the
    /// origin sees, so a response cannot depend on one the key does not hold.
    /// By default requests with `Cookie` bypass the cache.
    pub fn key_cookies<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cookies = CookieRule::Key(names.into_iter().map(Into::into).collect());
        self
    }

    /// Declares the route's responses independent of cookies: requests carrying
    /// `Cookie` use the cache unkeyed, and the origin sees their cookies unchanged.
    /// Only for responses that really are the same for every cookie.
    pub fn ignore_cookies(mut self) -> Self {
        self.cookies = CookieRule::Ignore;
        self
    }

    /// Only these query parameters are part of the key (an allow-list, as CDNs
    /// normalize query strings): `?cb=<random>` cannot create entries. The others are
    /// removed from the request the origin sees, unless
    /// [`forward_unkeyed_params`](Self::forward_unkeyed_params).
    pub fn key_query_params<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.query = Some(QueryRule::Allow(
            names.into_iter().map(Into::into).collect(),
        ));
        self
    }

    /// These query parameters are left out of the key (a deny-list), and removed from
    /// the request the origin sees unless
    /// [`forward_unkeyed_params`](Self::forward_unkeyed_params).
    pub fn ignore_query_params<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.query = Some(QueryRule::Deny(names.into_iter().map(Into::into).collect()));
        self
    }

    /// Lets the origin see the query parameters the key leaves out. Only when its
    /// responses cannot depend on them: a response that reflects one would be served
    /// to every client of the key.
    pub fn forward_unkeyed_params(mut self) -> Self {
        self.forward_unkeyed_params = true;
        self
    }

    /// `404 Not Found` and `410 Gone` answers are fresh for at most `ttl` (whatever
    /// the route's or the origin's freshness), so a resource created soon after is
    /// not hidden for a full TTL.
    pub fn error_ttl(mut self, ttl: Duration) -> Self {
        self.error_ttl = Some(ttl);
        self
    }

    /// A successful unsafe request (POST, PUT, PATCH, DELETE) on the route also
    /// removes every cached response whose path is `prefix` or below it
    /// (`/notes` covers `/notes?tag=a` and `/notes/42`), on the request's host. The
    /// prefix is tracked in the cache's tag index from the start.
    pub fn invalidates_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.invalidates_prefixes.push(prefix.into());
        self
    }

    /// A successful unsafe request on the route also purges this tag (see
    /// [`ResponseCache::purge_tag`](crate::ResponseCache::purge_tag)).
    pub fn invalidates_tag(mut self, tag: impl Into<String>) -> Self {
        self.invalidates_tags.push(tag.into());
        self
    }
}

/// A request as the policy sees it: the normalized URI the entry is keyed on, so that
/// requests differing only in query order or ignored parameters match.
pub(crate) struct RequestView<'a> {
    pub(crate) uri: Uri,
    pub(crate) method: &'a Method,
    pub(crate) headers: &'a HeaderMap,
}

impl RequestLike for RequestView<'_> {
    fn uri(&self) -> Uri {
        self.uri.clone()
    }
    fn is_same_uri(&self, other: &Uri) -> bool {
        self.uri == *other
    }
    fn method(&self) -> &Method {
        self.method
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

/// The parts of a response the policy judges.
pub(crate) struct ResponseView<'a> {
    pub(crate) status: StatusCode,
    pub(crate) headers: &'a HeaderMap,
}

impl http_cache_semantics::ResponseLike for ResponseView<'_> {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

/// The settings of a per-route layer
/// ([`ResponseCacheLayer::ttl`](crate::ResponseCacheLayer::ttl), …), carried in the
/// request's extensions by the layer that caches, or in the response's by a route's
/// layer under an outer layer of the same cache.
#[derive(Debug, Clone)]
pub(crate) struct LayerRoute(pub(crate) Arc<RoutePolicy>);

impl RoutePolicy {
    /// The policy of a request through a per-route layer with these settings: `base`
    /// (the builder's route for the path, which says how requests are keyed) with
    /// the layer's freshness where it sets one, its bypass, and its tags added.
    pub(crate) fn layered(&self, base: Option<&RoutePolicy>) -> RoutePolicy {
        let mut policy = base.cloned().unwrap_or_default();
        policy.ttl = self.ttl.or(policy.ttl);
        policy.default_ttl = self.default_ttl.or(policy.default_ttl);
        policy.error_ttl = self.error_ttl.or(policy.error_ttl);
        policy.bypass |= self.bypass;
        policy
            .invalidates_tags
            .extend(self.invalidates_tags.iter().cloned());
        policy
    }
}

/// Settings the storage decision needs.
pub(crate) struct StoreRules<'a> {
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) route: Option<&'a RoutePolicy>,
    pub(crate) store_set_cookie: bool,
    pub(crate) stale_while_revalidate: Duration,
    pub(crate) stale_if_error: Duration,
    pub(crate) stale_retention: Duration,
    pub(crate) tag_header: &'a HeaderName,
}

/// A response judged storable, minus its body.
pub(crate) struct Storable {
    /// Boxed here, where it is made: it moves into the stored entry as it is, and a
    /// miss's future does not carry its 800-odd bytes inline.
    pub(crate) response: Box<StoredResponse>,
    /// How long the store should keep it: fresh time left plus the longest stale use.
    pub(crate) keep_for: Duration,
}

/// `now` as an HTTP date, formatted once per second per thread (a miss of a response
/// without `Date` needs it).
fn http_date(now: SystemTime) -> Option<HeaderValue> {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(u64, HeaderValue)>> =
            const { std::cell::RefCell::new(None) };
    }
    let secs = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    LAST.with_borrow_mut(|last| {
        if let Some((at, value)) = last
            && *at == secs
        {
            return Some(value.clone());
        }
        let value = HeaderValue::from_str(&httpdate::fmt_http_date(now)).ok()?;
        *last = Some((secs, value.clone()));
        Some(value)
    })
}

fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never stored; with them go the headers
/// the `Connection` field names ([`connection_named`]).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Why a response was not stored: the `detail` of its `Cache-Status` (RFC 9211 §2.8),
/// a token listed in the crate README.
pub(crate) type NotStored = &'static str;

/// Judges a response: `Ok` with the entry to store (body to be filled in), or the
/// reason it must not be stored.
pub(crate) fn storable(
    request: &RequestView<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    rules: &StoreRules<'_>,
    now: SystemTime,
) -> Result<Storable, NotStored> {
    if rules.route.is_some_and(|r| r.bypass) {
        return Err("route-bypass");
    }
    let has_cookie = headers.contains_key(header::SET_COOKIE);
    if has_cookie && !rules.store_set_cookie {
        return Err("set-cookie");
    }
    // `Vary: *` is never served, so never stored.
    let mut names = vary_names(headers).ok_or("vary-star")?;
    if let Some(CookieRule::Key(cookies)) = rules.route.map(|r| &r.cookies) {
        // A route's keyed cookies select variants as Vary-selected headers do.
        names.extend(cookies.iter().map(|c| format!("{COOKIE_PREFIX}{c}")));
        names.sort();
        names.dedup();
    }
    if !is_storable(request, status, headers) {
        return Err(why_not_storable(request, status, headers));
    }

    // What clients get from the cache.
    // Set-Cookie: allowed to store the response, never to hand one client's cookie to
    // all.
    let connection = connection_named(headers);
    let left_out = |name: &HeaderName| {
        HOP_BY_HOP.contains(name)
            || name == header::AGE
            || name == rules.tag_header
            || name == header::SET_COOKIE
            || connection.contains(name)
    };
    // Room for the `Date` added below and the `Content-Length` added once the body is
    // read: a map grown later is copied.
    let mut stored_headers = HeaderMap::with_capacity(headers.keys_len() + 2);
    for (name, value) in headers {
        if !left_out(name) {
            stored_headers.append(name.clone(), value.clone());
        }
    }
    if !stored_headers.contains_key(header::DATE)
        && let Some(date) = http_date(now)
    {
        // A cache that stores a response without `Date` adds one (RFC 9110 §6.6.1), so
        // hits say when the response was generated, not when they were served.
        stored_headers.insert(header::DATE, date);
    }

    // What the policy judges freshness on: the same headers with a TTL override given
    // as `s-maxage`, the shared-cache directive that outranks `max-age` and `Expires`.
    let directives = CacheControl::parse(headers);
    let explicit = directives.has("s-maxage")
        || directives.has("max-age")
        || headers.contains_key(header::EXPIRES);
    let forced = rules.route.and_then(|r| r.ttl);
    let default = rules
        .route
        .and_then(|r| r.default_ttl)
        .or(rules.default_ttl);
    let ttl = forced.or(if explicit { None } else { default });
    // A copy of the stored headers only when they differ (an `Age`, a TTL override).
    let mut policy_headers: Option<HeaderMap> = None;
    if let Some(age) = headers.get(header::AGE) {
        policy_headers
            .get_or_insert_with(|| stored_headers.clone())
            .insert(header::AGE, age.clone());
    }
    let with_ttl = |policy_headers: &mut HeaderMap, ttl: Duration| {
        let mut cache_control = directives.without(&["s-maxage", "max-age"]);
        if !cache_control.is_empty() {
            cache_control.push_str(", ");
        }
        cache_control.push_str(&format!("s-maxage={}", ttl.as_secs()));
        if let Ok(value) = HeaderValue::from_str(&cache_control) {
            policy_headers.insert(header::CACHE_CONTROL, value);
            policy_headers.remove(header::EXPIRES);
        }
    };
    if let Some(ttl) = ttl {
        with_ttl(
            policy_headers.get_or_insert_with(|| stored_headers.clone()),
            ttl,
        );
    }

    // The stored policy keeps only the request headers matching needs (Host and the
    // Vary-selected ones), not the first requester's cookies or credentials.
    // Vary-selected values in normalized form, as requests are matched against them.
    let mut kept = HeaderMap::new();
    for value in request.headers.get_all(header::HOST) {
        kept.append(header::HOST, value.clone());
    }
    let kept = with_normalized(&kept, request.headers, &names);
    let kept_request = RequestView {
        uri: request.uri.clone(),
        method: request.method,
        headers: &kept,
    };
    let policy_response = ResponseView {
        status,
        headers: policy_headers.as_ref().unwrap_or(&stored_headers),
    };
    let mut policy = CachePolicy::new_options(&kept_request, &policy_response, now, options());
    let error_ttl = rules
        .route
        .and_then(|r| r.error_ttl)
        .filter(|_| matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE));
    if let Some(cap) = error_ttl
        && policy.time_to_live(now) + policy.age(now) > cap
    {
        // A route's freshness for 404 / 410 is an upper bound on any other.
        let policy_headers = policy_headers.get_or_insert_with(|| stored_headers.clone());
        with_ttl(policy_headers, cap);
        let capped = ResponseView {
            status,
            headers: policy_headers,
        };
        policy = CachePolicy::new_options(&kept_request, &capped, now, options());
    }

    let initial_age = policy.age(now);
    let lifetime = policy.time_to_live(now) + initial_age;
    // `s-maxage` implies `proxy-revalidate` for a shared cache (RFC 9111 §5.2.2.10):
    // never served stale, whatever `stale-while-revalidate` / `stale-if-error` say.
    let must_revalidate = directives.has("must-revalidate")
        || directives.has("proxy-revalidate")
        || directives.has("s-maxage")
        || directives.has("no-cache")
        || headers
            .get(header::PRAGMA)
            .is_some_and(|p| p.as_bytes().windows(8).any(|w| w == b"no-cache"));
    let (swr, sie) = if must_revalidate {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (
            directives
                .seconds("stale-while-revalidate")
                .unwrap_or(Duration::ZERO)
                .max(rules.stale_while_revalidate),
            directives
                .seconds("stale-if-error")
                .unwrap_or(Duration::ZERO)
                .max(rules.stale_if_error),
        )
    };
    let has_validator = stored_headers.contains_key(header::ETAG)
        || stored_headers.contains_key(header::LAST_MODIFIED);
    let retention = if has_validator {
        rules.stale_retention
    } else {
        Duration::ZERO
    };
    let fresh_left = lifetime.saturating_sub(initial_age);
    let keep_for = fresh_left + swr.max(sie).max(retention);
    if keep_for.is_zero() {
        // Stale at once with nothing to revalidate: storing it would only cost.
        return Err(if explicit || ttl.is_some() || directives.has("no-cache") {
            "stale-on-arrival"
        } else {
            "no-freshness"
        });
    }
    let tags = tags(headers.get_all(rules.tag_header));
    Ok(Storable {
        response: Box::new(StoredResponse {
            status,
            headers: stored_headers,
            body: Bytes::new(),
            policy,
            stored_at: now,
            initial_age,
            lifetime,
            stale_while_revalidate: swr,
            stale_if_error: sie,
            must_revalidate,
            tags,
            vary: selected_values(request.headers, &names),
            served: Served::default(),
        }),
        keep_for,
    })
}

/// Statuses `http-cache-semantics` understands (it does not understand 206).
const UNDERSTOOD_STATUSES: [u16; 14] = [
    200, 203, 204, 300, 301, 302, 303, 307, 308, 404, 405, 410, 414, 501,
];

/// Statuses cacheable by default (RFC 9110 §15.1).
const CACHEABLE_BY_DEFAULT: [u16; 12] =
    [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// Whether a shared cache may store the response to `request` (RFC 9111 §3), decided
/// exactly as [`CachePolicy::is_storable`] decides it in shared mode, without building
/// a policy: a policy clones both header maps and parses both `Cache-Control`s, and a
/// miss builds one anyway for the response it stores.
fn is_storable(request: &RequestView<'_>, status: StatusCode, headers: &HeaderMap) -> bool {
    // The response's directives split once, not once per question.
    let given: Vec<(&str, Option<&str>)> = directives(headers).collect();
    let response = |name: &str| given.iter().any(|(n, _)| *n == name);
    let explicit =
        headers.contains_key(header::EXPIRES) || response("max-age") || response("s-maxage");
    let method = *request.method == Method::GET
        || *request.method == Method::HEAD
        || (*request.method == Method::POST && explicit);
    // RFC 9111 §3.5: a shared cache stores an answer to a request with
    // `Authorization` only when the response allows it.
    let authorized = !request.headers.contains_key(header::AUTHORIZATION)
        || response("must-revalidate")
        || response("public")
        || response("s-maxage")
        || conflicting_directives(&given);
    !has_directive(request.headers, "no-store")
        && method
        && UNDERSTOOD_STATUSES.contains(&status.as_u16())
        && !response("no-store")
        && !response("private")
        && authorized
        && (explicit || response("public") || CACHEABLE_BY_DEFAULT.contains(&status.as_u16()))
}

/// The `Cache-Control` directives of `headers` as `http-cache-semantics` reads them:
/// comma-separated `name[=value]`, names as written, values trimmed, fields that are
/// not visible ASCII skipped.
fn directives(headers: &HeaderMap) -> impl Iterator<Item = (&str, Option<&str>)> {
    headers
        .get_all(header::CACHE_CONTROL)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| {
            let mut kv = part.splitn(2, '=');
            let name = kv.next()?.trim();
            (!name.is_empty()).then(|| (name, kv.next().map(str::trim)))
        })
}

fn has_directive(headers: &HeaderMap, name: &str) -> bool {
    directives(headers).any(|(n, _)| n == name)
}

/// A directive repeated with another value, which `http-cache-semantics` takes as
/// `must-revalidate` (it keeps the first value unquoted and compares later ones as
/// written).
fn conflicting_directives(all: &[(&str, Option<&str>)]) -> bool {
    all.iter().enumerate().any(|(i, (name, value))| {
        all[..i]
            .iter()
            .find(|(n, _)| n == name)
            .is_some_and(|(_, first)| first.map(|f| f.trim_matches('"')) != *value)
    })
}

/// Why `http-cache-semantics` refused to store a response (RFC 9111 §3), as a
/// `Cache-Status` detail.
fn why_not_storable(
    request: &RequestView<'_>,
    status: StatusCode,
    headers: &HeaderMap,
) -> NotStored {
    let response = CacheControl::parse(headers);
    let asked = CacheControl::parse(request.headers);
    if response.has("no-store") || asked.has("no-store") {
        "no-store"
    } else if response.has("private") {
        "private"
    } else if request.headers.contains_key(header::AUTHORIZATION) {
        "authorization"
    } else if !matches!(*request.method, Method::GET | Method::HEAD) {
        "method"
    } else if !matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    ) {
        // Not cacheable by default (RFC 9110 §15.1), and no explicit freshness.
        "status"
    } else {
        "not-storable"
    }
}

/// The headers a message's `Connection` field names: hop-by-hop for this connection
/// only, never stored or forwarded by a cache (RFC 9111 §3.1, RFC 9110 §7.6.1).
pub(crate) fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|name| HeaderName::from_bytes(trim(name)).ok())
        .collect()
}

/// Tags from a tag header: separated by commas and/or whitespace (`Cache-Tag` uses
/// commas, `Surrogate-Key` spaces).
pub(crate) fn tags<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> Vec<String> {
    let mut tags: Vec<String> = values
        .into_iter()
        .flat_map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// The few `Cache-Control` directives `http-cache-semantics` does not expose: names
/// lowercased, arguments trimmed and unquoted, borrowed from the fields when they are
/// in that form already (the usual case: a miss allocates nothing for them).
struct CacheControl<'h> {
    directives: Vec<(Cow<'h, str>, Option<Cow<'h, str>>)>,
}

impl<'h> CacheControl<'h> {
    fn parse(headers: &'h HeaderMap) -> Self {
        fn split(text: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
            text.split(',').filter_map(|part| {
                let (name, arg) = match part.split_once('=') {
                    Some((n, a)) => (n, Some(a.trim().trim_matches('"'))),
                    None => (part, None),
                };
                let name = name.trim();
                (!name.is_empty()).then_some((name, arg))
            })
        }
        let lowercase = |name: &str| name.bytes().any(|b| b.is_ascii_uppercase());
        let mut directives = Vec::new();
        for value in headers.get_all(header::CACHE_CONTROL) {
            match String::from_utf8_lossy(value.as_bytes()) {
                Cow::Borrowed(text) => {
                    directives.extend(split(text).map(|(name, arg)| {
                        let name = if lowercase(name) {
                            Cow::Owned(name.to_ascii_lowercase())
                        } else {
                            Cow::Borrowed(name)
                        };
                        (name, arg.map(Cow::Borrowed))
                    }));
                }
                Cow::Owned(text) => {
                    directives.extend(split(&text).map(|(name, arg)| {
                        (
                            Cow::Owned(name.to_ascii_lowercase()),
                            arg.map(|a| Cow::Owned(a.to_string())),
                        )
                    }));
                }
            }
        }
        CacheControl { directives }
    }

    fn has(&self, name: &str) -> bool {
        self.directives.iter().any(|(n, _)| n == name)
    }

    fn seconds(&self, name: &str) -> Option<Duration> {
        self.directives
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, a)| a.as_deref()?.parse().ok())
            .map(Duration::from_secs)
    }

    fn without(&self, names: &[&str]) -> String {
        let mut out = String::new();
        for (name, arg) in self
            .directives
            .iter()
            .filter(|(n, _)| !names.contains(&n.as_ref()))
        {
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.push_str(name);
            if let Some(arg) = arg {
                out.push('=');
                out.push_str(arg);
            }
        }
        out
    }
}

/// Whether a request carries directives that only the full policy can judge
/// (`Cache-Control: max-age=0`, `no-cache`, `min-fresh`, `Pragma: no-cache`).
pub(crate) fn has_request_directives(headers: &HeaderMap) -> bool {
    headers.contains_key(header::CACHE_CONTROL) || headers.contains_key(header::PRAGMA)
}

/// Whether the request says `Cache-Control: only-if-cached` (RFC 9111 §5.2.1.7).
pub(crate) fn only_if_cached(headers: &HeaderMap) -> bool {
    headers.contains_key(header::CACHE_CONTROL)
        && CacheControl::parse(headers).has("only-if-cached")
}

/// Whether a client's conditional request is satisfied by the stored response, so a
/// 304 answers it (RFC 9110 §13.1.2, §13.1.3; If-None-Match wins over
/// If-Modified-Since). `received` is when the response came from the origin.
///
/// `If-Modified-Since` is compared with `Last-Modified`, else with the response's
/// `Date`, else with the time it was received (RFC 9111 §4.3.2).
pub(crate) fn not_modified(request: &HeaderMap, stored: &HeaderMap, received: SystemTime) -> bool {
    if let Some(condition) = request.get(header::IF_NONE_MATCH) {
        let Some(etag) = stored.get(header::ETAG) else {
            return false;
        };
        let etag = opaque_tag(etag.as_bytes());
        return request.get_all(header::IF_NONE_MATCH).iter().any(|value| {
            let _ = condition;
            value.as_bytes().split(|b| *b == b',').any(|candidate| {
                let candidate = trim(candidate);
                candidate == b"*" || opaque_tag(candidate) == etag
            })
        });
    }
    if let Some(since) = request.get(header::IF_MODIFIED_SINCE) {
        let parse = |v: &HeaderValue| {
            v.to_str()
                .ok()
                .and_then(|s| httpdate::parse_http_date(s).ok())
        };
        let modified = stored
            .get(header::LAST_MODIFIED)
            .and_then(parse)
            .or_else(|| stored.get(header::DATE).and_then(parse))
            .unwrap_or(received);
        if let Some(since) = parse(since) {
            return modified <= since;
        }
    }
    false
}

/// An entity tag without its weakness flag (weak comparison, RFC 9110 §8.8.3.2).
fn opaque_tag(tag: &[u8]) -> &[u8] {
    let tag = trim(tag);
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// The headers a 304 from the cache carries (RFC 9110 §15.4.5).
pub(crate) const NOT_MODIFIED_HEADERS: [HeaderName; 7] = [
    header::CACHE_CONTROL,
    header::CONTENT_LOCATION,
    header::DATE,
    header::ETAG,
    header::EXPIRES,
    header::VARY,
    header::LAST_MODIFIED,
];

/// The stored headers updated by a 304 from the origin (RFC 9111 §4.3.4): its headers
/// replace the stored ones, except those describing the body kept from the cache.
pub(crate) fn merge_not_modified(stored: &HeaderMap, not_modified: &HeaderMap) -> HeaderMap {
    const KEEP: [HeaderName; 4] = [
        header::CONTENT_LENGTH,
        header::CONTENT_ENCODING,
        header::TRANSFER_ENCODING,
        header::CONTENT_RANGE,
    ];
    let mut merged = stored.clone();
    let named = connection_named(not_modified);
    for name in not_modified.keys() {
        if KEEP.contains(name) || HOP_BY_HOP.contains(name) || named.contains(name) {
            continue;
        }
        merged.remove(name);
        for value in not_modified.get_all(name) {
            merged.append(name.clone(), value.clone());
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    /// The storability check without a policy agrees with `CachePolicy::is_storable`
    /// in shared mode on every combination of method, status, request and response
    /// fields that the rules of RFC 9111 §3 look at.
    #[test]
    fn storability_agrees_with_the_policy() {
        let requests: &[&[(&'static str, &'static str)]] = &[
            &[],
            &[("cache-control", "no-store")],
            &[("cache-control", "No-Store")],
            &[("authorization", "Basic eDp5")],
            &[
                ("cache-control", "max-age=0"),
                ("authorization", "Bearer t"),
            ],
        ];
        let responses: &[&[(&'static str, &'static str)]] = &[
            &[],
            &[("cache-control", "max-age=60")],
            &[("cache-control", "s-maxage=60")],
            &[("cache-control", "public")],
            &[("cache-control", "private, max-age=60")],
            &[("cache-control", "no-store")],
            &[("cache-control", "must-revalidate")],
            &[("cache-control", "no-cache")],
            &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")],
            &[
                ("cache-control", "max-age=5"),
                ("cache-control", "max-age=6"),
            ],
            &[("cache-control", "max-age=\"5\", max-age=\"5\"")],
            &[("cache-control", "max-age=5, max-age=5")],
            &[("cache-control", " , =x, public=")],
            &[("cache-control", "Public")],
            &[("pragma", "no-cache")],
        ];
        let methods = [Method::GET, Method::HEAD, Method::POST, Method::PUT];
        let statuses = [
            200, 203, 204, 206, 300, 301, 302, 303, 304, 307, 308, 400, 404, 405, 410, 414, 500,
            501, 503,
        ];
        let mut checked = 0;
        for req in requests {
            let req = headers(req);
            for method in &methods {
                let view = RequestView {
                    uri: "/p".parse().unwrap(),
                    method,
                    headers: &req,
                };
                for res in responses {
                    let res = headers(res);
                    for status in statuses {
                        let status = StatusCode::from_u16(status).unwrap();
                        let response = ResponseView {
                            status,
                            headers: &res,
                        };
                        let policy = CachePolicy::new_options(
                            &view,
                            &response,
                            SystemTime::now(),
                            options(),
                        );
                        assert_eq!(
                            is_storable(&view, status, &res),
                            policy.is_storable(),
                            "{method} {status} request {req:?} response {res:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 5 * 4 * 15 * 19);
    }

    fn judge(
        req: &[(&'static str, &'static str)],
        status: u16,
        res: &[(&'static str, &'static str)],
    ) -> Option<Storable> {
        let req = headers(req);
        let view = RequestView {
            uri: "/p".parse().unwrap(),
            method: &Method::GET,
            headers: &req,
        };
        let tag = HeaderName::from_static("cache-tag");
        let rules = StoreRules {
            default_ttl: Some(Duration::from_secs(30)),
            route: None,
            store_set_cookie: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            stale_retention: Duration::from_secs(60),
            tag_header: &tag,
        };
        storable(
            &view,
            StatusCode::from_u16(status).unwrap(),
            &headers(res),
            &rules,
            SystemTime::now(),
        )
        .ok()
    }

    #[test]
    fn shared_cache_storability() {
        assert!(judge(&[], 200, &[("cache-control", "max-age=60")]).is_some());
        assert!(judge(&[], 200, &[("cache-control", "no-store")]).is_none());
        assert!(judge(&[], 200, &[("cache-control", "private, max-age=60")]).is_none());
        assert!(
            judge(
                &[],
                200,
                &[("set-cookie", "a=b"), ("cache-control", "max-age=60")]
            )
            .is_none()
        );
        assert!(judge(&[], 200, &[("vary", "*"), ("cache-control", "max-age=60")]).is_none());
        assert!(
            judge(
                &[("authorization", "x")],
                200,
                &[("cache-control", "max-age=60")]
            )
            .is_none()
        );
        assert!(
            judge(
                &[("authorization", "x")],
                200,
                &[("cache-control", "public, max-age=60")]
            )
            .is_some()
        );
        assert!(
            judge(
                &[("authorization", "x")],
                200,
                &[("cache-control", "s-maxage=60")]
            )
            .is_some()
        );
        assert!(judge(&[], 500, &[]).is_none());
        // A silent 302 is not cacheable by default, so the default TTL must not make it so.
        assert!(judge(&[], 302, &[]).is_none());
    }

    #[test]
    fn freshness_prefers_s_maxage_and_falls_back_to_the_default_ttl() {
        let s = judge(&[], 200, &[("cache-control", "max-age=10, s-maxage=20")]).unwrap();
        assert_eq!(s.response.lifetime, Duration::from_secs(20));
        let s = judge(&[], 200, &[]).unwrap();
        assert_eq!(s.response.lifetime, Duration::from_secs(30));
        let s = judge(&[], 200, &[("cache-control", "max-age=100"), ("age", "40")]).unwrap();
        assert_eq!(s.response.lifetime, Duration::from_secs(100));
        assert_eq!(s.response.initial_age, Duration::from_secs(40));
        assert_eq!(s.keep_for, Duration::from_secs(60));
    }

    #[test]
    fn stale_directives_are_read_unless_revalidation_is_required() {
        let s = judge(
            &[],
            200,
            &[(
                "cache-control",
                "max-age=1, stale-while-revalidate=5, stale-if-error=9",
            )],
        )
        .unwrap();
        assert_eq!(
            (s.response.stale_while_revalidate, s.response.stale_if_error),
            (Duration::from_secs(5), Duration::from_secs(9))
        );
        let s = judge(
            &[],
            200,
            &[(
                "cache-control",
                "max-age=1, must-revalidate, stale-if-error=9",
            )],
        )
        .unwrap();
        assert_eq!(s.response.stale_if_error, Duration::ZERO);
        // s-maxage implies proxy-revalidate (RFC 9111 §5.2.2.10).
        let s = judge(
            &[],
            200,
            &[(
                "cache-control",
                "s-maxage=1, stale-while-revalidate=5, stale-if-error=9",
            )],
        )
        .unwrap();
        assert!(s.response.must_revalidate);
        assert_eq!(
            (s.response.stale_while_revalidate, s.response.stale_if_error),
            (Duration::ZERO, Duration::ZERO)
        );
    }

    #[test]
    fn conditional_requests_match_weakly_and_by_date() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        let received = SystemTime::now();
        assert!(not_modified(
            &headers(&[("if-none-match", "\"x\", W/\"v1\"")]),
            &stored,
            received
        ));
        assert!(not_modified(
            &headers(&[("if-none-match", "*")]),
            &stored,
            received
        ));
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"v2\"")]),
            &stored,
            received
        ));
        assert!(not_modified(
            &headers(&[("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            &stored,
            received
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")]),
            &stored,
            received
        ));
        // If-None-Match decides alone when present.
        assert!(!not_modified(
            &headers(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")
            ]),
            &stored,
            received
        ));
        // Without Last-Modified, the stored response's Date stands in (RFC 9111 §4.3.2).
        let dated = headers(&[("date", "Wed, 21 Oct 2015 07:28:00 GMT")]);
        assert!(not_modified(
            &headers(&[("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            &dated,
            received
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")]),
            &dated,
            received
        ));
    }

    #[test]
    fn tags_split_on_commas_and_spaces() {
        let h = headers(&[("cache-tag", "a, b  c"), ("cache-tag", "a")]);
        assert_eq!(tags(h.get_all("cache-tag")), vec!["a", "b", "c"]);
    }
}

#[cfg(test)]
mod codec_tests {
    use std::time::{Duration, SystemTime};

    use http::{HeaderName, HeaderValue, Method, StatusCode};
    use partcache::Codec;

    use super::super::entry::CachedEntry;
    use super::{RequestView, StoreRules, storable};

    /// Remote stores encode entries with the cache's codec: a stored response must
    /// come back with the same freshness, headers and body under both codecs.
    #[test]
    fn a_stored_response_survives_both_codecs() {
        let mut request = http::HeaderMap::new();
        request.insert("host", HeaderValue::from_static("example.com"));
        request.insert("accept-language", HeaderValue::from_static("en"));
        let mut response = http::HeaderMap::new();
        response.insert(
            "cache-control",
            HeaderValue::from_static("max-age=60, stale-if-error=5"),
        );
        response.insert("etag", HeaderValue::from_static("\"v1\""));
        response.insert("vary", HeaderValue::from_static("Accept-Language"));
        response.append("link", HeaderValue::from_static("</a>"));
        response.append("link", HeaderValue::from_static("</b>"));
        let view = RequestView {
            uri: "/p?a=1".parse().unwrap(),
            method: &Method::GET,
            headers: &request,
        };
        let tag = HeaderName::from_static("cache-tag");
        let rules = StoreRules {
            default_ttl: None,
            route: None,
            store_set_cookie: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            stale_retention: Duration::from_secs(60),
            tag_header: &tag,
        };
        let now = SystemTime::now();
        let mut stored = storable(&view, StatusCode::OK, &response, &rules, now)
            .unwrap()
            .response;
        stored.body = bytes::Bytes::from_static(b"hello");
        let entry = CachedEntry::response(stored);
        for codec in [Codec::Postcard, Codec::Json] {
            let blob = codec.encode_entry("k", &entry).unwrap();
            let (_, back): (String, CachedEntry) = codec.decode_entry(&blob).unwrap();
            let back = back.as_response().unwrap();
            assert_eq!(back.body.as_ref(), b"hello");
            assert_eq!(back.headers.get_all("link").iter().count(), 2);
            assert_eq!(back.lifetime, Duration::from_secs(60));
            assert_eq!(back.stale_if_error, Duration::from_secs(5));
            assert_eq!(back.vary[0].0, "accept-language");
            assert!(
                back.policy.time_to_live(now) > Duration::from_secs(59),
                "{codec:?}"
            );
        }
    }
}
