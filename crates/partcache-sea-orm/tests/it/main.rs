//! The integration tests of partcache-sea-orm in one test binary: the invalidation
//! suite (`common`) on SQLite, PostgreSQL and a Redis cluster, and a writer cut off
//! from its store (`store_cut`). Each test starts the servers it uses.
//!
//! `cargo test -p partcache-sea-orm --test it sqlite::` runs one module.

#[macro_use]
mod common;

mod postgres;
mod redis;
mod sqlite;
mod store_cut;
