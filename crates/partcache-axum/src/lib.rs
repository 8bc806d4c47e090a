//! # partcache-axum
//!
//! An HTTP response cache for axum 0.8 routers and any `tower`/hyper service over
//! `http` types, applying RFC 9111 as a **shared** cache, on any partcache store (the
//! embedded one, or Redis so that every instance shares one cache).
//!
//! What it does, per request:
//!
//! * **Stores** only what a shared cache may: GET and HEAD by default, statuses
//!   cacheable per RFC 9110, never `no-store` or `private`, never responses with
//!   `Set-Cookie` (unless [`ResponseCacheBuilder::store_set_cookie`], which strips the
//!   cookie from the stored copy), and answers to requests with `Authorization` only
//!   when the response says `public`, `s-maxage` or `must-revalidate`.
//! * **Freshness** from `s-maxage` / `max-age` / `Expires` (via `http-cache-semantics`),
//!   `Age` on every cached answer, a default TTL when the origin is silent
//!   ([`ResponseCacheBuilder::default_ttl`]) and per-route overrides ([`RoutePolicy`]).
//! * **Vary**: responses are stored per combination of the request headers they vary
//!   on (values normalized: field lines combined, whitespace around commas dropped);
//!   `Vary: *` is never served from cache.
//! * **Validation**: `If-None-Match` / `If-Modified-Since` are answered with 304 from
//!   the cache; a stale entry is revalidated with a conditional request, and the
//!   origin's 304 refreshes it. A fresh stored GET answers HEAD.
//! * **`stale-while-revalidate`** (served stale, refreshed once in the background) and
//!   **`stale-if-error`** (served stale when the origin fails, answers 5xx or its body
//!   fails part-way); never under `must-revalidate`, `proxy-revalidate`, `no-cache`
//!   or `s-maxage`.
//! * **Request directives**: `no-cache`, `max-age`, `min-fresh`, `max-stale`, and
//!   `only-if-cached` (a `504` when nothing usable is stored).
//! * **Invalidation**: a successful POST/PUT/PATCH/DELETE removes the target URI,
//!   same-host `Location` / `Content-Location`, and what its route declares
//!   ([`RoutePolicy::invalidates_prefix`], [`RoutePolicy::invalidates_tag`]);
//!   [`ResponseCache::purge_url`], [`ResponseCache::purge_path`],
//!   [`ResponseCache::purge_prefix`], [`ResponseCache::purge_key`] and
//!   [`ResponseCache::purge_tag`] (tags from a configurable header such as
//!   `Cache-Tag` or `Surrogate-Key`, always stripped).
//! * **`x-cache: HIT | MISS | STALE | BYPASS`** and an RFC 9211 **`Cache-Status`** on
//!   every response, saying why a request went to the origin and why a response was
//!   not stored.
//! * **Coalescing**: concurrent misses of a key call the origin once; a waiting
//!   request takes that response only if it is reusable for it (fresh, its own
//!   directives, its `Vary`), else it asks the origin itself.
//! * **Bounded memory**: bodies over [`ResponseCacheBuilder::max_body_bytes`] stream
//!   through uncached, never buffered whole. A body that fails part-way is never
//!   stored, and the client's connection is aborted rather than the message ended.
//! * **Fail-open**: a store error or timeout means the origin answers (logged and
//!   counted in [`ResponseCacheStats`]).
//!
//! The key is method, host (normalized: lowercase, no default port), path,
//! normalized query (sorted by name; ignored parameters, and those a route does not
//! key on, removed) and the Vary-selected request headers and keyed cookies, with
//! every part escaped or hashed so no request can write into another key's space.
//! Requests with unkeyed headers that applications use to build URLs
//! (`X-Forwarded-Host`, ...) bypass the cache by default
//! ([`DEFAULT_BYPASS_HEADERS`]), so they cannot poison what other clients get; so do
//! requests with `Cookie`, unless their route keys on or ignores cookies
//! ([`RoutePolicy::key_cookies`], [`RoutePolicy::ignore_cookies`]).
#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod response_cache;

pub use response_cache::{
    BoxError, CACHE_STATUS, CacheBody, CachedEntry, DEFAULT_BYPASS_HEADERS,
    DEFAULT_CACHE_STATUS_NAME, DEFAULT_MAX_BODY_BYTES, DEFAULT_STORE_TIMEOUT, ResponseCache,
    ResponseCacheBuilder, ResponseCacheLayer, ResponseCacheService, ResponseCacheStats,
    ResponseFuture, RoutePolicy, TagKeys, X_CACHE,
};
