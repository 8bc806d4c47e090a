//! Figures per contender over alternating rounds, and the `BENCH` line they make.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The contender every line is about.
pub const PARTCACHE: &str = "partcache";

/// Alternating rounds per figure: `PARTCACHE_BENCH_ROUNDS` (default `default`).
pub fn rounds(default: usize) -> usize {
    std::env::var("PARTCACHE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
        .max(1)
}

/// The rounds to run, `Round::WarmUp` first: its figures are not recorded, so the
/// contender that happens to run first does not pay for the process's cold start
/// (allocator growth, first page faults) alone.
pub fn schedule(default: usize) -> impl Iterator<Item = (usize, Round)> {
    (0..=rounds(default)).map(|round| {
        let kind = if round == 0 {
            Round::WarmUp
        } else {
            Round::Measured
        };
        (round, kind)
    })
}

/// Whether a round's figures count.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Round {
    WarmUp,
    Measured,
}

/// Seconds per timed measurement: `PARTCACHE_BENCH_SECS` (default 1).
pub fn seconds() -> Duration {
    let secs = std::env::var("PARTCACHE_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs)
}

/// Whether the path `name` (without its `peer_` prefix) is to run:
/// `PARTCACHE_BENCH_ONLY=http_miss,fn_hit` runs only those.
pub fn wanted(name: &str) -> bool {
    std::env::var("PARTCACHE_BENCH_ONLY")
        .map(|only| {
            only.split(',')
                .any(|n| n.trim().trim_start_matches("peer_") == name)
        })
        .unwrap_or(true)
}

/// The contenders in the order they run during round `round`: rotated by one each
/// round, so no contender always runs first (on a warm or a cold machine) or after the
/// same one. `PARTCACHE_BENCH_SIDE=hitbox` (a contender's name) runs that one alone:
/// for a profiler.
pub fn order(
    round: usize,
    contenders: &[&'static str],
) -> impl Iterator<Item = &'static str> + use<> {
    let side = std::env::var("PARTCACHE_BENCH_SIDE").ok();
    let n = contenders.len();
    let rotated: Vec<&'static str> = (0..n).map(|k| contenders[(round + k) % n]).collect();
    rotated
        .into_iter()
        .filter(move |name| side.as_deref().is_none_or(|side| side == *name))
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// The processes whose CPU time counts as the servers' (set once, by the Redis path).
pub static SERVER_PIDS: OnceLock<Vec<u32>> = OnceLock::new();

/// User plus system CPU time of `pid` ("self" for this process), in seconds; 0 where
/// `/proc` cannot be read.
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The fields after the command's closing parenthesis; utime and stime are the
    // 12th and 13th of them, in clock ticks (100 per second on Linux).
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

fn servers_cpu_seconds() -> f64 {
    SERVER_PIDS
        .get()
        .map(|pids| pids.iter().map(|p| cpu_seconds(&p.to_string())).sum())
        .unwrap_or(0.0)
}

/// One measurement: operations per second, and the CPU time one operation cost this
/// process and the servers, in microseconds. On a machine shared with other work CPU
/// per operation moves much less than throughput does.
#[derive(Clone, Copy)]
pub struct Measured {
    pub ops: f64,
    client_us: f64,
    server_us: f64,
}

/// Wall clock and CPU time from `start` to `stop`.
pub struct Meter {
    start: Instant,
    client: f64,
    servers: f64,
}

impl Meter {
    pub fn start() -> Meter {
        Meter {
            client: cpu_seconds("self"),
            servers: servers_cpu_seconds(),
            start: Instant::now(),
        }
    }

    /// The figures of `count` operations since [`Meter::start`].
    pub fn stop(self, count: u64) -> Measured {
        let elapsed = self.start.elapsed().as_secs_f64();
        let per_op = |seconds: f64| seconds * 1e6 / (count.max(1) as f64);
        Measured {
            ops: count as f64 / elapsed,
            client_us: per_op(cpu_seconds("self") - self.client),
            server_us: per_op(servers_cpu_seconds() - self.servers),
        }
    }
}

/// Every contender's measurements, round by round.
pub struct Board {
    path: &'static str,
    /// Contenders that are not peers (the bare route, a raw client): printed, never
    /// the "best peer".
    references: &'static [&'static str],
    figures: Vec<(&'static str, Vec<Measured>)>,
}

impl Board {
    pub fn new(path: &'static str, references: &'static [&'static str]) -> Board {
        Board {
            path,
            references,
            figures: Vec::new(),
        }
    }

    /// Keeps a measured round's figure (`PARTCACHE_BENCH_VERBOSE=1` prints every one).
    pub fn record(&mut self, round: Round, contender: &'static str, measured: Measured) {
        if std::env::var_os("PARTCACHE_BENCH_VERBOSE").is_some() {
            let warm_up = if round == Round::WarmUp {
                " (warm-up)"
            } else {
                ""
            };
            println!(
                "# peer_{} {contender}={:.0} cpu_us={:.2}+{:.2}{warm_up}",
                self.path, measured.ops, measured.client_us, measured.server_us
            );
        }
        if round == Round::WarmUp {
            return;
        }
        match self.figures.iter_mut().find(|(name, _)| *name == contender) {
            Some((_, values)) => values.push(measured),
            None => self.figures.push((contender, vec![measured])),
        }
    }

    /// `BENCH peer_<path> ratio=<partcache / best peer> best=<peer> <contender>=<ops/s> …
    /// cpu_us_<contender>=<client>[+<servers>] … rounds=<n>`, each figure the median of
    /// its rounds.
    pub fn print(&self) {
        let with_servers = SERVER_PIDS.get().is_some();
        let medians: Vec<(&str, f64, String)> = self
            .figures
            .iter()
            .map(|(name, values)| {
                let ops = median(values.iter().map(|m| m.ops).collect());
                let client = median(values.iter().map(|m| m.client_us).collect());
                let cpu = if with_servers {
                    let servers = median(values.iter().map(|m| m.server_us).collect());
                    format!("{client:.2}+{servers:.2}")
                } else {
                    format!("{client:.2}")
                };
                (*name, ops, cpu)
            })
            .collect();
        let ours = medians
            .iter()
            .find(|(name, ..)| *name == PARTCACHE)
            .map(|(_, ops, _)| *ops)
            .unwrap_or(0.0);
        let best = medians
            .iter()
            .filter(|(name, ..)| *name != PARTCACHE && !self.references.contains(name))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let rounds = self.figures.first().map(|(_, v)| v.len()).unwrap_or(0);
        let ops: Vec<String> = medians
            .iter()
            .map(|(name, ops, _)| format!("{name}={ops:.0}"))
            .collect();
        let cpu: Vec<String> = medians
            .iter()
            .map(|(name, _, cpu)| format!("cpu_us_{name}={cpu}"))
            .collect();
        let (ops, cpu) = (ops.join(" "), cpu.join(" "));
        let (Some((best_name, best_ops, _)), true) = (best, ours > 0.0) else {
            // One side only (`PARTCACHE_BENCH_SIDE`): figures, no ratio.
            println!("# peer_{} {ops} {cpu} rounds={rounds}", self.path);
            return;
        };
        println!(
            "BENCH peer_{} ratio={:.3} best={best_name} {ops} {cpu} rounds={rounds}",
            self.path,
            ours / best_ops,
        );
    }
}
