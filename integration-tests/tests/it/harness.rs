//! Tests of the test harness itself, against real servers.
//!
//! Redis must be installed (`scripts/servers.sh`); Valkey tests print a loud
//! `SKIPPED (valkey): ...` line when Valkey is unavailable (or fail if
//! `PARTCACHE_REQUIRE_VALKEY=1`).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use partcache_integration_tests::{
    ClusterOptions, Flavor, RedisBinaries, RedisCluster, RedisServer, Role, ServerOptions,
    TOTAL_SLOTS, TlsMode,
};

fn process_exists(pid: u32) -> bool {
    let via_kill = std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    via_kill || Path::new(&format!("/proc/{pid}")).exists()
}

async fn set_get(con: &mut impl redis::aio::ConnectionLike, key: &str, value: &str) -> String {
    redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async::<()>(con)
        .await
        .expect("SET");
    redis::cmd("GET")
        .arg(key)
        .query_async::<String>(con)
        .await
        .expect("GET")
}

fn assert_full_coverage(cluster: &RedisCluster, expected_owners: usize) {
    let owners = cluster.slot_owners().expect("slot_owners");
    let mut next: u32 = 0;
    for (range, _) in &owners {
        assert_eq!(u32::from(*range.start()), next, "gap in {owners:?}");
        next = u32::from(*range.end()) + 1;
    }
    assert_eq!(
        next,
        u32::from(TOTAL_SLOTS),
        "slot map incomplete: {owners:?}"
    );
    let distinct: BTreeSet<&String> = owners.iter().map(|(_, a)| a).collect();
    assert_eq!(distinct.len(), expected_owners, "{owners:?}");
    let masters: BTreeSet<String> = cluster.masters().into_iter().map(|m| m.addr).collect();
    assert!(
        distinct.iter().all(|a| masters.contains(*a)),
        "owners {distinct:?} are not the masters {masters:?}"
    );
}

#[tokio::test]
async fn standalone_redis_set_get_and_drop_kills_the_process() {
    let server = RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start");
    let b = server.binaries();
    eprintln!(
        "redis: {} ({}) on {}",
        b.version_line(),
        b.server_path().display(),
        server.url()
    );
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));
    assert_eq!(server.addr(), format!("127.0.0.1:{}", server.port()));

    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    assert_eq!(set_get(&mut con, "hello", "world").await, "world");

    // The harness's settings are in effect.
    let save: Vec<String> = server.query(&["CONFIG", "GET", "save"]).unwrap();
    assert_eq!(save, vec!["save".to_string(), String::new()]);
    if b.supports_enable_debug_command() {
        let _: String = server
            .query(&["DEBUG", "SLEEP", "0"])
            .expect("DEBUG enabled");
    }
    assert!(server.redis_cli(["GET", "hello"]).contains("world"));
    let stats = server.commandstats().unwrap();
    assert_eq!(stats.get("set"), Some(&1), "{stats:?}");

    let pid = server.pid().expect("running");
    let dir = server.dir().to_path_buf();
    assert!(process_exists(pid));
    assert!(dir.exists());
    drop(con);
    drop(client);
    drop(server);
    assert!(!process_exists(pid), "pid {pid} survived drop");
    assert!(!dir.exists(), "temp dir {} survived drop", dir.display());
}

#[test]
fn tls_server_serves_tls_only_and_its_helpers_speak_tls() {
    for mode in [TlsMode::ServerAuth, TlsMode::Mutual] {
        let server =
            RedisServer::start(Flavor::Redis, ServerOptions::default().tls(mode)).expect("start");
        let tls = server.tls().expect("TLS files");
        assert_eq!(tls.mode(), mode);
        let url = server.url();
        eprintln!("{mode:?}: {url}");
        assert!(
            url.starts_with(&format!("rediss://127.0.0.1:{}?tls_ca=", server.port())),
            "{url}"
        );
        assert_eq!(url.contains("&tls_cert="), mode == TlsMode::Mutual, "{url}");
        // The port serves TLS only (`--port 0`): no plain listener anywhere.
        let ports: Vec<String> = server.query(&["CONFIG", "GET", "port"]).unwrap();
        assert_eq!(ports[1], "0");
        let auth: Vec<String> = server
            .query(&["CONFIG", "GET", "tls-auth-clients"])
            .unwrap();
        assert_eq!(auth[1], if mode == TlsMode::Mutual { "yes" } else { "no" });
        // redis-cli gets `--tls --cacert` (and `--cert --key`) from the harness.
        assert!(server.redis_cli(["SET", "k", "v"]).contains("OK"));
        assert!(server.redis_cli(["GET", "k"]).contains('v'));
        // A plain client gets nothing from a TLS port.
        let plain = redis::Client::open(format!("redis://127.0.0.1:{}", server.port()))
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(1))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        assert!(plain.is_err(), "plain TCP answered: {plain:?}");

        let pid = server.pid().expect("running");
        let (dir, tls_dir) = (server.dir().to_path_buf(), tls.dir().to_path_buf());
        assert!(tls.ca_cert().exists() && tls.server_key().exists());
        drop(server);
        assert!(!process_exists(pid), "pid {pid} survived drop");
        assert!(
            !dir.exists() && !tls_dir.exists(),
            "temp dirs survived drop"
        );
    }
}

#[tokio::test]
async fn standalone_kill_stop_and_restart_on_the_same_port() {
    let server = RedisServer::start(
        Flavor::Redis,
        ServerOptions::default().args(["--maxmemory", "10mb"]),
    )
    .expect("start");
    let port = server.port();
    let maxmemory: Vec<String> = server.query(&["CONFIG", "GET", "maxmemory"]).unwrap();
    assert_eq!(maxmemory[1], "10485760");

    let first = server.pid().unwrap();
    assert!(server.kill());
    assert!(!process_exists(first));
    assert!(server.pid().is_none());
    assert!(
        redis::Client::open(server.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .is_err(),
        "connected to a killed server"
    );

    server.restart().expect("restart after kill");
    assert_eq!(server.port(), port);
    let second = server.pid().unwrap();
    assert_ne!(first, second);
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    assert_eq!(set_get(&mut con, "k", "v").await, "v");

    // A paused server keeps its port open but answers nothing.
    server.pause().unwrap();
    let paused = tokio::time::timeout(
        Duration::from_millis(300),
        redis::cmd("PING").query_async::<String>(&mut con),
    )
    .await;
    assert!(paused.is_err(), "a paused server answered: {paused:?}");
    server.resume().unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");

    // Graceful stop, then back: no persistence, so the data set is empty.
    assert!(server.stop());
    assert!(!process_exists(second));
    server.restart().expect("restart after stop");
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let v: Option<String> = redis::cmd("GET")
        .arg("k")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v, None);
}

#[tokio::test]
async fn cluster_3_masters_3_replicas() {
    let t = Instant::now();
    let cluster = RedisCluster::start(Flavor::Redis, 3, 1).expect("cluster start");
    eprintln!(
        "3+3 redis cluster ready in {:?} (measured by the test: {:?}); seed {}",
        cluster.startup_duration(),
        t.elapsed(),
        cluster.seed_url()
    );
    assert_eq!(cluster.len(), 6);
    let nodes = cluster.nodes();
    assert!(nodes.iter().all(|n| n.alive && n.node_id.len() == 40));
    let masters = cluster.masters();
    let replicas = cluster.replicas();
    assert_eq!(masters.len(), 3);
    assert_eq!(replicas.len(), 3);
    for m in &masters {
        assert_eq!(m.role, Role::Master);
        assert_eq!(cluster.replicas_of(m.index).len(), 1, "{nodes:?}");
    }
    let seed = cluster.seed_url();
    assert!(seed.starts_with("redis-cluster://127.0.0.1:"));
    assert_eq!(seed.matches("127.0.0.1:").count(), 6);
    assert_full_coverage(&cluster, 3);

    cluster.reset_stats().unwrap();
    let client = redis::cluster::ClusterClient::new(cluster.node_urls()).unwrap();
    let mut con = client
        .get_async_connection()
        .await
        .expect("cluster connection");
    assert_eq!(set_get(&mut con, "{user:1}:name", "ada").await, "ada");

    // The SET landed on the master owning the key's slot.
    let slot = cluster.key_slot("{user:1}:name").unwrap();
    let owner = cluster.slot_owner(slot).unwrap();
    assert_eq!(cluster.commandstats(owner).unwrap().get("set"), Some(&1));
    // Replicas count the replicated SET too; masters saw exactly one.
    let all = cluster.commandstats_all().unwrap();
    let master_sets: u64 = masters.iter().filter_map(|m| all[m.index].get("set")).sum();
    assert_eq!(master_sets, 1, "{all:?}");
    let replica = cluster.replicas_of(owner)[0];
    assert_eq!(all[replica].get("set"), Some(&1), "{all:?}");
}

#[tokio::test]
async fn cluster_4_masters_no_replicas() {
    let cluster = RedisCluster::start(Flavor::Redis, 4, 0).expect("cluster start");
    eprintln!(
        "4+0 redis cluster ready in {:?}",
        cluster.startup_duration()
    );
    assert_eq!(cluster.len(), 4);
    assert_eq!(cluster.masters().len(), 4);
    assert!(cluster.replicas().is_empty());
    assert_full_coverage(&cluster, 4);

    let client = redis::cluster::ClusterClient::new(cluster.node_urls()).unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    for i in 0..20 {
        let k = format!("key-{i}");
        assert_eq!(set_get(&mut con, &k, &k).await, k);
    }
    // Failover is impossible without replicas, and the harness says so.
    let m = cluster.masters()[0].index;
    cluster.kill_node(m).unwrap();
    assert!(cluster.wait_for_failover(m).is_err());
}

#[test]
fn cluster_5_masters_5_replicas() {
    let cluster = RedisCluster::start(Flavor::Redis, 5, 1).expect("cluster start");
    eprintln!(
        "5+5 redis cluster ready in {:?}",
        cluster.startup_duration()
    );
    assert_eq!(cluster.masters().len(), 5);
    assert_eq!(cluster.replicas().len(), 5);
    assert_full_coverage(&cluster, 5);
}

#[test]
fn cluster_fewer_than_3_masters_is_rejected() {
    assert!(RedisCluster::start(Flavor::Redis, 2, 0).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_after_master_kill() {
    let opts = ClusterOptions::default();
    let cluster = RedisCluster::start_with_options(Flavor::Redis, 3, 1, opts).expect("start");
    let client = redis::cluster::ClusterClient::new(cluster.node_urls()).unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    assert_eq!(set_get(&mut con, "survivor", "yes").await, "yes");

    let slot = cluster.key_slot("survivor").unwrap();
    let old = cluster.slot_owner(slot).unwrap();
    // Make sure the write reached the replica before killing the master.
    let acked: i64 = cluster.query_node(old, &["WAIT", "1", "2000"]).unwrap();
    assert_eq!(acked, 1);
    let replica = cluster.replicas_of(old)[0];
    let old_pid = cluster.node_pid(old).unwrap();

    cluster.kill_node(old).unwrap();
    assert!(!process_exists(old_pid));
    let took = cluster
        .wait_for_failover_async(old)
        .await
        .expect("failover");
    eprintln!(
        "failover of node {old} to node {replica} took {took:?} (node timeout {:?})",
        cluster.node_timeout()
    );
    assert_eq!(cluster.slot_owner(slot).unwrap(), replica);
    let nodes = cluster.nodes();
    assert!(!nodes[old].alive);
    assert_eq!(nodes[replica].role, Role::Master);
    let v: String = cluster.query_node(replica, &["GET", "survivor"]).unwrap();
    assert_eq!(v, "yes");
    assert_full_coverage(&cluster, 3);

    // The old master comes back as a replica of the promoted one.
    cluster.restart_node(old).unwrap();
    cluster.wait_until_stable(Duration::from_secs(30)).unwrap();
    let nodes = cluster.nodes();
    assert_eq!(nodes[old].role, Role::Replica);
    assert_eq!(
        nodes[old].master_id.as_deref(),
        Some(cluster.node_id(replica))
    );

    // A frozen (SIGSTOP) master fails over too; paused nodes count as down.
    cluster.pause_node(replica).unwrap();
    let took = cluster
        .wait_for_failover(replica)
        .expect("failover of a paused master");
    eprintln!("failover of paused node {replica} back to node {old} took {took:?}");
    assert_eq!(cluster.slot_owner(slot).unwrap(), old);
    assert!(!cluster.nodes()[replica].alive);
    cluster.resume_node(replica).unwrap();
    cluster.wait_until_stable(Duration::from_secs(30)).unwrap();
    assert_eq!(cluster.nodes()[replica].role, Role::Replica);
    let v: String = cluster.query_node(old, &["GET", "survivor"]).unwrap();
    assert_eq!(v, "yes");
}

#[tokio::test]
async fn cluster_reshard_moves_slots_and_keys() {
    let cluster = RedisCluster::start(Flavor::Redis, 3, 1).expect("start");
    let client = redis::cluster::ClusterClient::new(cluster.node_urls()).unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    for i in 0..250 {
        let k = format!("{{tag}}:{i}");
        set_get(&mut con, &k, "x").await;
    }
    let slot = cluster.key_slot("{tag}:0").unwrap();
    let source = cluster.slot_owner(slot).unwrap();
    let target = cluster
        .masters()
        .into_iter()
        .map(|m| m.index)
        .find(|&i| i != source)
        .unwrap();
    let neighbour = if slot == 0 { 1 } else { slot - 1 };
    let neighbour_owner = cluster.slot_owner(neighbour).unwrap();

    let stats = cluster
        .reshard(&[slot, neighbour], target)
        .expect("reshard");
    assert_eq!(stats.keys_moved, 250);
    assert_eq!(
        stats.slots_moved,
        1 + usize::from(neighbour_owner != target),
        "{stats:?}"
    );
    assert_eq!(cluster.slot_owner(slot).unwrap(), target);
    assert_eq!(cluster.slot_owner(neighbour).unwrap(), target);
    let n: i64 = cluster
        .query_node(target, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
        .unwrap();
    assert_eq!(n, 250);
    let n: i64 = cluster
        .query_node(source, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()])
        .unwrap();
    assert_eq!(n, 0);
    assert_full_coverage(&cluster, 3);

    // A client follows the MOVED redirection.
    let v: String = redis::cmd("GET")
        .arg("{tag}:7")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v, "x");

    // Mid-migration state for ASK tests: keys split between the two nodes.
    let m = cluster.begin_slot_migration(slot, source).unwrap();
    assert_eq!((m.source, m.target), (target, source));
    assert_eq!(cluster.migrate_slot_keys(&m, 100).unwrap(), 100);
    let v: String = redis::cmd("GET")
        .arg("{tag}:7")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(v, "x");
    assert_eq!(cluster.finish_slot_migration(&m).unwrap(), 150);
    assert_eq!(cluster.slot_owner(slot).unwrap(), source);
}

#[tokio::test]
async fn valkey_standalone_or_loud_skip() {
    let Some(bins) = RedisBinaries::valkey_or_skip("valkey_standalone_or_loud_skip") else {
        return;
    };
    eprintln!(
        "valkey: {} ({})",
        bins.version_line(),
        bins.server_path().display()
    );
    let server = RedisServer::start_with(&bins, ServerOptions::default()).expect("valkey start");
    let info: String = server.query(&["INFO", "server"]).unwrap();
    assert!(
        info.contains("valkey_version") || info.contains("server_name:valkey"),
        "{info}"
    );
    let client = redis::Client::open(server.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    assert_eq!(set_get(&mut con, "flavor", "valkey").await, "valkey");
    let _: String = server
        .query(&["DEBUG", "SLEEP", "0"])
        .expect("DEBUG enabled");
    let pid = server.pid().unwrap();
    drop(con);
    drop(server);
    assert!(!process_exists(pid));
}

#[tokio::test]
async fn valkey_cluster_3_masters_3_replicas_or_loud_skip() {
    let Some(bins) =
        RedisBinaries::valkey_or_skip("valkey_cluster_3_masters_3_replicas_or_loud_skip")
    else {
        return;
    };
    let cluster = RedisCluster::start_with(&bins, 3, 1, ClusterOptions::default())
        .expect("valkey cluster start");
    eprintln!(
        "3+3 valkey cluster (created with {}) ready in {:?}",
        bins.cli_path().display(),
        cluster.startup_duration()
    );
    assert_eq!(cluster.flavor(), Flavor::Valkey);
    assert_full_coverage(&cluster, 3);
    let client = redis::cluster::ClusterClient::new(cluster.node_urls()).unwrap();
    let mut con = client.get_async_connection().await.unwrap();
    assert_eq!(set_get(&mut con, "vk", "1").await, "1");
}

/// Every supported topology (3, 4, 5 masters with 0 or 1 replica) for both flavours.
#[test]
fn topology_matrix() {
    let mut flavors = vec![RedisBinaries::redis().expect("redis")];
    flavors.extend(RedisBinaries::valkey_or_skip(
        "topology_matrix (valkey part)",
    ));
    for bins in &flavors {
        for masters in [3, 4, 5] {
            for replicas in [0, 1] {
                let c = RedisCluster::start_with(
                    &bins.clone(),
                    masters,
                    replicas,
                    ClusterOptions::default(),
                )
                .unwrap_or_else(|e| panic!("{} {masters}+{replicas}: {e}", bins.flavor()));
                eprintln!(
                    "{} {masters} masters x {replicas} replicas: ready in {:?}",
                    bins.flavor(),
                    c.startup_duration()
                );
                assert_eq!(c.masters().len(), masters);
                assert_eq!(c.replicas().len(), masters * replicas);
                assert_full_coverage(&c, masters);
            }
        }
    }
}
