//! Cluster routing and balance on real clusters.

use crate::common;

use common::unique;

use std::collections::HashMap;

use partcache::Cache;
use partcache::partition::{PartitionMap, SlotOwners, partitions_per_master};
use partcache_integration_tests::{Flavor, RedisCluster};

/// Commands of the read path, summed per node: everything but the harness's admin
/// traffic and the cache's background reaper (an `FCALL` of the reap function every
/// 100 ms on partitions with something due, which runs `TIME`, `ZRANGEBYSCORE` and
/// `ZRANGE`, and its survey of earliest deadlines, a `ZRANGE` per partition every
/// second; a plain read runs no script and no `ZRANGE`). The reaping claim's renewal,
/// once a second, runs a `GET` and a `SET` inside its `FCALL`: the `+ 2` below.
fn data_commands(stats: &HashMap<String, u64>) -> u64 {
    stats
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "fcall" | "time" | "zrangebyscore" | "zrange" | "exists"
            ) && !name.starts_with("cluster")
                && !name.starts_with("config")
                && !name.starts_with("info")
                && !name.starts_with("ping")
                && !name.starts_with("client")
                && !name.starts_with("hello")
                && !name.starts_with("select")
                && !name.starts_with("function")
        })
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_all_of_1000_keys_sends_one_pipeline_per_master() {
    let cluster = tokio::task::block_in_place(|| RedisCluster::start(Flavor::Redis, 3, 0).unwrap());
    let cache: Cache<String, String> = common::manager(&cluster.seed_url())
        .cache(&unique("fanout"))
        .build()
        .await
        .unwrap();
    let keys: Vec<String> = (0..1000).map(|i| format!("key-{i}")).collect();
    cache
        .put_all(keys.iter().map(|k| (k.clone(), format!("v-{k}"))))
        .await
        .unwrap();
    tokio::task::block_in_place(|| cluster.reset_stats().unwrap());
    let values = cache.get_all(&keys).await.unwrap();
    assert!(values.iter().all(Option::is_some));
    let stats = tokio::task::block_in_place(|| cluster.commandstats_all().unwrap());
    let partitions = cache.partition_map().unwrap().partitions() as u64;
    let mut total = 0;
    for (node, stats) in stats.iter().enumerate() {
        let n = data_commands(stats);
        println!("node {node}: {n} data commands ({:?})", stats.get("mget"));
        // One MGET per partition the node holds (77 of 231 on 3 masters), never one
        // command per key (about 333 per node).
        assert!(
            n <= partitions / 3 + 2,
            "node {node} served {n} commands: {stats:?}"
        );
        total += n;
    }
    assert!(total <= partitions, "{total} commands for 1000 keys");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_entries_spread_evenly_over_3_4_and_5_masters() {
    for masters in [3usize, 4, 5] {
        let cluster =
            tokio::task::block_in_place(|| RedisCluster::start(Flavor::Redis, masters, 0).unwrap());
        // A bulk load of 5,000-entry batches, not a latency check: a generous timeout
        // keeps a busy 2-core CI machine from failing it.
        let url = format!("{}?response_timeout=10s", cluster.seed_url());
        let cache: Cache<u64, u64> = common::manager(&url)
            .cache(&unique("balance"))
            .build()
            .await
            .unwrap();
        // The layout alone: partitions per master differ by at most one.
        let owners = tokio::task::block_in_place(|| cluster.slot_owners().unwrap());
        let map: PartitionMap = cache.partition_map().unwrap().clone();
        let counts = partitions_per_master(&map, &SlotOwners::from_ranges(owners));
        let (lo, hi) = (
            counts.values().min().unwrap(),
            counts.values().max().unwrap(),
        );
        assert!(hi - lo <= 1, "{masters} masters: {counts:?}");
        // Entries: 100k random keys (3 masters only, to keep the test short).
        let keys: u64 = if masters == 3 { 100_000 } else { 20_000 };
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ masters as u64;
        let mut batch = Vec::with_capacity(5000);
        for _ in 0..keys {
            // xorshift: uniformly random keys without a dependency.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            batch.push((x, 1u64));
            if batch.len() == 5000 {
                cache.put_all(std::mem::take(&mut batch)).await.unwrap();
            }
        }
        cache.put_all(batch).await.unwrap();
        let report = cache.balance_report().await.unwrap();
        println!("{report}");
        assert_eq!(report.masters.len(), masters);
        assert_eq!(report.entries(), keys);
        let parts: Vec<u16> = report.masters.iter().map(|m| m.partitions).collect();
        assert!(
            parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1,
            "{parts:?}"
        );
        if masters == 3 {
            let mean = keys as f64 / masters as f64;
            for m in &report.masters {
                let off = (m.entries as f64 - mean).abs() / mean;
                assert!(
                    off <= 0.05,
                    "{} holds {} entries, {:.1}% off the mean",
                    m.master,
                    m.entries,
                    off * 100.0
                );
            }
        }
    }
}

/// The name of the function library's function whose name ends with `suffix`, as a
/// node lists it (`FUNCTION LIST`).
pub(crate) fn function_named(listing: &redis::Value, suffix: &str) -> Option<String> {
    match listing {
        redis::Value::BulkString(b) => {
            let name = String::from_utf8_lossy(b);
            (name.starts_with("partcache_") && name.ends_with(suffix)).then(|| name.into_owned())
        }
        redis::Value::Array(items) => items.iter().find_map(|v| function_named(v, suffix)),
        redis::Value::Map(pairs) => pairs
            .iter()
            .find_map(|(k, v)| function_named(k, suffix).or_else(|| function_named(v, suffix))),
        _ => None,
    }
}

/// The batched common put (`lua/put_batch.lua`, which declares no keys) does on a node
/// the entries whose slots that node serves, and hands back undone (-1) an entry whose
/// slot it does not serve: its caller then sends that one alone, with its keys
/// declared, which the router redirects (`coalesce/puts.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_batch_does_what_its_node_serves_and_hands_back_the_rest() {
    let cluster = tokio::task::block_in_place(common::cluster);
    let name = unique("batch");
    let cache: Cache<u64, String> = common::manager(&cluster.seed_url())
        .cache(&name)
        .build()
        .await
        .unwrap();
    // Writes to every partition: every master has the function library.
    cache
        .put_all((0..1000).map(|k| (k, "x".to_string())))
        .await
        .unwrap();
    let map = cache.partition_map().unwrap().clone();
    let node = cluster.masters()[0].index;
    let owner = |p: u16| tokio::task::block_in_place(|| cluster.slot_owner(map.slot(p)).unwrap());
    let here = (0..map.partitions()).find(|&p| owner(p) == node).unwrap();
    let elsewhere = (0..map.partitions()).find(|&p| owner(p) != node).unwrap();
    let prefix = |p: u16| format!("pc:{{{}}}:{name}:", map.tag(p));
    let (prefix_here, prefix_elsewhere) = (prefix(here), prefix(elsewhere));
    let listing: redis::Value =
        tokio::task::block_in_place(|| cluster.query_node(node, &["FUNCTION", "LIST"])).unwrap();
    let put_batch = function_named(&listing, "_put_batch").expect("put_batch is loaded");
    // Silent entries (a key prefix, not a channel, as head): origin, channel suffix,
    // event mode, then head, entry key and blob per entry.
    let (key_here, key_elsewhere) = (
        format!("{prefix_here}e:t1"),
        format!("{prefix_elsewhere}e:t2"),
    );
    let replies: Vec<i64> = tokio::task::block_in_place(|| {
        cluster.query_node(
            node,
            &[
                "FCALL",
                &put_batch,
                "0",
                "origin",
                "ev",
                "2",
                &prefix_here,
                &key_here,
                "b1",
                &prefix_elsewhere,
                &key_elsewhere,
                "b2",
            ],
        )
    })
    .unwrap();
    // Created and applied (write_reply's packed form: 2 * applied), and undone.
    assert_eq!(replies, [2, -1]);
    let read = |i: usize, key: String| {
        tokio::task::block_in_place(|| cluster.query_node::<Option<String>>(i, &["GET", &key]))
            .unwrap()
    };
    assert_eq!(
        read(node, format!("{prefix_here}e:t1")).as_deref(),
        Some("b1")
    );
    assert_eq!(
        read(owner(elsewhere), format!("{prefix_elsewhere}e:t2")),
        None
    );
}

/// On a cluster, one-key reads that arrive while another is on its way to the same
/// node wait for it and then go to that node together, as one pipeline
/// (`batching/node_reads.rs`): each of 256 concurrent callers, over every partition and
/// node, gets its own key's value or its miss, and each read counts once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_on_a_cluster_each_get_their_own_value() {
    let cluster = tokio::task::block_in_place(common::cluster);
    let cache: Cache<u64, String> = common::manager(&cluster.seed_url())
        .cache(&unique("node-reads"))
        .build()
        .await
        .unwrap();
    cache
        .put_all((0..512).step_by(2).map(|k| (k, format!("v{k}"))))
        .await
        .unwrap();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(256));
    let tasks: Vec<_> = (0..256u64)
        .map(|t| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let mut got = Vec::new();
                for k in [t, t + 256] {
                    got.push((k, cache.get(&k).await));
                }
                got
            })
        })
        .collect();
    for task in tasks {
        for (k, got) in task.await.expect("get task") {
            let expected = (k % 2 == 0).then(|| format!("v{k}"));
            assert_eq!(got.unwrap().as_deref().cloned(), expected, "key {k}");
        }
    }
    assert_eq!(cache.stats().hits, 256);
    assert_eq!(cache.stats().misses, 256);
}

/// Concurrent puts on an evicting cache of three partitions on a 3+3 cluster: each
/// node's upsert batches create many entries of one partition at once, and evict once
/// per partition and batch. Once the puts have returned, every partition holds exactly
/// its budget (the newest entries), every eviction was counted once, and every entry
/// left holds the value put.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batched_puts_keep_the_budget_exactly_on_a_cluster() {
    let cluster = tokio::task::block_in_place(common::cluster);
    let cache: Cache<u64, String> = common::manager(&cluster.seed_url())
        .cache(&unique("evicting-cluster"))
        .partitions(3)
        .max_entries(30)
        .build()
        .await
        .unwrap();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let (cache, barrier) = (cache.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                for i in 0..10 {
                    let k = t * 10 + i;
                    cache.put(k, format!("v{k}")).await?;
                }
                Ok::<_, partcache::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("put task").unwrap();
    }
    // 640 keys over three partitions: each got far more than its budget of ten.
    assert_eq!(cache.len().await.unwrap(), 30);
    assert_eq!(cache.stats().evictions, 640 - 30);
    let keys: Vec<u64> = (0..640).collect();
    let values = cache.get_all(&keys).await.unwrap();
    let mut found = 0;
    for (k, v) in keys.iter().zip(values) {
        if let Some(v) = v {
            assert_eq!(*v, format!("v{k}"));
            found += 1;
        }
    }
    assert_eq!(found, 30);
}
