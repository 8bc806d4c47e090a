//! Batching of concurrent requests of one deployment: while a lane (a node, or a
//! standalone server) has as many requests on their way as it may, those that arrive
//! meanwhile wait, and go together in one command as soon as one is back (then the
//! ones that arrived during that command, and so on). A request that finds room goes
//! at once, alone, so a lone caller waits no longer than before; under load, dozens of
//! requests cost the server one command instead of dozens, and the client one reply to
//! parse (the raw client reaches about a quarter of what a pipelining client gets from
//! the same servers).
//!
//! How many may be on their way per lane: two for a standalone server's reads, one
//! otherwise. With one lane and one command on its way, the client waits while the
//! server runs the command, then the server while the client answers and gathers the
//! next, so the two are never busy at once; a second command lets them overlap. A
//! cluster's node lanes overlap already, and a second command per node there only
//! splits the batches and costs both sides more per request (measured side by side in
//! `docs/benchmarks.md`, "Redis and Valkey").
//!
//! * [`reads`]: one-key plain reads on a standalone server, as `MGET`s.
//! * [`node_reads`]: one-key plain reads on a cluster, per node, as pipelines of `GET`s.
//! * [`puts`]: unconditional puts per node, as one `put_batch` (the common put,
//!   `lua/put.lua`) or `upsert_batch` (`lua/upsert.lua`) call.
//!
//! All three share one queue ([`queue`]): lanes with room or full, the hand-over
//! from a request that went alone to a task that sends what queued behind it, and the
//! failing of what queued behind a request that found the server gone; each says only
//! what its lanes are, what a request carries and how a batch is sent.
//!
//! The queues are bounded ([`bound`]): a request that finds them full is sent alone.
//! [`Batcher`] holds a deployment's queues and the deployment they send on, so the
//! deployment knows nothing of them.
//!
//! A request that waits is sent after every write whose reply came back before it was
//! asked, so a caller still reads its own writes. Requests that queued behind one that
//! timed out or found the server unreachable fail with it (each within one response
//! timeout of its start) rather than try again.

pub(crate) mod bound;
pub(crate) mod node_reads;
pub(crate) mod puts;
mod queue;
pub(crate) mod reads;

use std::sync::Arc;

use crate::deployment::Deployment;

/// The batching of one deployment: its queues, and the deployment they send on.
pub(crate) struct Batcher {
    /// The deployment the batches go to.
    pub deployment: Arc<Deployment>,
    pub reads: Arc<reads::Reads>,
    pub node_reads: Arc<node_reads::NodeReads>,
    pub puts: Arc<puts::Puts>,
    /// The bound on what both queue.
    pub bound: Arc<bound::Bound>,
}

impl Batcher {
    /// The queues of `deployment`, bounded by its URL's batching settings.
    pub(crate) fn new(deployment: Arc<Deployment>) -> Arc<Batcher> {
        let bound = bound::Bound::new(deployment.url.batching, &deployment.url.display);
        Arc::new(Batcher {
            reads: Arc::new(reads::Reads::new(deployment.clone(), bound.clone())),
            node_reads: Arc::new(node_reads::NodeReads::new(
                deployment.clone(),
                bound.clone(),
            )),
            puts: Arc::new(puts::Puts::new(deployment.clone(), bound.clone())),
            deployment,
            bound,
        })
    }
}
