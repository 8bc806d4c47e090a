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
/// Every master within this fraction of the mean load.
const TOLERANCE: f64 = 0.05;
/// Redis' default `maxclients`.
const MAXCLIENTS: f64 = 10_000.0;
/// A master's server time (µs per second) background work may take before it is a
/// concern: 5% of its one command thread.
const BACKGROUND_BUDGET_US: f64 = 50_000.0;
/// Idle caches a deployment is assumed to hold, for the totals.
const CACHES: f64 = 50.0;

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

/// The largest deviation of a master's partitions from the mean, as a fraction.
fn spread(counts: &[u32]) -> f64 {
    let mean = counts.iter().sum::<u32>() as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (f64::from(c) - mean).abs() / mean)
        .fold(0.0, f64::max)
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
/// [`TOLERANCE`] of the mean, with the slots split as `redis-cli --cluster create`
/// splits them; `None` if even one partition per slot does not.
fn partitions_for(masters: usize) -> Option<u16> {
    let slots = slot_masters(&SlotOwners::balanced(masters));
    (DEFAULT_PARTITIONS..=SLOT_COUNT)
        .find(|&p| spread(&counts(p, &slots, masters)) <= TOLERANCE + 1e-12)
}

/// One row of the cost table.
struct Row {
    instances: f64,
    /// Background commands per second per idle cache, whole deployment.
    commands: f64,
    /// Background server time per idle cache, µs per second, whole deployment.
    server_us: f64,
    /// Connections per master.
    connections: f64,
    /// Shard-channel subscriptions per master per listened cache.
    subscriptions: f64,
}

fn row(inputs: &Inputs, partitions: f64, masters: f64, instances: f64) -> Row {
    let survey = partitions; // one ZRANGE per partition per second, by the holder
    let renewals = 1.0; // the holder's lease renewal, once a second
    let asks = (instances - 1.0) * inputs.get("waiting_instance_lease_calls_per_s_per_cache");
    let lease_us = inputs.get("lease_fcall_us");
    Row {
        instances,
        // A lease call runs two commands inside the function besides the FCALL.
        commands: survey + 3.0 * (renewals + asks),
        server_us: survey * inputs.get("zrange_us") + (renewals + asks) * lease_us,
        connections: instances * inputs.get("connections_per_instance_per_master"),
        subscriptions: instances * partitions * inputs.get("subscriptions_per_listened_partition")
            / masters,
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The text of `docs/scale.md` for `inputs`.
fn render(inputs: &Inputs) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "# Scale model\n\n\
         Generated by `cargo run -p partcache-redis --example scale_model` from the inputs\n\
         measured by `cargo bench -p partcache-redis --bench reaper` and recorded in\n\
         `docs/benchmarks.md` (\"Scale model inputs\"); `cargo test -p partcache-redis`\n\
         checks that this file is what they give. Do not edit it by hand.\n"
    );
    let _ = writeln!(w, "## Inputs\n\n| input | value |\n|---|---|");
    for (name, value) in &inputs.0 {
        let _ = writeln!(w, "| `{name}` | {value} |");
    }
    let _ = writeln!(
        w,
        "\n## Partitions\n\n\
         A master's load follows the partitions it holds (keys spread evenly over the\n\
         partitions of a cache). The table gives, for slots split as `redis-cli --cluster\n\
         create` splits them, the fewest partitions (from the default {DEFAULT_PARTITIONS}\n\
         up) that keep every master within ±5% of the mean, and how far the default is.\n\
         The counts come from partcache's own partition maths (`PartitionMap`,\n\
         `partitions_per_master`), which the program checks against the anchor-slot rule\n\
         it searches with. A cluster resharded by hand keeps this only as far as its\n\
         slots stay evenly split.\n\n\
         | masters | default {DEFAULT_PARTITIONS}: partitions per master | spread | recommended `partitions` | per master | spread |\n\
         |---|---|---|---|---|---|"
    );
    let mut recommended = BTreeMap::new();
    for masters in MASTERS {
        let owners = SlotOwners::balanced(masters);
        let default = checked_counts(DEFAULT_PARTITIONS, &owners, masters);
        let chosen = partitions_for(masters);
        let p = chosen.unwrap_or(SLOT_COUNT);
        recommended.insert(masters, p);
        let counts = checked_counts(p, &owners, masters);
        let range = |c: &[u32]| {
            let (lo, hi) = (
                c.iter().min().copied().unwrap_or(0),
                c.iter().max().copied().unwrap_or(0),
            );
            if lo == hi {
                format!("{lo}")
            } else {
                format!("{lo}–{hi}")
            }
        };
        let _ = writeln!(
            w,
            "| {masters} | {} | ±{:.1}% | {}{} | {} | ±{:.1}% |",
            range(&default),
            100.0 * spread(&default),
            p,
            if chosen.is_none() {
                " (none reaches ±5%)"
            } else {
                ""
            },
            range(&counts),
            100.0 * spread(&counts),
        );
    }
    let _ = writeln!(
        w,
        "\n## What a cache costs\n\n\
         Per operation, whatever the size: a `get` costs the servers {:.2} µs, a `put`\n\
         {:.2} µs (a default cache: no expiry, no listeners; one command each).\n\n\
         At rest, an idle cache costs the whole deployment:\n\n\
         * the reaping lease holder's work: one `ZRANGE` per partition per second\n\
           ({:.2} µs each) and one lease renewal per second ({:.2} µs);\n\
         * every other instance's lease request, {:.2} per second each ({:.2} µs each);\n\
         * memory: its layout record and lease ({} bytes) and, once its events were\n\
           published, one message number per partition ({} bytes each).\n\n\
         Connections per master: {:.0} per instance (data, plus subscriptions when it\n\
         listens). Subscriptions per master: a listened cache (listener or near cache)\n\
         subscribes every instance to each partition's channel, so `partitions / masters`\n\
         per instance.\n",
        inputs.get("get_us"),
        inputs.get("put_us"),
        inputs.get("zrange_us"),
        inputs.get("lease_fcall_us"),
        inputs.get("waiting_instance_lease_calls_per_s_per_cache"),
        inputs.get("lease_fcall_us"),
        thousands(inputs.get("cache_record_bytes")),
        thousands(inputs.get("sequence_key_bytes")),
        inputs.get("connections_per_instance_per_master"),
    );
    let mut limits: Vec<String> = Vec::new();
    for masters in MASTERS {
        let p = f64::from(recommended[&masters]);
        let m = masters as f64;
        let _ = writeln!(
            w,
            "### {masters} masters, `partitions = {p}`\n\n\
             | instances | background commands/s per idle cache | server µs/s per idle cache | per master, % of its thread | {CACHES} idle caches, % per master | connections per master | subscriptions per master per listened cache | memory per cache at rest |\n\
             |---|---|---|---|---|---|---|---|"
        );
        for instances in INSTANCES {
            let r = row(inputs, p, m, instances);
            let per_master = r.server_us / m / 1e6 * 100.0;
            let memory = inputs.get("cache_record_bytes") + p * inputs.get("sequence_key_bytes");
            let _ = writeln!(
                w,
                "| {} | {} | {} | {:.3}% | {:.2}% | {} | {} | {} bytes |",
                thousands(r.instances),
                thousands(r.commands),
                thousands(r.server_us),
                per_master,
                per_master * CACHES,
                thousands(r.connections),
                thousands(r.subscriptions),
                thousands(memory),
            );
            if r.connections > MAXCLIENTS {
                limits.push(format!(
                    "{masters} masters, {} instances: {} connections per master, over Redis' default `maxclients` ({})",
                    thousands(instances),
                    thousands(r.connections),
                    thousands(MAXCLIENTS)
                ));
            }
            if r.server_us * CACHES / m > BACKGROUND_BUDGET_US {
                limits.push(format!(
                    "{masters} masters, {} instances: {CACHES} idle caches take {:.1}% of each master's thread",
                    thousands(instances),
                    r.server_us * CACHES / m / 1e4
                ));
            }
            if r.subscriptions > 100_000.0 {
                limits.push(format!(
                    "{masters} masters, {} instances: {} subscriptions per master for each listened cache",
                    thousands(instances),
                    thousands(r.subscriptions)
                ));
            }
        }
        let _ = writeln!(w);
    }
    let _ = writeln!(
        w,
        "## Where it stops scaling, and what to do then\n\n\
         The model flags a size when a master would hold more connections than Redis'\n\
         default `maxclients` ({}), when {CACHES} idle caches would take more than 5% of a\n\
         master's command thread, or when a listened cache would put more than 100,000\n\
         subscriptions on a master:\n",
        thousands(MAXCLIENTS)
    );
    if limits.is_empty() {
        let _ = writeln!(w, "* none of the sizes above.");
    }
    for limit in &limits {
        let _ = writeln!(w, "* {limit}.");
    }
    let _ = writeln!(
        w,
        "\nWhat grows with instances is what each instance needs for itself: its\n\
         connections to every master, its subscriptions when it listens, and its lease\n\
         requests while it waits to take a cache's reaping over. The reaping itself does\n\
         not. Then:\n\n\
         * **Connections**: every instance keeps a connection to every master; past\n\
           `maxclients`, raise it (each idle connection takes some tens of kilobytes of\n\
           server memory) or put fewer, larger instances in front of the cluster.\n\
         * **Subscriptions**: listeners and near caches subscribe every instance to every\n\
           partition of the cache; with thousands of instances keep them to the caches\n\
           that need them, and give a listened cache fewer partitions (each write to it\n\
           is also delivered to every instance that listens).\n\
         * **Lease requests**: each waiting instance asks once per lease period per\n\
           cache; with tens of thousands of instances and many caches they become the\n\
           largest background cost: open fewer caches per instance (one cache with more\n\
           keys costs the same per operation).\n\
         * **Partitions**: past {} masters the default {DEFAULT_PARTITIONS} partitions cannot\n\
           spread over every master; use the recommended count above (more partitions\n\
           cost one `ZRANGE` per partition per second per idle cache, on the whole\n\
           deployment, not per instance).",
        DEFAULT_PARTITIONS
    );
    out
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
