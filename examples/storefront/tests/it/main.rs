//! The storefront's integration tests in one test binary: over HTTP (`http`), on a
//! Redis cluster (`cluster`) and in a headless browser (`browser`); `support` runs a
//! storefront on a real socket. Each test starts its own storefront and servers.
//!
//! `cargo test -p storefront --test it http::` runs one module.

mod support;

mod browser;
mod cluster;
mod http;
