//! What the router needs from the connections to a deployment's nodes: send a command
//! or a pipeline to an address and get the replies, with the connection's response
//! timeout and the node's circuit breaker applied underneath. [`Pool`] is the one used
//! in production; unit tests put a scripted fake cluster in its place, so that routing
//! (redirections, retries, reloads, timeouts) is tested without servers.
//!
//! The router is generic over the transport, so the production path is statically
//! dispatched: no boxing and no allocation beyond what [`Pool`] does itself.

use std::future::Future;
use std::sync::Arc;

use partcache::Result;
use redis::{Cmd, Pipeline, Value};

use crate::connection::{Connection, Node, Pool};

/// The connections to a deployment's nodes, by address (`host:port`).
///
/// Every send fails with a typed error: [`partcache::Error::Timeout`] when the node did
/// not answer within the response timeout, [`partcache::Error::Unavailable`] when it
/// cannot be reached or the connection broke (the next send connects again),
/// [`partcache::Error::CircuitOpen`] at once while the node's breaker is open. A server
/// error is not a failed send: it comes back as a [`Value::ServerError`] reply.
pub(crate) trait Transport: Sync {
    /// An open connection to one node, for the router's fast path.
    type Open: OpenConnection<Self> + Send;

    /// The open connection to `addr`, if there is one and its breaker lets calls
    /// through: no waiting (no connecting).
    fn open_connection(&self, addr: &str) -> Option<Self::Open>;

    /// Sends one command to `addr`, connecting first if needed.
    fn send_one(&self, addr: &str, cmd: &Cmd) -> impl Future<Output = Result<Value>> + Send;

    /// Sends a pipeline of `count` commands to `addr`; one reply per command.
    fn send(
        &self,
        addr: &str,
        pipeline: &Pipeline,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Value>>> + Send;

    /// Whether calls to `addr` go through (its breaker is closed, or it is new).
    fn is_closed(&self, addr: &str) -> bool;

    /// A call to `addr` ran out of its caller's time (the node's breaker hears of it).
    fn timed_out(&self, addr: &str);
}

/// An open connection of a [`Transport`] (see [`Transport::open_connection`]).
pub(crate) trait OpenConnection<T: ?Sized>: Sized {
    /// The node the connection leads to, for telling it of a timeout later.
    type Node: TimedOut + Send;

    /// The connection's node.
    fn node(&self) -> Self::Node;

    /// Sends one command; a server error comes back as [`Value::ServerError`].
    fn send_one(self, transport: &T, cmd: &Cmd) -> impl Future<Output = Result<Value>> + Send;
}

/// A node that can be told that a call to it ran out of its caller's time.
pub(crate) trait TimedOut {
    /// A call ran out of its caller's time (see `Breaker::timed_out`).
    fn timed_out(&self);
}

impl Transport for Pool {
    type Open = Connection;

    fn open_connection(&self, addr: &str) -> Option<Connection> {
        Pool::open_connection(self, addr)
    }

    fn send_one(&self, addr: &str, cmd: &Cmd) -> impl Future<Output = Result<Value>> + Send {
        Pool::send_one(self, addr, cmd)
    }

    fn send(
        &self,
        addr: &str,
        pipeline: &Pipeline,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Value>>> + Send {
        Pool::send(self, addr, pipeline, count)
    }

    fn is_closed(&self, addr: &str) -> bool {
        Pool::is_closed(self, addr)
    }

    fn timed_out(&self, addr: &str) {
        Pool::timed_out(self, addr);
    }
}

impl OpenConnection<Pool> for Connection {
    type Node = Arc<Node>;

    fn node(&self) -> Arc<Node> {
        Connection::node(self)
    }

    fn send_one(self, pool: &Pool, cmd: &Cmd) -> impl Future<Output = Result<Value>> + Send {
        Connection::send_one(self, pool, cmd)
    }
}

impl TimedOut for Arc<Node> {
    fn timed_out(&self) {
        Node::timed_out(self);
    }
}
