//! What the Redis benchmarks share: their settings from the environment, and the CPU
//! time of this process and of the servers.

#![allow(dead_code)] // each benchmark uses its own subset

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

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

/// Read and write system calls of `pid` so far.
fn syscalls(pid: &str) -> f64 {
    let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) else {
        return 0.0;
    };
    io.lines()
        .filter(|l| l.starts_with("syscr:") || l.starts_with("syscw:"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum()
}

fn servers_syscalls() -> f64 {
    SERVER_PIDS
        .get()
        .map(|pids| pids.iter().map(|p| syscalls(&p.to_string())).sum())
        .unwrap_or(0.0)
}

/// One measurement: operations per second, and the CPU time each operation cost this
/// process (the client) and the servers, in microseconds. CPU per operation hardly
/// depends on what else the shared machine runs, unlike throughput, so it tells where
/// a gap comes from.
#[derive(Clone, Copy)]
pub(crate) struct Measured {
    pub(crate) ops: f64,
    pub(crate) client_us: f64,
    pub(crate) server_us: f64,
}

/// Runs `run` (one throughput measurement, in operations per second) and accounts the
/// CPU time it took. `PARTCACHE_BENCH_SYSCALLS` also prints system calls per operation.
pub(crate) async fn measure(run: impl Future<Output = f64>) -> Measured {
    let (client, servers, start) = (cpu_seconds("self"), servers_cpu_seconds(), Instant::now());
    let (sc, ss) = (syscalls("self"), servers_syscalls());
    let ops = run.await;
    let count = (ops * start.elapsed().as_secs_f64()).max(1.0);
    if std::env::var("PARTCACHE_BENCH_SYSCALLS").is_ok() {
        println!(
            "# syscalls per op: client {:.2} servers {:.2}",
            (syscalls("self") - sc) / count,
            (servers_syscalls() - ss) / count
        );
    }
    Measured {
        ops,
        client_us: (cpu_seconds("self") - client) * 1e6 / count,
        server_us: (servers_cpu_seconds() - servers) * 1e6 / count,
    }
}

/// Runs `op(key)` from `tasks` tasks, each walking the keys `0..keys` from its own
/// start, for the measurement time ([`seconds`]); returns operations per second.
pub(crate) async fn throughput<F, Fut>(tasks: usize, keys: u64, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + seconds();
    let start = Instant::now();
    let tasks: Vec<_> = (0..tasks)
        .map(|t| {
            let (op, done) = (op.clone(), done.clone());
            tokio::spawn(async move {
                let mut i = t as u64 * 7919;
                while Instant::now() < deadline {
                    op(i % keys).await;
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bench task");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// The median of `v` (0 for none).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
