//! Routing of per-partition commands to nodes: group by node, one pipeline per node,
//! all nodes concurrently, replies back in the caller's order; `MOVED` refreshes the
//! slot map and retries, `ASK` retries once on the named node after `ASKING`,
//! "Function not found" loads partcache's function library on that node and retries,
//! `TRYAGAIN`/`CLUSTERDOWN` retry after a short pause. Everything happens within the
//! response timeout.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::join_all;
use parking_lot::RwLock;
use partcache::{Error, Result};
use redis::{Cmd, Pipeline, ServerErrorKind, Value};
use tracing::{Instrument, Span};

use crate::connection::{Connection, Pool};
use crate::scripts::scripts;
use crate::slots::SlotMap;

/// Rounds of redirections (`MOVED`, `ASK`, a missing function library) a call follows
/// before it gives up.
const MAX_ROUNDS: usize = 16;

/// What Redis says when a script touches a key of a slot being migrated that this node
/// no longer (or not yet) holds.
const NON_LOCAL_KEY: &str = "attempted to access a non local key";

/// One command for one slot.
pub(crate) struct Request {
    /// The slot every key of the command hashes to.
    pub slot: u16,
    /// The command.
    pub cmd: Cmd,
    /// May be served by a replica.
    pub read_only: bool,
}

impl Request {
    /// A request for `slot`.
    pub fn new(slot: u16, cmd: Cmd) -> Request {
        Request {
            slot,
            cmd,
            read_only: false,
        }
    }
}

enum Topology {
    Standalone(Arc<SlotMap>),
    Cluster {
        seeds: Vec<String>,
        map: RwLock<Option<Arc<SlotMap>>>,
        /// Bumped by every refresh; a caller refreshes only if nobody did since it
        /// read the map.
        generation: AtomicU64,
        refreshing: tokio::sync::Mutex<()>,
        stale: AtomicBool,
    },
}

/// Routes requests over a deployment's connections. See the module docs.
pub(crate) struct Router {
    topology: Topology,
    timeout: Duration,
    replica_reads: bool,
    next_replica: AtomicUsize,
}

/// Which pool a request goes through.
pub(crate) struct Pools<'a> {
    pub primary: &'a Pool,
    pub replicas: Option<&'a Pool>,
}

impl Router {
    /// A router for one server.
    pub fn standalone(addr: &str, timeout: Duration) -> Router {
        Router {
            topology: Topology::Standalone(Arc::new(SlotMap::single(addr))),
            timeout,
            replica_reads: false,
            next_replica: AtomicUsize::new(0),
        }
    }

    /// A router for a cluster, discovered from `seeds` on first use.
    pub fn cluster(seeds: Vec<String>, timeout: Duration, replica_reads: bool) -> Router {
        Router {
            topology: Topology::Cluster {
                seeds,
                map: RwLock::new(None),
                generation: AtomicU64::new(0),
                refreshing: tokio::sync::Mutex::new(()),
                stale: AtomicBool::new(false),
            },
            timeout,
            replica_reads,
            next_replica: AtomicUsize::new(0),
        }
    }

    /// Whether this is a cluster (sharded pub/sub, per-partition routing).
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }

    /// The response timeout every [`Router::execute`] keeps to.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The current slot map, discovering it first if needed.
    pub async fn slot_map(&self, pool: &Pool) -> Result<Arc<SlotMap>> {
        match &self.topology {
            Topology::Standalone(map) => Ok(map.clone()),
            Topology::Cluster {
                map,
                stale,
                generation,
                ..
            } => {
                if !stale.load(Ordering::Acquire)
                    && let Some(map) = map.read().clone()
                {
                    return Ok(map);
                }
                let seen = generation.load(Ordering::Acquire);
                self.refresh(pool, seen).await
            }
        }
    }

    /// The open connection to the master of `slot` (with the span its call runs in),
    /// if the slot map is known and not marked stale and the connection is open: no
    /// waiting, and no reference count of the map taken (this is every call's path).
    fn open_master_connection(&self, pool: &Pool, slot: u16) -> Option<(Connection, Span)> {
        let open = |map: &SlotMap| {
            let addr = map.master(slot)?;
            let conn = pool.open_connection(addr)?;
            Some((
                conn,
                tracing::debug_span!("partcache.node", node = %addr, commands = 1),
            ))
        };
        match &self.topology {
            Topology::Standalone(map) => open(map),
            Topology::Cluster { map, stale, .. } => {
                if stale.load(Ordering::Acquire) {
                    return None;
                }
                open(map.read().as_deref()?)
            }
        }
    }

    /// `f` of the address of `slot`'s master, if the slot map is known and not marked
    /// stale (no waiting: for grouping requests by node before they are sent).
    pub fn with_master<R>(&self, slot: u16, f: impl FnOnce(&str) -> R) -> Option<R> {
        match &self.topology {
            Topology::Standalone(map) => map.master(slot).map(f),
            Topology::Cluster { map, stale, .. } => {
                if stale.load(Ordering::Acquire) {
                    return None;
                }
                map.read().as_deref()?.master(slot).map(f)
            }
        }
    }

    /// Marks the slot map as possibly outdated (a node went away).
    pub fn mark_stale(&self) {
        if let Topology::Cluster { stale, .. } = &self.topology {
            stale.store(true, Ordering::Release);
        }
    }

    /// Re-reads the slot map unless someone did since generation `seen`.
    async fn refresh(&self, pool: &Pool, seen: u64) -> Result<Arc<SlotMap>> {
        let Topology::Cluster {
            seeds,
            map,
            generation,
            refreshing,
            stale,
        } = &self.topology
        else {
            return match &self.topology {
                Topology::Standalone(map) => Ok(map.clone()),
                Topology::Cluster { .. } => Err(Error::Store("unreachable topology".into())),
            };
        };
        let _guard = refreshing.lock().await;
        if generation.load(Ordering::Acquire) != seen
            && let Some(current) = map.read().clone()
        {
            return Ok(current);
        }
        // Known nodes first (they know the latest topology), then the seeds.
        let mut candidates: Vec<String> = map
            .read()
            .as_ref()
            .map(|m| m.nodes().cloned().collect())
            .unwrap_or_default();
        candidates.extend(seeds.iter().cloned());
        let mut last_error = Error::Unavailable("no cluster node to ask for slots".into());
        for addr in candidates {
            let mut pipe = Pipeline::new();
            pipe.cmd("CLUSTER").arg("SLOTS");
            match pool.send(&addr, &pipe, 1).await {
                Ok(mut replies) => {
                    let reply = replies.pop().unwrap_or(Value::Nil);
                    match SlotMap::from_cluster_slots(&reply, &addr) {
                        Ok(fresh) => {
                            let fresh = Arc::new(fresh);
                            *map.write() = Some(fresh.clone());
                            generation.fetch_add(1, Ordering::AcqRel);
                            stale.store(false, Ordering::Release);
                            tracing::debug!(masters = fresh.masters().len(), from = %addr, "slot map refreshed");
                            return Ok(fresh);
                        }
                        Err(e) => last_error = e,
                    }
                }
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    /// Runs `requests` (see the module docs) and returns one reply per request, in
    /// order; a reply may be a [`Value::ServerError`] (a script error), which callers
    /// turn into [`Error::Store`]. Fails with [`Error::Timeout`] after the response
    /// timeout and with [`Error::Unavailable`] when a node cannot be reached.
    pub async fn execute(&self, pools: Pools<'_>, requests: Vec<Request>) -> Result<Vec<Value>> {
        // The common case, one command for a master (a get, a put) whose node is
        // connected: straight to it, without the grouping below and without a timer of
        // our own (the connection's response timeout bounds the wait). Anything but a
        // plain reply (a redirection, a busy slot, a missing function: the command did not
        // run) takes the full path.
        if let [request] = &requests[..]
            && !(self.replica_reads && request.read_only && pools.replicas.is_some())
            && let Some((conn, span)) = self.open_master_connection(pools.primary, request.slot)
        {
            match conn
                .send_one(pools.primary, &request.cmd)
                .instrument(span)
                .await
            {
                Ok(value) if !needs_another_round(&value) => return Ok(vec![value]),
                Ok(_) => {}
                Err(e) => {
                    self.mark_stale();
                    return Err(e);
                }
            }
        }
        match tokio::time::timeout(self.timeout, self.execute_rounds(&pools, &requests)).await {
            Ok(result) => result,
            Err(_) => {
                // A node that does not answer may be gone: look again next time.
                self.mark_stale();
                Err(Error::Timeout(self.timeout))
            }
        }
    }

    async fn execute_rounds(&self, pools: &Pools<'_>, requests: &[Request]) -> Result<Vec<Value>> {
        let mut replies: Vec<Option<Value>> = vec![None; requests.len()];
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        let mut asked: HashMap<usize, String> = HashMap::new();
        let mut pause = Duration::from_millis(5);
        // Redirections are bounded by rounds; waits on a busy slot (TRYAGAIN during a
        // migration, a cluster electing a master) only by the response timeout.
        let mut redirections = 0;
        while redirections < MAX_ROUNDS {
            let map = self.slot_map(pools.primary).await?;
            // Group the pending requests by node.
            let mut by_node: HashMap<(String, bool), Vec<usize>> = HashMap::new();
            for &i in &pending {
                let request = &requests[i];
                let replica = self.replica_reads && request.read_only && pools.replicas.is_some();
                let addr = match asked.get(&i) {
                    Some(addr) => Some(addr.as_str()),
                    None if replica => map.replica(
                        request.slot,
                        self.next_replica.fetch_add(1, Ordering::Relaxed),
                    ),
                    None => map.master(request.slot),
                };
                let Some(addr) = addr else {
                    self.mark_stale();
                    return Err(Error::Unavailable(format!(
                        "no node serves slot {} (cluster incomplete)",
                        request.slot
                    )));
                };
                let replica = replica && !asked.contains_key(&i);
                by_node
                    .entry((addr.to_string(), replica))
                    .or_default()
                    .push(i);
            }
            let sends = by_node.into_iter().map(|((addr, replica), indexes)| {
                let pool = if replica {
                    pools.replicas.unwrap_or(pools.primary)
                } else {
                    pools.primary
                };
                let asked = &asked;
                let span =
                    tracing::debug_span!("partcache.node", node = %addr, commands = indexes.len());
                async move {
                    if let [i] = indexes[..]
                        && !asked.contains_key(&i)
                    {
                        // One command: no pipeline to build.
                        let result = pool.send_one(&addr, &requests[i].cmd).await;
                        return (addr, indexes, result.map(|v| vec![v]));
                    }
                    let mut cmds = Vec::with_capacity(indexes.len());
                    for &i in &indexes {
                        if asked.contains_key(&i) {
                            cmds.push(redis::cmd("ASKING"));
                        }
                        cmds.push(requests[i].cmd.clone());
                    }
                    let result = pool.send_cmds(&addr, cmds).await;
                    (addr, indexes, result)
                }
                .instrument(span)
            });
            let mut next_pending = Vec::new();
            let mut refresh = false;
            let mut busy = false;
            let mut to_load: Vec<String> = Vec::new();
            let mut failure = None;
            for (addr, indexes, result) in join_all(sends).await {
                let values = match result {
                    Ok(values) => values,
                    Err(e) => {
                        self.mark_stale();
                        failure = Some(e);
                        continue;
                    }
                };
                let mut values = values.into_iter();
                for i in indexes {
                    if asked.remove(&i).is_some() {
                        values.next(); // the ASKING reply
                    }
                    let value = values.next().unwrap_or(Value::Nil);
                    let Value::ServerError(error) = &value else {
                        replies[i] = Some(value);
                        continue;
                    };
                    match error.kind() {
                        Some(ServerErrorKind::Moved) => {
                            refresh = true;
                            next_pending.push(i);
                        }
                        Some(ServerErrorKind::Ask) => {
                            match error.details().and_then(|d| d.split_whitespace().nth(1)) {
                                Some(target) => {
                                    asked.insert(i, target.to_string());
                                }
                                None => refresh = true,
                            }
                            next_pending.push(i);
                        }
                        // The node lacks partcache's function library (only an `FCALL`
                        // gets this answer).
                        _ if function_missing(error) => {
                            if !to_load.contains(&addr) {
                                to_load.push(addr.clone());
                            }
                            next_pending.push(i);
                        }
                        Some(
                            ServerErrorKind::TryAgain
                            | ServerErrorKind::ClusterDown
                            | ServerErrorKind::MasterDown
                            | ServerErrorKind::BusyLoading,
                        ) => {
                            busy = true;
                            refresh = true;
                            next_pending.push(i);
                        }
                        // A script met a key of its slot that a migration already
                        // moved (or not yet): the partition is split between two
                        // nodes; retry until the migration settles (tests/topology.rs).
                        _ if error.details().is_some_and(|d| d.contains(NON_LOCAL_KEY)) => {
                            busy = true;
                            refresh = true;
                            next_pending.push(i);
                        }
                        _ => replies[i] = Some(value),
                    }
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if next_pending.is_empty() {
                return Ok(replies
                    .into_iter()
                    .map(|v| v.unwrap_or(Value::Nil))
                    .collect());
            }
            for addr in to_load {
                let library = &scripts().library;
                tracing::debug!(%addr, library = %library.name, "loading function library");
                let mut pipe = Pipeline::new();
                pipe.cmd("FUNCTION").arg("LOAD").arg(&library.source);
                let loaded = pools.primary.send(&addr, &pipe, 1).await?;
                if let Some(Value::ServerError(e)) = loaded.first()
                    // Another client loaded it in the meantime.
                    && !e.details().is_some_and(|d| d.contains("already exists"))
                {
                    return Err(Error::Store(format!(
                        "cannot load function library `{}` on {addr}: {e:?}",
                        library.name
                    )));
                }
            }
            if refresh {
                self.mark_stale();
            }
            if busy {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            } else {
                redirections += 1;
            }
            pending = next_pending;
        }
        Err(Error::Unavailable(format!(
            "gave up after {MAX_ROUNDS} rounds of cluster redirections"
        )))
    }
}

/// Whether `error` says that a called function does not exist on the node (it has
/// not got partcache's library: see `scripts.rs`).
fn function_missing(error: &redis::ServerError) -> bool {
    error
        .details()
        .is_some_and(|d| d.contains("Function not found"))
}

/// Whether a reply asks for another round (see [`Router::execute`]): the command did
/// not run where it was sent.
fn needs_another_round(value: &Value) -> bool {
    let Value::ServerError(error) = value else {
        return false;
    };
    function_missing(error)
        || matches!(
            error.kind(),
            Some(
                ServerErrorKind::Moved
                    | ServerErrorKind::Ask
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
            )
        )
        || error.details().is_some_and(|d| d.contains(NON_LOCAL_KEY))
}
