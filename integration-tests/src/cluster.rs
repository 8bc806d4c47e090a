//! A Redis Cluster of real server processes.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::ops::RangeInclusive;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use redis::FromRedisValue;

use crate::admin::{self, SlotRange};
use crate::binaries::{Flavor, RedisBinaries};
use crate::error::{HarnessError, Result};
use crate::process::{self, NodeProcess};
use crate::server::run_cli;
use crate::tls::{TlsFiles, TlsMode};

/// Number of hash slots in a Redis Cluster.
pub const TOTAL_SLOTS: u16 = 16384;

/// Default `--cluster-node-timeout` of harness clusters: short, so failover tests are fast.
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(2000);

/// Poll interval of every wait loop.
const POLL: Duration = Duration::from_millis(50);

/// Keys moved per `MIGRATE` call by [`RedisCluster::reshard`].
const MIGRATE_BATCH: usize = 100;

/// The role a cluster node currently plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A master (owns slots, or could).
    Master,
    /// A replica of some master.
    Replica,
}

/// A snapshot of one cluster node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    /// Index of the node in the harness (stable for the life of the cluster; use it with
    /// [`RedisCluster::kill_node`] etc.).
    pub index: usize,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The TCP port (the cluster bus is on `port + 10000`).
    pub port: u16,
    /// Current role (the last known one if the node is down or unresponsive).
    pub role: Role,
    /// The node's cluster id (40 hex characters).
    pub node_id: String,
    /// For replicas, the id of their master.
    pub master_id: Option<String>,
    /// Whether the process is running and not paused by
    /// [`RedisCluster::pause_node`].
    pub alive: bool,
}

impl ClusterNode {
    /// `redis://127.0.0.1:PORT` (plain TCP even on a TLS cluster: use
    /// [`RedisCluster::node_url`] there).
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

/// Options for [`RedisCluster::start_with_options`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// `--cluster-node-timeout` (default [`DEFAULT_NODE_TIMEOUT`], 2 s). A master is
    /// considered failed, and its replica promoted, after about this long.
    pub node_timeout: Duration,
    /// Deadline for the processes to answer PING (default 10 s).
    pub process_timeout: Duration,
    /// Deadline for the cluster to become consistent after `--cluster create` (default
    /// 30 s).
    pub ready_timeout: Duration,
    /// Extra arguments for every node, appended after the harness's own.
    pub extra_args: Vec<String>,
    /// Serve TLS only (default `None`: plain TCP): one throwaway CA and server
    /// certificate ([`TlsFiles`]) for every node, `--port 0 --tls-port <port>`, and the
    /// cluster bus and replication over TLS too (`--tls-cluster yes --tls-replication
    /// yes`), so `CLUSTER SLOTS` reports the TLS ports. [`RedisCluster::seed_url`] then
    /// carries `tls=true` and the CA.
    pub tls: Option<TlsMode>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            node_timeout: DEFAULT_NODE_TIMEOUT,
            process_timeout: Duration::from_secs(10),
            ready_timeout: Duration::from_secs(30),
            extra_args: Vec::new(),
            tls: None,
        }
    }
}

/// Statistics of a [`RedisCluster::reshard`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReshardStats {
    /// Slots whose owner changed.
    pub slots_moved: usize,
    /// Keys moved with `MIGRATE`.
    pub keys_moved: usize,
}

/// A slot migration in progress (see [`RedisCluster::begin_slot_migration`]): the source
/// has the slot `MIGRATING`, the target has it `IMPORTING`, so clients get `ASK`
/// redirections for keys already moved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMigration {
    /// The slot being moved.
    pub slot: u16,
    /// Index of the node the slot comes from.
    pub source: usize,
    /// Index of the node the slot goes to.
    pub target: usize,
    /// Cluster id of the source.
    pub source_id: String,
    /// Cluster id of the target.
    pub target_id: String,
}

/// A Redis Cluster of `masters * (1 + replicas_per_master)` real server processes on
/// `127.0.0.1`.
///
/// Nodes run with `--cluster-enabled yes --cluster-config-file nodes.conf
/// --cluster-node-timeout <node_timeout> --cluster-replica-validity-factor 0` (a replica can
/// always be promoted) `--repl-ping-replica-period 1` (Redis 7 lists a replica in
/// `CLUSTER SLOTS` only once its replication offset moved, which otherwise takes 10 s), no
/// persistence, each in its own temporary directory. The cluster is
/// created with `redis-cli --cluster create ... --cluster-replicas N --cluster-yes` and
/// [`start`](Self::start) returns only once every node reports `cluster_state:ok`, every
/// node's `CLUSTER SLOTS` covers all 16384 slots with the same owners and replicas, and
/// every master has its replicas attached and online.
///
/// Dropping it SIGKILLs all its processes and removes their directories.
///
/// All methods take `&self`; the type is `Send + Sync`, so an `Arc<RedisCluster>` can be
/// moved into `tokio::task::spawn_blocking` for the long waits.
pub struct RedisCluster {
    nodes: Vec<NodeProcess>,
    tls: Option<Arc<TlsFiles>>,
    ids: Vec<String>,
    view: Mutex<Vec<ClusterNode>>,
    masters: usize,
    replicas: usize,
    opts: ClusterOptions,
    startup: Duration,
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("flavor", &self.flavor())
            .field("masters", &self.masters)
            .field("replicas_per_master", &self.replicas)
            .field(
                "ports",
                &self.nodes.iter().map(|n| n.port()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Result of checking one node during a consistency poll.
struct NodeState {
    index: usize,
    role: Role,
    online_replicas: usize,
    slots: Vec<SlotRange>,
}

/// What a consistency poll requires beyond the basics (every running, unpaused node
/// `cluster_state:ok`, complete and identical slot maps, slot owners running and acting as
/// masters).
#[derive(Default)]
struct Expect<'a> {
    /// Every running replica's link to its master is up.
    replica_links: bool,
    /// Exact number of slot-owning masters, replicas per range, and online replicas per
    /// master; every node knows every other node.
    topology: Option<(usize, usize)>,
    /// Node id that must not own any slot.
    not_owner: Option<&'a str>,
    /// `(slot, owner id)` pairs that must hold.
    owners: &'a [(u16, String)],
}

impl RedisCluster {
    /// Starts a cluster with default [`ClusterOptions`].
    ///
    /// `masters` must be at least 3 (a `redis-cli --cluster create` requirement).
    pub fn start(
        flavor: Flavor,
        masters: usize,
        replicas_per_master: usize,
    ) -> Result<RedisCluster> {
        Self::start_with_options(
            flavor,
            masters,
            replicas_per_master,
            ClusterOptions::default(),
        )
    }

    /// Starts a cluster of `flavor` with explicit options.
    pub fn start_with_options(
        flavor: Flavor,
        masters: usize,
        replicas_per_master: usize,
        opts: ClusterOptions,
    ) -> Result<RedisCluster> {
        let binaries = RedisBinaries::locate(flavor)?;
        Self::start_with(&binaries, masters, replicas_per_master, opts)
    }

    /// Starts a cluster from explicit binaries.
    pub fn start_with(
        binaries: &RedisBinaries,
        masters: usize,
        replicas_per_master: usize,
        opts: ClusterOptions,
    ) -> Result<RedisCluster> {
        if masters < 3 {
            return Err(HarnessError::Invalid(format!(
                "a cluster needs at least 3 masters (redis-cli --cluster create), got {masters}"
            )));
        }
        let started = Instant::now();
        let total = masters * (1 + replicas_per_master);
        let mut args: Vec<String> = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &opts.node_timeout.as_millis().max(1).to_string(),
            "--cluster-replica-validity-factor",
            "0",
            // Redis 7 leaves a replica out of CLUSTER SLOTS while its replication offset is
            // 0, which lasts until the master's first replication PING (default every 10 s).
            "--repl-ping-replica-period",
            "1",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(opts.extra_args.iter().cloned());
        let tls = opts.tls.map(TlsFiles::generate).transpose()?.map(Arc::new);
        let mut nodes = (0..total)
            .map(|_| NodeProcess::new(binaries.clone(), true, args.clone(), tls.clone()))
            .collect::<Result<Vec<_>>>()?;
        process::start_all(&mut nodes, opts.process_timeout)?;
        trace!(
            "{total} cluster nodes answer PING after {:?}",
            started.elapsed()
        );

        let mut cluster = RedisCluster {
            nodes,
            tls,
            ids: Vec::new(),
            view: Mutex::new(Vec::new()),
            masters,
            replicas: replicas_per_master,
            opts,
            startup: Duration::ZERO,
        };
        let deadline = started + cluster.opts.process_timeout + cluster.opts.ready_timeout;
        cluster.create(deadline)?;
        trace!(
            "redis-cli --cluster create done after {:?}",
            started.elapsed()
        );
        cluster.ids = cluster
            .nodes
            .iter()
            .map(|n| admin::query::<String, _>(n.endpoint(), &["CLUSTER", "MYID"]))
            .collect::<Result<Vec<_>>>()?;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut last = String::new();
        wait_until("the new cluster to become consistent", remaining, || {
            let r = cluster
                .check(&Expect {
                    topology: Some((masters, replicas_per_master)),
                    replica_links: true,
                    ..Expect::default()
                })
                .map(|_| ());
            if let Err(e) = &r
                && *e != last
            {
                trace!("after {:?}: not consistent yet: {e}", started.elapsed());
                last = e.clone();
            }
            r
        })?;
        trace!("cluster consistent after {:?}", started.elapsed());
        cluster.refresh_view();
        cluster.startup = started.elapsed();
        Ok(cluster)
    }

    /// Runs `redis-cli --cluster create` with a deadline.
    fn create(&self, deadline: Instant) -> Result<()> {
        let bin = self.nodes[0].binaries();
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        args.extend([
            "--cluster-replicas".into(),
            self.replicas.to_string(),
            "--cluster-yes".into(),
        ]);
        let log_path = self.nodes[0].dir().join("cluster-create.log");
        let log = File::create(&log_path)
            .map_err(|e| HarnessError::io("creating cluster-create.log", e))?;
        let log2 = log
            .try_clone()
            .map_err(|e| HarnessError::io("creating cluster-create.log", e))?;
        if let Some(tls) = &self.tls {
            args.extend(tls.cli_args());
        }
        let mut child = Command::new(bin.cli_path())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| HarnessError::io(format!("spawning {}", bin.cli_path().display()), e))?;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
                Err(e) => return Err(HarnessError::io("waiting for redis-cli", e)),
            }
        };
        let output = std::fs::read_to_string(&log_path).unwrap_or_default();
        if !status.is_some_and(|s| s.success()) || output.contains("[ERR]") {
            return Err(HarnessError::Cli {
                args: args.join(" "),
                status: status.map_or_else(
                    || "killed at the startup deadline".into(),
                    |s| s.to_string(),
                ),
                output,
            });
        }
        Ok(())
    }

    /// The flavour of the nodes.
    pub fn flavor(&self) -> Flavor {
        self.nodes[0].binaries().flavor()
    }

    /// How long [`start`](Self::start) took until the cluster was consistent.
    pub fn startup_duration(&self) -> Duration {
        self.startup
    }

    /// Number of nodes (masters and replicas).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always `false` (a cluster has at least 3 nodes); for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The `--cluster-node-timeout` of the nodes.
    pub fn node_timeout(&self) -> Duration {
        self.opts.node_timeout
    }

    fn node(&self, i: usize) -> Result<&NodeProcess> {
        self.nodes.get(i).ok_or_else(|| {
            HarnessError::Invalid(format!(
                "node index {i} out of range (cluster has {} nodes)",
                self.nodes.len()
            ))
        })
    }

    /// Port of node `i`.
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub fn node_port(&self, i: usize) -> u16 {
        self.nodes[i].port()
    }

    /// `127.0.0.1:PORT` of node `i`.
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub fn node_addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].port())
    }

    /// `redis://127.0.0.1:PORT` of node `i`; on a TLS cluster the partcache URL
    /// `rediss://127.0.0.1:PORT?tls_ca=…` (plus the client certificate for
    /// [`TlsMode::Mutual`]).
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub fn node_url(&self, i: usize) -> String {
        match &self.tls {
            None => format!("redis://127.0.0.1:{}", self.nodes[i].port()),
            Some(tls) => format!(
                "rediss://127.0.0.1:{}?{}",
                self.nodes[i].port(),
                tls.url_params()
            ),
        }
    }

    /// The CA and certificates of a TLS cluster (`None` for a plain one).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_deref()
    }

    /// Cluster id of node `i`.
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub fn node_id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    /// Pid of node `i` if it is running.
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.nodes.get(i).and_then(NodeProcess::pid)
    }

    /// Index of the node listening on `port`.
    pub fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// Index of the node with cluster id `id`.
    pub fn index_of_id(&self, id: &str) -> Option<usize> {
        self.ids.iter().position(|x| x == id)
    }

    /// `redis://127.0.0.1:PORT` of every node, in index order (for
    /// `redis::cluster::ClusterClient::new`; on a TLS cluster, the partcache URLs of
    /// [`node_url`](Self::node_url)).
    pub fn node_urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.node_url(i)).collect()
    }

    /// `redis-cluster://127.0.0.1:p1,127.0.0.1:p2,...` listing every node (masters and
    /// replicas) in index order; on a TLS cluster followed by `?tls=true&tls_ca=…` (and
    /// the client certificate for [`TlsMode::Mutual`]), so append parameters with `&`.
    pub fn seed_url(&self) -> String {
        let addrs: Vec<String> = (0..self.nodes.len()).map(|i| self.node_addr(i)).collect();
        match &self.tls {
            None => format!("redis-cluster://{}", addrs.join(",")),
            Some(tls) => format!(
                "redis-cluster://{}?tls=true&{}",
                addrs.join(","),
                tls.url_params()
            ),
        }
    }

    /// Re-reads every running node's role from its own `CLUSTER NODES` (nodes that are down
    /// or do not answer keep their last known role).
    fn refresh_view(&self) -> Vec<ClusterNode> {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        if view.len() != self.nodes.len() {
            *view = (0..self.nodes.len())
                .map(|i| ClusterNode {
                    index: i,
                    addr: self.node_addr(i),
                    port: self.nodes[i].port(),
                    role: Role::Master,
                    node_id: self.ids.get(i).cloned().unwrap_or_default(),
                    master_id: None,
                    alive: true,
                })
                .collect();
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let v = &mut view[i];
            v.alive = n.is_responsive();
            if !v.alive {
                continue;
            }
            let Ok(text) = admin::probe::<String, _>(n.endpoint(), &["CLUSTER", "NODES"]) else {
                continue;
            };
            if let Some(me) = admin::parse_cluster_nodes(&text)
                .into_iter()
                .find(|l| l.has_flag("myself"))
            {
                v.role = if me.is_master() {
                    Role::Master
                } else {
                    Role::Replica
                };
                v.master_id = me.master_id;
                v.node_id = me.id;
            }
        }
        view.clone()
    }

    /// Every node with its current role (queried from the running nodes themselves).
    pub fn nodes(&self) -> Vec<ClusterNode> {
        self.refresh_view()
    }

    /// Running nodes that currently act as masters, in index order.
    pub fn masters(&self) -> Vec<ClusterNode> {
        self.nodes()
            .into_iter()
            .filter(|n| n.alive && n.role == Role::Master)
            .collect()
    }

    /// Running nodes that currently act as replicas, in index order.
    pub fn replicas(&self) -> Vec<ClusterNode> {
        self.nodes()
            .into_iter()
            .filter(|n| n.alive && n.role == Role::Replica)
            .collect()
    }

    /// Indices of the (last known) replicas of node `master`.
    pub fn replicas_of(&self, master: usize) -> Vec<usize> {
        let view = self.nodes();
        let Some(id) = self.ids.get(master) else {
            return Vec::new();
        };
        view.iter()
            .filter(|n| n.master_id.as_deref() == Some(id.as_str()))
            .map(|n| n.index)
            .collect()
    }

    /// SIGKILLs node `i` (and reaps it). Roles are recorded just before the kill, so
    /// [`wait_for_failover`](Self::wait_for_failover) knows which replicas may take over.
    pub fn kill_node(&self, i: usize) -> Result<()> {
        let n = self.node(i)?;
        self.refresh_view();
        if !n.kill() {
            return Err(HarnessError::Invalid(format!("node {i} is not running")));
        }
        self.refresh_view();
        Ok(())
    }

    /// Restarts a killed node on its port with its `nodes.conf` (it rejoins the cluster;
    /// a former master comes back as a replica of its promoted replica) and waits until it
    /// answers PING. Use [`wait_until_stable`](Self::wait_until_stable) to wait until the
    /// cluster has absorbed it.
    pub fn restart_node(&self, i: usize) -> Result<()> {
        let n = self.node(i)?;
        n.respawn_and_wait(self.opts.process_timeout)?;
        self.refresh_view();
        Ok(())
    }

    /// Freezes node `i` with SIGSTOP (its port stays open but it answers nothing, and after
    /// the node timeout the cluster treats it as failed). Undo with
    /// [`resume_node`](Self::resume_node).
    pub fn pause_node(&self, i: usize) -> Result<()> {
        self.refresh_view();
        self.node(i)?.signal(process::SIGSTOP)
    }

    /// Continues a node frozen by [`pause_node`](Self::pause_node).
    pub fn resume_node(&self, i: usize) -> Result<()> {
        self.node(i)?.signal(process::SIGCONT)
    }

    /// Waits (up to 30 s) until a replica of the former master `old_master` has been
    /// promoted, every running node reports `cluster_state:ok`, and all running nodes agree
    /// on a complete slot map in which `old_master` owns nothing.
    ///
    /// Paused nodes ([`pause_node`](Self::pause_node)) count as down. Returns the time from
    /// the [`kill_node`](Self::kill_node) / [`pause_node`](Self::pause_node) of `old_master`
    /// (or, if it was not taken down through the harness, from this call) until that state
    /// was observed. Fails at once if `old_master` was not a master or had no replica.
    pub fn wait_for_failover(&self, old_master: usize) -> Result<Duration> {
        self.wait_for_failover_timeout(old_master, Duration::from_secs(30))
    }

    /// [`wait_for_failover`](Self::wait_for_failover) with an explicit deadline.
    pub fn wait_for_failover_timeout(
        &self,
        old_master: usize,
        timeout: Duration,
    ) -> Result<Duration> {
        let (old_id, replicas, since) = self.failover_params(old_master)?;
        let what = format!("failover of node {old_master} to one of {replicas:?}");
        wait_until(&what, timeout, || self.failover_done(&old_id, &replicas))?;
        let elapsed = since.elapsed();
        self.refresh_view();
        Ok(elapsed)
    }

    /// Async form of [`wait_for_failover`](Self::wait_for_failover): sleeps with
    /// `tokio::time::sleep` between polls so other tasks of a current-thread runtime keep
    /// running (each poll itself does a few short blocking local round trips).
    pub async fn wait_for_failover_async(&self, old_master: usize) -> Result<Duration> {
        let (old_id, replicas, since) = self.failover_params(old_master)?;
        let start = Instant::now();
        let timeout = Duration::from_secs(30);
        loop {
            match self.failover_done(&old_id, &replicas) {
                Ok(()) => {
                    let elapsed = since.elapsed();
                    self.refresh_view();
                    return Ok(elapsed);
                }
                Err(last) if start.elapsed() > timeout => {
                    return Err(HarnessError::Timeout {
                        what: format!("failover of node {old_master} to one of {replicas:?}"),
                        elapsed: start.elapsed(),
                        last,
                    });
                }
                Err(_) => tokio::time::sleep(POLL).await,
            }
        }
    }

    fn failover_params(&self, old_master: usize) -> Result<(String, Vec<usize>, Instant)> {
        let n = self.node(old_master)?;
        let since = n.down_since().unwrap_or_else(Instant::now);
        let old_id = self.ids[old_master].clone();
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if view[old_master].role != Role::Master {
            return Err(HarnessError::Invalid(format!(
                "node {old_master} was not a master (last known role {:?})",
                view[old_master].role
            )));
        }
        let replicas: Vec<usize> = view
            .iter()
            .filter(|v| v.master_id.as_deref() == Some(old_id.as_str()))
            .map(|v| v.index)
            .collect();
        if replicas.is_empty() {
            return Err(HarnessError::Invalid(format!(
                "node {old_master} has no replica, so no failover can happen"
            )));
        }
        Ok((old_id, replicas, since))
    }

    fn failover_done(&self, old_id: &str, replicas: &[usize]) -> std::result::Result<(), String> {
        let states = self.check(&Expect {
            not_owner: Some(old_id),
            ..Expect::default()
        })?;
        let promoted = states
            .iter()
            .any(|s| s.role == Role::Master && replicas.contains(&s.index));
        if promoted {
            Ok(())
        } else {
            Err(format!("none of the replicas {replicas:?} is a master yet"))
        }
    }

    /// Waits (up to `timeout`) until every running, unpaused node reports
    /// `cluster_state:ok`, those nodes agree on a complete slot map whose owners are running
    /// masters, and every running replica's link to its master is up. Useful after
    /// [`restart_node`](Self::restart_node), [`resume_node`](Self::resume_node) or manual
    /// topology changes.
    pub fn wait_until_stable(&self, timeout: Duration) -> Result<()> {
        wait_until("the cluster to become stable", timeout, || {
            self.check(&Expect {
                replica_links: true,
                ..Expect::default()
            })
            .map(|_| ())
        })?;
        self.refresh_view();
        Ok(())
    }

    /// One consistency poll over the running nodes.
    fn check(&self, expect: &Expect<'_>) -> std::result::Result<Vec<NodeState>, String> {
        let mut states = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.is_responsive() {
                continue;
            }
            states.push(self.check_node(i, expect)?);
        }
        let Some(first) = states.first() else {
            return Err("no node is running".into());
        };
        for s in &states[1..] {
            if s.slots != first.slots {
                let show = |m: &[SlotRange]| {
                    m.iter()
                        .map(|r| {
                            format!(
                                "{}-{}@{}{:?}",
                                r.start, r.end, r.master_port, r.replica_ports
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                return Err(format!(
                    "nodes {} and {} disagree on the slot map: [{}] vs [{}]",
                    first.index,
                    s.index,
                    show(&first.slots),
                    show(&s.slots)
                ));
            }
        }
        let map = &first.slots;
        let mut owners = BTreeSet::new();
        for r in map {
            let owner = self.index_of_port(r.master_port).ok_or_else(|| {
                format!(
                    "slots {}-{} owned by unknown port {}",
                    r.start, r.end, r.master_port
                )
            })?;
            let st = states.iter().find(|s| s.index == owner).ok_or_else(|| {
                format!(
                    "slots {}-{} owned by node {owner}, which is down or paused",
                    r.start, r.end
                )
            })?;
            if st.role != Role::Master {
                return Err(format!(
                    "slots {}-{} owned by node {owner}, which is not a master",
                    r.start, r.end
                ));
            }
            if Some(r.master_id.as_str()) == expect.not_owner {
                return Err(format!(
                    "slots {}-{} still owned by node {owner}",
                    r.start, r.end
                ));
            }
            owners.insert(owner);
        }
        for (slot, id) in expect.owners {
            let r = map
                .iter()
                .find(|r| (r.start..=r.end).contains(slot))
                .ok_or_else(|| format!("slot {slot} not in the map"))?;
            if &r.master_id != id {
                return Err(format!(
                    "slot {slot} owned by {} instead of {id}",
                    r.master_id
                ));
            }
        }
        if let Some((masters, replicas)) = expect.topology {
            if owners.len() != masters {
                return Err(format!("{} slot owners instead of {masters}", owners.len()));
            }
            if let Some(r) = map.iter().find(|r| r.replica_ports.len() != replicas) {
                return Err(format!(
                    "slots {}-{} list {} replicas instead of {replicas}",
                    r.start,
                    r.end,
                    r.replica_ports.len()
                ));
            }
            for s in states.iter().filter(|s| owners.contains(&s.index)) {
                if s.online_replicas != replicas {
                    return Err(format!(
                        "master {} has {} online replicas instead of {replicas}",
                        s.index, s.online_replicas
                    ));
                }
            }
        }
        Ok(states)
    }

    fn check_node(&self, i: usize, expect: &Expect<'_>) -> std::result::Result<NodeState, String> {
        let port = self.nodes[i].port();
        let err = |e: HarnessError| format!("node {i}: {e}");
        let mut con = admin::connect_with(
            self.nodes[i].endpoint(),
            Duration::from_millis(300),
            Duration::from_secs(2),
        )
        .map_err(err)?;
        let info: String = admin::query_on(&mut con, port, &["CLUSTER", "INFO"]).map_err(err)?;
        let ci = admin::parse_info(&info);
        let field = |k: &str| ci.get(k).map(String::as_str).unwrap_or("?");
        if field("cluster_state") != "ok" {
            return Err(format!(
                "node {i}: cluster_state:{}",
                field("cluster_state")
            ));
        }
        if field("cluster_slots_ok") != "16384" {
            return Err(format!(
                "node {i}: cluster_slots_ok:{}",
                field("cluster_slots_ok")
            ));
        }
        if expect.topology.is_some() && field("cluster_known_nodes") != self.nodes.len().to_string()
        {
            return Err(format!(
                "node {i}: cluster_known_nodes:{} of {}",
                field("cluster_known_nodes"),
                self.nodes.len()
            ));
        }
        let slots: redis::Value =
            admin::query_on(&mut con, port, &["CLUSTER", "SLOTS"]).map_err(err)?;
        let slots = admin::merge_ranges(admin::parse_cluster_slots(&slots).map_err(err)?);
        if let Some(p) = admin::coverage_problem(&slots) {
            return Err(format!("node {i}: {p}"));
        }
        let repl: String =
            admin::query_on(&mut con, port, &["INFO", "replication"]).map_err(err)?;
        let ri = admin::parse_info(&repl);
        let role = match ri.get("role").map(String::as_str) {
            Some("master") => Role::Master,
            Some("slave") => Role::Replica,
            other => return Err(format!("node {i}: role {other:?}")),
        };
        if expect.replica_links
            && role == Role::Replica
            && ri.get("master_link_status").map(String::as_str) != Some("up")
        {
            return Err(format!(
                "node {i}: replica link {:?}",
                ri.get("master_link_status")
            ));
        }
        let online_replicas = ri
            .iter()
            .filter(|(k, v)| {
                k.strip_prefix("slave")
                    .is_some_and(|n| n.parse::<u32>().is_ok())
                    && v.contains("state=online")
            })
            .count();
        Ok(NodeState {
            index: i,
            role,
            online_replicas,
            slots,
        })
    }

    fn first_answering(&self) -> Result<usize> {
        let view = self.view.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut order: Vec<usize> = (0..self.nodes.len()).collect();
        order.sort_by_key(|&i| view.get(i).map(|v| v.role != Role::Master).unwrap_or(true));
        order
            .into_iter()
            .find(|&i| self.nodes[i].is_responsive())
            .ok_or_else(|| HarnessError::Invalid("no node is running".into()))
    }

    fn slot_map(&self) -> Result<Vec<SlotRange>> {
        let i = self.first_answering()?;
        let v: redis::Value = admin::query(self.nodes[i].endpoint(), &["CLUSTER", "SLOTS"])?;
        admin::parse_cluster_slots(&v)
    }

    /// The slot map as seen by a running master: contiguous ranges with the
    /// `127.0.0.1:PORT` of their owner, sorted by slot.
    pub fn slot_owners(&self) -> Result<Vec<(RangeInclusive<u16>, String)>> {
        let mut ranges = self.slot_map()?;
        for r in &mut ranges {
            r.replica_ports.clear();
        }
        Ok(admin::merge_ranges(ranges)
            .into_iter()
            .map(|r| (r.start..=r.end, format!("127.0.0.1:{}", r.master_port)))
            .collect())
    }

    /// The slot of `key` (`CLUSTER KEYSLOT` on a running node).
    pub fn key_slot(&self, key: &str) -> Result<u16> {
        let i = self.first_answering()?;
        let s: i64 = admin::query(self.nodes[i].endpoint(), &["CLUSTER", "KEYSLOT", key])?;
        Ok(s as u16)
    }

    /// Index of the node that owns `slot`.
    pub fn slot_owner(&self, slot: u16) -> Result<usize> {
        let map = self.slot_map()?;
        let r = map
            .iter()
            .find(|r| (r.start..=r.end).contains(&slot))
            .ok_or_else(|| HarnessError::Unexpected(format!("slot {slot} is not assigned")))?;
        self.index_of_port(r.master_port).ok_or_else(|| {
            HarnessError::Unexpected(format!(
                "slot {slot} owned by unknown port {}",
                r.master_port
            ))
        })
    }

    /// Moves `slots` to the master `to_master` with the real resharding protocol: for each
    /// slot `CLUSTER SETSLOT <slot> IMPORTING` on the target, `MIGRATING` on the source,
    /// `CLUSTER GETKEYSINSLOT` + `MIGRATE ... KEYS ...` until the slot is empty on the
    /// source, then `CLUSTER SETSLOT <slot> NODE <target>` on the target, the source and every
    /// other running master. Then waits (up to 30 s) until every running node agrees on the
    /// new map. Slots already owned by the target are skipped.
    pub fn reshard(&self, slots: &[u16], to_master: usize) -> Result<ReshardStats> {
        let mut stats = ReshardStats::default();
        let mut moved = Vec::new();
        for &slot in slots {
            let Some(m) = self.begin_inner(slot, to_master)? else {
                continue;
            };
            loop {
                let n = self.migrate_slot_keys(&m, MIGRATE_BATCH)?;
                stats.keys_moved += n;
                if n == 0 {
                    break;
                }
            }
            self.setslot_node_everywhere(&m)?;
            stats.slots_moved += 1;
            moved.push((slot, m.target_id));
        }
        self.wait_for_owners(&moved)?;
        Ok(stats)
    }

    /// Starts moving `slot` to `to_master` (`SETSLOT IMPORTING` on the target, then
    /// `SETSLOT MIGRATING` on the source) and returns without moving keys, so a test can
    /// observe `ASK` redirections. Continue with [`migrate_slot_keys`](Self::migrate_slot_keys)
    /// and [`finish_slot_migration`](Self::finish_slot_migration).
    pub fn begin_slot_migration(&self, slot: u16, to_master: usize) -> Result<SlotMigration> {
        self.begin_inner(slot, to_master)?.ok_or_else(|| {
            HarnessError::Invalid(format!("slot {slot} is already owned by node {to_master}"))
        })
    }

    fn begin_inner(&self, slot: u16, to_master: usize) -> Result<Option<SlotMigration>> {
        if slot >= TOTAL_SLOTS {
            return Err(HarnessError::Invalid(format!("slot {slot} out of range")));
        }
        let target = self.node(to_master)?;
        let role: String = admin::query(target.endpoint(), &["INFO", "replication"])?;
        if admin::parse_info(&role).get("role").map(String::as_str) != Some("master") {
            return Err(HarnessError::Invalid(format!(
                "node {to_master} is not a master"
            )));
        }
        let source = self.slot_owner(slot)?;
        if source == to_master {
            return Ok(None);
        }
        let m = SlotMigration {
            slot,
            source,
            target: to_master,
            source_id: self.ids[source].clone(),
            target_id: self.ids[to_master].clone(),
        };
        let s = slot.to_string();
        let _: redis::Value = admin::query(
            target.endpoint(),
            &["CLUSTER", "SETSLOT", &s, "IMPORTING", &m.source_id],
        )?;
        let _: redis::Value = admin::query(
            self.nodes[source].endpoint(),
            &["CLUSTER", "SETSLOT", &s, "MIGRATING", &m.target_id],
        )?;
        Ok(Some(m))
    }

    /// Moves up to `max_keys` keys of the migrating slot from the source to the target
    /// (`CLUSTER GETKEYSINSLOT` + one `MIGRATE ... KEYS ...`). Returns how many were
    /// moved; 0 means the slot is empty on the source. Without `REPLACE`, as
    /// `redis-cli --cluster reshard` runs it: a key that already exists on the target
    /// (a client wrote it there while the source still held it) fails the move with
    /// `BUSYKEY` instead of being overwritten by the older copy.
    pub fn migrate_slot_keys(&self, m: &SlotMigration, max_keys: usize) -> Result<usize> {
        let src = self.node(m.source)?.endpoint();
        let dst = self.node(m.target)?.port();
        let (slot, max) = (m.slot.to_string(), max_keys.max(1).to_string());
        let keys: Vec<Vec<u8>> = admin::query(src, &["CLUSTER", "GETKEYSINSLOT", &slot, &max])?;
        if keys.is_empty() {
            return Ok(0);
        }
        let dst_s = dst.to_string();
        let mut args: Vec<&[u8]> = vec![
            &b"MIGRATE"[..],
            &b"127.0.0.1"[..],
            dst_s.as_bytes(),
            &b""[..],
            &b"0"[..],
            &b"10000"[..],
            &b"KEYS"[..],
        ];
        args.extend(keys.iter().map(Vec::as_slice));
        let _: redis::Value = admin::query(src, &args)?;
        Ok(keys.len())
    }

    /// Moves the remaining keys, assigns the slot to the target on every running master
    /// (`SETSLOT NODE`: target first, then source, then the others) and waits (up to 30 s)
    /// until every running node agrees.
    pub fn finish_slot_migration(&self, m: &SlotMigration) -> Result<usize> {
        let mut keys = 0;
        loop {
            let n = self.migrate_slot_keys(m, MIGRATE_BATCH)?;
            keys += n;
            if n == 0 {
                break;
            }
        }
        self.setslot_node_everywhere(m)?;
        self.wait_for_owners(&[(m.slot, m.target_id.clone())])?;
        Ok(keys)
    }

    fn setslot_node_everywhere(&self, m: &SlotMigration) -> Result<()> {
        let s = m.slot.to_string();
        let args = ["CLUSTER", "SETSLOT", &s, "NODE", &m.target_id];
        let _: redis::Value = admin::query(self.nodes[m.target].endpoint(), &args)?;
        let _: redis::Value = admin::query(self.nodes[m.source].endpoint(), &args)?;
        for (i, n) in self.nodes.iter().enumerate() {
            if i == m.target || i == m.source || !n.is_responsive() {
                continue;
            }
            let repl: String = admin::query(n.endpoint(), &["INFO", "replication"])?;
            if admin::parse_info(&repl).get("role").map(String::as_str) == Some("master") {
                let _: redis::Value = admin::query(n.endpoint(), &args)?;
            }
        }
        Ok(())
    }

    fn wait_for_owners(&self, owners: &[(u16, String)]) -> Result<()> {
        wait_until(
            "all nodes to agree on the resharded slot map",
            Duration::from_secs(30),
            || {
                self.check(&Expect {
                    owners,
                    replica_links: true,
                    ..Expect::default()
                })
                .map(|_| ())
            },
        )
    }

    /// Calls per command on node `i` from `INFO commandstats` (`"get" -> 3`, subcommands as
    /// `"cluster|slots"`). Counts include the harness's own admin traffic (`info`,
    /// `cluster|info`, `cluster|slots`, `cluster|nodes`, `ping`, `config|resetstat`, ...).
    pub fn commandstats(&self, i: usize) -> Result<HashMap<String, u64>> {
        let text: String = admin::query(self.node(i)?.endpoint(), &["INFO", "commandstats"])?;
        Ok(admin::parse_commandstats(&text))
    }

    /// [`commandstats`](Self::commandstats) of every node in index order (empty for nodes
    /// that are down or paused). Replicas count the writes replicated to them (e.g. `set`),
    /// plus `select`/`ping` from the replication stream.
    pub fn commandstats_all(&self) -> Result<Vec<HashMap<String, u64>>> {
        (0..self.nodes.len())
            .map(|i| {
                if self.nodes[i].is_responsive() {
                    self.commandstats(i)
                } else {
                    Ok(HashMap::new())
                }
            })
            .collect()
    }

    /// `CONFIG RESETSTAT` on every running, unpaused node.
    pub fn reset_stats(&self) -> Result<()> {
        for n in self.nodes.iter().filter(|n| n.is_responsive()) {
            let _: redis::Value = admin::query(n.endpoint(), &["CONFIG", "RESETSTAT"])?;
        }
        Ok(())
    }

    /// Runs one command on node `i` over a fresh synchronous admin connection.
    pub fn query_node<T: FromRedisValue>(&self, i: usize, args: &[&str]) -> Result<T> {
        admin::query(self.node(i)?.endpoint(), args)
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT <args>` against node `i` (with the TLS
    /// arguments on a TLS cluster) and returns its output.
    ///
    /// # Panics
    ///
    /// If `i` is out of range or `redis-cli` cannot be run.
    pub fn redis_cli<I, S>(&self, i: usize, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_cli(self.nodes[i].binaries(), self.nodes[i].endpoint(), args)
    }

    /// The last `n` lines of node `i`'s log.
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub fn log_tail(&self, i: usize, n: usize) -> String {
        self.nodes[i].log_tail(n)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.kill_nowait();
        }
        for n in &self.nodes {
            n.kill();
        }
    }
}

/// Polls `check` every [`POLL`] until it succeeds or `timeout` passes.
fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> std::result::Result<T, String>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(last) if start.elapsed() >= timeout => {
                return Err(HarnessError::Timeout {
                    what: what.to_string(),
                    elapsed: start.elapsed(),
                    last,
                });
            }
            Err(_) => thread::sleep(POLL),
        }
    }
}
