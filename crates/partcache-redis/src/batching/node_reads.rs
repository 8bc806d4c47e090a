//! One-key plain reads on a cluster, batched per node into pipelines (see the module
//! docs of [`super`]): a cluster refuses an `MGET` whose keys span slots, and with 231
//! partitions concurrent reads rarely share one, but the `GET`s for one node can
//! still go in one write and come back in one read. The redis-rs connection batches
//! only the requests that happen to wait in its queue when it writes; measured on
//! 64 tasks reading from a 3-master cluster, those were about one system call per
//! two reads on each side. Only for reads that need no bookkeeping (plain reads, see
//! `store/cache.rs`).

use std::sync::Arc;

use partcache::{Error, Result};
use redis::Value;

use crate::deployment::Deployment;
use crate::routing::Request;

use super::bound::Bound;
use super::queue::{self, Answer, Batch, Entered, Lanes, Waiter, unreachable};

/// The reads of one cluster deployment, one lane per master address. See the module
/// docs.
pub(crate) struct NodeReads {
    /// The deployment the reads go to.
    deployment: Arc<Deployment>,
    lanes: Lanes<NodeReads>,
}

impl NodeReads {
    /// The per-node read queues of `deployment`, bounded by `bound`.
    pub(crate) fn new(deployment: Arc<Deployment>, bound: Arc<Bound>) -> NodeReads {
        NodeReads {
            deployment,
            lanes: Lanes::new(bound),
        }
    }
}

impl Batch for NodeReads {
    /// The master's address.
    type Lane = Arc<str>;
    /// The read (a `GET` of one key, with its slot).
    type Payload = Request;
    /// The `GET`'s reply: a bulk string, nil, or an error reply.
    type Reply = Value;
    const WHAT: &'static str = "read";
    /// Most reads in one pipeline.
    const MAX: usize = 256;

    fn lanes(&self) -> &Lanes<Self> {
        &self.lanes
    }

    /// One pipeline through the router, which follows each read's redirections.
    async fn send(&self, _lane: &Arc<str>, batch: Vec<Waiter<Self>>) -> Option<Error> {
        let (requests, answers): (Vec<Request>, Vec<_>) =
            batch.into_iter().map(|w| (w.payload, w.answer)).unzip();
        let result = self.deployment.execute(requests).await;
        let failed = unreachable(&result);
        deliver(answers, result);
        failed
    }
}

/// Runs the one-key read `request` (a `GET` of a key of `bytes` bytes; its reply, a
/// bulk string or nil, or an error reply), batched with the concurrent reads for the
/// same node.
pub(crate) async fn get(reads: &Arc<NodeReads>, request: Request, bytes: usize) -> Result<Value> {
    let mut request = Some(request);
    let slot = request.as_ref().map_or(0, |r| r.slot);
    let entered = reads.deployment.router.with_master(slot, |addr| {
        let request = request.take()?;
        Some(queue::enter(
            reads,
            addr,
            || Arc::from(addr),
            request,
            bytes,
        ))
    });
    let entered = match (entered.flatten(), request) {
        (Some(entered), _) => entered,
        // No slot map yet: alone, through the router.
        (None, Some(request)) => return send_one(reads, request).await,
        (None, None) => return Err(Error::Store("a batched read lost its request".into())),
    };
    match entered {
        Entered::Queued(receiver) => queue::wait(&reads.deployment.router, receiver).await,
        // The queues are at their limit: alone.
        Entered::Full(request) => send_one(reads, request).await,
        Entered::Lead(mut lead, request) => {
            // Whatever happens to this call (an error, or its caller dropping it), the
            // reads that queued behind it are seen to when `lead` goes.
            let result = send_one(reads, request).await;
            lead.finished(&result);
            result
        }
    }
}

/// Sends one read by itself. Boxed: most reads wait in a batch, and the send's future
/// in place would make every read's (which the store boxes) twice as large.
async fn send_one(reads: &NodeReads, request: Request) -> Result<Value> {
    let reply = Box::pin(reads.deployment.execute(vec![request]))
        .await?
        .pop();
    Ok(reply.unwrap_or(Value::Nil))
}

/// Hands each waiter its reply from `result` (one per request, in order).
fn deliver(answers: Vec<Answer<NodeReads>>, result: Result<Vec<Value>>) {
    match result {
        Ok(values) if values.len() == answers.len() => {
            for (answer, value) in answers.into_iter().zip(values) {
                answer.send(Ok(value));
            }
        }
        Ok(values) => {
            let e = Error::Store(format!(
                "{} replies to a pipeline of {} reads",
                values.len(),
                answers.len()
            ));
            queue::fail(answers, &e);
        }
        Err(e) => queue::fail(answers, &e),
    }
}
