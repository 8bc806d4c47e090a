//! The integration tests of the harness and of the adapters that run here on real
//! servers, in one test binary: the harness itself (`harness`), and the
//! `partcache-macros` behaviour suite on Redis (`macros_redis`).
//!
//! `cargo test -p partcache-integration-tests --test it harness::` runs one module.

// The scenarios live with the macros crate; they run here so that the macros crate's
// dev-dependencies (which trybuild compiles for every compile-fail case) stay small.
#[macro_use]
#[path = "../../../crates/partcache-macros/tests/it/suite/mod.rs"]
mod suite;

mod harness;
mod macros_redis;
