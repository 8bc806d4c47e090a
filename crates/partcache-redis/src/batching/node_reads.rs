//! One-key plain reads on a cluster, batched per node into pipelines (see the module
//! docs of [`super`]): a cluster refuses an `MGET` whose keys span slots, and with 231
//! partitions concurrent reads rarely share one, but the `GET`s for one node can
//! still go in one write and come back in one read. The redis-rs connection batches
//! only the requests that happen to wait in its queue when it writes; measured on
//! 64 tasks reading from a 3-master cluster, those were about one system call per
//! two reads on each side. Only for reads that need no bookkeeping (plain reads, see
//! `store/cache.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use partcache::{Error, Result};
use redis::Value;
use tokio::sync::oneshot;

use crate::deployment::Deployment;
use crate::routing::Request;

use super::bound::{Bound, Pending};
use super::queue::{self, unreachable};

/// Most reads in one pipeline (the rest go in further ones, at once).
const MAX_READS: usize = 256;

/// The reads of one cluster deployment, per master address. See the module docs.
pub(crate) struct NodeReads {
    /// The deployment the reads go to.
    deployment: Arc<Deployment>,
    /// The bound shared with the other queues.
    bound: Arc<Bound>,
    queues: parking_lot::Mutex<HashMap<String, Queue>>,
}

impl NodeReads {
    /// The per-node read queues of `deployment`, bounded by `bound`.
    pub(crate) fn new(deployment: Arc<Deployment>, bound: Arc<Bound>) -> NodeReads {
        NodeReads {
            deployment,
            bound,
            queues: parking_lot::Mutex::default(),
        }
    }
}

#[derive(Default)]
struct Queue {
    /// A read or a pipeline is on its way to the node; new reads wait for it.
    busy: bool,
    waiting: Vec<Waiter>,
}

struct Waiter {
    request: Request,
    reply: oneshot::Sender<Result<Value>>,
    /// Its room in the queues, freed with it.
    _pending: Pending,
}

/// What a read does: go now and hand over to the reads that queue meanwhile, wait for
/// the node's next pipeline, or go alone (the queues are full, or no slot map yet).
enum ReadRole {
    Leader(String, Request),
    Follower(oneshot::Receiver<Result<Value>>),
    Alone(Request),
}

/// Runs the one-key read `request` (a `GET` of a key of `bytes` bytes; its reply, a
/// bulk string or nil, or an error reply), batched with the concurrent reads for the
/// same node.
pub(crate) async fn get(reads: &Arc<NodeReads>, request: Request, bytes: usize) -> Result<Value> {
    let mut request = Some(request);
    let role = reads
        .deployment
        .router
        .with_master(request_slot(&request), |addr| {
            let mut queues = reads.queues.lock();
            let queue = match queues.get_mut(addr) {
                Some(queue) => queue,
                None => queues.entry(addr.to_string()).or_default(),
            };
            let request = request.take()?;
            if !queue.busy {
                queue.busy = true;
                return Some(ReadRole::Leader(addr.to_string(), request));
            }
            let Some(pending) = reads.bound.admit(bytes) else {
                return Some(ReadRole::Alone(request));
            };
            let (reply, receiver) = oneshot::channel();
            queue.waiting.push(Waiter {
                request,
                reply,
                _pending: pending,
            });
            Some(ReadRole::Follower(receiver))
        });
    let role = match (role.flatten(), request) {
        (Some(role), _) => role,
        // No slot map yet: alone, through the router.
        (None, Some(request)) => ReadRole::Alone(request),
        (None, None) => return Err(Error::Store("a batched read lost its request".into())),
    };
    match role {
        ReadRole::Follower(receiver) => queue::wait(&reads.deployment.router, receiver).await,
        ReadRole::Alone(request) => send_one(reads, request).await,
        ReadRole::Leader(addr, request) => {
            // Whatever happens to this call (an error, or its caller dropping it), the
            // reads that queued behind it are seen to.
            let mut next = HandOff {
                reads,
                addr,
                failed: None,
            };
            let result = send_one(reads, request).await;
            next.failed = unreachable(&result);
            result
        }
    }
}

fn request_slot(request: &Option<Request>) -> u16 {
    request.as_ref().map_or(0, |r| r.slot)
}

/// Sends one read by itself.
async fn send_one(reads: &NodeReads, request: Request) -> Result<Value> {
    let reply = reads.deployment.execute(vec![request]).await?.pop();
    Ok(reply.unwrap_or(Value::Nil))
}

/// On drop: sends the reads that queued for the node (or fails them with `failed`), or
/// marks the node idle.
struct HandOff<'a> {
    reads: &'a Arc<NodeReads>,
    addr: String,
    failed: Option<Error>,
}

impl Drop for HandOff<'_> {
    fn drop(&mut self) {
        let reads = self.reads;
        let failed = self.failed.take();
        let runtime = tokio::runtime::Handle::try_current();
        let waiting = {
            let mut queues = reads.queues.lock();
            let Some(queue) = queues.get_mut(&self.addr) else {
                return;
            };
            if queue.waiting.is_empty() {
                queue.busy = false;
                return;
            }
            if failed.is_none() && runtime.is_ok() {
                None
            } else {
                queue.busy = false;
                Some(std::mem::take(&mut queue.waiting))
            }
        };
        match (waiting, runtime) {
            // Outside the lock: a runtime that is shutting down drops the task at once,
            // and its guard takes the lock.
            (None, Ok(runtime)) => {
                runtime.spawn(drain(Draining {
                    reads: reads.clone(),
                    addr: std::mem::take(&mut self.addr),
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
/// panicked), marks the node idle and fails the reads still queued, so that later
/// reads, perhaps on another runtime, are not left queued behind nobody.
struct Draining {
    reads: Arc<NodeReads>,
    addr: String,
    done: bool,
}

impl Drop for Draining {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let waiting = {
            let mut queues = self.reads.queues.lock();
            let Some(queue) = queues.get_mut(&self.addr) else {
                return;
            };
            queue.busy = false;
            std::mem::take(&mut queue.waiting)
        };
        let e = Error::Unavailable("a batched read was dropped (runtime shutting down)".into());
        fail(waiting, &e);
    }
}

/// Sends the node's waiting reads, all of them at once (one pipeline per
/// [`MAX_READS`], through the router, which follows each read's redirections), until
/// none is left. Reads whose callers gave up are not sent.
async fn drain(mut guard: Draining) {
    let (reads, addr) = (guard.reads.clone(), guard.addr.clone());
    let mut failed: Option<Error> = None;
    loop {
        let waiting: Vec<Waiter> = {
            let mut queues = reads.queues.lock();
            let Some(queue) = queues.get_mut(&addr) else {
                guard.done = true;
                return;
            };
            queue.waiting.retain(|w| !w.reply.is_closed());
            if queue.waiting.is_empty() {
                queue.busy = false;
                guard.done = true;
                return;
            }
            std::mem::take(&mut queue.waiting)
        };
        if let Some(e) = failed.take() {
            fail(waiting, &e);
            continue;
        }
        let batches = queue::batches(waiting, MAX_READS);
        let sends = batches.into_iter().map(|batch| {
            let (requests, replies): (Vec<Request>, Vec<_>) = batch
                .into_iter()
                .map(|w| (w.request, (w.reply, w._pending)))
                .unzip();
            let reads = &reads;
            async move { (replies, reads.deployment.execute(requests).await) }
        });
        for (replies, result) in futures::future::join_all(sends).await {
            failed = failed.or_else(|| unreachable(&result));
            deliver(replies, result);
        }
    }
}

/// Hands each waiter its reply from `result` (one per request, in order).
fn deliver(waiters: Vec<(oneshot::Sender<Result<Value>>, Pending)>, result: Result<Vec<Value>>) {
    match result {
        Ok(values) if values.len() == waiters.len() => {
            for ((reply, _pending), value) in waiters.into_iter().zip(values) {
                let _ = reply.send(Ok(value));
            }
        }
        Ok(values) => {
            let e = Error::Store(format!(
                "{} replies to a pipeline of {} reads",
                values.len(),
                waiters.len()
            ));
            queue::fail(waiters.into_iter().map(|(reply, _)| reply), &e);
        }
        Err(e) => queue::fail(waiters.into_iter().map(|(reply, _)| reply), &e),
    }
}
