//! What the response cache stores: `CachedEntry` under response keys, `TagKeys`
//! in the tag index.
//!
//! A response is stored as one shared value: status, headers, body (`Bytes`) and the
//! freshness figures judged when it was stored. On the local store a hit is a
//! reference-count increment: nothing is deserialized and the body is never copied. On
//! a Redis store the same value is encoded with the cache's codec (postcard by
//! default), behind a format number: bytes of another format (an older release's, or
//! corrupted ones) fail to decode, which the store counts as a decode error and
//! treats as a miss.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value of the response cache: a response, or the Vary index of a resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedEntry {
    /// First, so that bytes of another format fail at once.
    format: Format,
    pub(crate) kind: EntryKind,
}

/// The format of [`CachedEntry`]: a number written before the entry and checked on
/// decoding. Format 1 (no number) held an `http-cache-semantics` policy per response.
#[derive(Debug, Clone, Copy, Default)]
struct Format;

impl Format {
    const CURRENT: u8 = 2;
}

impl Serialize for Format {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(Format::CURRENT)
    }
}

impl<'de> Deserialize<'de> for Format {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let found = u8::deserialize(deserializer)?;
        if found == Format::CURRENT {
            Ok(Format)
        } else {
            Err(serde::de::Error::custom(format_args!(
                "response cache entry of format {found}, expected {}",
                Format::CURRENT
            )))
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum EntryKind {
    /// A stored response.
    Response(Box<StoredResponse>),
    /// The resource varies: its responses live under variant keys (see `key.rs`).
    Variants(VaryIndex),
}

impl CachedEntry {
    pub(crate) fn response(response: Box<StoredResponse>) -> Self {
        CachedEntry {
            format: Format,
            kind: EntryKind::Response(response),
        }
    }

    pub(crate) fn variants(index: VaryIndex) -> Self {
        CachedEntry {
            format: Format,
            kind: EntryKind::Variants(index),
        }
    }

    /// The stored response, unless this is a Vary index.
    pub(crate) fn as_response(&self) -> Option<&StoredResponse> {
        match &self.kind {
            EntryKind::Response(r) => Some(r),
            EntryKind::Variants(_) => None,
        }
    }
}

/// A stored response and what is known about its freshness.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StoredResponse {
    #[serde(with = "http_serde::status_code")]
    pub(crate) status: StatusCode,
    /// The headers sent to clients: without hop-by-hop headers, the tag header, `Age`,
    /// and (when storing such responses is allowed) `Set-Cookie`.
    #[serde(with = "http_serde::header_map")]
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// The method of the request it answered (a `HEAD`'s response is not a `GET`'s).
    #[serde(with = "http_serde::method")]
    pub(crate) method: Method,
    /// The freshness lifetime that replaced the origin's (a default or route TTL, a
    /// route's cap on errors), as the `s-maxage` the policy was given: with it the
    /// `http-cache-semantics` policy of the response can be made again when one is
    /// needed (see `policy::policy_of`).
    pub(crate) ttl_override: Option<Duration>,
    /// When the response was received from the origin.
    pub(crate) stored_at: SystemTime,
    /// Its age when received: RFC 9111 §4.2.3's corrected initial age (the `Age` an
    /// upstream cache gave plus the time the origin took to answer, or the time since
    /// its `Date` if larger).
    pub(crate) initial_age: Duration,
    /// Its freshness lifetime (`s-maxage`, `max-age`, `Expires`, the heuristic, or a
    /// default / route TTL).
    pub(crate) lifetime: Duration,
    /// How long past `lifetime` it may be served while one background refresh runs.
    pub(crate) stale_while_revalidate: Duration,
    /// How long past `lifetime` it may be served when the origin fails.
    pub(crate) stale_if_error: Duration,
    /// `must-revalidate`, `proxy-revalidate` or `no-cache`: never served stale.
    pub(crate) must_revalidate: bool,
    /// Tags from the tag header, for purging.
    pub(crate) tags: Vec<String>,
    /// The request headers the response varies on, lowercased and sorted, with the
    /// values of the request it answered (so a coalesced waiter can check its own).
    pub(crate) vary: Vec<(String, Vec<Bytes>)>,
    /// The fields a hit answers with, made once at the first hit: see [`Served`].
    #[serde(skip)]
    pub(crate) served: Served,
}

/// `headers` with the fields every hit sets (`Age`, `x-cache`, `Cache-Status`)
/// added, so that a hit clones one map and replaces their values in place: a clone of
/// `headers` itself has no room left, and adding the fields to it grew (copied) the
/// map on every hit.
///
/// `base` is built from `headers` on first use and never changed. `last` is the whole
/// set of fields of the latest plain fresh hit, with its `Age` and remaining freshness
/// in seconds: every plain hit within the same second sends exactly these fields, so
/// it clones them and sets nothing. A clone of the response starts without either
/// (the clone's headers may be changed before it is served).
#[derive(Default)]
pub(crate) struct Served {
    base: OnceLock<HeaderMap>,
    last: parking_lot::RwLock<Option<LastHit>>,
}

/// The fields of a plain fresh hit: `Age` and the freshness left, in seconds, and the
/// response cache that sent them (its address: two caches on one store name
/// themselves differently in `Cache-Status`).
struct LastHit {
    cache: usize,
    age: u64,
    ttl: i64,
    headers: HeaderMap,
}

impl Clone for Served {
    fn clone(&self) -> Self {
        Served::default()
    }
}

impl std::fmt::Debug for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Served")
    }
}

impl StoredResponse {
    /// The response's age at `now`, as RFC 9111 §4.2.3 computes it (its `Age` when
    /// received plus the time since).
    pub(crate) fn age(&self, now: SystemTime) -> Duration {
        self.initial_age
            .saturating_add(now.duration_since(self.stored_at).unwrap_or_default())
    }

    /// Fresh at `now` (for a request without its own cache directives).
    pub(crate) fn is_fresh(&self, now: SystemTime) -> bool {
        self.age(now) < self.lifetime
    }

    /// Whether it may be served stale at `now` within `window` past its lifetime.
    pub(crate) fn within_stale_window(&self, now: SystemTime, window: Duration) -> bool {
        !self.must_revalidate
            && !window.is_zero()
            && self.age(now) < self.lifetime.saturating_add(window)
    }

    /// About the bytes it holds: body, headers, tags and Vary values. What a pending
    /// store write keeps alive.
    pub(crate) fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        let tags: usize = self.tags.iter().map(String::len).sum();
        let vary: usize = self
            .vary
            .iter()
            .map(|(name, values)| name.len() + values.iter().map(Bytes::len).sum::<usize>())
            .sum();
        self.body.len() + headers + tags + vary
    }

    /// The fields a hit answers with (see [`Served`]), made by `make` from `headers`
    /// at the first call.
    pub(crate) fn served_headers(&self, make: impl FnOnce(&HeaderMap) -> HeaderMap) -> &HeaderMap {
        self.served.base.get_or_init(|| make(&self.headers))
    }

    /// The fields of a plain fresh hit of response cache `cache` with this `Age` and
    /// freshness left (seconds), when the latest such hit had the same (see [`Served`]).
    pub(crate) fn last_hit(&self, cache: usize, age: u64, ttl: i64) -> Option<HeaderMap> {
        let last = self.served.last.read();
        last.as_ref()
            .filter(|last| last.cache == cache && last.age == age && last.ttl == ttl)
            .map(|last| last.headers.clone())
    }

    /// Remembers the fields a plain fresh hit of response cache `cache` with this
    /// `Age` and freshness left was sent with.
    pub(crate) fn remember_hit(&self, cache: usize, age: u64, ttl: i64, headers: &HeaderMap) {
        *self.served.last.write() = Some(LastHit {
            cache,
            age,
            ttl,
            headers: headers.clone(),
        });
    }

    /// Whether it carries a validator the origin can answer with 304.
    pub(crate) fn has_validator(&self) -> bool {
        self.headers.contains_key(http::header::ETAG)
            || self.headers.contains_key(http::header::LAST_MODIFIED)
    }
}

/// The marker stored under a resource's primary key when its responses vary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct VaryIndex {
    /// The header names, lowercased, sorted, deduplicated.
    pub(crate) names: Vec<String>,
    /// Part of every variant key: a new index (after an invalidation, or a change of
    /// the Vary names) makes every older variant unreachable.
    pub(crate) nonce: u64,
    /// When the longest-lived variant stored under it expires.
    pub(crate) expires_at: SystemTime,
}

/// The tag index's value: the keys of the responses that carried a tag.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TagKeys {
    pub(crate) keys: Vec<String>,
}
