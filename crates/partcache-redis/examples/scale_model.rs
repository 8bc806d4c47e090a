//! The scale model: what a cache costs a Redis Cluster deployment as masters and
//! instances grow, computed from costs measured on real servers (the inputs recorded in
//! `docs/benchmarks.md`, "Scale model inputs", by `cargo bench -p partcache-redis
//! --bench reaper`) and from partcache's own partition maths. It writes
//! `docs/scale.md`:
//!
//! ```text
//! cargo run -p partcache-redis --example scale_model
//! ```
//!
//! Its test (`cargo test -p partcache-redis --example scale_model`, also run by
//! `cargo test -p partcache-redis`) checks that `docs/scale.md` is what the recorded
//! inputs give, so the document cannot drift from them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use partcache::partition::{
    DEFAULT_PARTITIONS, PartitionMap, SLOT_COUNT, SlotOwners, partitions_per_master,
};

/// Master counts the model covers.
const MASTERS: [usize; 4] = [3, 10, 100, 1_000];
/// Instance counts the model covers.
const INSTANCES: [f64; 3] = [10.0, 1_000.0, 10_000.0];
/// The busiest master holds at most this fraction more than the idlest.
const TOLERANCE: f64 = 0.05;
/// Redis' default `maxclients`.
const MAXCLIENTS: f64 = 10_000.0;
/// A master's server time (µs per second) background work may take before it is a
/// concern: 5% of its one command thread.
const BACKGROUND_BUDGET_US: f64 = 50_000.0;
/// Idle caches a deployment is assumed to hold, for the totals.
const CACHES: f64 = 50.0;
/// Subscriptions per master for one listened cache past which the model flags a size.
const SUBSCRIPTIONS: f64 = 100_000.0;

/// The measured inputs, by name.
struct Inputs(BTreeMap<String, f64>);

impl Inputs {
    /// The `name = value` lines of the fenced block under "Scale model inputs" in
    /// `benchmarks` (the text of `docs/benchmarks.md`).
    fn parse(benchmarks: &str) -> Result<Inputs, String> {
        let section = benchmarks
            .split_once("## Scale model inputs")
            .ok_or("docs/benchmarks.md has no \"Scale model inputs\" section")?
            .1;
        let block = section
            .split_once("```text\n")
            .and_then(|(_, rest)| rest.split_once("```"))
            .ok_or("the \"Scale model inputs\" section has no ```text block")?
            .0;
        let mut values = BTreeMap::new();
        for line in block.lines().filter(|l| !l.trim().is_empty()) {
            let (name, value) = line
                .split_once('=')
                .ok_or_else(|| format!("not `name = value`: {line}"))?;
            let value: f64 = value.trim().parse().map_err(|e| format!("`{line}`: {e}"))?;
            values.insert(name.trim().to_string(), value);
        }
        Ok(Inputs(values))
    }

    fn get(&self, name: &str) -> f64 {
        match self.0.get(name) {
            Some(v) => *v,
            None => panic!("docs/benchmarks.md records no scale model input `{name}`"),
        }
    }
}

/// The anchor slot of partition `i` of `partitions` (partcache::partition, "Deriving
/// the partition tags", steps 2 and 3): the search below uses it, as building every
/// candidate's tags would take long; the chosen counts are then checked against
/// [`PartitionMap`] itself ([`checked_counts`]).
fn anchor(i: u32, partitions: u32) -> u16 {
    let slots = u32::from(SLOT_COUNT);
    let start = i * slots / partitions;
    let end = (i + 1) * slots / partitions;
    (start + (end - start - 1) / 2) as u16
}

/// Per slot, the index of its master in `owners.masters()` (`usize::MAX`: none).
fn slot_masters(owners: &SlotOwners) -> Vec<usize> {
    let index: BTreeMap<&str, usize> = owners
        .masters()
        .into_iter()
        .enumerate()
        .map(|(i, m)| (m, i))
        .collect();
    (0..SLOT_COUNT)
        .map(|slot| owners.owner(slot).map_or(usize::MAX, |m| index[m]))
        .collect()
}

/// Partitions per master, from the anchors.
fn counts(partitions: u16, slot_masters: &[usize], masters: usize) -> Vec<u32> {
    let mut out = vec![0; masters];
    for i in 0..u32::from(partitions) {
        if let Some(count) =
            out.get_mut(slot_masters[usize::from(anchor(i, u32::from(partitions)))])
        {
            *count += 1;
        }
    }
    out
}

/// How much more the busiest master holds than the idlest, as a fraction (infinite
/// when a master holds none).
fn spread(counts: &[u32]) -> f64 {
    let lo = counts.iter().min().copied().unwrap_or(0);
    let hi = counts.iter().max().copied().unwrap_or(0);
    if lo == 0 {
        return f64::INFINITY;
    }
    f64::from(hi) / f64::from(lo) - 1.0
}

/// [`spread`] for the table.
fn percent(spread: f64) -> String {
    if spread.is_finite() {
        format!("{:.1}%", 100.0 * spread)
    } else {
        "a master holds none".to_string()
    }
}

/// Partitions per master by partcache's own [`PartitionMap`] and
/// [`partitions_per_master`], checked equal to the anchors' counts.
fn checked_counts(partitions: u16, owners: &SlotOwners, masters: usize) -> Vec<u32> {
    let map = PartitionMap::new("scale-model", partitions).expect("a valid partition count");
    let by_map: Vec<u32> = partitions_per_master(&map, owners)
        .values()
        .map(|&c| u32::from(c))
        .collect();
    let by_anchor = counts(partitions, &slot_masters(owners), masters);
    let mut sorted_map = by_map.clone();
    let mut sorted_anchor = by_anchor;
    sorted_map.sort_unstable();
    sorted_anchor.sort_unstable();
    assert_eq!(
        sorted_map, sorted_anchor,
        "{partitions} partitions over {masters} masters: the anchors disagree with PartitionMap"
    );
    by_map
}

/// The fewest partitions (at least the default) that keep every master within
/// [`TOLERANCE`] of the mean with the slots split as `redis-cli --cluster create`
/// splits them over `masters`, and still after one master more (a cluster that grows
/// by one, rebalanced): a count that fits exactly one size (one partition per master)
/// would be thrown off by the first change. `None` if even one partition per slot does
/// not.
fn partitions_for(masters: usize) -> Option<u16> {
    let sizes = [masters, masters + 1];
    let slots: Vec<Vec<usize>> = sizes
        .iter()
        .map(|&m| slot_masters(&SlotOwners::balanced(m)))
        .collect();
    // Masters whose counts differ hold at least `floor(p / m)` and one more, so the
    // spread is within 5% only if `p / m >= 20`, or if `m` divides `p` (all equal):
    // a cheap test that skips most counts before counting.
    let may = |p: u16, m: usize| usize::from(p) % m == 0 || usize::from(p) >= 20 * m;
    (DEFAULT_PARTITIONS..=SLOT_COUNT).find(|&p| {
        sizes.iter().all(|&m| may(p, m))
            && sizes
                .iter()
                .zip(&slots)
                .all(|(&m, s)| spread(&counts(p, s, m)) <= TOLERANCE + 1e-12)
    })
}

/// One row of the cost table: one idle cache, the whole deployment.
struct Row {
    /// Background commands per second.
    commands: f64,
    /// Background server time, µs per second.
    server_us: f64,
    /// Of which the waiting instances' reads of the claim.
    reads_us: f64,
    /// Connections per master.
    connections: f64,
    /// Shard-channel subscriptions per master per listened cache.
    subscriptions: f64,
}

fn row(inputs: &Inputs, partitions: f64, masters: f64, instances: f64) -> Row {
    // The holder surveys: one ZRANGE per partition per second.
    let survey = partitions;
    // The deputy, once a second, with a second instance.
    let deputy = if instances >= 2.0 { 1.0 } else { 0.0 };
    // Every other instance reads the deputy's claim every 30 s plus up to a quarter
    // more (`WAIT` in `store/reaper.rs`): on average every 33.75 s.
    let reads = (instances - 2.0).max(0.0) / 33.75;
    let reads_us = reads * inputs.get("claim_pttl_us");
    Row {
        commands: survey
            + inputs.get("holder_claim_commands_per_s")
            + deputy * inputs.get("deputy_commands_per_s")
            + reads,
        server_us: survey * inputs.get("zrange_us")
            + inputs.get("holder_claim_us_per_s")
            + deputy * inputs.get("deputy_us_per_s")
            + reads_us,
        reads_us,
        connections: instances * inputs.get("connections_per_instance_per_master"),
        subscriptions: instances * partitions * inputs.get("subscriptions_per_listened_partition")
            / masters,
    }
}

/// `v` rounded, with thousands separators.
fn thousands(v: f64) -> String {
    let digits = (v.round() as u64).to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `lo–hi` (or `lo` alone) of `counts`.
fn range(counts: &[u32]) -> String {
    let lo = counts.iter().min().copied().unwrap_or(0);
    let hi = counts.iter().max().copied().unwrap_or(0);
    if lo == hi {
        format!("{lo}")
    } else {
        format!("{lo}–{hi}")
    }
}

/// Appends `lines`, each followed by a line break.
fn lines(out: &mut String, lines: &[&str]) {
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
}

/// The text of `docs/scale.md` for `inputs`.
fn render(inputs: &Inputs) -> String {
    let mut w = String::new();
    lines(
        &mut w,
        &[
            "# Scale model",
            "",
            "Generated by `cargo run -p partcache-redis --example scale_model` from the costs",
            "measured by `cargo bench -p partcache-redis --bench reaper` on a 3-master",
            "cluster and recorded in `docs/benchmarks.md` (\"Scale model inputs\"), and from",
            "partcache's own partition maths. `cargo test -p partcache-redis` checks that",
            "this file is what they give: do not edit it by hand.",
            "",
            "## Inputs",
            "",
            "| input | value |",
            "|---|---|",
        ],
    );
    for (name, value) in &inputs.0 {
        let _ = writeln!(w, "| `{name}` | {value} |");
    }
    lines(
        &mut w,
        &[
            "",
            "## Partitions",
            "",
            "A master's load follows the partitions it holds (a cache's keys spread evenly",
            "over its partitions; with few keys per partition, chance adds its own spread).",
            "For slots split as `redis-cli --cluster create` splits them, the recommended",
            "`partitions` is the fewest, from the default up, that keep the masters within",
            "5% of each other (the busiest holds at most 5% more partitions than the",
            "idlest), both at that size and with one master more (a count that fits one",
            "size exactly, such as one partition per master, is thrown off by the first",
            "change); where none does, the most a cache can have, one partition per slot.",
            "The counts are partcache's own",
            "(`PartitionMap`, `partitions_per_master`), which the program checks against the",
            "anchor-slot rule it searches with. A cluster whose slots were moved by hand",
            "keeps this only as far as its slots stay evenly split.",
            "",
        ],
    );
    let _ = writeln!(
        w,
        "| masters | default {DEFAULT_PARTITIONS}: partitions per master | busiest over idlest | recommended `partitions` | partitions per master | busiest over idlest |\n|---|---|---|---|---|---|"
    );
    let mut recommended = BTreeMap::new();
    for masters in MASTERS {
        let owners = SlotOwners::balanced(masters);
        let default = checked_counts(DEFAULT_PARTITIONS, &owners, masters);
        let chosen = partitions_for(masters);
        let p = chosen.unwrap_or(SLOT_COUNT);
        recommended.insert(masters, p);
        let counts = checked_counts(p, &owners, masters);
        let _ = writeln!(
            w,
            "| {} | {} | {} | {}{} | {} | {} |",
            thousands(masters as f64),
            range(&default),
            percent(spread(&default)),
            thousands(f64::from(p)),
            if chosen.is_none() {
                " (none reaches 5%)"
            } else {
                ""
            },
            range(&counts),
            percent(spread(&counts)),
        );
    }
    let _ = writeln!(
        w,
        "\n## What a cache costs\n\n\
         Per operation, whatever the size: a `get` costs the servers {:.2} µs, a `put`\n\
         {:.2} µs (a default cache: no expiry, nobody listening; one command each).\n\n\
         At rest, an idle cache costs the whole deployment, however many instances\n\
         opened it, the work of two of them: the reaping claim's holder surveys, one\n\
         `ZRANGE` per partition per second ({:.2} µs each), and renews its claim\n\
         ({:.1} commands, {:.2} µs of server time a second); its deputy renews its own\n\
         claim and watches the holder's ({:.1} commands, {:.2} µs a second). Every other\n\
         instance reads the deputy's claim (`PTTL`, {:.2} µs) every 30 to 37.5 s.\n\
         Memory at rest: its layout record and claims, {} bytes, and once its events\n\
         were published (a listened cache), one message number per partition, {} bytes\n\
         each.\n\n\
         Each instance keeps {:.2} connections per master (data, and subscriptions once\n\
         it listens), and subscribes to every partition's channel of each cache it\n\
         listens to or near-caches: `partitions / masters` subscriptions per master.\n",
        inputs.get("get_us"),
        inputs.get("put_us"),
        inputs.get("zrange_us"),
        inputs.get("holder_claim_commands_per_s"),
        inputs.get("holder_claim_us_per_s"),
        inputs.get("deputy_commands_per_s"),
        inputs.get("deputy_us_per_s"),
        inputs.get("claim_pttl_us"),
        thousands(inputs.get("cache_record_bytes")),
        thousands(inputs.get("sequence_key_bytes")),
        inputs.get("connections_per_instance_per_master"),
    );
    let mut limits: Vec<String> = Vec::new();
    for masters in MASTERS {
        let p = f64::from(recommended[&masters]);
        let m = masters as f64;
        let idle = inputs.get("cache_record_bytes");
        let listened = idle + p * inputs.get("sequence_key_bytes");
        let _ = writeln!(
            w,
            "### {} masters, `partitions = {}`\n\n\
             Memory per cache at rest: {} bytes, {} once listened.\n\n\
             | instances | background commands/s per idle cache | server µs/s per idle cache | of which claim reads | {CACHES} idle caches, % of each master's thread | connections per master | subscriptions per master per listened cache |\n\
             |---|---|---|---|---|---|---|",
            thousands(m),
            thousands(p),
            thousands(idle),
            thousands(listened),
        );
        for instances in INSTANCES {
            let r = row(inputs, p, m, instances);
            let share = r.server_us * CACHES / m / 1e6 * 100.0;
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {:.2}% | {} | {} |",
                thousands(instances),
                thousands(r.commands),
                thousands(r.server_us),
                thousands(r.reads_us),
                share,
                thousands(r.connections),
                thousands(r.subscriptions),
            );
            let size = format!(
                "{} masters, {} instances",
                thousands(m),
                thousands(instances)
            );
            if r.connections > MAXCLIENTS {
                limits.push(format!(
                    "{size}: {} connections per master, over Redis' default `maxclients` ({})",
                    thousands(r.connections),
                    thousands(MAXCLIENTS)
                ));
            }
            if r.server_us * CACHES / m > BACKGROUND_BUDGET_US {
                limits.push(format!(
                    "{size}: {CACHES} idle caches take {share:.1}% of each master's thread, {:.0}% of it claim reads",
                    100.0 * r.reads_us / r.server_us
                ));
            }
            if r.subscriptions > SUBSCRIPTIONS {
                limits.push(format!(
                    "{size}: {} subscriptions per master for each listened cache",
                    thousands(r.subscriptions)
                ));
            }
        }
        w.push('\n');
    }
    let _ = writeln!(
        w,
        "## Where it stops scaling, and what to do then\n\n\
         The model flags a size where a master would hold more connections than Redis'\n\
         default `maxclients` ({}), where {CACHES} idle caches would take more than 5% of a\n\
         master's command thread, or where a listened cache would put more than {}\n\
         subscriptions on a master:\n",
        thousands(MAXCLIENTS),
        thousands(SUBSCRIPTIONS),
    );
    if limits.is_empty() {
        w.push_str("* none of the sizes above.\n");
    }
    for limit in &limits {
        let _ = writeln!(w, "* {limit}.");
    }
    lines(
        &mut w,
        &[
            "",
            "The reaping does not grow with instances; what does is what each instance needs",
            "for itself: its connections to every master, its subscriptions when it listens,",
            "and its reads of the deputy's claim while it waits. Then:",
            "",
            "* **Connections**: every instance connects to every master. Past `maxclients`,",
            "  raise it (each connection takes server memory, not measured here), or run",
            "  fewer, larger instances.",
            "* **Subscriptions**: listeners and near caches subscribe every instance to every",
            "  partition of the cache, and every write to it is delivered to each of them; a",
            "  near cache also checks its subscriptions from every instance (one `CLIENT",
            "  INFO` per master per heartbeat; neither cost is measured here). With",
            "  thousands of instances keep them to the caches that need them, and give a",
            "  listened cache no more partitions than its balance needs.",
            "* **Claim reads**: each waiting instance reads the deputy's claim of every cache",
            "  it opened every 30 s or so: one cheap command, the one background cost that",
            "  grows with instances (with 231 partitions, as many commands as the holder's",
            "  survey at about 7,800 instances). Past that, open fewer, larger caches (a",
            "  cache with more keys costs the same per operation), or add masters (the",
            "  claims of different caches live on different masters).",
            "* **Partitions**: the default 231 keeps masters within 5% of each other up to",
            "  about 10 masters; past that use the recommended count above. More partitions",
            "  cost one `ZRANGE` per partition per second per idle cache, on the whole",
            "  deployment, not per instance. Past about 800 masters no count does (a cache",
            "  has at most one partition per slot, and 16,384 slots leave 16 or 17 per",
            "  master): spread the load over several caches, whose partitions land on",
            "  different slots, or accept the slot-level spread.",
        ],
    );
    w
}

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

fn generated() -> Result<String, String> {
    let benchmarks = std::fs::read_to_string(docs().join("benchmarks.md"))
        .map_err(|e| format!("reading docs/benchmarks.md: {e}"))?;
    Ok(render(&Inputs::parse(&benchmarks)?))
}

fn main() {
    match generated() {
        Ok(text) => {
            let path = docs().join("scale.md");
            if let Err(e) = std::fs::write(&path, text) {
                eprintln!("writing {}: {e}", path.display());
                std::process::exit(1);
            }
            println!("wrote {}", path.display());
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_scale_md_is_what_the_recorded_inputs_give() {
        let expected = generated().expect("the model runs");
        let found = std::fs::read_to_string(docs().join("scale.md")).unwrap_or_default();
        assert!(
            found == expected,
            "docs/scale.md is out of date: run `cargo run -p partcache-redis --example scale_model`"
        );
    }

    #[test]
    fn the_recommended_partitions_keep_masters_within_five_percent() {
        for masters in [10, 100, 1_000] {
            let owners = SlotOwners::balanced(masters);
            if let Some(p) = partitions_for(masters) {
                let counts = checked_counts(p, &owners, masters);
                assert!(
                    spread(&counts) <= TOLERANCE + 1e-12,
                    "{masters} masters, {p}"
                );
            }
        }
    }
}
