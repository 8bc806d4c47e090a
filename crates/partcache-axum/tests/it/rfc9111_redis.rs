//! The RFC 9111 scenarios (`scenarios/mod.rs`) on a real Redis Cluster of 3 masters and
//! 3 replicas, started once for this test binary. Every scenario opens caches of its own
//! (`support::cache_on` names them uniquely), so the scenarios run concurrently on one
//! cluster without seeing each other's entries.

use crate::support;

rfc9111_suite!(support::redis::cluster_manager);
