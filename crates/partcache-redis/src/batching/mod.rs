//! Coalescing of concurrent requests of one deployment: while one is on its way, those
//! that arrive meanwhile wait, and go together in one command as soon as it is back
//! (then the ones that arrived during that command, and so on). A request with nothing
//! in flight goes at once, alone, so a lone caller waits no longer than before; under
//! load, dozens of requests cost the server one command instead of dozens, and the
//! client one reply to parse (the raw client reaches about a quarter of what a
//! pipelining client gets from the same servers).
//!
//! * [`reads`]: one-key plain reads on a standalone server, as `MGET`s.
//! * [`puts`]: the common put (`lua/put.lua`) per node, as one `put_batch` call.
//!
//! The queues are bounded ([`bound`]): a request that finds them full is sent alone.
//!
//! A request that waits is sent after every write whose reply came back before it was
//! asked, so a caller still reads its own writes. Requests that queued behind one that
//! timed out or found the server unreachable fail with it (each within one response
//! timeout of its start) rather than try again.

pub(crate) mod bound;
pub(crate) mod puts;
pub(crate) mod reads;

use std::sync::Arc;

use partcache::{Error, Result};
use tokio::sync::oneshot;

use crate::backend::Deployment;

/// The coalescing state of one deployment.
pub(crate) struct Coalescer {
    pub reads: reads::Reads,
    pub puts: puts::Puts,
    /// The bound on what both queue.
    pub bound: Arc<bound::Bound>,
}

impl Coalescer {
    /// The queues of the deployment described as `deployment`.
    pub fn new(settings: bound::BatchingSettings, deployment: &str) -> Coalescer {
        Coalescer {
            reads: reads::Reads::default(),
            puts: puts::Puts::default(),
            bound: bound::Bound::new(settings, deployment),
        }
    }
}

/// A waiting request's result, within the response timeout from the start of its cache
/// call (`Router::deadline`): a request that waited for the one before it and then
/// went in a batch that also stalled must not take two timeouts (when it times out,
/// like any call that did, it may still be carried out).
async fn wait<T>(deployment: &Deployment, receiver: oneshot::Receiver<Result<T>>) -> Result<T> {
    let timeout = deployment.router.timeout();
    let deadline = deployment.router.deadline();
    match tokio::time::timeout_at(deadline.into(), receiver).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Error::Unavailable(
            "a coalesced request was dropped (runtime shutting down)".into(),
        )),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

/// Answers every one of `replies` with `e`.
fn fail<T>(replies: impl Iterator<Item = oneshot::Sender<Result<T>>>, e: &Error) {
    for reply in replies {
        // A waiter that gave up has dropped its receiver: nothing to do.
        let _ = reply.send(Err(e.clone()));
    }
}

/// `waiting` in batches of at most `max`, in order.
fn batches<T>(waiting: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let mut batches = Vec::with_capacity(waiting.len().div_ceil(max.max(1)));
    let mut waiting = waiting.into_iter().peekable();
    while waiting.peek().is_some() {
        batches.push(waiting.by_ref().take(max.max(1)).collect());
    }
    batches
}

/// The error of a request that found the server unreachable or silent: the requests
/// that queued behind it share it (see the module docs).
fn unreachable<T>(result: &Result<T>) -> Option<Error> {
    match result {
        Err(e @ (Error::Timeout(_) | Error::Unavailable(_))) => Some(e.clone()),
        _ => None,
    }
}
