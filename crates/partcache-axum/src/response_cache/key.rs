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

use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, Method, Uri, header};
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

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

/// The version prefix of every key; bumped when the layout changes.
const KEY_PREFIX: &str = "http1";

/// The primary key of a request, with what is needed to rebuild related keys.
#[derive(Debug, Clone)]
pub(crate) struct RequestKey {
    pub(crate) primary: String,
    /// `path?normalized-query`, the URI the stored policy is keyed on.
    pub(crate) normalized_uri: String,
}

/// The host a request is for: `Host`, else the URI's authority (HTTP/2), lowercased.
/// `None` when both are present and disagree (such a request is not cached).
pub(crate) fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let from_header = headers
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).to_ascii_lowercase());
    let from_uri = uri.authority().map(|a| a.as_str().to_ascii_lowercase());
    match (from_header, from_uri) {
        (Some(h), Some(u)) if h != u => None,
        (Some(h), _) => Some(h),
        (None, Some(u)) => Some(u),
        (None, None) => Some(String::new()),
    }
}

/// The parameters of `query` in key order, without `ignored` ones.
///
/// Parameters are sorted by decoded name with a *stable* sort: parameters of one name
/// keep their relative order, because applications that read the first (or last)
/// value would otherwise answer `a=1&a=2` and `a=2&a=1` differently under one key.
/// Names are compared decoded (`%61` is `a`, `+` is a space) for the same reason.
pub(crate) fn normalize_query<'q>(query: &'q str, ignored: &[String]) -> Vec<&'q str> {
    let mut params: Vec<(String, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| (decoded_name(p), p))
        .filter(|(name, _)| !ignored.iter().any(|i| i == name))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    params.into_iter().map(|(_, p)| p).collect()
}

/// The query without `ignored` parameters, in its original order (what the origin is
/// sent: it must not see parameters the key does not include, or it could reflect
/// them into a response every client then gets).
pub(crate) fn strip_ignored(query: &str, ignored: &[String]) -> String {
    let mut out = String::with_capacity(query.len());
    for param in query.split('&').filter(|p| !p.is_empty()) {
        if ignored.iter().any(|i| *i == decoded_name(param)) {
            continue;
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(param);
    }
    out
}

fn decoded_name(param: &str) -> String {
    let name = param.split_once('=').map_or(param, |(n, _)| n);
    if name.contains(['+', '%']) {
        percent_decode_str(&name.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    } else {
        name.to_string()
    }
}

fn push_escaped(out: &mut String, part: &str) {
    for piece in utf8_percent_encode(part, KEY_PART) {
        out.push_str(piece);
    }
}

impl RequestKey {
    /// The primary key for `method host path?query` plus the keyed headers.
    pub(crate) fn new(
        method: &Method,
        host: &str,
        uri: &Uri,
        headers: &HeaderMap,
        ignored_params: &[String],
        keyed_headers: &[HeaderName],
    ) -> Self {
        let path = uri.path();
        let params = uri
            .query()
            .map(|q| normalize_query(q, ignored_params))
            .unwrap_or_default();
        let mut normalized_uri =
            String::with_capacity(path.len() + uri.query().map_or(0, str::len) + 1);
        normalized_uri.push_str(path);
        for (i, param) in params.iter().enumerate() {
            normalized_uri.push(if i == 0 { '?' } else { '&' });
            normalized_uri.push_str(param);
        }
        let mut primary = String::with_capacity(32 + host.len() + normalized_uri.len());
        primary.push_str(KEY_PREFIX);
        primary.push('|');
        push_escaped(&mut primary, method.as_str());
        primary.push('|');
        push_escaped(&mut primary, host);
        primary.push('|');
        push_escaped(&mut primary, path);
        primary.push('|');
        push_escaped(&mut primary, &normalized_uri[path.len()..]);
        for name in keyed_headers {
            let hash = hash_headers(headers, name);
            let _ = write!(primary, "|h:{}={hash:032x}", name.as_str());
        }
        RequestKey {
            primary,
            normalized_uri,
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

/// The values `headers` has for each of `names` (what a stored variant answered).
pub(crate) fn selected_values(headers: &HeaderMap, names: &[String]) -> Vec<(String, Vec<Bytes>)> {
    names
        .iter()
        .map(|name| {
            let values = headers
                .get_all(name.as_str())
                .iter()
                .map(|v| Bytes::copy_from_slice(v.as_bytes()))
                .collect();
            (name.clone(), values)
        })
        .collect()
}

/// Whether `headers` select the same variant as `stored`.
pub(crate) fn same_variant(headers: &HeaderMap, stored: &[(String, Vec<Bytes>)]) -> bool {
    stored.iter().all(|(name, values)| {
        let mut mine = headers.get_all(name.as_str()).iter();
        values
            .iter()
            .all(|v| mine.next().is_some_and(|m| m.as_bytes() == v.as_ref()))
            && mine.next().is_none()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uri: &str, host: &str) -> RequestKey {
        let uri: Uri = uri.parse().unwrap();
        RequestKey::new(
            &Method::GET,
            host,
            &uri,
            &HeaderMap::new(),
            &["utm_source".to_string()],
            &[],
        )
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
        assert_eq!(
            strip_ignored("utm_source=x&a=1&utm%5Fsource=y", &["utm_source".into()]),
            "a=1"
        );
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
