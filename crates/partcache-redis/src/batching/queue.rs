//! What the read and put queues share: how a waiting request awaits its result, and
//! how a batch is cut and failed.

use partcache::{Error, Result};
use tokio::sync::oneshot;

use crate::routing::Router;

/// A waiting request's result, within the response timeout from the start of its cache
/// call (`Router::deadline`): a request that waited for the one before it and then
/// went in a batch that also stalled must not take two timeouts (when it times out,
/// like any call that did, it may still be carried out).
pub(super) async fn wait<T>(router: &Router, receiver: oneshot::Receiver<Result<T>>) -> Result<T> {
    let timeout = router.timeout();
    let deadline = router.deadline();
    match tokio::time::timeout_at(deadline.into(), receiver).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(Error::Unavailable(
            "a batched request was dropped (runtime shutting down)".into(),
        )),
        Err(_) => Err(Error::Timeout(timeout)),
    }
}

/// Answers every one of `replies` with `e`.
pub(super) fn fail<T>(replies: impl Iterator<Item = oneshot::Sender<Result<T>>>, e: &Error) {
    for reply in replies {
        // A waiter that gave up has dropped its receiver: nothing to do.
        let _ = reply.send(Err(e.clone()));
    }
}

/// `waiting` in batches of at most `max`, in order.
pub(super) fn batches<T>(waiting: Vec<T>, max: usize) -> Vec<Vec<T>> {
    let mut batches = Vec::with_capacity(waiting.len().div_ceil(max.max(1)));
    let mut waiting = waiting.into_iter().peekable();
    while waiting.peek().is_some() {
        batches.push(waiting.by_ref().take(max.max(1)).collect());
    }
    batches
}

/// The error of a request that found the server unreachable or silent: the requests
/// that queued behind it share it (see the module docs).
pub(super) fn unreachable<T>(result: &Result<T>) -> Option<Error> {
    match result {
        Err(e @ (Error::Timeout(_) | Error::Unavailable(_))) => Some(e.clone()),
        _ => None,
    }
}
