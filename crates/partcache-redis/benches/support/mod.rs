//! What the Redis benchmarks share: their settings from the environment, and the CPU
//! time of this process and of the servers.

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

/// The processes whose CPU time counts as the servers' (set once in a bench's `main`).
pub(crate) static SERVER_PIDS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();

/// User plus system CPU time of `pid` ("self" for this process), in seconds.
pub(crate) fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command's closing parenthesis; utime and stime are the 12th
    // and 13th of them, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// The servers' CPU time so far ([`SERVER_PIDS`]), in seconds.
pub(crate) fn servers_cpu_seconds() -> f64 {
    SERVER_PIDS
        .get()
        .map(|pids| pids.iter().map(|p| cpu_seconds(&p.to_string())).sum())
        .unwrap_or(0.0)
}
