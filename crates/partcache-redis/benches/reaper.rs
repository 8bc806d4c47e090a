//! Background work against the number of instances, and the costs the scale model
//! (`examples/scale_model.rs`, `docs/scale.md`) is computed from, on a 3-master
//! cluster this benchmark starts itself:
//!
//! ```text
//! cargo bench -p partcache-redis --bench reaper
//! BENCH reaper_scaling ratio=<commands/s at 16 instances / at 1>
//! BENCH scale_input <name>=<value>   (one line per measured input)
//! ```
//!
//! `reaper_scaling`: 1, 4 and 16 instances (separate managers: separate connections
//! and reapers, as separate processes have) each open the same 10 idle caches; the
//! figure is the servers' commands per second (`INFO commandstats`, every command but
//! `INFO`) over a window of `PARTCACHE_REAPER_WINDOW_SECS` seconds (default 10).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use partcache::{Cache, CacheManager, EventFilter};
use partcache_integration_tests::{Flavor, RedisBinaries, RedisCluster};

mod support;

const CACHES: usize = 10;
/// Operations per measured operation kind.
const OPS: u64 = 20_000;

fn window() -> Duration {
    let secs = std::env::var("PARTCACHE_REAPER_WINDOW_SECS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(10.0);
    Duration::from_secs_f64(secs)
}

/// Per command (`"zrange"`, `"fcall"`, ...): calls and microseconds of server time,
/// summed over the masters.
fn commandstats(masters: &[redis::Client]) -> HashMap<String, (u64, u64)> {
    let mut out: HashMap<String, (u64, u64)> = HashMap::new();
    for client in masters {
        let mut connection = client.get_connection().expect("connection");
        let text: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut connection)
            .expect("INFO commandstats");
        for line in text.lines() {
            let Some((name, fields)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let field = |key: &str| {
                fields
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            let entry = out.entry(name.to_ascii_lowercase()).or_default();
            entry.0 += field("calls=");
            entry.1 += field("usec=");
        }
    }
    out
}

/// `after - before`, per command, leaving out `INFO` (this benchmark's own).
fn delta(
    before: &HashMap<String, (u64, u64)>,
    after: &HashMap<String, (u64, u64)>,
) -> HashMap<String, (u64, u64)> {
    after
        .iter()
        .filter(|(name, _)| !name.starts_with("info"))
        .map(|(name, &(calls, usec))| {
            let (c0, u0) = before.get(name).copied().unwrap_or_default();
            (name.clone(), (calls - c0, usec - u0))
        })
        .filter(|(_, (calls, _))| *calls > 0)
        .collect()
}

fn total_calls(d: &HashMap<String, (u64, u64)>) -> u64 {
    d.values().map(|(c, _)| c).sum()
}

/// Microseconds per call of `command` in `d` (0 when it was not called).
fn usec_per_call(d: &HashMap<String, (u64, u64)>, command: &str) -> f64 {
    d.get(command)
        .map_or(0.0, |&(calls, usec)| usec as f64 / calls.max(1) as f64)
}

/// Commands per second on the masters while `instances` managers hold the same
/// [`CACHES`] idle caches, over [`window`]; and the per-command delta.
async fn background(
    cluster: &RedisCluster,
    masters: &[redis::Client],
    instances: usize,
) -> (f64, HashMap<String, (u64, u64)>) {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let names: Vec<String> = (0..CACHES)
        .map(|i| format!("bench-idle-{instances}-{i}-{run:x}"))
        .collect();
    let mut caches: Vec<Cache<u64, u64>> = Vec::new();
    for _ in 0..instances {
        let manager = CacheManager::from_url(&cluster.seed_url()).expect("manager");
        for name in &names {
            caches.push(manager.cache(name).build().await.expect("build"));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = tokio::task::block_in_place(|| commandstats(masters));
    let start = Instant::now();
    tokio::time::sleep(window()).await;
    let after = tokio::task::block_in_place(|| commandstats(masters));
    let elapsed = start.elapsed().as_secs_f64();
    for cache in &caches {
        cache.close().await.expect("close");
    }
    let d = delta(&before, &after);
    (total_calls(&d) as f64 / elapsed, d)
}

/// Connections of clients other than this benchmark's admin ones, summed over the
/// masters, and their shard-channel subscriptions.
fn clients(masters: &[redis::Client]) -> (u64, u64) {
    let (mut connections, mut subscriptions) = (0, 0);
    for client in masters {
        let mut connection = client.get_connection().expect("connection");
        let text: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query(&mut connection)
            .expect("CLIENT LIST");
        for line in text.lines() {
            if line.contains("cmd=client|list") {
                continue;
            }
            connections += 1;
            subscriptions += line
                .split(' ')
                .find_map(|f| f.strip_prefix("ssub="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    (connections, subscriptions)
}

fn input(name: &str, value: f64) {
    println!("BENCH scale_input {name}={value:.2}");
}

fn main() {
    let cluster = RedisCluster::start(Flavor::Redis, 3, 0).expect("start cluster");
    let masters: Vec<redis::Client> = cluster
        .masters()
        .iter()
        .map(|m| redis::Client::open(m.url()).expect("client"))
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "# {}; 3 masters, {CACHES} idle caches of {} partitions per instance, {:?} windows",
            RedisBinaries::redis()
                .map(|b| b.version_line().to_string())
                .unwrap_or_default(),
            partcache::partition::DEFAULT_PARTITIONS,
            window()
        );
        partcache_redis::install();

        let mut rates = Vec::new();
        let mut deltas = Vec::new();
        for instances in [1, 4, 16] {
            let (rate, d) = background(&cluster, &masters, instances).await;
            println!("# {instances} instances: {rate:.0} commands/s");
            rates.push(rate);
            deltas.push(d);
        }
        let one = &deltas[0];
        println!(
            "BENCH reaper_scaling ratio={:.3} one={:.0} four={:.0} sixteen={:.0}",
            rates[2] / rates[0],
            rates[0],
            rates[1],
            rates[2]
        );

        // The inputs of the scale model, each from this run. Per idle cache and
        // second: the holder's commands besides its survey (its claim renewal), and
        // what the deputy adds at 16 instances (the other 14 read the deputy's claim
        // every 30 s or more, not within the window).
        let secs = window().as_secs_f64() * CACHES as f64;
        let sixteen = &deltas[2];
        let calls =
            |d: &HashMap<String, (u64, u64)>, c: &str| d.get(c).map_or(0, |&(n, _)| n) as f64;
        let usec =
            |d: &HashMap<String, (u64, u64)>, c: &str| d.get(c).map_or(0, |&(_, u)| u) as f64;
        input("zrange_us", usec_per_call(one, "zrange"));
        input(
            "holder_claim_commands_per_s",
            (total_calls(one) as f64 - calls(one, "zrange")) / secs,
        );
        // Idle caches: every FCALL is a claim call (which runs the others inside).
        input("holder_claim_us_per_s", usec(one, "fcall") / secs);
        input(
            "deputy_commands_per_s",
            (total_calls(sixteen) as f64 - calls(sixteen, "zrange") - total_calls(one) as f64
                + calls(one, "zrange"))
                / secs,
        );
        input(
            "deputy_us_per_s",
            (usec(sixteen, "fcall") - usec(one, "fcall")) / secs,
        );
        input("claim_pttl_us", usec_per_call(sixteen, "pttl"));

        // Per operation: server time of a read and a write on a default cache.
        let manager = CacheManager::from_url(&cluster.seed_url()).expect("manager");
        let cache: Cache<u64, String> = manager
            .cache(&format!("bench-ops-{}", std::process::id()))
            .build()
            .await
            .expect("build");
        let value = "x".repeat(100);
        let before = tokio::task::block_in_place(|| commandstats(&masters));
        for k in 0..OPS {
            cache.put(k, value.clone()).await.expect("put");
        }
        let after = tokio::task::block_in_place(|| commandstats(&masters));
        let d = delta(&before, &after);
        let usec: u64 = d.get("fcall").map_or(0, |&(_, u)| u);
        input("put_us", usec as f64 / OPS as f64);
        let before = tokio::task::block_in_place(|| commandstats(&masters));
        for k in 0..OPS {
            std::hint::black_box(cache.get(&k).await.expect("get"));
        }
        let after = tokio::task::block_in_place(|| commandstats(&masters));
        let d = delta(&before, &after);
        input("get_us", usec_per_call(&d, "get"));

        // Connections and subscriptions of one instance with one listened cache.
        let (c0, s0) = tokio::task::block_in_place(|| clients(&masters));
        let listener = CacheManager::from_url(&cluster.seed_url()).expect("manager");
        let listened: Cache<u64, String> = listener
            .cache(&format!("bench-listened-{}", std::process::id()))
            .build()
            .await
            .expect("build");
        let _rx = listened.listen(EventFilter::all()).await.expect("listen");
        listened.put(1, value.clone()).await.expect("put");
        std::hint::black_box(listened.get(&1).await.expect("get"));
        let (c1, s1) = tokio::task::block_in_place(|| clients(&masters));
        input(
            "connections_per_instance_per_master",
            (c1 - c0) as f64 / 3.0,
        );
        input(
            "subscriptions_per_listened_partition",
            (s1 - s0) as f64 / f64::from(partcache::partition::DEFAULT_PARTITIONS),
        );

        // Bytes a cache keeps on the servers at rest: its layout record and claim, and
        // per partition once events were published, its message number.
        let mut bytes = 0.0;
        let mut sequence = 0.0;
        for client in &masters {
            let mut connection = client.get_connection().expect("connection");
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("pc:*:bench-listened-{}:*", std::process::id()))
                .query(&mut connection)
                .expect("KEYS");
            for key in keys {
                if key.contains(":e:") {
                    continue;
                }
                let used: Option<u64> = redis::cmd("MEMORY")
                    .arg("USAGE")
                    .arg(&key)
                    .query(&mut connection)
                    .expect("MEMORY USAGE");
                let used = used.unwrap_or(0) as f64;
                if key.ends_with(":sq") {
                    sequence = used;
                } else {
                    bytes += used;
                }
            }
        }
        input("sequence_key_bytes", sequence);
        input("cache_record_bytes", bytes);
        drop(listened);
        drop(cache);
    });
}
