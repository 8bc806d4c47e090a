//! What the Redis benchmarks share: their settings from the environment.

#![allow(dead_code)] // each benchmark uses its own subset

use std::time::Duration;

/// Seconds per measurement: `PARTCACHE_BENCH_SECS` (default 1).
pub(crate) fn seconds() -> Duration {
    let secs = std::env::var("PARTCACHE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// Alternating rounds per figure: `PARTCACHE_BENCH_ROUNDS` (default 5).
pub(crate) fn rounds() -> usize {
    std::env::var("PARTCACHE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
        .max(1)
}
