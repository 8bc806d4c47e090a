//! The RFC 9111 scenarios (`scenarios/mod.rs`) on the local store.

use crate::support;

rfc9111_suite!(support::local_manager);
