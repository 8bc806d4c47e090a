//! The integration tests of partcache-axum in one test binary: the RFC 9111 scenarios
//! (`scenarios`) on the local store (`rfc9111`) and on a Redis cluster
//! (`rfc9111_redis`), fail-open and the circuit breaker, the layer as a tower service
//! called by hand (`service`), misses in flight and what ends them (`flights`), the
//! stale windows of aged responses (`windows`); `support` serves a real axum origin
//! behind the response cache.
//!
//! `cargo test -p partcache-axum --test it breaker::` runs one module.

mod support;

#[macro_use]
mod scenarios;

mod breaker;
mod entry_format;
mod fail_open;
mod flights;
mod instances;
mod rfc9111;
mod rfc9111_redis;
mod service;
mod windows;
