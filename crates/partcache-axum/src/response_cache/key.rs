//! How a request becomes a cache key.
//!
//! A **primary key** names a resource: `http1|<METHOD>|<host>|<path>|<query>`, then
//! `|h:<name>=<hash>` for each configured keyed header. Host, path and query are
//! percent-escaped so that none of them can contain `|` (or `{`/`}`, so no part of the
//! request can pick a Redis hash tag): a request can never produce text that belongs
//! to another key's fields. The host is lowercased; the query is normalized (see
//! [`normalize_query`]).
//!
//! A **variant key** names one response of a resource whose responses `Vary`:
//! `<primary>|v:<nonce>:<hash>`, where the nonce comes from the resource's
//! `VaryIndex` (see `entry.rs`) and the hash is a 128-bit XXH3 of the selected
//! request headers, each name and value length-prefixed (so distinct header sets
//! never share an input to the hash).

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri, header};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

/// Which query parameters are part of a route's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QueryRule {
    /// Only these.
    Allow(Vec<String>),
    /// All but these.
    Deny(Vec<String>),
}

impl QueryRule {
    pub(crate) fn keeps(&self, name: &str) -> bool {
        match self {
            QueryRule::Allow(names) => names.iter().any(|n| n == name),
            QueryRule::Deny(names) => !names.iter().any(|n| n == name),
        }
    }
}

/// Bytes escaped in key parts: controls, space, non-ASCII (always), and the characters
/// that structure keys (`|`), escapes (`%`), or Redis hash tags (`{`, `}`).
const KEY_PART: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'|')
    .add(b'%')
    .add(b'{')
    .add(b'}')
    .add(b'"')
    .add(b'\\');

/// A byte [`KEY_PART`] leaves as it is: printable ASCII but the key's structure.
fn unescaped(byte: u8) -> bool {
    byte.is_ascii_graphic() && !matches!(byte, b'|' | b'%' | b'{' | b'}' | b'"' | b'\\')
}

/// The version prefix of every key; bumped when the layout changes.
const KEY_PREFIX: &str = "http1";

/// The primary key of a request, with what is needed to rebuild related keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct RequestKey {
    pub(crate) primary: String,
    /// `path?normalized-query`, the URI the stored policy is keyed on.
    pub(crate) normalized_uri: String,
}

/// The host a request is for: `Host`, else the URI's authority (HTTP/2), normalized
/// ([`normalize_host`]). `None` when both are present and disagree (such a request is
/// not cached).
pub(crate) fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    request_host_ref(uri, headers).map(Cow::into_owned)
}

/// [`request_host`], borrowed from the request when it is in normal form already (the
/// usual case: no copy per request).
pub(crate) fn request_host_ref<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<Cow<'a, str>> {
    request_host_of(uri, headers.get(header::HOST))
}

/// [`request_host_ref`] with the request's (first) `Host` field given.
pub(crate) fn request_host_of<'a>(
    uri: &'a Uri,
    host: Option<&'a HeaderValue>,
) -> Option<Cow<'a, str>> {
    let from_header = host.map(|h| match std::str::from_utf8(h.as_bytes()) {
        Ok(host) => normalized_host(host),
        Err(_) => Cow::Owned(normalized_host(&String::from_utf8_lossy(h.as_bytes())).into_owned()),
    });
    let from_uri = uri.authority().map(|a| normalized_host(a.as_str()));
    match (from_header, from_uri) {
        (Some(h), Some(u)) if h != u => None,
        (Some(h), _) => Some(h),
        (None, Some(u)) => Some(u),
        (None, None) => Some(Cow::Borrowed("")),
    }
}

/// A host as keys hold it: lowercase (RFC 3986 §3.2.2), without a trailing dot, and
/// without `:80` or `:443` (the default ports of http and https; the scheme is not
/// part of the key, so both are taken as default). `Example.COM:80` and
/// `example.com` are one host.
pub(crate) fn normalize_host(host: &str) -> String {
    normalized_host(host).into_owned()
}

/// [`normalize_host`], borrowing `host` when only a part of it is kept.
fn normalized_host(host: &str) -> Cow<'_, str> {
    // The usual host (a lowercase name, no port, no final dot) is its own normal form.
    if !host.ends_with('.')
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Cow::Borrowed(host);
    }
    normalized_host_in_full(host)
}

/// [`normalized_host`] for any host.
fn normalized_host_in_full(host: &str) -> Cow<'_, str> {
    let host = host.trim();
    let host = host
        .strip_suffix(":80")
        .or_else(|| host.strip_suffix(":443"))
        .unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Which query parameters a key keeps: not the cache-wide ignored ones, and those the
/// route's rule keeps.
#[derive(Clone, Copy)]
pub(crate) struct ParamFilter<'a> {
    pub(crate) ignored: &'a [String],
    pub(crate) route: Option<&'a QueryRule>,
}

impl ParamFilter<'_> {
    fn keeps(&self, name: &str) -> bool {
        !self.ignored.iter().any(|i| i == name) && self.route.is_none_or(|r| r.keeps(name))
    }

    /// Whether every parameter is kept (nothing to strip).
    pub(crate) fn keeps_all(&self) -> bool {
        self.ignored.is_empty() && self.route.is_none()
    }
}

/// The parameters of `query` in key order, without those `filter` drops.
///
/// Parameters are sorted by decoded name with a *stable* sort: parameters of one name
/// keep their relative order, because applications that read the first (or last)
/// value would otherwise answer `a=1&a=2` and `a=2&a=1` differently under one key.
/// Names are compared decoded (`%61` is `a`, `+` is a space) for the same reason.
pub(crate) fn normalize_query<'q>(query: &'q str, filter: ParamFilter<'_>) -> Vec<&'q str> {
    let mut params: Vec<(Cow<'q, str>, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| (decoded_name(p), p))
        .filter(|(name, _)| filter.keeps(name))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params.into_iter().map(|(_, p)| p).collect()
}

/// The query without the parameters `filter` drops, in its original order (what the
/// origin is sent: it must not see parameters the key does not include, or it could
/// reflect them into a response every client then gets).
pub(crate) fn strip_ignored(query: &str, filter: ParamFilter<'_>) -> String {
    let mut out = String::with_capacity(query.len());
    for param in query.split('&').filter(|p| !p.is_empty()) {
        if !filter.keeps(&decoded_name(param)) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(param);
    }
    out
}

fn decoded_name(param: &str) -> Cow<'_, str> {
    let name = param.split_once('=').map_or(param, |(n, _)| n);
    if name.contains(['+', '%']) {
        Cow::Owned(
            percent_decode_str(&name.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned(),
        )
    } else {
        Cow::Borrowed(name)
    }
}

fn push_escaped(out: &mut String, part: &str) {
    // Most parts have nothing to escape: copied whole.
    if part.bytes().all(unescaped) {
        out.push_str(part);
        return;
    }
    for piece in utf8_percent_encode(part, KEY_PART) {
        out.push_str(piece);
    }
}

impl RequestKey {
    /// The bytes its strings hold.
    pub(crate) fn weight(&self) -> usize {
        self.primary.len() + self.normalized_uri.len()
    }

    /// The primary key for `method host path?query` plus the keyed headers.
    pub(crate) fn new(
        method: &Method,
        host: &str,
        uri: &Uri,
        headers: &HeaderMap,
        params: ParamFilter<'_>,
        keyed_headers: &[HeaderName],
    ) -> Self {
        let mut key = RequestKey::default();
        key.rebuild(method, host, uri, headers, params, keyed_headers);
        key
    }

    /// [`new`](Self::new) in the buffers of this key (a hit looks up with a key whose
    /// buffers a previous request left, allocating none).
    pub(crate) fn rebuild(
        &mut self,
        method: &Method,
        host: &str,
        uri: &Uri,
        headers: &HeaderMap,
        params: ParamFilter<'_>,
        keyed_headers: &[HeaderName],
    ) {
        let path = uri.path();
        let normalized_uri = &mut self.normalized_uri;
        normalized_uri.clear();
        normalized_uri.push_str(path);
        if let Some(query) = uri.query() {
            for (i, param) in normalize_query(query, params).iter().enumerate() {
                normalized_uri.push(if i == 0 { '?' } else { '&' });
                normalized_uri.push_str(param);
            }
        }
        let primary = &mut self.primary;
        primary.clear();
        primary.reserve(32 + host.len() + normalized_uri.len());
        primary.push_str(KEY_PREFIX);
        primary.push('|');
        push_escaped(primary, method.as_str());
        primary.push('|');
        push_escaped(primary, host);
        primary.push('|');
        push_escaped(primary, path);
        primary.push('|');
        push_escaped(primary, &normalized_uri[path.len()..]);
        for name in keyed_headers {
            let hash = hash_headers(headers, name);
            let _ = write!(primary, "|h:{}={hash:032x}", name.as_str());
        }
    }

    /// The primary key of the same resource under another method (invalidation removes
    /// GET and HEAD alike).
    pub(crate) fn with_method(&self, method: &Method) -> String {
        let rest = self
            .primary
            .strip_prefix(KEY_PREFIX)
            .unwrap_or(&self.primary);
        let rest = rest.strip_prefix('|').unwrap_or(rest);
        let rest = rest.split_once('|').map_or("", |(_, r)| r);
        let mut key = String::with_capacity(self.primary.len() + 4);
        key.push_str(KEY_PREFIX);
        key.push('|');
        push_escaped(&mut key, method.as_str());
        key.push('|');
        key.push_str(rest);
        key
    }
}

/// The request path of `key` (`path?query`, as `RequestKey::normalized_uri`).
pub(crate) fn path_of(normalized_uri: &str) -> &str {
    normalized_uri
        .split_once('?')
        .map_or(normalized_uri, |(path, _)| path)
}

/// Whether `path` is `prefix` or below it, at a segment boundary (`/notes` covers
/// `/notes` and `/notes/42`, not `/notesx`; `/notes/` covers what starts with it).
pub(crate) fn under_prefix(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'))
}

/// Whether the response or flight `key` (a primary or variant key) is for a path
/// under `prefix` on `host` (`None`: any host).
pub(crate) fn key_under_prefix(key: &str, host: Option<&str>, prefix: &str) -> bool {
    let mut fields = key.split('|');
    let (Some(KEY_PREFIX), Some(_method), Some(key_host), Some(path)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        return false;
    };
    let escape = |part: &str| {
        let mut out = String::new();
        push_escaped(&mut out, part);
        out
    };
    // Escaping maps each character on its own, so an escaped prefix of the path is
    // the escaped path's prefix.
    host.is_none_or(|h| escape(h) == key_host) && under_prefix(path, &escape(prefix))
}

/// The key of the variant of `primary` selected by `selected` (header values, as
/// [`selected_values`] gives them), under the Vary index with `nonce`.
pub(crate) fn variant_key(primary: &str, nonce: u64, selected: &[(String, Vec<Bytes>)]) -> String {
    let mut input = Vec::with_capacity(64);
    for (name, values) in selected {
        push_prefixed(&mut input, name.as_bytes());
        input.extend_from_slice(&(values.len() as u64).to_le_bytes());
        for value in values {
            push_prefixed(&mut input, value);
        }
    }
    let hash = xxhash_rust::xxh3::xxh3_128(&input);
    let mut key = String::with_capacity(primary.len() + 56);
    key.push_str(primary);
    let _ = write!(key, "|v:{nonce:016x}:{hash:032x}");
    key
}

fn push_prefixed(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// XXH3-128 of all values of one header, length-prefixed.
fn hash_headers(headers: &HeaderMap, name: &HeaderName) -> u128 {
    let mut input = Vec::with_capacity(64);
    for value in headers.get_all(name) {
        push_prefixed(&mut input, value.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_128(&input)
}

/// The Vary header names of a response: lowercased, sorted, deduplicated. `None` for
/// `Vary: *` (never served from cache).
pub(crate) fn vary_names(headers: &HeaderMap) -> Option<Vec<String>> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        for name in String::from_utf8_lossy(value.as_bytes()).split(',') {
            let name = name.trim();
            if name == "*" {
                return None;
            }
            if !name.is_empty() {
                names.push(name.to_ascii_lowercase());
            }
        }
    }
    names.sort();
    names.dedup();
    Some(names)
}

/// The values `headers` has for each of `names` (what a stored variant answered),
/// normalized: an absent header has no value; a present one has one, its field lines
/// combined and its list members separated by `", "` (see [`normalized_value`]).
pub(crate) fn selected_values(headers: &HeaderMap, names: &[String]) -> Vec<(String, Vec<Bytes>)> {
    names
        .iter()
        .map(|name| (name.clone(), normalized_value(headers, name)))
        .collect()
}

/// One header's field value in the form variants are matched on (RFC 9111 §4.1: a
/// cache may normalize what has identical semantics): its field lines combined into
/// one (RFC 9110 §5.3), whitespace around commas dropped, empty list members removed
/// (RFC 9110 §5.6.1). `en, fr`, `en,fr` and two lines `en` / `fr` are one variant.
fn normalized_value(headers: &HeaderMap, name: &str) -> Vec<Bytes> {
    if let Some(cookie) = name.strip_prefix(COOKIE_PREFIX) {
        return cookie_value(headers, cookie);
    }
    let mut lines = headers.get_all(name).iter().peekable();
    if lines.peek().is_none() {
        return Vec::new();
    }
    let mut out = Vec::new();
    for member in lines.flat_map(|v| v.as_bytes().split(|b| *b == b',')) {
        let member = member.trim_ascii();
        if member.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(member);
    }
    vec![Bytes::from(out)]
}

/// `base` with each of the real header `names` set to its normalized value in `from`
/// ([`normalized_value`]; absent stays absent). What the stored policy matches
/// `Vary` on, so that its matching normalizes as the variant keys do.
pub(crate) fn with_normalized(base: &HeaderMap, from: &HeaderMap, names: &[String]) -> HeaderMap {
    let mut out = base.clone();
    for name in names.iter().filter(|n| !n.starts_with(COOKIE_PREFIX)) {
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        out.remove(&header);
        for value in normalized_value(from, name) {
            if let Ok(value) = http::HeaderValue::from_maybe_shared(value) {
                out.insert(header.clone(), value);
            }
        }
    }
    out
}

/// The URI a `Location` or `Content-Location` value refers to, resolved against the
/// request's target (RFC 9110 §10.2.2, §8.7: both are URI references; RFC 3986
/// §5.2): an absolute URI as it is, `//host/path` with the target's scheme, a query
/// on the target's path, an absolute path, or a relative path merged with the target's
/// directory, the last two with their dot segments removed. The fragment is dropped;
/// `None` for an empty reference or one that is no URI.
pub(crate) fn resolve_reference(target: &Uri, reference: &[u8]) -> Option<Uri> {
    let text = std::str::from_utf8(reference).ok()?.trim();
    let text = text.split('#').next().unwrap_or_default();
    if text.is_empty() {
        return None;
    }
    let has_scheme = text
        .split_once(':')
        .is_some_and(|(scheme, _)| !scheme.is_empty() && !scheme.contains(['/', '?']));
    if has_scheme {
        return Uri::try_from(text).ok();
    }
    if text.starts_with("//") {
        let scheme = target.scheme_str().unwrap_or("http");
        return Uri::try_from(format!("{scheme}:{text}")).ok();
    }
    let (path, query) = match text.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (text, None),
    };
    let merged = if path.is_empty() {
        target.path().to_string()
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        let base = target.path();
        let directory = &base[..base.rfind('/').map_or(0, |i| i + 1)];
        format!(
            "{}{path}",
            if directory.is_empty() { "/" } else { directory }
        )
    };
    let mut segments: Vec<&str> = Vec::new();
    let mut parts = merged.split('/').skip(1).peekable();
    while let Some(segment) = parts.next() {
        let last = parts.peek().is_none();
        match segment {
            "." | ".." => {
                if segment == ".." {
                    segments.pop();
                }
                if last {
                    segments.push("");
                }
            }
            _ => segments.push(segment),
        }
    }
    let mut resolved = format!("/{}", segments.join("/"));
    if let Some(query) = query {
        resolved.push('?');
        resolved.push_str(query);
    }
    Uri::try_from(resolved).ok()
}

/// The prefix of the selecting names that stand for one cookie (a route's keyed
/// cookies: `cookie:lang`). `:` cannot occur in a header name, so none collides with a
/// real `Vary` header.
pub(crate) const COOKIE_PREFIX: &str = "cookie:";

/// The value of cookie `name` in the request's `Cookie` lines (RFC 6265 §5.4: pairs
/// separated by `;`); none when it is absent. The first of repeated names wins, as
/// most servers read them.
fn cookie_value(headers: &HeaderMap, name: &str) -> Vec<Bytes> {
    cookie_pairs(headers)
        .find(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| vec![Bytes::copy_from_slice(v)])
        .unwrap_or_default()
}

/// The `(name, value)` pairs of every `Cookie` line.
pub(crate) fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&[u8], &[u8])> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|line| line.as_bytes().split(|b| *b == b';'))
        .filter_map(|pair| {
            let pair = pair.trim_ascii();
            let at = pair.iter().position(|b| *b == b'=')?;
            Some((pair[..at].trim_ascii(), pair[at + 1..].trim_ascii()))
        })
}

/// Whether `headers` select the same variant as `stored`.
pub(crate) fn same_variant(headers: &HeaderMap, stored: &[(String, Vec<Bytes>)]) -> bool {
    stored
        .iter()
        .all(|(name, values)| normalized_value(headers, name) == *values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_target() {
        let target: Uri = "/items/list?page=2".parse().unwrap();
        let resolve = |r: &str| resolve_reference(&target, r.as_bytes()).map(|u| u.to_string());
        assert_eq!(resolve("/a/b?x=1#f").as_deref(), Some("/a/b?x=1"));
        assert_eq!(resolve("/items/../users/1").as_deref(), Some("/users/1"));
        assert_eq!(resolve("/a/./b/..").as_deref(), Some("/a/"));
        assert_eq!(resolve("7").as_deref(), Some("/items/7"));
        assert_eq!(resolve("./7/").as_deref(), Some("/items/7/"));
        assert_eq!(resolve("../users/1").as_deref(), Some("/users/1"));
        assert_eq!(resolve("../../..").as_deref(), Some("/"));
        assert_eq!(resolve("?page=3").as_deref(), Some("/items/list?page=3"));
        assert_eq!(
            resolve("http://other.example/x").as_deref(),
            Some("http://other.example/x")
        );
        assert_eq!(
            resolve("//other.example/x").as_deref(),
            Some("http://other.example/x")
        );
        assert_eq!(resolve(""), None);
        assert_eq!(resolve("#top"), None);
        assert_eq!(resolve("a b"), None);
    }

    fn key(uri: &str, host: &str) -> RequestKey {
        let uri: Uri = uri.parse().unwrap();
        let ignored = ["utm_source".to_string()];
        let filter = ParamFilter {
            ignored: &ignored,
            route: None,
        };
        RequestKey::new(&Method::GET, host, &uri, &HeaderMap::new(), filter, &[])
    }

    #[test]
    fn query_order_does_not_matter_but_repeated_names_keep_theirs() {
        assert_eq!(
            key("/p?b=2&a=1", "h").primary,
            key("/p?a=1&b=2", "h").primary
        );
        assert_ne!(
            key("/p?a=1&a=2", "h").primary,
            key("/p?a=2&a=1", "h").primary
        );
        assert_ne!(
            key("/p?%61=1&a=2", "h").primary,
            key("/p?a=2&%61=1", "h").primary
        );
    }

    #[test]
    fn ignored_parameters_leave_the_key_and_the_forwarded_query() {
        assert_eq!(
            key("/p?utm_source=x&a=1", "h").primary,
            key("/p?a=1", "h").primary
        );
        let ignored = ["utm_source".to_string()];
        let filter = ParamFilter {
            ignored: &ignored,
            route: None,
        };
        assert_eq!(
            strip_ignored("utm_source=x&a=1&utm%5Fsource=y", filter),
            "a=1"
        );
        let allow = QueryRule::Allow(vec!["page".into()]);
        let filter = ParamFilter {
            ignored: &ignored,
            route: Some(&allow),
        };
        assert_eq!(strip_ignored("cb=1&page=2&utm_source=x", filter), "page=2");
        let deny = QueryRule::Deny(vec!["cb".into()]);
        let filter = ParamFilter {
            ignored: &[],
            route: Some(&deny),
        };
        assert_eq!(
            normalize_query("page=2&cb=9&a=1", filter),
            ["a=1", "page=2"]
        );
    }

    #[test]
    fn keys_are_matched_by_path_prefix_and_host() {
        let notes = key("/notes?tag=a", "h").primary;
        let note = key("/notes/42", "h").primary;
        let other = key("/notesx", "h").primary;
        assert!(key_under_prefix(&notes, Some("h"), "/notes"));
        assert!(key_under_prefix(&note, Some("h"), "/notes"));
        assert!(key_under_prefix(
            &format!("{note}|v:0000000000000001:ab"),
            None,
            "/notes"
        ));
        assert!(!key_under_prefix(&other, Some("h"), "/notes"));
        assert!(!key_under_prefix(&notes, Some("g"), "/notes"));
        assert!(!key_under_prefix(&note, Some("h"), "/notes/4"));
        let odd = key("/a%7Cb/c", "h").primary;
        assert!(key_under_prefix(&odd, Some("h"), "/a%7Cb"));
        assert!(!key_under_prefix(&odd, Some("h"), "/a"));
    }

    /// The check that lets most hosts through as they are agrees with the whole rule.
    #[test]
    fn usual_hosts_are_their_own_normal_form() {
        for host in [
            "",
            "bench",
            "example.com",
            "a-b.c9.example",
            "example.com.",
            "example.com..",
            ".",
            "Example.com",
            "example.com:80",
            "example.com:8080",
            " example.com",
            "ex ample",
            "[::1]:443",
            "exämple.com",
        ] {
            assert_eq!(
                normalized_host(host),
                normalized_host_in_full(host),
                "{host:?}"
            );
        }
    }

    /// Parts with nothing to escape are copied whole; the result is the escaping's.
    #[test]
    fn key_parts_are_escaped_as_the_key_set_says() {
        let mut parts: Vec<String> = (0u8..=0x7f).map(|b| char::from(b).to_string()).collect();
        parts.extend(
            [
                "é",
                "a|b",
                "/p/{x}",
                "50%",
                "plain/path",
                "\u{7f}",
                "\u{10ffff}",
            ]
            .map(String::from),
        );
        for part in parts {
            let mut escaped = String::new();
            push_escaped(&mut escaped, &part);
            assert_eq!(
                escaped,
                utf8_percent_encode(&part, KEY_PART).to_string(),
                "{part:?}"
            );
        }
    }

    #[test]
    fn hosts_are_normalized() {
        for host in [
            "Example.COM",
            "example.com:80",
            "example.com:443",
            "example.com.",
        ] {
            assert_eq!(normalize_host(host), "example.com", "{host}");
        }
        assert_eq!(normalize_host("example.com:8080"), "example.com:8080");
        let mut headers = HeaderMap::new();
        headers.insert("host", "EXAMPLE.com:80".parse().unwrap());
        let uri: Uri = "http://example.com/p".parse().unwrap();
        assert_eq!(request_host(&uri, &headers).as_deref(), Some("example.com"));
    }

    #[test]
    fn keyed_cookies_select_by_value() {
        let names = vec!["cookie:lang".to_string()];
        let mut a = HeaderMap::new();
        a.insert("cookie", "sid=1; lang=en".parse().unwrap());
        let mut b = HeaderMap::new();
        b.insert("cookie", "lang=en;sid=2".parse().unwrap());
        let mut c = HeaderMap::new();
        c.insert("cookie", "sid=1; lang=fr".parse().unwrap());
        let stored = selected_values(&a, &names);
        assert!(same_variant(&b, &stored));
        assert!(!same_variant(&c, &stored));
        assert!(!same_variant(&HeaderMap::new(), &stored));
    }

    #[test]
    fn no_part_can_spill_into_another() {
        // A `|` in the path would otherwise shift the query into the path field.
        assert_ne!(key("/a%7C?b", "h").primary, key("/a?%7Cb", "h").primary);
        let k = key("/a|b?c|d", "evil|host{x}");
        assert_eq!(k.primary.matches('|').count(), 4, "{}", k.primary);
        assert!(!k.primary.contains('{') && !k.primary.contains('}'));
        assert_ne!(key("/", "a.example").primary, key("/", "b.example").primary);
    }

    #[test]
    fn with_method_swaps_only_the_method() {
        let k = key("/p?a=1", "h");
        assert_eq!(k.with_method(&Method::GET), k.primary);
        assert!(k.with_method(&Method::HEAD).starts_with("http1|HEAD|h|/p|"));
    }

    #[test]
    fn variants_differ_by_selected_values_and_nonce() {
        let k = key("/p", "h");
        let names = vec!["accept-language".to_string()];
        let mut en = HeaderMap::new();
        en.insert("accept-language", "en".parse().unwrap());
        let mut fr = HeaderMap::new();
        fr.insert("accept-language", "fr".parse().unwrap());
        let variant =
            |nonce, h: &HeaderMap| variant_key(&k.primary, nonce, &selected_values(h, &names));
        assert_ne!(variant(1, &en), variant(1, &fr));
        assert_ne!(variant(1, &en), variant(2, &en));
        assert_ne!(variant(1, &en), variant(1, &HeaderMap::new()));
        assert!(same_variant(&en, &selected_values(&en, &names)));
        assert!(!same_variant(&fr, &selected_values(&en, &names)));
    }

    #[test]
    fn variants_match_on_normalized_values() {
        let names = vec!["accept-language".to_string()];
        let mut spaced = HeaderMap::new();
        spaced.insert("accept-language", "en ,  fr".parse().unwrap());
        let mut tight = HeaderMap::new();
        tight.insert("accept-language", "en,fr".parse().unwrap());
        let mut lines = HeaderMap::new();
        lines.append("accept-language", "en".parse().unwrap());
        lines.append("accept-language", "fr,".parse().unwrap());
        let mut other = HeaderMap::new();
        other.insert("accept-language", "fr, en".parse().unwrap());
        let mut empty = HeaderMap::new();
        empty.insert("accept-language", "".parse().unwrap());
        let stored = selected_values(&tight, &names);
        for h in [&spaced, &lines] {
            assert!(same_variant(h, &stored));
            assert_eq!(
                variant_key("p", 1, &selected_values(h, &names)),
                variant_key("p", 1, &stored)
            );
        }
        assert!(!same_variant(&other, &stored));
        // Present but empty is not absent.
        assert_ne!(
            selected_values(&empty, &names),
            selected_values(&HeaderMap::new(), &names)
        );
    }

    #[test]
    fn vary_star_has_no_names() {
        let mut h = HeaderMap::new();
        h.append("vary", "Accept-Encoding, accept-language".parse().unwrap());
        assert_eq!(
            vary_names(&h),
            Some(vec![
                "accept-encoding".to_string(),
                "accept-language".to_string()
            ])
        );
        h.append("vary", "*".parse().unwrap());
        assert_eq!(vary_names(&h), None);
    }
}
