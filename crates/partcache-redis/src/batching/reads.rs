//! One-key plain reads on a standalone server, batched into `MGET`s (see the module
//! docs of [`super`]). Only where any keys may share an `MGET`: a standalone server (a
//! cluster refuses keys of different slots in one command, and with 231 partitions
//! concurrent reads rarely share a slot). Only for reads that need no bookkeeping
//! (plain reads, see `store/cache.rs`).

use std::sync::Arc;

use partcache::{Error, Result};
use redis::{Cmd, Value};

use crate::deployment::Deployment;
use crate::routing::Request;

use super::bound::Bound;
use super::queue::{self, Batch, Entered, Lanes, Waiter, unreachable};

/// The reads of one deployment: one lane, the server. See the module docs.
pub(crate) struct Reads {
    /// The deployment the reads go to.
    deployment: Arc<Deployment>,
    lanes: Lanes<Reads>,
}

impl Reads {
    /// The read queue of `deployment`, bounded by `bound`.
    pub(crate) fn new(deployment: Arc<Deployment>, bound: Arc<Bound>) -> Reads {
        Reads {
            deployment,
            lanes: Lanes::new(bound),
        }
    }
}

impl Batch for Reads {
    /// A standalone server is one lane.
    type Lane = ();
    /// The entry key.
    type Payload = String;
    /// A `GET`'s reply: a bulk string or nil.
    type Reply = Value;
    const WHAT: &'static str = "read";
    /// Most keys in one `MGET`.
    const MAX: usize = 256;
    /// Two `MGET`s on their way: with one lane for the whole server, the client would
    /// otherwise wait for the server and the server for the client (see the module
    /// docs of [`super`]).
    const DEPTH: usize = 2;

    fn lanes(&self) -> &Lanes<Self> {
        &self.lanes
    }

    async fn send(&self, _lane: &(), batch: Vec<Waiter<Self>>) -> Option<Error> {
        let mut cmd = redis::cmd(if batch.len() == 1 { "GET" } else { "MGET" });
        for w in &batch {
            cmd.arg(&w.payload);
        }
        let reply = send(self, cmd).await;
        let failed = unreachable(&reply);
        deliver(batch, reply);
        failed
    }
}

/// Reads `key` (a `GET`'s reply: a bulk string or nil) on the deployment, batched with
/// concurrent reads.
pub(crate) async fn get(reads: &Arc<Reads>, key: String) -> Result<Value> {
    let bytes = key.len();
    match queue::enter(reads, &(), || (), key, bytes) {
        Entered::Queued(receiver) => queue::wait(&reads.deployment.router, receiver).await,
        // The queues are at their limit: a `GET` of its own (`bound.rs`).
        Entered::Full(key) => Box::pin(send(reads, get_cmd(&key))).await,
        Entered::Lead(mut lead, key) => {
            // Whatever happens to this call (an error, or its caller dropping it), the
            // reads that queued behind it are seen to when `lead` goes. Boxed, as
            // above: most reads wait in a batch, and the send's future in place would
            // make every read's (which the store boxes) twice as large.
            let result = Box::pin(send(reads, get_cmd(&key))).await;
            lead.finished(&result);
            result
        }
    }
}

fn get_cmd(key: &str) -> Cmd {
    let mut cmd = Cmd::with_capacity(2, 8 + key.len());
    cmd.arg("GET").arg(key);
    cmd
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

/// Hands each waiter of `batch` its value from `reply` (a `GET`'s for one waiter, an
/// `MGET`'s for more).
fn deliver(batch: Vec<Waiter<Reads>>, reply: Result<Value>) {
    match reply {
        Ok(value) if batch.len() == 1 => {
            if let Some(w) = batch.into_iter().next() {
                w.answer.send(Ok(value));
            }
        }
        Ok(Value::Array(values)) if values.len() == batch.len() => {
            for (w, value) in batch.into_iter().zip(values) {
                w.answer.send(Ok(value));
            }
        }
        Ok(other) => {
            let e = Error::Store(format!("unexpected MGET reply: {other:?}"));
            queue::fail(batch.into_iter().map(|w| w.answer), &e);
        }
        Err(e) => queue::fail(batch.into_iter().map(|w| w.answer), &e),
    }
}
