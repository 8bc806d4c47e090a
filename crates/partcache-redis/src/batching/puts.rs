//! Unconditional puts coalesced per node (see the module docs of [`super`]): the puts
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

use crate::deployment::Deployment;
use crate::routing::Request;
use crate::scripts::scripts;

use super::bound::{Bound, Pending};
use super::queue::{self, unreachable};

/// Most entries in one `put_batch` call (the rest go in further calls, at once).
const MAX_ENTRIES: usize = 64;

/// The puts of one deployment, per node address and [`Kind`].
pub(crate) struct Puts {
    /// The deployment the batches go to.
    deployment: Arc<Deployment>,
    /// The bound shared with the reads' queue.
    bound: Arc<Bound>,
    queues: parking_lot::Mutex<HashMap<String, Queue>>,
}

impl Puts {
    /// The put queues of `deployment`, bounded by `bound`.
    pub fn new(deployment: Arc<Deployment>, bound: Arc<Bound>) -> Puts {
        Puts {
            deployment,
            bound,
            queues: parking_lot::Mutex::default(),
        }
    }
}

struct Queue {
    kind: Kind,
    /// A put or a batch is on its way to the node; new puts wait for it.
    busy: bool,
    waiting: Vec<Waiter>,
}

/// Which function a batch calls.
#[derive(Clone)]
pub(crate) enum Kind {
    /// `put_batch`.
    Fast,
    /// `upsert_batch`, for caches of these settings.
    Upsert(Arc<UpsertSettings>),
}

/// What `upsert_batch` takes once for all its entries.
pub(crate) struct UpsertSettings {
    /// The cache's settings (`setup`'s `ARGV[1..=4]`, `store.rs`).
    pub header: [String; 4],
    /// The event mode (0 none, 1 `PUBLISH`, 2 `SPUBLISH`).
    pub mode: u8,
    /// The settings and mode as one string: caches with the same one share batches.
    pub id: String,
}

impl Kind {
    /// The queue of this kind of put on `addr`.
    fn queue_key(&self, addr: &str) -> String {
        match self {
            Kind::Fast => addr.to_string(),
            Kind::Upsert(settings) => format!("{addr} {}", settings.id),
        }
    }
}

/// One put, as `put_batch` takes it.
pub(crate) struct Entry {
    /// The slot of the entry's partition (where the batch is sent).
    pub slot: u16,
    /// The partition's key prefix (`Layout::prefix`).
    pub prefix: String,
    /// The event mode (0 none, 1 `PUBLISH`, 2 `SPUBLISH`; for [`Kind::Fast`]).
    pub mode: u8,
    pub text: String,
    pub blob: Vec<u8>,
    /// The TTL argument (ms, or -1) and the key-only blob (for [`Kind::Upsert`]).
    pub ttl: String,
    pub key_only: Vec<u8>,
}

/// How a waiting put ended.
pub(crate) enum Done {
    /// Its reply (`lua/put.lua`'s).
    Reply(Value),
    /// Not done: its slot is not served by the node right now; send it alone.
    Alone(Vec<u8>),
}

struct Waiter {
    entry: Entry,
    reply: oneshot::Sender<Result<Done>>,
    /// Its room in the queues, freed with it.
    _pending: Pending,
}

/// What a put does: go now (and hand over to the puts that queue meanwhile when
/// `Lead` is dropped), or wait for the node's current call to come back.
pub(crate) enum Turn<'a> {
    Lead(Lead<'a>),
    Wait(Ticket<'a>),
    /// The node of the slot is not known (no slot map yet): go alone, uncoalesced.
    Unknown,
}

/// Takes a turn for a put of `kind` on the node of `slot`.
pub(crate) fn turn<'a>(puts: &'a Arc<Puts>, slot: u16, kind: &Kind) -> Turn<'a> {
    let found = puts.deployment.router.with_master(slot, |addr| {
        let key = kind.queue_key(addr);
        let mut queues = puts.queues.lock();
        let queue = queues.entry(key.clone()).or_insert_with(|| Queue {
            kind: kind.clone(),
            busy: false,
            waiting: Vec::new(),
        });
        if queue.busy {
            return Turn::Wait(Ticket { puts, key });
        }
        queue.busy = true;
        Turn::Lead(Lead {
            puts,
            key,
            failed: None,
        })
    });
    found.unwrap_or(Turn::Unknown)
}

/// The right to queue one put on a busy node.
pub(crate) struct Ticket<'a> {
    puts: &'a Arc<Puts>,
    /// The queue (see [`Kind::queue_key`]).
    key: String,
}

impl Ticket<'_> {
    /// Queues `entry`; it goes in the node's next batch (at once, if the node became
    /// idle since the turn was taken). [`Done::Alone`] at once when the queues are at
    /// their limit (`bound.rs`).
    pub async fn put(self, entry: Entry) -> Result<Done> {
        let bytes = entry.prefix.len() + entry.text.len() + entry.blob.len() + entry.key_only.len();
        let Some(pending) = self.puts.bound.admit(bytes) else {
            return Ok(Done::Alone(entry.blob));
        };
        let (reply, receiver) = oneshot::channel();
        let lead = {
            let mut queues = self.puts.queues.lock();
            // Queues are never removed, so the ticket's is there.
            let Some(queue) = queues.get_mut(&self.key) else {
                return Ok(Done::Alone(entry.blob));
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
/// queued meanwhile (or fails them with [`Lead::finished`]'s error).
pub(crate) struct Lead<'a> {
    puts: &'a Arc<Puts>,
    key: String,
    failed: Option<Error>,
}

impl Lead<'_> {
    /// Records how the lead put ended: if the node was unreachable or silent, the puts
    /// that queued behind it fail with it.
    pub fn finished<T>(&mut self, result: &Result<T>) {
        self.failed = unreachable(result);
    }
}

impl Drop for Lead<'_> {
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
                    Error::Unavailable("no runtime to send a coalesced put on".into())
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
            let e = Error::Unavailable("no runtime to send a coalesced put on".into());
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
        let e = Error::Unavailable("a coalesced put was dropped (runtime shutting down)".into());
        fail(waiting, &e);
    }
}

/// Sends the queue's waiting puts, all of them at once ([`MAX_ENTRIES`] per call),
/// until none is left. Puts whose callers gave up are not sent (uncoalesced, such a
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
async fn send(puts: &Puts, kind: &Kind, batch: &[Waiter]) -> Result<Value> {
    let Some(first) = batch.first() else {
        return Ok(Value::Array(Vec::new()));
    };
    let size: usize = batch
        .iter()
        .map(|w| {
            let e = &w.entry;
            e.prefix.len() + e.text.len() + e.blob.len() + e.key_only.len() + 48
        })
        .sum();
    let mut cmd = redis::Cmd::with_capacity(10 + 5 * batch.len(), 160 + size);
    cmd.arg("FCALL");
    match kind {
        Kind::Fast => {
            cmd.arg(&scripts().put_batch.function)
                .arg(0)
                .arg(puts.deployment.origin())
                .arg(puts.deployment.channel_suffix());
            for w in batch {
                cmd.arg(&w.entry.prefix)
                    .arg(w.entry.mode)
                    .arg(&w.entry.text)
                    .arg(w.entry.blob.as_slice());
            }
        }
        Kind::Upsert(settings) => {
            cmd.arg(&scripts().upsert_batch.function)
                .arg(0)
                .arg(&settings.header[..])
                .arg(puts.deployment.origin())
                .arg(puts.deployment.channel_suffix())
                .arg(settings.mode);
            for w in batch {
                cmd.arg(&w.entry.prefix)
                    .arg(&w.entry.text)
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
                    Value::Int(-1) => Done::Alone(w.entry.blob),
                    value => Done::Reply(value),
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
                let _ = w.reply.send(Ok(Done::Alone(w.entry.blob)));
            }
        }
        Ok(other) => fail(
            batch,
            &Error::Store(format!("unexpected put_batch reply: {other:?}")),
        ),
        Err(e) => fail(batch, &e),
    }
}
