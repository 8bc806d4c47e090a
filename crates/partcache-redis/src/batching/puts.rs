//! Unconditional puts batched per node (see the module docs of [`super`]): the puts
//! that wait while another is on its way to the same node go as one function call,
//! whatever their partitions (a function allowed to touch several slots of the node):
//! the common put (`lua/put.lua`: no TTL, on an eternal cache without max-idle or
//! budget) as `lua/put_batch.lua`, any other unconditional put that wants no previous
//! value (`lua/upsert.lua`) as `lua/upsert_batch.lua`, per cache settings. Only puts
//! whose events need not come back in the reply (no listener in this process).
//!
//! A cluster refuses a command whose keys span slots, so `put_batch` declares none and
//! checks each entry's partition itself; an entry whose slot this node does not serve right
//! now (a stale slot map, a slot being moved) comes back undone, and its caller sends it
//! alone with its keys declared, through the router's redirections.

use std::collections::HashMap;
use std::sync::Arc;

use partcache::{Error, Result};
use redis::Value;
use tokio::sync::oneshot;

use crate::arguments::{CacheSettings, EventMode};
use crate::deployment::Deployment;
use crate::routing::Request;
use crate::scripts::scripts;

use super::bound::{Bound, Pending};
use super::queue::{self, unreachable};

/// Most entries in one `put_batch` call (the rest go in further calls, at once).
const MAX_ENTRIES: usize = 64;

/// The puts of one deployment, per node address and [`BatchFunction`].
pub(crate) struct Puts {
    /// The deployment the batches go to.
    deployment: Arc<Deployment>,
    /// The bound shared with the reads' queue.
    bound: Arc<Bound>,
    queues: parking_lot::Mutex<HashMap<String, Queue>>,
}

impl Puts {
    /// The put queues of `deployment`, bounded by `bound`.
    pub(crate) fn new(deployment: Arc<Deployment>, bound: Arc<Bound>) -> Puts {
        Puts {
            deployment,
            bound,
            queues: parking_lot::Mutex::default(),
        }
    }
}

struct Queue {
    kind: BatchFunction,
    /// A put or a batch is on its way to the node; new puts wait for it.
    busy: bool,
    waiting: Vec<Waiter>,
}

/// Which function a batch calls.
#[derive(Clone)]
pub(crate) enum BatchFunction {
    /// `put_batch`.
    PutBatch,
    /// `upsert_batch`, for caches of these settings.
    UpsertBatch(Arc<UpsertSettings>),
}

/// What `upsert_batch` takes once for all its entries.
pub(crate) struct UpsertSettings {
    /// The cache's settings.
    pub settings: CacheSettings,
    /// How the cache publishes its events.
    pub mode: EventMode,
    /// The settings and mode as one string: caches with the same one share batches.
    pub id: String,
}

impl UpsertSettings {
    /// The upsert batches of caches with `settings` and event `mode` (caches whose
    /// settings and mode are the same share batches).
    pub(crate) fn new(settings: CacheSettings, mode: EventMode) -> UpsertSettings {
        UpsertSettings {
            id: format!("{} {}", settings.joined(), mode.arg(false)),
            settings,
            mode,
        }
    }
}

impl BatchFunction {
    /// The queue of this kind of put on `addr`.
    fn queue_key(&self, addr: &str) -> String {
        match self {
            BatchFunction::PutBatch => addr.to_string(),
            BatchFunction::UpsertBatch(upsert) => format!("{addr} {}", upsert.id),
        }
    }
}

/// One put, as `put_batch` or `upsert_batch` takes it.
pub(crate) struct BatchEntry {
    /// The slot of the entry's partition (where the batch is sent).
    pub slot: u16,
    /// For [`BatchFunction::PutBatch`], the partition's channel when the cache
    /// publishes its events, else its key prefix (`lua/put_batch.lua` tells them
    /// apart); for [`BatchFunction::UpsertBatch`], the key prefix (`Layout::prefix`).
    pub head: String,
    /// For [`BatchFunction::PutBatch`], the entry key; for
    /// [`BatchFunction::UpsertBatch`], the key text.
    pub key: String,
    pub blob: Vec<u8>,
    /// The TTL argument (ms, or -1) and the key-only blob (for [`BatchFunction::UpsertBatch`]).
    pub ttl: String,
    pub key_only: Vec<u8>,
}

/// How a waiting put ended.
pub(crate) enum BatchedPut {
    /// Its reply (`lua/put.lua`'s).
    Replied(Value),
    /// Not done: its slot is not served by the node right now; send it alone.
    SendAlone(Vec<u8>),
}

struct Waiter {
    entry: BatchEntry,
    reply: oneshot::Sender<Result<BatchedPut>>,
    /// Its room in the queues, freed with it.
    _pending: Pending,
}

/// What a put does: go now (and hand over to the puts that queue meanwhile when
/// `Leader` is dropped), or wait for the node's current call to come back.
pub(crate) enum PutRole<'a> {
    Leader(Leader<'a>),
    Follower(Ticket<'a>),
    /// The node of the slot is not known (no slot map yet): go alone, unbatched.
    Unbatched,
}

/// The role of a put of `kind` on the node of `slot`.
pub(crate) fn role<'a>(puts: &'a Arc<Puts>, slot: u16, kind: &BatchFunction) -> PutRole<'a> {
    let found = puts.deployment.router.with_master(slot, |addr| {
        let key = kind.queue_key(addr);
        let mut queues = puts.queues.lock();
        let queue = queues.entry(key.clone()).or_insert_with(|| Queue {
            kind: kind.clone(),
            busy: false,
            waiting: Vec::new(),
        });
        if queue.busy {
            return PutRole::Follower(Ticket { puts, key });
        }
        queue.busy = true;
        PutRole::Leader(Leader {
            puts,
            key,
            failed: None,
        })
    });
    found.unwrap_or(PutRole::Unbatched)
}

/// The right to queue one put on a busy node.
pub(crate) struct Ticket<'a> {
    puts: &'a Arc<Puts>,
    /// The queue (see [`BatchFunction::queue_key`]).
    key: String,
}

impl Ticket<'_> {
    /// Queues `entry`; it goes in the node's next batch (at once, if the node became
    /// idle since the turn was taken). [`BatchedPut::SendAlone`] at once when the queues are at
    /// their limit (`bound.rs`).
    pub(crate) async fn put(self, entry: BatchEntry) -> Result<BatchedPut> {
        let bytes = entry.head.len() + entry.key.len() + entry.blob.len() + entry.key_only.len();
        let Some(pending) = self.puts.bound.admit(bytes) else {
            return Ok(BatchedPut::SendAlone(entry.blob));
        };
        let (reply, receiver) = oneshot::channel();
        let lead = {
            let mut queues = self.puts.queues.lock();
            // Queues are never removed, so the ticket's is there.
            let Some(queue) = queues.get_mut(&self.key) else {
                return Ok(BatchedPut::SendAlone(entry.blob));
            };
            queue.waiting.push(Waiter {
                entry,
                reply,
                _pending: pending,
            });
            // The call it waited for came back meanwhile, and nobody took over.
            let idle = !queue.busy;
            queue.busy = true;
            idle
        };
        if lead {
            spawn_drain(self.puts, self.key);
        }
        queue::wait(&self.puts.deployment.router, receiver).await
    }
}

/// The put on its way to a node. Dropping it hands the node over to the puts that
/// queued meanwhile (or fails them with [`Leader::finished`]'s error).
pub(crate) struct Leader<'a> {
    puts: &'a Arc<Puts>,
    key: String,
    failed: Option<Error>,
}

impl Leader<'_> {
    /// Records how the lead put ended: if the node was unreachable or silent, the puts
    /// that queued behind it fail with it.
    pub(crate) fn finished<T>(&mut self, result: &Result<T>) {
        self.failed = unreachable(result);
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let waiting = {
            let mut queues = self.puts.queues.lock();
            let Some(queue) = queues.get_mut(&self.key) else {
                return;
            };
            if queue.waiting.is_empty() {
                queue.busy = false;
                return;
            }
            if self.failed.is_none() && tokio::runtime::Handle::try_current().is_ok() {
                None
            } else {
                queue.busy = false;
                Some(std::mem::take(&mut queue.waiting))
            }
        };
        match waiting {
            None => spawn_drain(self.puts, std::mem::take(&mut self.key)),
            Some(waiting) => {
                let e = self.failed.take().unwrap_or_else(|| {
                    Error::Unavailable("no runtime to send a batched put on".into())
                });
                fail(waiting, &e);
            }
        }
    }
}

/// Starts a drain task for queue `key` (called outside the queues' lock: a runtime
/// that is shutting down drops the task at once, and its guard takes the lock).
fn spawn_drain(puts: &Arc<Puts>, key: String) {
    let puts = puts.clone();
    match tokio::runtime::Handle::try_current() {
        Ok(runtime) => {
            runtime.spawn(drain(Draining {
                puts,
                key,
                done: false,
            }));
        }
        Err(_) => {
            let waiting = {
                let mut queues = puts.queues.lock();
                let Some(queue) = queues.get_mut(&key) else {
                    return;
                };
                queue.busy = false;
                std::mem::take(&mut queue.waiting)
            };
            let e = Error::Unavailable("no runtime to send a batched put on".into());
            fail(waiting, &e);
        }
    }
}

fn fail(waiting: Vec<Waiter>, e: &Error) {
    queue::fail(waiting.into_iter().map(|w| w.reply), e);
}

/// Held by a drain task (given to it, so that it goes with the task even if the task
/// never runs): if the task ends without finishing (its runtime shut down, or it
/// panicked), marks the queue idle and fails the puts still in it, so that later puts,
/// perhaps on another runtime, are not left queued behind nobody.
struct Draining {
    puts: Arc<Puts>,
    key: String,
    done: bool,
}

impl Drop for Draining {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let waiting = {
            let mut queues = self.puts.queues.lock();
            let Some(queue) = queues.get_mut(&self.key) else {
                return;
            };
            queue.busy = false;
            std::mem::take(&mut queue.waiting)
        };
        let e = Error::Unavailable("a batched put was dropped (runtime shutting down)".into());
        fail(waiting, &e);
    }
}

/// Sends the queue's waiting puts, all of them at once ([`MAX_ENTRIES`] per call),
/// until none is left. Puts whose callers gave up are not sent (unbatched, such a
/// put would not have been sent either, or sent before the caller's next command).
async fn drain(mut guard: Draining) {
    let (puts, key) = (guard.puts.clone(), guard.key.clone());
    let mut failed: Option<Error> = None;
    loop {
        let (kind, waiting) = {
            let mut queues = puts.queues.lock();
            let Some(queue) = queues.get_mut(&key) else {
                guard.done = true;
                return;
            };
            queue.waiting.retain(|w| !w.reply.is_closed());
            if queue.waiting.is_empty() {
                queue.busy = false;
                guard.done = true;
                return;
            }
            (queue.kind.clone(), std::mem::take(&mut queue.waiting))
        };
        if let Some(e) = failed.take() {
            fail(waiting, &e);
            continue;
        }
        let batches = queue::batches(waiting, MAX_ENTRIES);
        let sends = batches.iter().map(|batch| send(&puts, &kind, batch));
        let replies = futures::future::join_all(sends).await;
        for (batch, reply) in batches.into_iter().zip(replies) {
            failed = failed.or_else(|| unreachable(&reply));
            deliver(batch, reply);
        }
    }
}

/// One batch call for `batch` (on the node of its first entry's slot).
async fn send(puts: &Puts, kind: &BatchFunction, batch: &[Waiter]) -> Result<Value> {
    let Some(first) = batch.first() else {
        return Ok(Value::Array(Vec::new()));
    };
    let size: usize = batch
        .iter()
        .map(|w| {
            let e = &w.entry;
            e.head.len() + e.key.len() + e.blob.len() + e.key_only.len() + 48
        })
        .sum();
    let mut cmd = redis::Cmd::with_capacity(10 + 5 * batch.len(), 160 + size);
    cmd.arg("FCALL");
    match kind {
        BatchFunction::PutBatch => {
            // The mode of the entries whose caches publish: the deployment's.
            let mode = EventMode::new(true, puts.deployment.router.is_cluster());
            cmd.arg(&scripts().put_batch.function)
                .arg(0)
                .arg(puts.deployment.origin())
                .arg(puts.deployment.channel_suffix())
                .arg(mode.arg(false));
            for w in batch {
                cmd.arg(&w.entry.head)
                    .arg(&w.entry.key)
                    .arg(w.entry.blob.as_slice());
            }
        }
        BatchFunction::UpsertBatch(upsert) => {
            cmd.arg(&scripts().upsert_batch.function).arg(0);
            upsert.settings.write(&mut cmd, None);
            cmd.arg(puts.deployment.origin())
                .arg(puts.deployment.channel_suffix())
                .arg(upsert.mode.arg(false));
            for w in batch {
                cmd.arg(&w.entry.head)
                    .arg(&w.entry.key)
                    .arg(w.entry.blob.as_slice())
                    .arg(&w.entry.ttl)
                    .arg(w.entry.key_only.as_slice());
            }
        }
    }
    let reply = puts
        .deployment
        .execute(vec![Request::new(first.entry.slot, cmd)])
        .await?
        .pop();
    Ok(reply.unwrap_or(Value::Nil))
}

/// Hands each waiter of `batch` its reply from `reply` (one per entry; -1: undone).
fn deliver(batch: Vec<Waiter>, reply: Result<Value>) {
    match reply {
        Ok(Value::Array(values)) if values.len() == batch.len() => {
            for (w, value) in batch.into_iter().zip(values) {
                let done = match value {
                    Value::Int(-1) => BatchedPut::SendAlone(w.entry.blob),
                    value => BatchedPut::Replied(value),
                };
                let _ = w.reply.send(Ok(done));
            }
        }
        // The call as a whole was refused (a node demoted to replica answers READONLY,
        // as it cannot answer MOVED to a call with no keys; a server out of memory):
        // each put goes alone, through the router's redirections and errors.
        Ok(Value::ServerError(e)) => {
            tracing::debug!(
                code = e.code(),
                "a put batch was refused; its puts go alone"
            );
            for w in batch {
                let _ = w.reply.send(Ok(BatchedPut::SendAlone(w.entry.blob)));
            }
        }
        Ok(other) => fail(
            batch,
            &Error::Store(format!("unexpected put_batch reply: {other:?}")),
        ),
        Err(e) => fail(batch, &e),
    }
}
