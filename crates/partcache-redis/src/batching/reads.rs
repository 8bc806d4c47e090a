//! One-key plain reads on a standalone server, batched into `MGET`s (see the module
//! docs of [`super`]). Only where any keys may share an `MGET`: a standalone server (a
//! cluster refuses keys of different slots in one command, and with 231 partitions
//! concurrent reads rarely share a slot). Only for reads that need no bookkeeping
//! (plain reads, see `store/cache.rs`).

use std::sync::Arc;

use partcache::{Error, Result};
use redis::{Cmd, Value};
use tokio::sync::oneshot;

use crate::deployment::Deployment;
use crate::routing::Request;

use super::bound::{Bound, Pending};
use super::queue::{self, unreachable};

/// Most keys in one `MGET` (the rest wait for the next one).
const MAX_KEYS: usize = 256;

/// The reads of one deployment. See the module docs.
pub(crate) struct Reads {
    /// The deployment the reads go to.
    deployment: Arc<Deployment>,
    /// The bound shared with the puts' queues.
    bound: Arc<Bound>,
    state: parking_lot::Mutex<State>,
}

impl Reads {
    /// The read queue of `deployment`, bounded by `bound`.
    pub(crate) fn new(deployment: Arc<Deployment>, bound: Arc<Bound>) -> Reads {
        Reads {
            deployment,
            bound,
            state: parking_lot::Mutex::default(),
        }
    }
}

#[derive(Default)]
struct State {
    /// A read or an `MGET` is on its way; new reads wait for it.
    busy: bool,
    waiting: Vec<Waiter>,
}

struct Waiter {
    key: String,
    reply: oneshot::Sender<Result<Value>>,
    /// Its room in the queues, freed with it.
    _pending: Pending,
}

/// Reads `key` (a `GET`'s reply: a bulk string or nil) on the deployment, batched with
/// concurrent reads.
pub(crate) async fn get(reads: &Arc<Reads>, key: String) -> Result<Value> {
    let role = {
        let mut state = reads.state.lock();
        if !state.busy {
            state.busy = true;
            ReadRole::Leader(key)
        } else if let Some(pending) = reads.bound.admit(key.len()) {
            let (reply, receiver) = oneshot::channel();
            state.waiting.push(Waiter {
                key,
                reply,
                _pending: pending,
            });
            ReadRole::Follower(receiver)
        } else {
            ReadRole::Alone(key)
        }
    };
    match role {
        ReadRole::Follower(receiver) => queue::wait(&reads.deployment.router, receiver).await,
        // The queues are at their limit: a `GET` of its own (`bound.rs`).
        ReadRole::Alone(key) => {
            let mut cmd = Cmd::with_capacity(2, 8 + key.len());
            cmd.arg("GET").arg(key);
            send(reads, cmd).await
        }
        ReadRole::Leader(key) => {
            // Whatever happens to this call (an error, or its caller dropping it), the
            // reads that queued behind it are seen to.
            let mut next = HandOff {
                reads,
                failed: None,
            };
            let mut cmd = Cmd::with_capacity(2, 8 + key.len());
            cmd.arg("GET").arg(key);
            let result = send(reads, cmd).await;
            next.failed = unreachable(&result);
            result
        }
    }
}

/// What a read does: go now and hand over to the reads that queue meanwhile, wait for
/// the next `MGET`, or go alone (the queues are full).
enum ReadRole {
    Leader(String),
    Follower(oneshot::Receiver<Result<Value>>),
    Alone(String),
}

/// Sends one read command; the reply of a `GET` or an `MGET`.
async fn send(reads: &Reads, cmd: Cmd) -> Result<Value> {
    let request = Request {
        read_only: true,
        // A standalone server holds every slot.
        ..Request::new(0, cmd)
    };
    let reply = reads.deployment.execute(vec![request]).await?.pop();
    Ok(reply.unwrap_or(Value::Nil))
}

/// On drop: sends the reads that queued (or fails them with `failed`), or marks the
/// deployment idle.
struct HandOff<'a> {
    reads: &'a Arc<Reads>,
    failed: Option<Error>,
}

impl Drop for HandOff<'_> {
    fn drop(&mut self) {
        let reads = self.reads;
        let failed = self.failed.take();
        let runtime = tokio::runtime::Handle::try_current();
        let waiting = {
            let mut state = reads.state.lock();
            if state.waiting.is_empty() {
                state.busy = false;
                return;
            }
            if failed.is_none() && runtime.is_ok() {
                None
            } else {
                state.busy = false;
                Some(std::mem::take(&mut state.waiting))
            }
        };
        match (waiting, runtime) {
            // Outside the lock: a runtime that is shutting down drops the task at once,
            // and its guard takes the lock.
            (None, Ok(runtime)) => {
                runtime.spawn(drain(Draining {
                    reads: reads.clone(),
                    done: false,
                }));
            }
            (waiting, _) => {
                let e = failed.unwrap_or_else(|| {
                    Error::Unavailable("no runtime to send a batched read on".into())
                });
                fail(waiting.unwrap_or_default(), &e);
            }
        }
    }
}

fn fail(waiting: Vec<Waiter>, e: &Error) {
    queue::fail(waiting.into_iter().map(|w| w.reply), e);
}

/// Held by a drain task (given to it, so that it goes with the task even if the task
/// never runs): if the task ends without finishing (its runtime shut down, or it
/// panicked), marks the deployment idle and fails the reads still queued, so that later
/// reads, perhaps on another runtime, are not left queued behind nobody.
struct Draining {
    reads: Arc<Reads>,
    done: bool,
}

impl Drop for Draining {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let waiting = {
            let mut state = self.reads.state.lock();
            state.busy = false;
            std::mem::take(&mut state.waiting)
        };
        let e = Error::Unavailable("a batched read was dropped (runtime shutting down)".into());
        fail(waiting, &e);
    }
}

/// Sends the waiting reads, all of them at once (one `MGET` per [`MAX_KEYS`]), until
/// none is left. Reads whose callers gave up are not sent.
async fn drain(mut guard: Draining) {
    let reads = guard.reads.clone();
    let mut failed: Option<Error> = None;
    loop {
        let waiting: Vec<Waiter> = {
            let mut state = reads.state.lock();
            state.waiting.retain(|w| !w.reply.is_closed());
            if state.waiting.is_empty() {
                state.busy = false;
                guard.done = true;
                return;
            }
            std::mem::take(&mut state.waiting)
        };
        if let Some(e) = failed.take() {
            fail(waiting, &e);
            continue;
        }
        let batches = queue::batches(waiting, MAX_KEYS);
        let sends = batches.iter().map(|batch| {
            let mut cmd = redis::cmd(if batch.len() == 1 { "GET" } else { "MGET" });
            for w in batch {
                cmd.arg(&w.key);
            }
            send(&reads, cmd)
        });
        let replies = futures::future::join_all(sends).await;
        for (batch, reply) in batches.into_iter().zip(replies) {
            failed = failed.or_else(|| unreachable(&reply));
            deliver(batch, reply);
        }
    }
}

/// Hands each waiter of `batch` its value from `reply` (a `GET`'s for one waiter, an
/// `MGET`'s for more).
fn deliver(batch: Vec<Waiter>, reply: Result<Value>) {
    match reply {
        Ok(value) if batch.len() == 1 => {
            if let Some(w) = batch.into_iter().next() {
                let _ = w.reply.send(Ok(value));
            }
        }
        Ok(Value::Array(values)) if values.len() == batch.len() => {
            for (w, value) in batch.into_iter().zip(values) {
                let _ = w.reply.send(Ok(value));
            }
        }
        Ok(other) => fail(
            batch,
            &Error::Store(format!("unexpected MGET reply: {other:?}")),
        ),
        Err(e) => fail(batch, &e),
    }
}
