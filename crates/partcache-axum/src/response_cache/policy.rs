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

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use http_cache_semantics::{CacheOptions, CachePolicy, RequestLike};

use super::entry::StoredResponse;
use super::key::{selected_values, vary_names};

/// How a route's responses are cached, overriding the origin or the defaults.
///
/// ```
/// use partcache_axum::RoutePolicy;
/// use std::time::Duration;
///
/// let products = RoutePolicy::ttl(Duration::from_secs(60)); // whatever the origin says
/// let news = RoutePolicy::default_ttl(Duration::from_secs(5)); // when the origin is silent
/// let account = RoutePolicy::bypass(); // never cached
/// # let _ = (products, news, account);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    pub(crate) ttl: Option<Duration>,
    pub(crate) default_ttl: Option<Duration>,
    pub(crate) bypass: bool,
}

impl RoutePolicy {
    /// Storable responses are fresh for `ttl`, whatever freshness the origin gives.
    /// What may be stored is unchanged: `no-store`, `private` and the other rules
    /// still apply.
    pub fn ttl(ttl: Duration) -> Self {
        RoutePolicy {
            ttl: Some(ttl),
            default_ttl: None,
            bypass: false,
        }
    }

    /// Responses whose origin gives no freshness (`s-maxage`, `max-age`, `Expires`)
    /// are fresh for `ttl` (instead of the cache-wide default).
    pub fn default_ttl(ttl: Duration) -> Self {
        RoutePolicy {
            ttl: None,
            default_ttl: Some(ttl),
            bypass: false,
        }
    }

    /// Requests on the route never touch the cache (`x-cache: BYPASS`).
    pub fn bypass() -> Self {
        RoutePolicy {
            ttl: None,
            default_ttl: None,
            bypass: true,
        }
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
    pub(crate) response: StoredResponse,
    /// How long the store should keep it: fresh time left plus the longest stale use.
    pub(crate) keep_for: Duration,
}

fn options() -> CacheOptions {
    CacheOptions {
        shared: true,
        ..CacheOptions::default()
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), never stored.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Judges a response: `Some` with the entry to store (body to be filled in), or `None`
/// when it must not be stored.
pub(crate) fn storable(
    request: &RequestView<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    rules: &StoreRules<'_>,
    now: SystemTime,
) -> Option<Storable> {
    if rules.route.is_some_and(|r| r.bypass) {
        return None;
    }
    let has_cookie = headers.contains_key(header::SET_COOKIE);
    if has_cookie && !rules.store_set_cookie {
        return None;
    }
    let names = vary_names(headers)?; // `Vary: *` is never served, so never stored
    let response = ResponseView { status, headers };
    if !CachePolicy::new_options(request, &response, now, options()).is_storable() {
        return None;
    }

    // What clients get from the cache.
    let mut stored_headers = headers.clone();
    for name in HOP_BY_HOP
        .iter()
        .chain([header::AGE, rules.tag_header.clone()].iter())
    {
        stored_headers.remove(name);
    }
    if has_cookie {
        // Allowed to store the response, never to hand one client's cookie to all.
        stored_headers.remove(header::SET_COOKIE);
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
    let mut policy_headers = stored_headers.clone();
    if let Some(age) = headers.get(header::AGE) {
        policy_headers.insert(header::AGE, age.clone());
    }
    if let Some(ttl) = ttl {
        let mut cache_control = directives.without(&["s-maxage", "max-age"]);
        if !cache_control.is_empty() {
            cache_control.push_str(", ");
        }
        cache_control.push_str(&format!("s-maxage={}", ttl.as_secs()));
        if let Ok(value) = HeaderValue::from_str(&cache_control) {
            policy_headers.insert(header::CACHE_CONTROL, value);
            policy_headers.remove(header::EXPIRES);
        }
    }

    // The stored policy keeps only the request headers matching needs (Host and the
    // Vary-selected ones), not the first requester's cookies or credentials.
    let mut kept = HeaderMap::new();
    for name in std::iter::once("host").chain(names.iter().map(String::as_str)) {
        for value in request.headers.get_all(name) {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                kept.append(name, value.clone());
            }
        }
    }
    let kept_request = RequestView {
        uri: request.uri.clone(),
        method: request.method,
        headers: &kept,
    };
    let policy_response = ResponseView {
        status,
        headers: &policy_headers,
    };
    let policy = CachePolicy::new_options(&kept_request, &policy_response, now, options());

    let initial_age = policy.age(now);
    let lifetime = policy.time_to_live(now) + initial_age;
    let must_revalidate = directives.has("must-revalidate")
        || directives.has("proxy-revalidate")
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
        return None;
    }
    let tags = tags(headers.get_all(rules.tag_header));
    Some(Storable {
        response: StoredResponse {
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
        },
        keep_for,
    })
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

/// The few `Cache-Control` directives `http-cache-semantics` does not expose.
struct CacheControl {
    directives: Vec<(String, Option<String>)>,
}

impl CacheControl {
    fn parse(headers: &HeaderMap) -> Self {
        let mut directives = Vec::new();
        for value in headers.get_all(header::CACHE_CONTROL) {
            for part in String::from_utf8_lossy(value.as_bytes()).split(',') {
                let (name, arg) = match part.split_once('=') {
                    Some((n, a)) => (n, Some(a.trim().trim_matches('"').to_string())),
                    None => (part, None),
                };
                let name = name.trim().to_ascii_lowercase();
                if !name.is_empty() {
                    directives.push((name, arg));
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
            .filter(|(n, _)| !names.contains(&n.as_str()))
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

/// Whether a client's conditional request is satisfied by the stored response, so a
/// 304 answers it (RFC 9110 §13.1.2, §13.1.3; If-None-Match wins over
/// If-Modified-Since).
pub(crate) fn not_modified(request: &HeaderMap, stored: &HeaderMap) -> bool {
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
        let modified = stored.get(header::LAST_MODIFIED).and_then(parse);
        if let (Some(since), Some(modified)) = (parse(since), modified) {
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
    for name in not_modified.keys() {
        if KEEP.contains(name) || HOP_BY_HOP.contains(name) {
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
    }

    #[test]
    fn conditional_requests_match_weakly_and_by_date() {
        let stored = headers(&[
            ("etag", "\"v1\""),
            ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        assert!(not_modified(
            &headers(&[("if-none-match", "\"x\", W/\"v1\"")]),
            &stored
        ));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(
            &headers(&[("if-none-match", "\"v2\"")]),
            &stored
        ));
        assert!(not_modified(
            &headers(&[("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Tue, 20 Oct 2015 07:28:00 GMT")]),
            &stored
        ));
        // If-None-Match decides alone when present.
        assert!(!not_modified(
            &headers(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")
            ]),
            &stored
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
