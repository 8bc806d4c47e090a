//! The integration tests of partcache-redis, one module per area, in one test binary:
//! one link, and one set of shared servers (`common`) that tests disturbing a server
//! do without.
//!
//! `cargo test -p partcache-redis --test it store::` runs one module.

mod common;

mod cluster;
mod conformance_cluster;
mod conformance_joined;
mod conformance_near;
mod conformance_standalone;
mod conformance_valkey_cluster;
mod conformance_valkey_standalone;
mod cross_store;
mod custom_expiry;
mod joined;
mod lease;
mod misconfiguration;
mod near;
mod reaper;
mod store;
mod timeouts;
mod tls;
mod topology;
