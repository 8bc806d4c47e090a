//! Figures per contender over alternating rounds, and the `BENCH` line they make.

use std::time::Duration;

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

/// Operations per second of every contender in every round.
pub struct Board {
    path: &'static str,
    /// Contenders that are not peers (the bare route, a raw client): printed, never
    /// the "best peer".
    references: &'static [&'static str],
    figures: Vec<(&'static str, Vec<f64>)>,
}

impl Board {
    pub fn new(path: &'static str, references: &'static [&'static str]) -> Board {
        Board {
            path,
            references,
            figures: Vec::new(),
        }
    }

    pub fn record(&mut self, round: Round, contender: &'static str, ops_per_second: f64) {
        if round == Round::WarmUp {
            return;
        }
        match self.figures.iter_mut().find(|(name, _)| *name == contender) {
            Some((_, values)) => values.push(ops_per_second),
            None => self.figures.push((contender, vec![ops_per_second])),
        }
    }

    /// `BENCH peer_<path> ratio=<partcache / best peer> best=<peer> <contender>=<ops/s> …`,
    /// each figure the median of its rounds.
    pub fn print(&self) {
        let medians: Vec<(&str, f64)> = self
            .figures
            .iter()
            .map(|(name, values)| (*name, median(values.clone())))
            .collect();
        let ours = medians
            .iter()
            .find(|(name, _)| *name == PARTCACHE)
            .map(|(_, ops)| *ops)
            .unwrap_or(0.0);
        let best = medians
            .iter()
            .filter(|(name, _)| *name != PARTCACHE && !self.references.contains(name))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let rounds = self.figures.first().map(|(_, v)| v.len()).unwrap_or(0);
        let fields: Vec<String> = medians
            .iter()
            .map(|(name, ops)| format!("{name}={ops:.0}"))
            .collect();
        let (Some((best_name, best_ops)), true) = (best, ours > 0.0) else {
            // One side only (`PARTCACHE_BENCH_SIDE`): figures, no ratio.
            println!("# peer_{} {} rounds={rounds}", self.path, fields.join(" "));
            return;
        };
        println!(
            "BENCH peer_{} ratio={:.3} best={best_name} {} rounds={rounds}",
            self.path,
            ours / best_ops,
            fields.join(" "),
        );
    }
}
