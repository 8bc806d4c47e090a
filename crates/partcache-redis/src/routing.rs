//! Routing of per-partition commands to nodes: group by node, one pipeline per node,
//! all nodes concurrently, replies back in the caller's order; `MOVED` refreshes the
//! slot map and retries, `ASK` retries once on the named node after `ASKING`,
//! "Function not found" loads partcache's function library on that node and retries,
//! `TRYAGAIN`/`CLUSTERDOWN` (and, on a cluster, `READONLY` from a master a failover
//! demoted) retry after a short pause on a fresh slot map. Everything happens within
//! the response timeout. The connections are a [`Transport`] (`transport.rs`), which
//! unit tests replace with a scripted fake cluster (`routing/fake.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use parking_lot::RwLock;
use partcache::store::raw::call_started;
use partcache::{Error, Result};
use redis::{Cmd, Pipeline, ServerErrorKind, Value};
use tracing::{Instrument, Span};

use crate::connection::Pool;
use crate::refusal::refused;
use crate::scripts::scripts;
use crate::slots::SlotMap;
use crate::transport::{OpenConnection, TimedOut, Transport};

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
    /// The partition whose events the reply returns (a script called while the cache
    /// has listeners in this process): they are delivered in order (`delivery.rs`).
    pub events: Option<u16>,
}

impl Request {
    /// A request for `slot`.
    pub(crate) fn new(slot: u16, cmd: Cmd) -> Request {
        Request {
            slot,
            cmd,
            read_only: false,
            events: None,
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
        /// When the map was last read.
        refreshed: parking_lot::Mutex<Option<Instant>>,
    },
}

/// The longest response timeout a router keeps to: a longer one (`Duration::MAX`, "no
/// timeout", set in code) is this long, so that a call's deadline, its start plus the
/// timeout, is an instant the clock can hold. A year: tokio's timers reach about two.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Routes requests over a deployment's connections. See the module docs.
pub(crate) struct Router {
    topology: Topology,
    timeout: Duration,
    replica_reads: bool,
    next_replica: AtomicUsize,
    /// The breakers' probe interval: how often a call that met an open breaker may
    /// have the slot map read again (a failover replaces the node).
    breaker_interval: Duration,
}

/// Which pools a request goes through: [`Pool`]s, or a fake cluster in unit tests
/// (`transport.rs`).
pub(crate) struct Pools<'a, T = Pool> {
    pub primary: &'a T,
    pub replicas: Option<&'a T>,
}

impl Router {
    /// A router for one server.
    pub(crate) fn standalone(addr: &str, timeout: Duration, breaker_interval: Duration) -> Router {
        Router {
            topology: Topology::Standalone(Arc::new(SlotMap::single(addr))),
            timeout: timeout.min(LONGEST_TIMEOUT),
            replica_reads: false,
            next_replica: AtomicUsize::new(0),
            breaker_interval,
        }
    }

    /// A router for a cluster, discovered from `seeds` on first use.
    pub(crate) fn cluster(
        seeds: Vec<String>,
        timeout: Duration,
        replica_reads: bool,
        breaker_interval: Duration,
    ) -> Router {
        Router {
            topology: Topology::Cluster {
                seeds,
                map: RwLock::new(None),
                generation: AtomicU64::new(0),
                refreshing: tokio::sync::Mutex::new(()),
                stale: AtomicBool::new(false),
                refreshed: parking_lot::Mutex::new(None),
            },
            timeout: timeout.min(LONGEST_TIMEOUT),
            replica_reads,
            next_replica: AtomicUsize::new(0),
            breaker_interval,
        }
    }

    /// Whether this is a cluster (sharded pub/sub, per-partition routing).
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }

    /// The response timeout every [`Router::execute`] keeps to.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When the current call must be done by: one response timeout after the cache
    /// call started (before its values were encoded: `raw::call_started`), or from
    /// now for calls of our own.
    pub(crate) fn deadline(&self) -> Instant {
        call_started().unwrap_or_else(Instant::now) + self.timeout
    }

    /// The current slot map, discovering it first if needed.
    pub(crate) async fn slot_map<T: Transport>(&self, pool: &T) -> Result<Arc<SlotMap>> {
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
                // Boxed: reading the map again is rare, and its future is large; in
                // place it would size every call's future, which each call copies.
                Box::pin(self.refresh(pool, seen)).await
            }
        }
    }

    /// The open connection to the master of `slot` (with the span its call runs in),
    /// if the slot map is known and not marked stale and the connection is open: no
    /// waiting, and no reference count of the map taken (this is every call's path).
    fn open_master_connection<T: Transport>(&self, pool: &T, slot: u16) -> Option<(T::Open, Span)> {
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
    pub(crate) fn with_master<R>(&self, slot: u16, f: impl FnOnce(&str) -> R) -> Option<R> {
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

    /// [`Router::mark_stale`] unless the map was read less than `interval` ago.
    fn mark_stale_at_most_every(&self, interval: Duration) {
        let Topology::Cluster { refreshed, .. } = &self.topology else {
            return;
        };
        if refreshed.lock().is_none_or(|at| at.elapsed() >= interval) {
            self.mark_stale();
        }
    }

    /// Marks the slot map as possibly outdated (a node went away).
    pub(crate) fn mark_stale(&self) {
        if let Topology::Cluster { stale, .. } = &self.topology {
            stale.store(true, Ordering::Release);
        }
    }

    /// Re-reads the slot map unless someone did since generation `seen`.
    async fn refresh<T: Transport>(&self, pool: &T, seen: u64) -> Result<Arc<SlotMap>> {
        let Topology::Cluster {
            seeds,
            map,
            generation,
            refreshing,
            stale,
            refreshed,
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
        let discovering = candidates.is_empty();
        candidates.extend(seeds.iter().cloned());
        let mut last_error = Error::Unavailable("no cluster node to ask for slots".into());
        let mut permanent = None;
        // A node whose breaker is open fails at once; a node that has stopped
        // answering (before its breaker opens) may hold the refresh, and with it
        // every caller, only for half the timeout.
        candidates.sort_by_key(|addr| !pool.is_closed(addr));
        let per_node = (self.timeout / 2).max(Duration::from_millis(50));
        for addr in candidates {
            let mut pipe = Pipeline::new();
            pipe.cmd("CLUSTER").arg("SLOTS");
            let asked = match tokio::time::timeout(per_node, pool.send(&addr, &pipe, 1)).await {
                Ok(asked) => asked,
                Err(_) => {
                    pool.timed_out(&addr);
                    last_error = Error::Timeout(self.timeout);
                    continue;
                }
            };
            match asked {
                Ok(mut replies) => {
                    let reply = replies.pop().unwrap_or(Value::Nil);
                    if let Some(e) = refused(&reply, &addr) {
                        permanent = Some(e);
                        continue;
                    }
                    if let Value::ServerError(error) = &reply
                        && passing_state(error)
                    {
                        // Loading its data, or the cluster is electing a master.
                        last_error = Error::Unavailable(format!(
                            "{addr} cannot tell the slots yet: {} {}",
                            error.code(),
                            error.details().unwrap_or("")
                        ));
                        continue;
                    }
                    match SlotMap::from_cluster_slots(&reply, &addr) {
                        Ok(fresh) => {
                            let fresh = Arc::new(fresh);
                            *map.write() = Some(fresh.clone());
                            *refreshed.lock() = Some(Instant::now());
                            generation.fetch_add(1, Ordering::AcqRel);
                            stale.store(false, Ordering::Release);
                            tracing::debug!(masters = fresh.masters().len(), from = %addr, "slot map refreshed");
                            return Ok(fresh);
                        }
                        Err(e) => last_error = e,
                    }
                }
                // Before the first map, every node shares the refused settings (the
                // URL's credentials, TLS): asking the other seeds only uses up the
                // caller's timeout before the mistake is reported.
                Err(e @ Error::Config(_)) if discovering => return Err(e),
                Err(e @ Error::Config(_)) => permanent = Some(e),
                Err(e) => last_error = e,
            }
        }
        // A configuration error (a password every node refuses) outweighs a node
        // that could not be reached.
        Err(permanent.unwrap_or(last_error))
    }

    /// Runs `requests` (see the module docs) and returns one reply per request, in
    /// order; a reply may be a [`Value::ServerError`] (a script error), which callers
    /// turn into [`Error::Store`]. Fails with [`Error::Timeout`] after the response
    /// timeout and with [`Error::Unavailable`] when a node cannot be reached.
    pub(crate) async fn execute<T: Transport>(
        &self,
        pools: Pools<'_, T>,
        requests: Vec<Request>,
    ) -> Result<Vec<Value>> {
        // A call that started before it got here (a write, which encoded its values
        // first) keeps to its start's deadline; others (reads: no clock read on their
        // path) to one timeout from now.
        let (started_deadline, own_timer) = match call_started() {
            None => (None, false),
            Some(started) => {
                let deadline = started + self.timeout;
                let now = Instant::now();
                if now >= deadline {
                    // Encoding (or a wait before) used the whole timeout: send
                    // nothing, so that this `Timeout` leaves the store as it was.
                    return Err(Error::Timeout(self.timeout));
                }
                // The connection's own response timeout (from when the command is
                // handed to it) ends a wait late only if the call started noticeably
                // earlier.
                let own = deadline - now + Duration::from_millis(1) < self.timeout;
                (Some(deadline), own)
            }
        };
        // The common case, one command for a master (a get, a put) whose node is
        // connected: straight to it, without the grouping below and without a timer of
        // our own (the connection's response timeout bounds the wait). Anything but a
        // plain reply (a redirection, a busy slot, a missing function: the command did not
        // run) takes the full path.
        if let [request] = &requests[..]
            && !(self.replica_reads && request.read_only && pools.replicas.is_some())
            && let Some((conn, span)) = self.open_master_connection(pools.primary, request.slot)
        {
            let node = own_timer.then(|| conn.node());
            let sent = conn.send_one(pools.primary, &request.cmd).instrument(span);
            let sent = match node {
                Some(node) => match tokio::time::timeout_at(
                    started_deadline.unwrap_or_else(|| self.deadline()).into(),
                    sent,
                )
                .await
                {
                    Ok(sent) => sent,
                    Err(_) => {
                        node.timed_out();
                        Err(Error::Timeout(self.timeout))
                    }
                },
                None => sent.await,
            };
            match sent {
                Ok(value) if !needs_another_round(&value, self.is_cluster()) => {
                    return Ok(vec![value]);
                }
                Ok(value) => {
                    // The slot map that sent it here is out of date: the rounds below
                    // read it again first rather than ask the same node again.
                    if let Value::ServerError(e) = &value
                        && matches!(
                            e.kind(),
                            Some(ServerErrorKind::Moved | ServerErrorKind::ReadOnly)
                        )
                    {
                        self.mark_stale();
                    }
                }
                Err(e) => {
                    self.mark_stale();
                    return Err(e);
                }
            }
        }
        let deadline = started_deadline.unwrap_or_else(|| self.deadline());
        // Boxed: the rounds' future is large, and most calls end on the path above; in
        // place it would size every call's future, which each call copies.
        let mut requests = requests;
        let rounds = Box::pin(self.execute_rounds(&pools, &mut requests, deadline, None));
        match tokio::time::timeout_at(deadline.into(), rounds).await {
            Ok(result) => result,
            Err(_) => {
                // A node that does not answer may be gone: look again next time.
                self.mark_stale();
                Err(Error::Timeout(self.timeout))
            }
        }
    }

    /// [`Router::execute`], also returning the address of the node that answered each
    /// request (a subscription lives on that node's connection).
    pub(crate) async fn execute_recording_nodes<T: Transport>(
        &self,
        pools: Pools<'_, T>,
        requests: Vec<Request>,
    ) -> Result<(Vec<Value>, Vec<String>)> {
        let deadline = self.deadline();
        let mut nodes = vec![String::new(); requests.len()];
        let mut requests = requests;
        let rounds = self.execute_rounds(&pools, &mut requests, deadline, Some(&mut nodes));
        match tokio::time::timeout_at(deadline.into(), rounds).await {
            Ok(replies) => Ok((replies?, nodes)),
            Err(_) => {
                self.mark_stale();
                Err(Error::Timeout(self.timeout))
            }
        }
    }

    /// The rounds of [`Router::execute`]. Each round moves the commands it sends into
    /// their nodes' pipelines (no copy of each); a command that needs another round gets
    /// its copy back from there.
    async fn execute_rounds<T: Transport>(
        &self,
        pools: &Pools<'_, T>,
        requests: &mut [Request],
        deadline: Instant,
        mut nodes: Option<&mut Vec<String>>,
    ) -> Result<Vec<Value>> {
        let mut replies: Vec<Option<Value>> = vec![None; requests.len()];
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        let mut asked: HashMap<usize, String> = HashMap::new();
        let mut pause = Duration::from_millis(5);
        // Redirections are bounded by rounds; waits on a busy slot (TRYAGAIN during a
        // migration, a cluster electing a master) only by the response timeout.
        let mut redirections = 0;
        while redirections < MAX_ROUNDS {
            let map = self.slot_map(pools.primary).await?;
            // Group the pending requests by node (a few nodes: a list, and no address
            // copied per request).
            let mut by_node: Vec<(String, bool, Vec<usize>)> = Vec::new();
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
                match by_node
                    .iter_mut()
                    .find(|(a, r, _)| a == addr && *r == replica)
                {
                    Some((_, _, indexes)) => indexes.push(i),
                    None => by_node.push((addr.to_string(), replica, vec![i])),
                }
            }
            let sends = by_node.into_iter().map(|(addr, replica, indexes)| {
                let pool = if replica {
                    pools.replicas.unwrap_or(pools.primary)
                } else {
                    pools.primary
                };
                let span =
                    tracing::debug_span!("partcache.node", node = %addr, commands = indexes.len());
                let timeout = self.timeout;
                // The node's commands, moved out of their requests (see above).
                let sent = if let [i] = indexes[..]
                    && !asked.contains_key(&i)
                {
                    // One command: no pipeline to build.
                    Sent::One(std::mem::take(&mut requests[i].cmd))
                } else {
                    let mut pipe = Pipeline::with_capacity(indexes.len());
                    for &i in &indexes {
                        if asked.contains_key(&i) {
                            pipe.cmd("ASKING");
                        }
                        pipe.add_command(std::mem::take(&mut requests[i].cmd));
                    }
                    Sent::Many(pipe)
                };
                async move {
                    let send = async {
                        match &sent {
                            Sent::One(cmd) => pool.send_one(&addr, cmd).await.map(|v| vec![v]),
                            Sent::Many(pipe) => pool.send(&addr, pipe, pipe.len()).await,
                        }
                    };
                    // Per node, so that the node that did not answer in time is the
                    // one whose breaker hears of it (this ends before the caller's
                    // timer around all the rounds, which polls its rounds first).
                    let result = match tokio::time::timeout_at(deadline.into(), send).await {
                        Ok(result) => result,
                        Err(_) => {
                            pool.timed_out(&addr);
                            Err(Error::Timeout(timeout))
                        }
                    };
                    (addr, replica, indexes, sent, result)
                }
                .instrument(span)
            });
            let mut next_pending = Vec::new();
            let mut refresh = false;
            let mut busy = false;
            let mut to_load: Vec<String> = Vec::new();
            let mut failure = None;
            let mut lost = false;
            for (addr, replica, indexes, mut sent, result) in join_all(sends).await {
                let values = match result {
                    Ok(values) => values,
                    Err(e) => {
                        if matches!(e, Error::CircuitOpen { .. }) {
                            // Its breaker is open: look for a failover now and then,
                            // not on every call (each look holds up the callers).
                            self.mark_stale_at_most_every(self.breaker_interval);
                        } else {
                            self.mark_stale();
                        }
                        failure = Some(e);
                        continue;
                    }
                };
                let mut values = values.into_iter();
                // Where each request's command is in `sent`.
                let mut position = 0;
                for i in indexes {
                    if asked.remove(&i).is_some() {
                        values.next(); // the ASKING reply
                        position += 1;
                    }
                    let value = values.next().unwrap_or(Value::Nil);
                    let at = position;
                    position += 1;
                    // A request that goes to another round takes its command back.
                    let mut again = |i: usize, next_pending: &mut Vec<usize>| match sent.take(at) {
                        Some(cmd) => {
                            requests[i].cmd = cmd;
                            next_pending.push(i);
                        }
                        None => lost = true,
                    };
                    let Value::ServerError(error) = &value else {
                        replies[i] = Some(value);
                        if let Some(nodes) = nodes.as_deref_mut() {
                            nodes[i].clone_from(&addr);
                        }
                        continue;
                    };
                    match error.kind() {
                        Some(ServerErrorKind::Moved) => {
                            refresh = true;
                            again(i, &mut next_pending);
                        }
                        Some(ServerErrorKind::Ask) => {
                            match error.details().and_then(|d| d.split_whitespace().nth(1)) {
                                Some(target) => {
                                    asked.insert(i, target.to_string());
                                }
                                None => refresh = true,
                            }
                            again(i, &mut next_pending);
                        }
                        // The node lacks partcache's function library (only an `FCALL`
                        // gets this answer).
                        _ if function_missing(error) => {
                            if !to_load.contains(&addr) {
                                to_load.push(addr.clone());
                            }
                            again(i, &mut next_pending);
                        }
                        _ if passing_state(error) => {
                            busy = true;
                            refresh = true;
                            again(i, &mut next_pending);
                        }
                        // A write that reached a master a failover demoted to a
                        // replica: the command did not run (the server refuses before
                        // running it), and the new master is in a fresh slot map once
                        // the failover is known. A standalone server has no other node
                        // to go to, and a replica asked for a read refuses only what
                        // must not be retried: their reply is the caller's error.
                        Some(ServerErrorKind::ReadOnly) if self.is_cluster() && !replica => {
                            busy = true;
                            refresh = true;
                            again(i, &mut next_pending);
                        }
                        // A script met a key of its slot that a migration already
                        // moved (or not yet): the partition is split between two
                        // nodes; retry until the migration settles (tests/it/topology.rs).
                        _ if error.details().is_some_and(|d| d.contains(NON_LOCAL_KEY)) => {
                            busy = true;
                            refresh = true;
                            again(i, &mut next_pending);
                        }
                        _ => match refused(&value, &addr) {
                            Some(e) => failure = Some(e),
                            None => {
                                replies[i] = Some(value);
                                if let Some(nodes) = nodes.as_deref_mut() {
                                    nodes[i].clone_from(&addr);
                                }
                            }
                        },
                    }
                }
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if lost {
                // Not met: every command sent is in its node's pipeline.
                return Err(Error::Store(
                    "a command to send again was not found in its pipeline".into(),
                ));
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
                if let Some(refused) = loaded.first().and_then(|reply| refused(reply, &addr)) {
                    return Err(refused);
                }
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

/// The commands sent to one node in a round, moved out of their requests.
enum Sent {
    /// One command, alone.
    One(Cmd),
    /// A pipeline (with an `ASKING` before each command redirected by `ASK`).
    Many(Pipeline),
}

impl Sent {
    /// The command at `position`, for another round: moved out if alone, else a copy
    /// (a request sent again is rare; the copy is what every request paid before).
    fn take(&mut self, position: usize) -> Option<Cmd> {
        match self {
            Sent::One(cmd) => (position == 0).then(|| std::mem::take(cmd)),
            Sent::Many(pipe) => pipe.cmd_iter().nth(position).cloned(),
        }
    }
}

/// Whether `error` is a node's passing state (`TRYAGAIN`, `CLUSTERDOWN`, `MASTERDOWN`,
/// `LOADING`): the command did not run; the same command runs once the state passes.
fn passing_state(error: &redis::ServerError) -> bool {
    matches!(
        error.kind(),
        Some(
            ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
        )
    )
}

/// Whether `error` says that a called function does not exist on the node (it has
/// not got partcache's library: see `scripts.rs`).
fn function_missing(error: &redis::ServerError) -> bool {
    error
        .details()
        .is_some_and(|d| d.contains("Function not found"))
}

/// Whether a reply asks for another round (see [`Router::execute`]): the command did
/// not run where it was sent (`READONLY` asks for one on a cluster only).
fn needs_another_round(value: &Value, cluster: bool) -> bool {
    let Value::ServerError(error) = value else {
        return false;
    };
    (cluster && error.kind() == Some(ServerErrorKind::ReadOnly))
        || function_missing(error)
        || refused(value, "").is_some()
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

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
