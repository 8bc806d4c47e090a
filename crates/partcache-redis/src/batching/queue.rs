//! The queue that the read and put batches share (see the module docs of [`super`]):
//! lanes (one per node, or per node and function) with up to [`Batch::DEPTH`] requests
//! or batches on their way, the requests waiting in each, the hand-over from a request that went alone to a task that sends
//! what queued behind it, and how a batch is cut and failed. Each kind of batch says
//! only what a lane is, what a request carries, and how a batch is sent ([`Batch`]).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;

use partcache::{Error, Result};
use tokio::sync::oneshot;

use super::bound::{Bound, Pending};
use crate::routing::Router;

/// A kind of batch: what its lanes are, what a request carries, and how a batch goes.
pub(crate) trait Batch: Send + Sync + Sized + 'static {
    /// What a lane is known by (a node's address, or nothing for a standalone server).
    type Lane: Hash + Eq + Clone + Send + Sync + 'static;
    /// What a waiting request carries into its batch.
    type Payload: Send + 'static;
    /// What a waiting request gets back.
    type Reply: Send + 'static;
    /// What the requests are, in error messages ("read", "put").
    const WHAT: &'static str;
    /// Most requests in one batch (the rest go in further batches, at once).
    const MAX: usize;
    /// Most requests or batches of one lane on their way at once (see the module
    /// docs of [`super`]).
    const DEPTH: usize = 1;

    /// The lanes of this kind of batch.
    fn lanes(&self) -> &Lanes<Self>;
    /// Sends `batch` (at most [`Batch::MAX`] requests of `lane`) and answers each of
    /// its requests. Returns the error of a batch that found the server unreachable or
    /// silent ([`unreachable`]), which the requests queued behind it then share.
    fn send(
        &self,
        lane: &Self::Lane,
        batch: Vec<Waiter<Self>>,
    ) -> impl Future<Output = Option<Error>> + Send;
}

/// A request waiting in a lane for its batch.
pub(crate) struct Waiter<B: Batch> {
    /// What it carries into the batch.
    pub payload: B::Payload,
    /// Where its reply goes.
    pub answer: Answer<B>,
}

/// Where a waiting request's reply goes, and its room in the queues (freed with it).
pub(crate) struct Answer<B: Batch> {
    reply: oneshot::Sender<Result<B::Reply>>,
    _pending: Pending,
}

impl<B: Batch> Answer<B> {
    /// Answers the request (nothing happens if its caller gave up).
    pub(crate) fn send(self, result: Result<B::Reply>) {
        let _ = self.reply.send(result);
    }
}

/// The lanes of one kind of batch, and the bound on what waits in them. See the module
/// docs.
pub(crate) struct Lanes<B: Batch> {
    /// Looked up on every request, by a node's address or nothing: foldhash rather
    /// than SipHash.
    lanes: parking_lot::Mutex<HashMap<B::Lane, Lane<B>, foldhash::fast::RandomState>>,
    /// The bound shared with the deployment's other queues.
    bound: Arc<Bound>,
}

impl<B: Batch> Lanes<B> {
    /// No lanes yet, bounded by `bound`.
    pub(crate) fn new(bound: Arc<Bound>) -> Self {
        Lanes {
            lanes: parking_lot::Mutex::default(),
            bound,
        }
    }
}

struct Lane<B: Batch> {
    /// The lane's key, which a lead takes a copy of (cheap: the lanes' keys are
    /// reference-counted or empty) rather than make one.
    key: B::Lane,
    /// Requests or batches on their way: new requests wait once there are
    /// [`Batch::DEPTH`].
    in_flight: usize,
    waiting: Vec<Waiter<B>>,
}

/// How a request entered its lane ([`enter`]).
pub(crate) enum Entered<'a, B: Batch> {
    /// The lane had room and nobody waiting: the request goes now, alone, and the lead
    /// hands its place over to the requests that queue meanwhile when it is dropped.
    /// Its payload back.
    Lead(Lead<'a, B>, B::Payload),
    /// Queued: its reply comes with its batch ([`wait`] for it).
    Queued(oneshot::Receiver<Result<B::Reply>>),
    /// The queues are at their bound (`bound.rs`): it goes alone. Its payload back.
    Full(B::Payload),
}

/// Enters a request of `bytes` bytes carrying `payload` into lane `lane` (whose owned
/// key `make_lane` makes when the lane is new): it leads when the lane has room, else it
/// queues, unless the queues are at their bound.
pub(crate) fn enter<'a, B, Q>(
    batch: &'a Arc<B>,
    lane: &Q,
    make_lane: impl FnOnce() -> B::Lane,
    payload: B::Payload,
    bytes: usize,
) -> Entered<'a, B>
where
    B: Batch,
    B::Lane: Borrow<Q>,
    Q: Hash + Eq + ?Sized,
{
    let mut lanes = batch.lanes().lanes.lock();
    let state = match lanes.get_mut(lane) {
        Some(state) => state,
        None => {
            let key = make_lane();
            lanes.entry(key.clone()).or_insert_with(|| Lane {
                key,
                in_flight: 0,
                waiting: Vec::new(),
            })
        }
    };
    // Requests already waiting go first: a newcomer leads only when none waits.
    if state.in_flight < B::DEPTH && state.waiting.is_empty() {
        // Made before the lead counts in flight: from then on, only the lead may free
        // its place.
        let lead_lane = state.key.clone();
        state.in_flight += 1;
        drop(lanes);
        let lead = Lead {
            batch,
            lane: Some(lead_lane),
            failed: None,
        };
        return Entered::Lead(lead, payload);
    }
    let Some(pending) = batch.lanes().bound.admit(bytes) else {
        return Entered::Full(payload);
    };
    let (reply, receiver) = oneshot::channel();
    state.waiting.push(Waiter {
        payload,
        answer: Answer {
            reply,
            _pending: pending,
        },
    });
    Entered::Queued(receiver)
}

/// The request on its way for its lane. Dropping it hands the lane over to the
/// requests that queued meanwhile (or fails them with [`Lead::finished`]'s error).
pub(crate) struct Lead<'a, B: Batch> {
    batch: &'a Arc<B>,
    lane: Option<B::Lane>,
    failed: Option<Error>,
}

impl<B: Batch> Lead<'_, B> {
    /// Records how the lead request ended: if the server was unreachable or silent,
    /// the requests that queued behind it fail with it.
    pub(crate) fn finished<T>(&mut self, result: &Result<T>) {
        self.failed = unreachable(result);
    }
}

impl<B: Batch> Drop for Lead<'_, B> {
    fn drop(&mut self) {
        let Some(lane) = self.lane.take() else {
            return;
        };
        let batch = self.batch;
        let runtime = tokio::runtime::Handle::try_current();
        let waiting = {
            let mut lanes = batch.lanes().lanes.lock();
            let Some(state) = lanes.get_mut(&lane) else {
                return;
            };
            if state.waiting.is_empty() {
                state.in_flight = state.in_flight.saturating_sub(1);
                return;
            }
            if self.failed.is_none() && runtime.is_ok() {
                None
            } else {
                state.in_flight = state.in_flight.saturating_sub(1);
                Some(std::mem::take(&mut state.waiting))
            }
        };
        match (waiting, runtime) {
            // Outside the lock: a runtime that is shutting down drops the task at once,
            // and its guard takes the lock.
            (None, Ok(runtime)) => {
                runtime.spawn(drain(Draining {
                    batch: batch.clone(),
                    lane,
                    done: false,
                }));
            }
            (waiting, _) => {
                let e = self.failed.take().unwrap_or_else(|| {
                    Error::Unavailable(format!("no runtime to send a batched {} on", B::WHAT))
                });
                fail(
                    waiting.unwrap_or_default().into_iter().map(|w| w.answer),
                    &e,
                );
            }
        }
    }
}

/// Held by a drain task (given to it, so that it goes with the task even if the task
/// never runs): if the task ends without finishing (its runtime shut down, or it
/// panicked), gives its place in the lane up and fails the requests still queued, so that later
/// requests, perhaps on another runtime, are not left queued behind nobody.
struct Draining<B: Batch> {
    batch: Arc<B>,
    lane: B::Lane,
    done: bool,
}

impl<B: Batch> Drop for Draining<B> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let waiting = {
            let mut lanes = self.batch.lanes().lanes.lock();
            let Some(state) = lanes.get_mut(&self.lane) else {
                return;
            };
            state.in_flight = state.in_flight.saturating_sub(1);
            std::mem::take(&mut state.waiting)
        };
        let e = Error::Unavailable(format!(
            "a batched {} was dropped (runtime shutting down)",
            B::WHAT
        ));
        fail(waiting.into_iter().map(|w| w.answer), &e);
    }
}

/// Sends the lane's waiting requests, all of them at once ([`Batch::MAX`] per
/// batch), until none is left. Requests whose callers gave up are not sent (unbatched,
/// such a request would not have been sent either, or sent before the caller's next
/// command).
async fn drain<B: Batch>(mut guard: Draining<B>) {
    let batch = guard.batch.clone();
    let lane = guard.lane.clone();
    let mut failed: Option<Error> = None;
    loop {
        let waiting = {
            let mut lanes = batch.lanes().lanes.lock();
            let Some(state) = lanes.get_mut(&lane) else {
                guard.done = true;
                return;
            };
            state.waiting.retain(|w| !w.answer.reply.is_closed());
            if state.waiting.is_empty() {
                state.in_flight = state.in_flight.saturating_sub(1);
                guard.done = true;
                return;
            }
            std::mem::take(&mut state.waiting)
        };
        if let Some(e) = failed.take() {
            fail(waiting.into_iter().map(|w| w.answer), &e);
            continue;
        }
        let sends = batches(waiting, B::MAX)
            .into_iter()
            .map(|requests| batch.send(&lane, requests));
        for error in futures::future::join_all(sends).await {
            failed = failed.or(error);
        }
    }
}

/// A waiting request's result, within the response timeout from the start of its cache
/// call (`Router::deadline`): a request that waited for the one before it and then
/// went in a batch that also stalled must not take two timeouts (when it times out,
/// like any call that did, it may still be carried out).
pub(crate) async fn wait<T>(router: &Router, receiver: oneshot::Receiver<Result<T>>) -> Result<T> {
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

/// Answers every one of `answers` with `e`.
pub(crate) fn fail<B: Batch>(answers: impl IntoIterator<Item = Answer<B>>, e: &Error) {
    for answer in answers {
        answer.send(Err(e.clone()));
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
pub(crate) fn unreachable<T>(result: &Result<T>) -> Option<Error> {
    match result {
        Err(e @ (Error::Timeout(_) | Error::Unavailable(_))) => Some(e.clone()),
        _ => None,
    }
}
