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

use std::borrow::{Borrow, Cow};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use partcache::{Error, Result};
use redis::Value;
use tokio::sync::oneshot;

use crate::arguments::{CacheSettings, EventMode};
use crate::deployment::Deployment;
use crate::routing::Request;
use crate::scripts::scripts;

use super::bound::Bound;
use super::queue::{self, Batch, Entered, Lanes, Lead, Waiter, unreachable};

/// The puts of one deployment, one lane per node address and [`BatchFunction`].
pub(crate) struct Puts {
    /// The deployment the batches go to.
    deployment: Arc<Deployment>,
    lanes: Lanes<Puts>,
}

impl Puts {
    /// The put queues of `deployment`, bounded by `bound`.
    pub(crate) fn new(deployment: Arc<Deployment>, bound: Arc<Bound>) -> Puts {
        Puts {
            deployment,
            lanes: Lanes::new(bound),
        }
    }
}

/// A lane of puts: known by its node and function ([`BatchFunction::lane_key`]), and
/// the function its batches call.
#[derive(Clone)]
pub(crate) struct PutLane {
    key: Arc<str>,
    kind: BatchFunction,
}

// By key alone, as `str`s are (the lanes are looked up by their key).
impl Hash for PutLane {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl PartialEq for PutLane {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for PutLane {}

impl Borrow<str> for PutLane {
    fn borrow(&self) -> &str {
        &self.key
    }
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
    /// The lane of this kind of put on `addr` (the address itself for the common put:
    /// nothing to format on its path).
    fn lane_key<'a>(&self, addr: &'a str) -> Cow<'a, str> {
        match self {
            BatchFunction::PutBatch => Cow::Borrowed(addr),
            BatchFunction::UpsertBatch(upsert) => Cow::Owned(format!("{addr} {}", upsert.id)),
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
    pub head: Arc<str>,
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

impl Batch for Puts {
    type Lane = PutLane;
    type Payload = BatchEntry;
    type Reply = BatchedPut;
    const WHAT: &'static str = "put";
    /// Most entries in one `put_batch` or `upsert_batch` call.
    const MAX: usize = 64;

    fn lanes(&self) -> &Lanes<Self> {
        &self.lanes
    }

    async fn send(&self, lane: &PutLane, batch: Vec<Waiter<Self>>) -> Option<Error> {
        let reply = send(self, &lane.kind, &batch).await;
        let failed = unreachable(&reply);
        deliver(batch, reply);
        failed
    }
}

/// How a put entered its node's lane ([`enter`]).
pub(crate) enum PutTurn<'a> {
    /// The node was idle: the put goes now, alone with its keys declared, and the lead
    /// hands over to the puts that queue meanwhile when dropped. Its blob back.
    Lead(Lead<'a, Puts>, Vec<u8>),
    /// Queued: [`wait`] for its reply.
    Queued(oneshot::Receiver<Result<BatchedPut>>),
    /// The node of the slot is not known (no slot map yet), or the queues are at their
    /// limit (`bound.rs`): it goes alone, unbatched. Its blob back.
    Alone(Vec<u8>),
    /// The entry was lost on its way into the lane (not met: an error rather than a
    /// panic, should it ever be).
    Lost,
}

/// Enters `entry`, a put of `kind`, into its node's lane.
pub(crate) fn enter<'a>(
    puts: &'a Arc<Puts>,
    entry: BatchEntry,
    kind: &BatchFunction,
) -> PutTurn<'a> {
    let bytes = entry.head.len() + entry.key.len() + entry.blob.len() + entry.key_only.len();
    let slot = entry.slot;
    let mut entry = Some(entry);
    let entered = puts.deployment.router.with_master(slot, |addr| {
        let entry = entry.take()?;
        let key = kind.lane_key(addr);
        let make_lane = || PutLane {
            key: Arc::from(&*key),
            kind: kind.clone(),
        };
        Some(queue::enter(puts, &*key, make_lane, entry, bytes))
    });
    match (entered.flatten(), entry) {
        (Some(Entered::Lead(lead, entry)), _) => PutTurn::Lead(lead, entry.blob),
        (Some(Entered::Queued(receiver)), _) => PutTurn::Queued(receiver),
        (Some(Entered::Full(entry)), _) | (None, Some(entry)) => PutTurn::Alone(entry.blob),
        // Not met: the closure takes the entry only to enter it.
        (None, None) => PutTurn::Lost,
    }
}

/// The reply of a queued put ([`PutTurn::Queued`]).
pub(crate) async fn wait(
    puts: &Puts,
    receiver: oneshot::Receiver<Result<BatchedPut>>,
) -> Result<BatchedPut> {
    queue::wait(&puts.deployment.router, receiver).await
}

/// One batch call for `batch` (on the node of its first entry's slot).
async fn send(puts: &Puts, kind: &BatchFunction, batch: &[Waiter<Puts>]) -> Result<Value> {
    let Some(first) = batch.first() else {
        return Ok(Value::Array(Vec::new()));
    };
    let size: usize = batch
        .iter()
        .map(|w| {
            let e = &w.payload;
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
                cmd.arg(&*w.payload.head)
                    .arg(&w.payload.key)
                    .arg(w.payload.blob.as_slice());
            }
        }
        BatchFunction::UpsertBatch(upsert) => {
            cmd.arg(&scripts().upsert_batch.function).arg(0);
            upsert.settings.write(&mut cmd, None);
            cmd.arg(puts.deployment.origin())
                .arg(puts.deployment.channel_suffix())
                .arg(upsert.mode.arg(false));
            for w in batch {
                cmd.arg(&*w.payload.head)
                    .arg(&w.payload.key)
                    .arg(w.payload.blob.as_slice())
                    .arg(&w.payload.ttl)
                    .arg(w.payload.key_only.as_slice());
            }
        }
    }
    let reply = puts
        .deployment
        .execute(vec![Request::new(first.payload.slot, cmd)])
        .await?
        .pop();
    Ok(reply.unwrap_or(Value::Nil))
}

/// Hands each waiter of `batch` its reply from `reply` (one per entry; -1: undone).
fn deliver(batch: Vec<Waiter<Puts>>, reply: Result<Value>) {
    match reply {
        Ok(Value::Array(values)) if values.len() == batch.len() => {
            for (w, value) in batch.into_iter().zip(values) {
                let done = match value {
                    Value::Int(-1) => BatchedPut::SendAlone(w.payload.blob),
                    value => BatchedPut::Replied(value),
                };
                w.answer.send(Ok(done));
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
                w.answer.send(Ok(BatchedPut::SendAlone(w.payload.blob)));
            }
        }
        Ok(other) => {
            let e = Error::Store(format!("unexpected put_batch reply: {other:?}"));
            queue::fail(batch.into_iter().map(|w| w.answer), &e);
        }
        Err(e) => queue::fail(batch.into_iter().map(|w| w.answer), &e),
    }
}
