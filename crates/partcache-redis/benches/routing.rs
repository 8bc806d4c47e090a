//! partcache's own router against redis-rs's cluster client routing the same commands
//! to an explicit node (`ClusterConnection::route_command` / `route_pipeline` with
//! `SingleNodeRoutingInfo::ByAddress`), on a 3+3 cluster this benchmark starts, at 64
//! concurrent tasks with 100-byte values:
//!
//! ```text
//! cargo bench -p partcache-redis --bench routing
//! ```
//!
//! The redis-rs side sends exactly the `FCALL`s partcache's store sends for each key:
//! they are recorded first from the servers' slow logs (threshold 0) while partcache
//! runs each operation once, alone, with the node that served it. It is then given
//! every advantage: the commands are built in advance (cloned per call), its replies
//! are not decoded, and the node is known without a slot map lookup. partcache's side
//! is a whole cache call (encoding the key, building the command, decoding the reply,
//! statistics). Prints:
//!
//! * `BENCH routing_get`: a read (`lua/get.lua`, a cache whose reads extend the
//!   expiry, so that every read is a function call).
//! * `BENCH routing_get_and_put`: a write of that cache that returns the previous
//!   value (`lua/write.lua`): one call per write on both sides.
//! * `BENCH routing_put_batched`: a put of an eternal cache: partcache batches the
//!   puts that wait for the same node into one `put_batch` call, where redis-rs sends
//!   the recorded `put` per key (its client has no way to merge calls).
//! * `BENCH routing_get_all_100`: 100 reads in one call; redis-rs gets one pipeline
//!   per node (`route_pipeline`), sent concurrently.
//!
//! `ratio` is partcache's throughput over redis-rs's (above 1: partcache is faster),
//! the best of several alternating rounds; `median` the median of the per-round
//! ratios; `cpu_us_partcache` / `cpu_us_redis_rs` the median CPU time one operation
//! cost this process plus the servers (`client+servers`, microseconds), which a
//! machine shared with other work moves much less than throughput. `PARTCACHE_BENCH_SECS` (default 1) and `PARTCACHE_BENCH_ROUNDS` (default 5)
//! as in the other benchmarks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use partcache::expiry::ExpiryPolicy;
use partcache::{Cache, CacheManager};
use partcache_integration_tests::{Flavor, RedisBinaries, RedisCluster};
use redis::aio::MultiplexedConnection;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, Value};

mod support;
use support::{Measured, SERVER_PIDS, measure, median, rounds, seconds, throughput};

const TASKS: usize = 64;
/// Keys per measurement (each one's command is recorded first).
const KEYS: u64 = 1_000;

fn value() -> String {
    "x".repeat(100)
}

/// A recorded command and the node that served it.
#[derive(Clone)]
struct Recorded {
    cmd: Cmd,
    host: String,
    port: u16,
}

impl Recorded {
    fn routing(&self) -> SingleNodeRoutingInfo {
        SingleNodeRoutingInfo::ByAddress {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

/// Connections to every node, for reading their slow logs.
struct SlowLogs {
    nodes: Vec<(String, u16, MultiplexedConnection)>,
}

impl SlowLogs {
    async fn open(cluster: &RedisCluster) -> SlowLogs {
        let mut nodes = Vec::new();
        for i in 0..cluster.len() {
            let mut conn = redis::Client::open(cluster.node_url(i))
                .expect("client")
                .get_multiplexed_async_connection()
                .await
                .expect("connection");
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("slowlog-max-len")
                .arg(4096)
                .query_async(&mut conn)
                .await
                .expect("CONFIG SET");
            nodes.push(("127.0.0.1".to_string(), cluster.node_port(i), conn));
        }
        SlowLogs { nodes }
    }

    /// Logs every command (`on`) or only the slow ones, as Redis does by default.
    async fn record(&mut self, on: bool) {
        for (_, _, conn) in &mut self.nodes {
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("slowlog-log-slower-than")
                .arg(if on { 0 } else { 10_000 })
                .query_async(conn)
                .await
                .expect("CONFIG SET");
            let _: () = redis::cmd("SLOWLOG")
                .arg("RESET")
                .query_async(conn)
                .await
                .expect("SLOWLOG RESET");
        }
    }

    /// The one `FCALL` run since the last call, and its node.
    async fn take_fcall(&mut self) -> Recorded {
        let mut found = Vec::new();
        for (host, port, conn) in &mut self.nodes {
            let entries: Value = redis::cmd("SLOWLOG")
                .arg("GET")
                .arg(-1)
                .query_async(conn)
                .await
                .expect("SLOWLOG GET");
            let _: () = redis::cmd("SLOWLOG")
                .arg("RESET")
                .query_async(conn)
                .await
                .expect("SLOWLOG RESET");
            let Value::Array(entries) = entries else {
                continue;
            };
            for entry in entries {
                let Value::Array(fields) = entry else {
                    continue;
                };
                let Some(Value::Array(args)) = fields.get(3) else {
                    continue;
                };
                let args: Vec<Vec<u8>> = args
                    .iter()
                    .filter_map(|a| match a {
                        Value::BulkString(b) => Some(b.clone()),
                        Value::SimpleString(s) => Some(s.clone().into_bytes()),
                        _ => None,
                    })
                    .collect();
                // Only the operation's own function: not the reaper's or the
                // statistics' calls, which may run meanwhile.
                let background = [&b"_reap"[..], b"_stats", b"_scan", b"_open", b"_clear"];
                if !args
                    .first()
                    .is_some_and(|a| a.eq_ignore_ascii_case(b"FCALL"))
                    || args
                        .get(1)
                        .is_none_or(|f| background.iter().any(|b| f.ends_with(b)))
                {
                    continue;
                }
                // The slow log shortens long arguments and long argument lists.
                assert!(
                    !args
                        .iter()
                        .any(|a| a.ends_with(b"more bytes)") || a.ends_with(b"more arguments)")),
                    "a recorded command was shortened by the slow log"
                );
                let mut cmd = Cmd::new();
                for arg in &args {
                    cmd.arg(&arg[..]);
                }
                found.push(Recorded {
                    cmd,
                    host: host.clone(),
                    port: *port,
                });
            }
        }
        assert_eq!(found.len(), 1, "one FCALL per recorded operation");
        found.pop().expect("one FCALL")
    }
}

/// Alternating rounds of `ours` and `theirs`; prints the `BENCH` line.
async fn compare<A, AF, B, BF>(name: &str, ours: A, theirs: B)
where
    A: Fn() -> AF,
    AF: Future<Output = f64>,
    B: Fn() -> BF,
    BF: Future<Output = f64>,
{
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..rounds() {
        if i % 2 == 0 {
            a.push(measure(ours()).await);
            b.push(measure(theirs()).await);
        } else {
            b.push(measure(theirs()).await);
            a.push(measure(ours()).await);
        }
    }
    let best = |v: &[Measured]| v.iter().map(|m| m.ops).fold(0f64, f64::max);
    let ratios: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x.ops / y.ops).collect();
    let cpu = |v: &[Measured]| {
        let client = median(v.iter().map(|m| m.client_us).collect());
        let server = median(v.iter().map(|m| m.server_us).collect());
        format!("{client:.1}+{server:.1}")
    };
    println!(
        "BENCH {name} ratio={:.2} partcache={:.0} redis_rs={:.0} median={:.2} rounds={} \
         cpu_us_partcache={} cpu_us_redis_rs={}",
        best(&a) / best(&b),
        best(&a),
        best(&b),
        median(ratios.clone()),
        ratios.len(),
        cpu(&a),
        cpu(&b),
    );
}

/// The `FCALL` each key's `op` sends, recorded one key at a time.
async fn record<F, Fut>(logs: &mut SlowLogs, op: F) -> Arc<Vec<Recorded>>
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()>,
{
    logs.record(true).await;
    let mut recorded = Vec::with_capacity(KEYS as usize);
    for k in 0..KEYS {
        op(k).await;
        recorded.push(logs.take_fcall().await);
    }
    logs.record(false).await;
    Arc::new(recorded)
}

async fn redis_rs_calls(conn: &ClusterConnection, recorded: &Arc<Vec<Recorded>>) -> f64 {
    let (conn, recorded) = (conn.clone(), recorded.clone());
    throughput(TASKS, KEYS, move |k| {
        let mut conn = conn.clone();
        let r = &recorded[k as usize];
        let (cmd, routing) = (r.cmd.clone(), RoutingInfo::SingleNode(r.routing()));
        async move {
            conn.route_command(cmd, routing)
                .await
                .expect("route_command");
        }
    })
    .await
}

/// 100 keys per call from `k`.
fn hundred(k: u64) -> Vec<u64> {
    (0..100).map(|i| (k + i * 7) % KEYS).collect()
}

async fn redis_rs_get_all(conn: &ClusterConnection, recorded: &Arc<Vec<Recorded>>) -> f64 {
    let (conn, recorded) = (conn.clone(), recorded.clone());
    throughput(TASKS, KEYS, move |k| {
        let mut by_node: HashMap<u16, (SingleNodeRoutingInfo, redis::Pipeline)> = HashMap::new();
        for key in hundred(k) {
            let r = &recorded[key as usize];
            by_node
                .entry(r.port)
                .or_insert_with(|| (r.routing(), redis::pipe()))
                .1
                .add_command(r.cmd.clone());
        }
        let conn = conn.clone();
        async move {
            let sends = by_node.into_values().map(|(routing, pipe)| {
                let mut conn = conn.clone();
                let count = pipe.len();
                async move {
                    conn.route_pipeline(pipe, 0, count, routing)
                        .await
                        .expect("route_pipeline")
                }
            });
            join_all(sends).await;
        }
    })
    .await
}

fn main() {
    let cluster = RedisCluster::start(Flavor::Redis, 3, 1).expect("start cluster");
    let _ = SERVER_PIDS.set(
        (0..cluster.len())
            .filter_map(|i| cluster.node_pid(i))
            .collect(),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        println!(
            "# servers: {}; 3 masters + 3 replicas, {TASKS} tasks, 100-byte values, {:?} per measurement, best of {} alternating rounds",
            RedisBinaries::locate(Flavor::Redis)
                .map(|b| b.version_line().to_string())
                .unwrap_or_default(),
            seconds(),
            rounds()
        );
        partcache_redis::install();
        let manager = CacheManager::from_url(&cluster.seed_url()).expect("manager");
        let redis_rs = redis::cluster::ClusterClient::builder(cluster.node_urls())
            .response_timeout(Duration::from_secs(5))
            .build()
            .expect("cluster client")
            .get_async_connection()
            .await
            .expect("cluster connection");
        let mut logs = SlowLogs::open(&cluster).await;

        // Reads that extend the expiry: every read is a function call.
        let reading: Cache<u64, String> = manager
            .cache("bench-routing-read")
            .expiry(ExpiryPolicy::Accessed(Duration::from_secs(3600)))
            .build()
            .await
            .expect("cache");
        for k in 0..KEYS {
            reading.put(k, value()).await.expect("fill");
        }
        let gets = record(&mut logs, |k| {
            let reading = reading.clone();
            async move {
                reading.get(&k).await.expect("get").expect("filled");
            }
        })
        .await;
        let writes = record(&mut logs, |k| {
            let reading = reading.clone();
            async move {
                reading.get_and_put(k, value()).await.expect("get_and_put");
            }
        })
        .await;
        // An eternal cache: its puts are batched per node.
        let eternal: Cache<u64, String> = manager
            .cache("bench-routing-eternal")
            .build()
            .await
            .expect("cache");
        let eternal_puts = record(&mut logs, |k| {
            let eternal = eternal.clone();
            async move { eternal.put(k, value()).await.expect("put") }
        })
        .await;

        compare(
            "routing_get",
            || {
                let reading = reading.clone();
                throughput(TASKS, KEYS, move |k| {
                    let reading = reading.clone();
                    async move {
                        reading.get(&k).await.expect("get");
                    }
                })
            },
            || redis_rs_calls(&redis_rs, &gets),
        )
        .await;
        compare(
            "routing_get_and_put",
            || {
                let reading = reading.clone();
                throughput(TASKS, KEYS, move |k| {
                    let reading = reading.clone();
                    async move {
                        reading.get_and_put(k, value()).await.expect("get_and_put");
                    }
                })
            },
            || redis_rs_calls(&redis_rs, &writes),
        )
        .await;
        compare(
            "routing_put_batched",
            || {
                let eternal = eternal.clone();
                throughput(TASKS, KEYS, move |k| {
                    let eternal = eternal.clone();
                    async move { eternal.put(k, value()).await.expect("put") }
                })
            },
            || redis_rs_calls(&redis_rs, &eternal_puts),
        )
        .await;
        compare(
            "routing_get_all_100",
            || {
                let reading = reading.clone();
                throughput(TASKS, KEYS, move |k| {
                    let reading = reading.clone();
                    async move {
                        reading.get_all(&hundred(k)).await.expect("get_all");
                    }
                })
            },
            || redis_rs_get_all(&redis_rs, &gets),
        )
        .await;
    });
}
