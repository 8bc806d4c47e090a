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
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_cache_semantics::{CacheOptions, CachePolicy, RequestLike};

use super::entry::{Served, StoredResponse};
use super::key::{COOKIE_PREFIX, QueryRule, selected_values, vary_names};

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
static HOP_BY_HOP: [HeaderName; 9] = [
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

/// When the request that brought a response was sent to the origin and when the
/// response arrived: RFC 9111 §4.2.3's `request_time` and `response_time`, whose
/// difference (the response delay) the response may have aged by on its way.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub(crate) sent: SystemTime,
    pub(crate) received: SystemTime,
}

impl Exchange {
    /// The time between sending the request and receiving the response, in whole
    /// seconds (the unit `Age` counts in): an origin that answers within a second
    /// does not age what it sends.
    fn response_delay(&self) -> Duration {
        let delay = self.received.duration_since(self.sent).unwrap_or_default();
        Duration::from_secs(delay.as_secs())
    }

    /// The corrected initial age of a response with these fields (RFC 9111 §4.2.3):
    /// the larger of its apparent age (the time since its `Date`) and its `Age` plus
    /// the response delay.
    fn initial_age(&self, headers: &HeaderMap) -> Duration {
        let corrected_age_value = age_field(headers) + self.response_delay();
        corrected_age_value.max(apparent_age(headers, self.received))
    }

    /// A response received at `time` for a request sent then too.
    #[cfg(test)]
    pub(crate) fn at(time: SystemTime) -> Self {
        Exchange {
            sent: time,
            received: time,
        }
    }
}

/// Judges a response that came in `exchange`: `Ok` with the entry to store (body to
/// be filled in), or the reason it must not be stored.
pub(crate) fn storable(
    request: &RequestView<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    rules: &StoreRules<'_>,
    exchange: Exchange,
) -> Result<Storable, NotStored> {
    let now = exchange.received;
    if rules.route.is_some_and(|r| r.bypass) {
        return Err("route-bypass");
    }
    // Judged, stored and asked about later with lowercase directive names.
    let lowered = lowercase_directives(headers);
    let headers = lowered.as_ref().unwrap_or(headers);
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
    let directives = Directives::parse(headers);
    if !is_storable(request, status, headers, &directives.given) {
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

    // Freshness as `http-cache-semantics` judges it (see `freshness_lifetime`), on the
    // stored headers with a TTL override given as `s-maxage`, the shared-cache
    // directive that outranks `max-age` and `Expires`.
    let explicit = directives.has("s-maxage")
        || directives.has("max-age")
        || headers.contains_key(header::EXPIRES);
    let forced = rules.route.and_then(|r| r.ttl);
    let default = rules
        .route
        .and_then(|r| r.default_ttl)
        .or(rules.default_ttl);
    let ttl = forced.or(if explicit { None } else { default });
    let initial_age = exchange.initial_age(headers);
    let mut ttl_override = ttl.and_then(|ttl| Some((ttl, ttl_directives(&directives, ttl)?)));
    // The lifetime as the response gives it, however old it arrived: the stale
    // windows count from its end.
    let judged = |ttl_override: &Option<(Duration, HeaderValue)>| match ttl_override {
        Some((_, value)) => {
            let given: Vec<_> = split_directives(value.to_str().unwrap_or_default()).collect();
            freshness_lifetime(request.method, status, &stored_headers, &given, true, now)
        }
        None => freshness_lifetime(
            request.method,
            status,
            &stored_headers,
            &directives.given,
            false,
            now,
        ),
    };
    let mut lifetime = judged(&ttl_override);
    let error_ttl = rules
        .route
        .and_then(|r| r.error_ttl)
        .filter(|_| matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE));
    if let Some(cap) = error_ttl
        && lifetime > cap
    {
        // A route's freshness for 404 / 410 is an upper bound on any other.
        if let Some(capped) = ttl_directives(&directives, cap) {
            ttl_override = Some((cap, capped));
        }
        lifetime = judged(&ttl_override);
    }

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
    // The stale windows (RFC 5861) count from the end of the lifetime, which an aged
    // response (its `Age`, or a `Date` in the past) may have passed on arrival; the
    // retention of a validated response counts from when it is stale. Saturating: a
    // window of `Duration::MAX` means "always".
    let fresh_left = lifetime.saturating_sub(initial_age);
    let window_left = lifetime
        .saturating_add(swr.max(sie))
        .saturating_sub(initial_age);
    let keep_for = window_left
        .max(fresh_left.saturating_add(retention))
        .min(Duration::from_secs(DELTA_SECONDS_MAX));
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
            method: request.method.clone(),
            ttl_override: ttl_override.map(|(ttl, _)| ttl),
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

/// The time since a response's `Date` when it arrived, its apparent age (RFC 9111
/// §4.2.3), in whole seconds. `Date` has a resolution of one second, so one second or
/// less is no age: a response generated just now is not aged by the rounding.
fn apparent_age(headers: &HeaderMap, received: SystemTime) -> Duration {
    let date = headers
        .get(header::DATE)
        .and_then(|v| http_time(v.to_str().ok()?));
    match date.and_then(|date| received.duration_since(date).ok()) {
        Some(since) if since.as_secs() > 1 => Duration::from_secs(since.as_secs()),
        _ => Duration::ZERO,
    }
}

/// An HTTP date (RFC 9110 §5.6.7): the RFC 2822 forms `http-cache-semantics` reads
/// (IMF-fixdate among them), else the obsolete RFC 850 and asctime forms a recipient
/// should accept too. One reader for `Date`, `Expires` and `Last-Modified`, so that the
/// age and the lifetime of a response count from the same `Date`.
fn http_time(text: &str) -> Option<SystemTime> {
    match time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc2822) {
        Ok(date) => {
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(date.unix_timestamp().max(0) as u64))
        }
        Err(_) => httpdate::parse_http_date(text).ok(),
    }
}

/// The largest delta-seconds value (RFC 9111 §1.2.2): a larger one, or one too large
/// to represent, counts as this.
const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// A delta-seconds argument (RFC 9111 §1.2.2): digits only, at most 2^31.
fn delta_seconds(argument: &str) -> Option<Duration> {
    let digits = argument.trim().trim_matches('"');
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = digits
        .parse::<u64>()
        .map_or(DELTA_SECONDS_MAX, |s| s.min(DELTA_SECONDS_MAX));
    Some(Duration::from_secs(secs))
}

/// `headers` with the directive names of their `Cache-Control` fields lowercased and
/// delta-seconds arguments past 2^31 written as 2^31, or `None` when they need
/// neither: RFC 9111 §5.2 compares directive names case-insensitively and §1.2.2 caps
/// delta-seconds, `http-cache-semantics` reads names as written and a value it cannot
/// represent as zero. Other arguments are kept as they are (a `private="X-Field"`
/// names a field).
fn lowercase_directives(headers: &HeaderMap) -> Option<HeaderMap> {
    let needs = |field: &[u8]| {
        field.iter().any(u8::is_ascii_uppercase)
            || field
                .split(|b| !b.is_ascii_digit())
                .any(|digits| digits.len() >= 10)
    };
    if !headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|v| needs(v.as_bytes()))
    {
        return None;
    }
    let mut lowered = headers.clone();
    lowered.remove(header::CACHE_CONTROL);
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(field) = value.to_str() else {
            lowered.append(header::CACHE_CONTROL, value.clone());
            continue;
        };
        let mut text = String::with_capacity(field.len());
        for (name, argument) in split_directives(field) {
            if !text.is_empty() {
                text.push_str(", ");
            }
            text.extend(name.chars().map(|c| c.to_ascii_lowercase()));
            if let Some(argument) = argument {
                text.push('=');
                match delta_seconds(argument) {
                    Some(secs) if secs.as_secs() == DELTA_SECONDS_MAX => {
                        let _ = write!(text, "{DELTA_SECONDS_MAX}");
                    }
                    _ => text.push_str(argument),
                }
            }
        }
        if let Ok(value) = HeaderValue::from_str(&text) {
            lowered.append(header::CACHE_CONTROL, value);
        }
    }
    Some(lowered)
}

/// The request headers a policy is asked with: their `Cache-Control` directive names
/// lowercased (RFC 9111 §5.2), as [`lowercase_directives`] does for responses.
pub(crate) fn lowercase_request_directives(headers: HeaderMap) -> HeaderMap {
    lowercase_directives(&headers).unwrap_or(headers)
}

/// The `Age` a response arrived with: the first field, in whole seconds, at most 2^31
/// (RFC 9111 §1.2.2, §5.1), else none.
fn age_field(headers: &HeaderMap) -> Duration {
    headers
        .get(header::AGE)
        .and_then(|v| delta_seconds(v.to_str().ok()?))
        .unwrap_or_default()
}

/// The `Cache-Control` field that gives a response `ttl` as its freshness: its own
/// directives without `s-maxage` and `max-age`, then `s-maxage=<ttl>`. `None` when
/// that is no valid field value (directives that are not visible ASCII): the
/// origin's freshness stands then.
fn ttl_directives(directives: &Directives<'_>, ttl: Duration) -> Option<HeaderValue> {
    let mut cache_control = directives.without(&["s-maxage", "max-age"]);
    if !cache_control.is_empty() {
        cache_control.push_str(", ");
    }
    let _ = write!(cache_control, "s-maxage={}", ttl.as_secs());
    HeaderValue::from_str(&cache_control).ok()
}

/// The freshness lifetime (RFC 9111 §4.2.1) a shared `http-cache-semantics` policy
/// gives the response to `method` with these `headers`, received at `received`
/// (its `max_age`, to the second), without building the policy: a policy clones both
/// header maps and hashes every directive, a fifth of a miss's cost when a policy was
/// built for each.
///
/// `given` are the response's `Cache-Control` directives as [`Directives::given`]
/// holds them; `overridden` when they are a TTL override's (see [`ttl_directives`]),
/// which replaces the `Cache-Control` fields and the `Expires` of `headers`.
/// `tests::freshness_agrees_with_the_policy` holds it to the policy's answers.
fn freshness_lifetime(
    method: &Method,
    status: StatusCode,
    headers: &HeaderMap,
    given: &[(&str, Option<&str>)],
    overridden: bool,
    received: SystemTime,
) -> Duration {
    const NONE: Duration = Duration::ZERO;
    // The policy keeps the first of a repeated directive, unquoted.
    let has = |name: &str| given.iter().any(|(n, _)| *n == name);
    let argument = |name: &str| {
        given
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, a)| a.map(|a| a.trim_matches('"')))
    };
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let expires = if overridden {
        None
    } else {
        headers.get(header::EXPIRES)
    };
    let storable = (*method == Method::GET || *method == Method::HEAD)
        && UNDERSTOOD_STATUSES.contains(&status.as_u16())
        && (!has("no-store") || has("must-understand"))
        && !has("private")
        && (expires.is_some()
            || has("max-age")
            || has("s-maxage")
            || has("public")
            || CACHEABLE_BY_DEFAULT.contains(&status.as_u16()));
    // Without `Cache-Control`, `Pragma: no-cache` counts as `no-cache` (RFC 9111 §5.4).
    let no_cache = has("no-cache")
        || (!overridden
            && !headers.contains_key(header::CACHE_CONTROL)
            && text(header::PRAGMA).is_some_and(|p| p.contains("no-cache")));
    if !storable
        || no_cache
        || (headers.contains_key(header::SET_COOKIE) && !has("public") && !has("immutable"))
        || text(header::VARY).map(str::trim) == Some("*")
    {
        return NONE;
    }
    let seconds = |arg: &str| delta_seconds(arg).unwrap_or_default();
    if let Some(s_maxage) = argument("s-maxage") {
        return seconds(s_maxage);
    }
    if let Some(max_age) = argument("max-age") {
        return seconds(max_age);
    }
    let options = options();
    let least = if has("immutable") {
        options.immutable_min_time_to_live
    } else {
        NONE
    };
    let server_date = text(header::DATE).and_then(http_time).unwrap_or(received);
    if let Some(expires) = expires.and_then(|v| v.to_str().ok()) {
        // An invalid date (`0` above all) is a time in the past (RFC 9111 §5.3).
        let Some(expires) = http_time(expires) else {
            return NONE;
        };
        return least.max(expires.duration_since(server_date).unwrap_or_default());
    }
    if let Some(modified) = text(header::LAST_MODIFIED).and_then(http_time)
        && let Ok(since) = server_date.duration_since(modified)
    {
        // RFC 9111 §4.2.2: a tenth of the time since the last change.
        let secs = since.as_secs() as f64 * f64::from(options.cache_heuristic);
        return least.max(Duration::from_secs(secs as u64));
    }
    least
}

/// The `http-cache-semantics` policy `stored` was judged by, made again for the
/// questions only it answers: whether a request with its own `Cache-Control` may
/// have it (`before_request`), the conditional request that revalidates it, and
/// whether a 304 refreshes it (`after_response`). Entries keep no policy: building
/// one per stored response cost a fifth of a miss, and few are ever asked.
///
/// The policy's request is `request`'s target and `Host` with the stored response's
/// Vary-selected values (a stored response is only ever asked about requests for its
/// own key: same method, host, path and query).
pub(crate) fn policy_of(stored: &StoredResponse, request: &RequestView<'_>) -> CachePolicy {
    let mut kept = HeaderMap::new();
    for value in request.headers.get_all(header::HOST) {
        kept.append(header::HOST, value.clone());
    }
    for (name, values) in &stored.vary {
        if name.starts_with(COOKIE_PREFIX) {
            continue;
        }
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        kept.remove(&name);
        for value in values {
            if let Ok(value) = HeaderValue::from_maybe_shared(value.clone()) {
                kept.insert(name.clone(), value);
            }
        }
    }
    let mut headers = stored.headers.clone();
    if !stored.initial_age.is_zero() {
        headers.insert(header::AGE, HeaderValue::from(stored.initial_age.as_secs()));
    }
    if let Some(ttl) = stored.ttl_override
        && let Some(value) = ttl_directives(&Directives::parse(&stored.headers), ttl)
    {
        headers.insert(header::CACHE_CONTROL, value);
        headers.remove(header::EXPIRES);
    }
    as_the_policy_reads_them(&mut headers);
    let kept_request = RequestView {
        uri: request.uri.clone(),
        method: &stored.method,
        headers: &kept,
    };
    let response = ResponseView {
        status: stored.status,
        headers: &headers,
    };
    CachePolicy::new_options(&kept_request, &response, stored.stored_at, options())
}

/// A stored response's `Cache-Control` rewritten where `http-cache-semantics` reads it
/// otherwise than RFC 9111 does for a shared cache:
/// - `must-understand` on a status understood here sets `no-store` aside (only such
///   responses are stored, §5.2.2.3), which the policy does not know;
/// - `proxy-revalidate` is `must-revalidate` for a shared cache (§5.2.2.8), where the
///   policy takes it as a freshness lifetime of zero.
fn as_the_policy_reads_them(headers: &mut HeaderMap) {
    let directives = Directives::parse(headers);
    let must_understand = directives.has("must-understand") && directives.has("no-store");
    let proxy_revalidate = directives.has("proxy-revalidate");
    if !must_understand && !proxy_revalidate {
        return;
    }
    let mut dropped = Vec::with_capacity(2);
    if must_understand {
        dropped.push("no-store");
    }
    let mut text = if proxy_revalidate {
        dropped.extend(["proxy-revalidate", "must-revalidate"]);
        String::from("must-revalidate")
    } else {
        String::new()
    };
    let rest = directives.without(&dropped);
    if !rest.is_empty() {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(&rest);
    }
    if let Ok(value) = HeaderValue::from_str(&text) {
        headers.insert(header::CACHE_CONTROL, value);
    }
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
///
/// `given`: the response's directives, [`Directives::given`].
fn is_storable(
    request: &RequestView<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    given: &[(&str, Option<&str>)],
) -> bool {
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
        || conflicting_directives(given);
    // RFC 9111 §5.2.2.3: `must-understand` sets `no-store` aside for the statuses
    // understood here, and only those are stored.
    let no_store = response("no-store") && !response("must-understand");
    !(request.headers.contains_key(header::CACHE_CONTROL)
        && CacheControl::parse(request.headers).has("no-store"))
        && method
        && UNDERSTOOD_STATUSES.contains(&status.as_u16())
        && !no_store
        && !response("private")
        && authorized
        && (explicit || response("public") || CACHEABLE_BY_DEFAULT.contains(&status.as_u16()))
}

/// One `Cache-Control` field's directives: comma-separated `name[=value]`, name and
/// value trimmed, empty names skipped.
fn split_directives(field: &str) -> impl Iterator<Item = (&str, Option<&str>)> {
    field.split(',').filter_map(|part| {
        let mut kv = part.splitn(2, '=');
        let name = kv.next()?.trim();
        (!name.is_empty()).then(|| (name, kv.next().map(str::trim)))
    })
}

/// A response's `Cache-Control`, split once for every question a miss asks of it.
///
/// `given` holds the directives of the fields that are visible ASCII as written
/// ([`split_directives`]; names are lowercase in the responses [`storable`] judges,
/// see [`lowercase_directives`]): what `http-cache-semantics` reads, and so what [`is_storable`] and
/// [`freshness_lifetime`] read. The questions RFC 9111 asks case-insensitively
/// ([`has`](Self::has), [`seconds`](Self::seconds), [`without`](Self::without)) read
/// the same list, except when a field is not visible ASCII: [`CacheControl`], which
/// reads those fields too, answers them then.
struct Directives<'h> {
    given: Vec<(&'h str, Option<&'h str>)>,
    lossy: Option<CacheControl<'h>>,
}

impl<'h> Directives<'h> {
    fn parse(headers: &'h HeaderMap) -> Self {
        let mut given = Vec::new();
        let mut opaque = false;
        for value in headers.get_all(header::CACHE_CONTROL) {
            match value.to_str() {
                Ok(field) => given.extend(split_directives(field)),
                Err(_) => opaque = true,
            }
        }
        Directives {
            given,
            lossy: opaque.then(|| CacheControl::parse(headers)),
        }
    }

    /// Whether directive `name` (lowercase) is there, in any case.
    fn has(&self, name: &str) -> bool {
        match &self.lossy {
            Some(lossy) => lossy.has(name),
            None => self.given.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)),
        }
    }

    /// The argument of the first directive `name` (lowercase), in seconds.
    fn seconds(&self, name: &str) -> Option<Duration> {
        match &self.lossy {
            Some(lossy) => lossy.seconds(name),
            None => self
                .given
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .and_then(|(_, a)| delta_seconds((*a)?)),
        }
    }

    /// The directives but `names` (lowercase), names lowercased, arguments unquoted.
    fn without(&self, names: &[&str]) -> String {
        if let Some(lossy) = &self.lossy {
            return lossy.without(names);
        }
        let mut out = String::new();
        for (name, arg) in &self.given {
            if names.iter().any(|n| name.eq_ignore_ascii_case(n)) {
                continue;
            }
            if !out.is_empty() {
                out.push_str(", ");
            }
            out.extend(name.chars().map(|c| c.to_ascii_lowercase()));
            if let Some(arg) = arg {
                out.push('=');
                out.push_str(arg.trim_matches('"'));
            }
        }
        out
    }
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
    if (response.has("no-store") && !response.has("must-understand")) || asked.has("no-store") {
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
            .and_then(|(_, a)| delta_seconds(a.as_deref()?))
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
    if request.contains_key(header::IF_NONE_MATCH) {
        // `*` matches any current representation, the stored one whatever its entity
        // tag (RFC 9110 §13.1.2); others match the stored tag weakly.
        let etag = stored.get(header::ETAG).map(|e| opaque_tag(e.as_bytes()));
        return request.get_all(header::IF_NONE_MATCH).iter().any(|value| {
            value.as_bytes().split(|b| *b == b',').any(|candidate| {
                let candidate = trim(candidate);
                candidate == b"*" || Some(opaque_tag(candidate)) == etag
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

/// Whether a `HEAD` response describes the representation a stored `GET` response
/// holds (RFC 9111 §4.3.5): each of its validators (`ETag`, `Last-Modified`) and its
/// `Content-Length`, when it has them, is the stored response's too. A field the
/// stored response lacks is no match: nothing says it is the same representation.
pub(crate) fn same_representation(stored: &HeaderMap, head: &HeaderMap) -> bool {
    let etag = |h: &HeaderMap| h.get(header::ETAG).map(|v| trim(v.as_bytes()).to_vec());
    let modified = |h: &HeaderMap| {
        h.get(header::LAST_MODIFIED)
            .map(|v| v.to_str().ok().and_then(http_time).ok_or(v.clone()))
    };
    let length = |h: &HeaderMap| {
        h.get(header::CONTENT_LENGTH).map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(v.clone())
        })
    };
    (!head.contains_key(header::ETAG) || etag(head) == etag(stored))
        && (!head.contains_key(header::LAST_MODIFIED) || modified(head) == modified(stored))
        && (!head.contains_key(header::CONTENT_LENGTH) || length(head) == length(stored))
}

#[cfg(test)]
mod tests {
    use http_cache_semantics::{AfterResponse, BeforeRequest};

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    /// `Date`, `Expires` and `Last-Modified` are read alike in every format HTTP has
    /// had (RFC 9110 §5.6.7), so the age and the lifetime of a response count from the
    /// same `Date`: an asctime `Date` 100 s back with an `Expires` 160 s after it is
    /// 60 s from stale, not stale on arrival.
    #[test]
    fn age_and_lifetime_read_every_date_format_alike() {
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(http_time(text), Some(date), "{text}");
        }
        let received = date + Duration::from_secs(100);
        let fields = headers(&[
            ("date", "Sun Nov  6 08:49:37 1994"),
            ("expires", "Sun, 06 Nov 1994 08:52:17 GMT"),
        ]);
        let lifetime =
            freshness_lifetime(&Method::GET, StatusCode::OK, &fields, &[], false, received);
        assert_eq!(lifetime, Duration::from_secs(160));
        assert_eq!(apparent_age(&fields, received), Duration::from_secs(100));
        assert_eq!(http_time("0"), None);
    }

    /// RFC 9111 §4.2.3: the corrected initial age is the larger of the apparent age
    /// and the `Age` received plus the response delay, counted in whole seconds.
    #[test]
    fn the_initial_age_adds_the_response_delay_to_the_age_received() {
        let sent = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let exchange = |delay_ms| Exchange {
            sent,
            received: sent + Duration::from_millis(delay_ms),
        };
        let aged = headers(&[("age", "5")]);
        assert_eq!(exchange(2_400).initial_age(&aged), Duration::from_secs(7));
        assert_eq!(exchange(900).initial_age(&aged), Duration::from_secs(5));
        assert_eq!(
            exchange(3_000).initial_age(&headers(&[])),
            Duration::from_secs(3)
        );
        // A `Date` 30 s before the response came: the apparent age is the larger.
        let dated = headers(&[("age", "5"), ("date", "Fri, 15 Jan 2027 08:00:00 GMT")]);
        let received = http_time("Fri, 15 Jan 2027 08:00:30 GMT").unwrap();
        let slow = Exchange {
            sent: received - Duration::from_secs(2),
            received,
        };
        assert_eq!(slow.initial_age(&dated), Duration::from_secs(30));
        // A clock that went back between the two times is no delay.
        let back = Exchange {
            sent: received,
            received: received - Duration::from_secs(2),
        };
        assert_eq!(back.initial_age(&aged), Duration::from_secs(5));
        // A stored response counts its age from the corrected initial age.
        let s = judge_at(
            exchange(2_500),
            &[("cache-control", "max-age=6"), ("age", "5")],
        );
        assert_eq!(s.err(), Some("stale-on-arrival"));
        let s = judge_at(
            exchange(2_500),
            &[("cache-control", "max-age=60"), ("age", "5")],
        )
        .unwrap();
        assert_eq!(s.response.initial_age, Duration::from_secs(7));
        assert_eq!(s.keep_for, Duration::from_secs(53));
    }

    /// The storability check without a policy agrees with `CachePolicy::is_storable`
    /// in shared mode on every combination of method, status, request and response
    /// fields that the rules of RFC 9111 §3 look at, the policy being asked with
    /// lowercase directive names (RFC 9111 §5.2; it compares them as written).
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
            let lowered_req = lowercase_request_directives(req.clone());
            for method in &methods {
                let view = RequestView {
                    uri: "/p".parse().unwrap(),
                    method,
                    headers: &req,
                };
                let lowered_view = RequestView {
                    uri: "/p".parse().unwrap(),
                    method,
                    headers: &lowered_req,
                };
                for res in responses {
                    let res = headers(res);
                    let res = lowercase_directives(&res).unwrap_or(res);
                    for status in statuses {
                        let status = StatusCode::from_u16(status).unwrap();
                        let response = ResponseView {
                            status,
                            headers: &res,
                        };
                        let policy = CachePolicy::new_options(
                            &lowered_view,
                            &response,
                            SystemTime::now(),
                            options(),
                        );
                        assert_eq!(
                            is_storable(&view, status, &res, &Directives::parse(&res).given),
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

    /// The cache's default store rules, with `default_ttl` and the tag header `tag`.
    pub(super) fn default_rules(default_ttl: Option<Duration>, tag: &HeaderName) -> StoreRules<'_> {
        StoreRules {
            default_ttl,
            route: None,
            store_set_cookie: false,
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            stale_retention: Duration::from_secs(60),
            tag_header: tag,
        }
    }

    /// A 200 to a plain GET with the fields `res`, judged as received in `exchange`.
    fn judge_at(
        exchange: Exchange,
        res: &[(&'static str, &'static str)],
    ) -> Result<Storable, NotStored> {
        let req = HeaderMap::new();
        let view = RequestView {
            uri: "/p".parse().unwrap(),
            method: &Method::GET,
            headers: &req,
        };
        let tag = HeaderName::from_static("cache-tag");
        let rules = default_rules(None, &tag);
        storable(&view, StatusCode::OK, &headers(res), &rules, exchange)
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
        let rules = default_rules(Some(Duration::from_secs(30)), &tag);
        storable(
            &view,
            StatusCode::from_u16(status).unwrap(),
            &headers(res),
            &rules,
            Exchange::at(SystemTime::now()),
        )
        .ok()
    }

    /// Response fields that decide a freshness lifetime, alone and together.
    fn freshness_cases() -> Vec<Vec<(&'static str, &'static str)>> {
        let controls = [
            None,
            Some("max-age=60"),
            Some("s-maxage=30, max-age=60"),
            Some("max-age=\"45\""),
            Some("Max-Age=60"),
            Some("max-age=abc"),
            Some("max-age"),
            Some("public"),
            Some("no-cache, max-age=60"),
            Some("proxy-revalidate, max-age=60"),
            Some("immutable"),
            Some("max-age=5, max-age=6"),
            Some("private, max-age=60"),
        ];
        let extras: [&[(&'static str, &'static str)]; 9] = [
            &[],
            &[("expires", "Thu, 01 Jan 2099 00:00:00 GMT")],
            &[("expires", "0")],
            &[
                ("date", "Mon, 30 Nov 2026 00:00:00 GMT"),
                ("expires", "Mon, 30 Nov 2026 00:10:00 GMT"),
            ],
            &[("last-modified", "Mon, 23 Nov 2026 00:00:00 GMT")],
            &[
                ("date", "Mon, 30 Nov 2026 00:00:00 GMT"),
                ("last-modified", "Mon, 20 Nov 2026 00:00:00 GMT"),
            ],
            &[("pragma", "no-cache")],
            &[("vary", "*")],
            &[("age", "20")],
        ];
        let mut cases = Vec::new();
        for control in controls {
            for extra in extras {
                let mut case: Vec<(&'static str, &'static str)> = extra.to_vec();
                if let Some(control) = control {
                    case.push(("cache-control", control));
                }
                cases.push(case);
            }
        }
        cases
    }

    /// `freshness_lifetime` gives the lifetime a shared `CachePolicy` gives (its time
    /// to live plus its age at reception), with and without a TTL override, for every
    /// case above and the statuses and methods a response cache stores.
    #[test]
    fn freshness_agrees_with_the_policy() {
        let received = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_996_800 + 3600);
        let mut checked = 0;
        for case in freshness_cases() {
            let res = headers(&case);
            for method in [Method::GET, Method::HEAD] {
                let req = headers(&[("host", "example.com")]);
                let view = RequestView {
                    uri: "/p".parse().unwrap(),
                    method: &method,
                    headers: &req,
                };
                for status in [200, 204, 302, 404, 500] {
                    let status = StatusCode::from_u16(status).unwrap();
                    for ttl in [None, Some(Duration::from_secs(7))] {
                        let mut seen = res.clone();
                        let cache_control =
                            ttl.and_then(|ttl| ttl_directives(&Directives::parse(&res), ttl));
                        if let Some(value) = &cache_control {
                            seen.insert(header::CACHE_CONTROL, value.clone());
                            seen.remove(header::EXPIRES);
                        }
                        as_the_policy_reads_them(&mut seen);
                        let response = ResponseView {
                            status,
                            headers: &seen,
                        };
                        let policy =
                            CachePolicy::new_options(&view, &response, received, options());
                        let expected = policy.time_to_live(received) + policy.age(received);
                        let parsed = Directives::parse(&res);
                        let overriding: Vec<_> = cache_control
                            .iter()
                            .flat_map(|v| split_directives(v.to_str().unwrap()))
                            .collect();
                        let given = match &cache_control {
                            Some(_) => &overriding,
                            None => &parsed.given,
                        };
                        let lifetime = freshness_lifetime(
                            &method,
                            status,
                            &res,
                            given,
                            cache_control.is_some(),
                            received,
                        )
                        .max(age_field(&res));
                        assert_eq!(lifetime, expected, "{method} {status} {case:?} ttl {ttl:?}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 13 * 9 * 2 * 5 * 2);
    }

    /// The policy made again from a stored response answers as the policy built when
    /// it was stored did: freshness for requests with their own directives, the
    /// conditional request that revalidates it, whether a 304 refreshes it.
    #[test]
    fn a_policy_made_again_answers_as_the_stored_one() {
        let received = SystemTime::now();
        let tag = HeaderName::from_static("cache-tag");
        let responses: [&[(&'static str, &'static str)]; 6] = [
            &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
            &[
                ("cache-control", "max-age=60, must-revalidate"),
                ("age", "30"),
                ("last-modified", "Mon, 23 Nov 2026 00:00:00 GMT"),
            ],
            &[("vary", "Accept-Language"), ("etag", "W/\"v2\"")],
            &[
                ("expires", "Thu, 01 Jan 2099 00:00:00 GMT"),
                ("etag", "\"x\""),
            ],
            &[("cache-control", "s-maxage=10"), ("etag", "\"v3\"")],
            &[("cache-control", "no-cache"), ("etag", "\"v4\"")],
        ];
        let asks: [&[(&'static str, &'static str)]; 8] = [
            &[],
            &[("cache-control", "max-age=0")],
            &[("cache-control", "max-age=20")],
            &[("cache-control", "min-fresh=50")],
            &[("cache-control", "max-stale")],
            &[("cache-control", "max-stale=100")],
            &[("cache-control", "no-cache")],
            &[("pragma", "no-cache"), ("if-none-match", "\"old\"")],
        ];
        let mut checked = 0;
        for res in responses {
            for default_ttl in [None, Some(Duration::from_secs(40))] {
                let res = headers(res);
                let req = headers(&[("host", "example.com"), ("accept-language", "en,  fr")]);
                let view = RequestView {
                    uri: "/p?a=1".parse().unwrap(),
                    method: &Method::GET,
                    headers: &req,
                };
                let rules = default_rules(default_ttl, &tag);
                let Ok(judged) =
                    storable(&view, StatusCode::OK, &res, &rules, Exchange::at(received))
                else {
                    continue;
                };
                let stored = judged.response;
                // The policy as a stored response used to hold it: the stored headers
                // with the origin's `Age` and the TTL override, the request's `Host`
                // and normalized Vary-selected fields.
                let mut was = stored.headers.clone();
                if let Some(age) = res.get(header::AGE) {
                    was.insert(header::AGE, age.clone());
                }
                if let Some(ttl) = stored.ttl_override {
                    was.insert(
                        header::CACHE_CONTROL,
                        ttl_directives(&Directives::parse(&res), ttl).unwrap(),
                    );
                    was.remove(header::EXPIRES);
                }
                let names: Vec<String> = stored.vary.iter().map(|(n, _)| n.clone()).collect();
                let kept = super::super::key::with_normalized(
                    &headers(&[("host", "example.com")]),
                    &req,
                    &names,
                );
                let old = CachePolicy::new_options(
                    &RequestView {
                        uri: "/p?a=1".parse().unwrap(),
                        method: &Method::GET,
                        headers: &kept,
                    },
                    &ResponseView {
                        status: StatusCode::OK,
                        headers: &was,
                    },
                    received,
                    options(),
                );
                assert_eq!(
                    old.time_to_live(received) + old.age(received),
                    stored.lifetime,
                    "{res:?}"
                );
                for ask in asks {
                    for method in [Method::GET, Method::HEAD] {
                        let mut asked = headers(ask);
                        asked.insert("host", HeaderValue::from_static("example.com"));
                        asked.insert("accept-language", HeaderValue::from_static("en, fr"));
                        let view = RequestView {
                            uri: "/p?a=1".parse().unwrap(),
                            method: &method,
                            headers: &asked,
                        };
                        let again = policy_of(&stored, &view);
                        for later in [0, 25, 45, 90] {
                            let at = received + Duration::from_secs(later);
                            let summary = |answer: BeforeRequest| match answer {
                                BeforeRequest::Fresh(parts) => (true, parts.headers),
                                BeforeRequest::Stale { request, .. } => (false, request.headers),
                            };
                            assert_eq!(
                                summary(again.before_request(&view, at)),
                                summary(old.before_request(&view, at)),
                                "{res:?} asked {method} {asked:?} at +{later}s"
                            );
                        }
                        for answer in [
                            headers(&[("etag", "\"v1\"")]),
                            headers(&[("etag", "W/\"v2\"")]),
                            headers(&[("last-modified", "Mon, 23 Nov 2026 00:00:00 GMT")]),
                            headers(&[]),
                        ] {
                            let answer = ResponseView {
                                status: StatusCode::NOT_MODIFIED,
                                headers: &answer,
                            };
                            let refreshes = |policy: &CachePolicy| {
                                matches!(
                                    policy.after_response(&view, &answer, received),
                                    AfterResponse::NotModified(..)
                                )
                            };
                            assert_eq!(refreshes(&again), refreshes(&old), "{res:?}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked >= 6 * 8 * 2, "{checked}");
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
        // `*` matches any stored representation, with an entity tag or without (RFC
        // 9110 §13.1.2).
        assert!(not_modified(
            &headers(&[("if-none-match", "*")]),
            &headers(&[("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT")]),
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

    /// RFC 9111 §4.3.5: a `HEAD` response describes the stored representation when its
    /// `ETag`, `Last-Modified` and `Content-Length` are the stored ones (a date in any
    /// format, a length with spaces); one of them different, or absent from the stored
    /// response, is another representation.
    #[test]
    fn a_head_response_matches_the_stored_representation_field_by_field() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("content-length", "6"),
        ]);
        let same: [&[(&'static str, &'static str)]; 4] = [
            &[],
            &[("etag", " \"v1\"")],
            &[("last-modified", "Sun Nov  6 08:49:37 1994")],
            &[("etag", "\"v1\""), ("content-length", " 6")],
        ];
        for head in same {
            assert!(same_representation(&stored, &headers(head)), "{head:?}");
        }
        let other: [&[(&'static str, &'static str)]; 5] = [
            &[("etag", "\"v2\"")],
            &[("etag", "W/\"v1\"")],
            &[("last-modified", "Mon, 07 Nov 1994 08:49:37 GMT")],
            &[("etag", "\"v1\""), ("content-length", "7")],
            &[("content-length", "six")],
        ];
        for head in other {
            assert!(!same_representation(&stored, &headers(head)), "{head:?}");
        }
        let untagged = headers(&[("content-length", "6")]);
        assert!(!same_representation(
            &untagged,
            &headers(&[("etag", "\"v1\"")])
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
    use super::tests::default_rules;
    use super::{Exchange, RequestView, storable};

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
        let rules = default_rules(None, &tag);
        let now = SystemTime::now();
        let mut stored = storable(&view, StatusCode::OK, &response, &rules, Exchange::at(now))
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
            assert_eq!(back.method, Method::GET);
            let policy = super::policy_of(back, &view);
            assert!(
                policy.time_to_live(now) > Duration::from_secs(59),
                "{codec:?}"
            );
        }
    }

    /// An entry the previous format wrote (postcard, key `http1|GET|example.test|/old|`,
    /// a 200 with `max-age=600` and its `http-cache-semantics` policy), as a Redis
    /// store holds it.
    const FORMAT_1_ENTRY: &str = "c701011d1c68747470317c4745547c6578616d706c652e746573747c2f6f6c647c00c801030d63616368652d636f6e74726f6c010b6d61782d6167653d3630300c636f6e74656e742d74797065010a746578742f706c61696e0464617465011d4d6f6e2c203330204e6f7620323032362030303a35333a323020474d54096f6c6420656e7472790104686f7374010c6578616d706c652e74657374030d63616368652d636f6e74726f6c010b6d61782d6167653d3630300c636f6e74656e742d74797065010a746578742f706c61696e0464617465011d4d6f6e2c203330204e6f7620323032362030303a35333a323020474d54042f6f6c64c8010347455401cdcccc3d80a305000001076d61782d6167650103363030008092b3d806008092b3d806000000d8040000000000000000";

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Bytes of another format are an error to decode (the store counts a decode error
    /// and misses), never a wrong entry: the previous format's under either codec.
    #[test]
    fn entries_of_another_format_do_not_decode() {
        let old = unhex(FORMAT_1_ENTRY);
        let decoded = Codec::Postcard.decode_entry::<String, CachedEntry>(&old);
        assert!(decoded.is_err(), "{decoded:?}");
        let index = |nonce| {
            CachedEntry::variants(super::super::entry::VaryIndex {
                names: vec!["accept".into()],
                nonce,
                expires_at: SystemTime::UNIX_EPOCH + Duration::from_secs(1),
            })
        };
        let old_json = serde_json::json!({"kind": {"Variants": {
            "names": ["accept"],
            "nonce": 7,
            "expires_at": {"secs_since_epoch": 1, "nanos_since_epoch": 0},
        }}});
        for codec in [Codec::Postcard, Codec::Json] {
            let current = codec.encode_entry("k", &index(7)).unwrap();
            let (_, back) = codec.decode_entry::<String, CachedEntry>(&current).unwrap();
            assert!(
                matches!(&back.kind, super::super::entry::EntryKind::Variants(v) if v.nonce == 7)
            );
        }
        let blob = Codec::Json.encode_entry("k", &old_json).unwrap();
        let decoded = Codec::Json.decode_entry::<String, CachedEntry>(&blob);
        assert!(decoded.is_err(), "{decoded:?}");
        // The same fields with this format's number decode.
        let mut numbered = old_json.clone();
        numbered["format"] = 2.into();
        let blob = Codec::Json.encode_entry("k", &numbered).unwrap();
        assert!(
            Codec::Json
                .decode_entry::<String, CachedEntry>(&blob)
                .is_ok()
        );
    }
}
