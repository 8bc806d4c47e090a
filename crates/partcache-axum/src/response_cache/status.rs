//! What the cache did with one request, as the two headers every response carries:
//! `x-cache` (`HIT`, `MISS`, `STALE`, `BYPASS`) and the standard `Cache-Status`
//! (RFC 9211), which also says why a request went to the origin and why a response
//! was not stored.

use std::fmt::Write as _;
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The header every response carries: `HIT`, `MISS`, `STALE` or `BYPASS`.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// The RFC 9211 response header (see [`ResponseCacheBuilder::cache_status_name`](crate::ResponseCacheBuilder::cache_status_name)).
pub const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The short label of `x-cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Label {
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

/// Why a request went to the origin (RFC 9211 §2.2 `fwd`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fwd {
    /// The cache was configured (or required by the request) not to be used.
    Bypass,
    /// The method is not cached.
    Method,
    /// Nothing stored for the URI.
    UriMiss,
    /// Something stored for the URI, not for this request's Vary-selected headers.
    VaryMiss,
    /// The request's own directives (`no-cache`, `max-age=0`, ...) ruled the stored
    /// response out.
    Request,
    /// The stored response was stale.
    Stale,
}

impl Fwd {
    fn token(self) -> &'static str {
        match self {
            Fwd::Bypass => "bypass",
            Fwd::Method => "method",
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
        }
    }
}

/// What happened to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) label: Label,
    /// Answered from the cache without asking the origin.
    pub(crate) hit: bool,
    pub(crate) fwd: Option<Fwd>,
    pub(crate) fwd_status: Option<StatusCode>,
    /// Freshness left, in seconds; negative when stale.
    pub(crate) ttl: Option<i64>,
    pub(crate) stored: bool,
    pub(crate) collapsed: bool,
    /// A token: why the request bypassed, or why the response was not stored.
    pub(crate) detail: Option<&'static str>,
}

impl Outcome {
    pub(crate) fn hit(ttl: i64) -> Self {
        Outcome {
            label: Label::Hit,
            hit: true,
            fwd: None,
            fwd_status: None,
            ttl: Some(ttl),
            stored: false,
            collapsed: false,
            detail: None,
        }
    }

    pub(crate) fn forwarded(label: Label, fwd: Fwd) -> Self {
        Outcome {
            label,
            hit: false,
            fwd: Some(fwd),
            fwd_status: None,
            ttl: None,
            stored: false,
            collapsed: false,
            detail: None,
        }
    }

    pub(crate) fn bypass(detail: &'static str) -> Self {
        Outcome::forwarded(Label::Bypass, Fwd::Bypass).detail(detail)
    }

    /// No `fwd`: the request did not go forward (`only-if-cached` with nothing usable).
    pub(crate) fn without_fwd(mut self) -> Self {
        self.fwd = None;
        self
    }

    pub(crate) fn detail(mut self, detail: &'static str) -> Self {
        self.detail = Some(detail);
        self
    }

    pub(crate) fn label(mut self, label: Label) -> Self {
        self.label = label;
        self
    }

    pub(crate) fn fwd_status(mut self, status: StatusCode) -> Self {
        self.fwd_status = Some(status);
        self
    }

    pub(crate) fn ttl(mut self, ttl: i64) -> Self {
        self.ttl = Some(ttl);
        self
    }

    pub(crate) fn stored(mut self) -> Self {
        self.stored = true;
        self
    }

    pub(crate) fn collapsed(mut self) -> Self {
        self.collapsed = true;
        self
    }

    /// Sets `x-cache`, and appends this cache's member to `Cache-Status` when `name`
    /// is given (RFC 9211 §2: an existing value from caches nearer the origin is kept,
    /// this cache's member goes last, nearest the client).
    pub(crate) fn apply(&self, headers: &mut HeaderMap, name: Option<&str>) {
        if name.is_none() {
            headers.insert(X_CACHE, self.label.value());
            return;
        }
        let upstream = headers.get(&CACHE_STATUS).cloned();
        self.apply_after(headers, name, upstream.as_ref());
    }

    /// [`apply`](Self::apply) with the upstream `Cache-Status` given apart from
    /// `headers`: a stored response's, when `headers` is its served copy (whose
    /// `Cache-Status` may be a placeholder: replaced here, or removed when `name` is
    /// `None` and there is no upstream value).
    pub(crate) fn apply_after(
        &self,
        headers: &mut HeaderMap,
        name: Option<&str>,
        upstream: Option<&HeaderValue>,
    ) {
        headers.insert(X_CACHE, self.label.value());
        let Some(name) = name else {
            match upstream {
                Some(upstream) => headers.insert(CACHE_STATUS, upstream.clone()),
                None => headers.remove(CACHE_STATUS),
            };
            return;
        };
        let upstream = match upstream.map(HeaderValue::to_str) {
            Some(Ok(upstream)) if !upstream.trim().is_empty() => Some(upstream),
            _ => None,
        };
        if upstream.is_none() {
            if let Some(value) = self.remembered(name) {
                headers.insert(CACHE_STATUS, value);
            }
            return;
        }
        let member = self.member(name);
        let value = match upstream {
            Some(upstream) => format!("{upstream}, {member}"),
            None => member,
        };
        // From the string's own buffer: checked, not copied.
        if let Ok(value) = HeaderValue::from_maybe_shared(bytes::Bytes::from(value)) {
            headers.insert(CACHE_STATUS, value);
        }
    }

    /// This cache's `Cache-Status` member as a field value. The last few are kept per
    /// thread with their outcome and cache name: most requests repeat one of a handful
    /// (`hit; ttl=<n>`, `fwd=uri-miss; fwd-status=200; ttl=<n>; stored`), and one seen
    /// before is neither formatted nor allocated again.
    fn remembered(&self, name: &str) -> Option<HeaderValue> {
        const KEPT: usize = 4;
        type Kept = [Option<(String, Outcome, HeaderValue)>; KEPT];
        thread_local! {
            static LAST: std::cell::RefCell<(usize, Kept)> =
                const { std::cell::RefCell::new((0, [const { None }; KEPT])) };
        }
        LAST.with_borrow_mut(|(next, kept)| {
            if let Some((_, _, value)) = kept
                .iter()
                .flatten()
                .find(|(n, outcome, _)| outcome == self && n == name)
            {
                return Some(value.clone());
            }
            // From the string's own buffer: checked, not copied.
            let value =
                HeaderValue::from_maybe_shared(bytes::Bytes::from(self.member(name))).ok()?;
            kept[*next] = Some((name.to_string(), self.clone(), value.clone()));
            *next = (*next + 1) % KEPT;
            Some(value)
        })
    }

    /// This cache's member of `Cache-Status`.
    fn member(&self, name: &str) -> String {
        let mut member = String::with_capacity(64);
        push_name(&mut member, name);
        if self.hit {
            member.push_str("; hit");
        }
        if let Some(fwd) = self.fwd {
            member.push_str("; fwd=");
            member.push_str(fwd.token());
        }
        if let Some(status) = self.fwd_status {
            member.push_str("; fwd-status=");
            member.push_str(status.as_str());
        }
        if let Some(ttl) = self.ttl {
            // Writing to a String cannot fail.
            let _ = write!(member, "; ttl={ttl}");
        }
        if self.stored {
            member.push_str("; stored");
        }
        if self.collapsed {
            member.push_str("; collapsed");
        }
        if let Some(detail) = self.detail {
            member.push_str("; detail=");
            member.push_str(detail);
        }
        member
    }
}

/// Seconds of freshness left: `lifetime - age`, negative once stale.
pub(crate) fn ttl_seconds(lifetime: Duration, age: Duration) -> i64 {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    if lifetime >= age {
        secs(lifetime - age)
    } else {
        -secs(age - lifetime)
    }
}

/// The cache's name as an RFC 8941 token when it is one, else as a string.
fn push_name(out: &mut String, name: &str) {
    let is_token = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '*')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~:/".contains(c));
    if is_token {
        out.push_str(name);
        return;
    }
    out.push('"');
    for c in name.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(outcome: &Outcome, name: &str, upstream: Option<&'static str>) -> String {
        let mut headers = HeaderMap::new();
        if let Some(upstream) = upstream {
            headers.insert(CACHE_STATUS, HeaderValue::from_static(upstream));
        }
        outcome.apply(&mut headers, Some(name));
        headers[&CACHE_STATUS].to_str().unwrap().to_string()
    }

    #[test]
    fn members_follow_rfc_9211() {
        assert_eq!(
            status(&Outcome::hit(42), "partcache", None),
            "partcache; hit; ttl=42"
        );
        let miss = Outcome::forwarded(Label::Miss, Fwd::UriMiss)
            .fwd_status(StatusCode::OK)
            .ttl(60)
            .stored();
        assert_eq!(
            status(&miss, "edge", Some("origin-cache; hit")),
            "origin-cache; hit, edge; fwd=uri-miss; fwd-status=200; ttl=60; stored"
        );
        assert_eq!(
            status(&Outcome::bypass("cookie"), "my cache", None),
            "\"my cache\"; fwd=bypass; detail=cookie"
        );
        assert_eq!(
            ttl_seconds(Duration::from_secs(1), Duration::from_secs(3)),
            -2
        );
    }
}
