//! The RFC 9111 scenarios (`scenarios/mod.rs`) on the local store.

mod scenarios;
mod support;

rfc9111_suite!(support::local_manager);
