//! A scripted fake cluster for the router's unit tests: a [`Transport`] whose nodes
//! answer `CLUSTER SLOTS` from a slot assignment the test changes, `ASKING` with `OK`,
//! and every other command as the test's script says (a reply, no answer, or a broken
//! connection). It records every round trip, so that a test asserts what the nodes saw
//! as well as what the caller got. It behaves like `connection.rs`'s pool where the
//! router depends on it: a send connects first if the node has no connection; a
//! connection that broke or timed out is dropped, and the next send connects again; a
//! node that does not answer fails the send after the response timeout.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use partcache::{Error, Result};
use redis::{Cmd, Pipeline, Value};

use crate::transport::{OpenConnection, TimedOut, Transport};

/// How a node answers one command.
pub(super) enum Answer {
    /// This reply (a server error too: see [`error`]).
    Reply(Value),
    /// No answer: the send fails after the response timeout.
    Hang,
    /// The connection breaks before the reply comes back.
    Drop,
}

/// A server error reply, as a node sends it (`"MOVED 3999 10.0.0.2:7002"`).
pub(super) fn error(text: &str) -> Answer {
    match redis::parse_redis_value(format!("-{text}\r\n").as_bytes()) {
        Ok(value) => Answer::Reply(value),
        Err(e) => panic!("`{text}` is not a server error: {e}"),
    }
}

/// A plain reply.
pub(super) fn reply(text: &str) -> Answer {
    Answer::Reply(Value::BulkString(text.as_bytes().to_vec()))
}

type Script = Box<dyn Fn(&str, &str) -> Answer + Send + Sync>;

/// See the module docs.
pub(super) struct FakeCluster {
    /// Slot ranges and the master serving each, answered to `CLUSTER SLOTS`.
    slots: Mutex<Vec<(u16, u16, String)>>,
    /// How a node (by address) answers a command (its arguments joined by spaces).
    script: Script,
    /// One line per round trip: `addr: COMMAND args | COMMAND args`, and
    /// `addr: (connect)` when a connection is opened.
    log: Mutex<Vec<String>>,
    connected: Mutex<HashSet<String>>,
    /// The nodes whose circuit breaker is open: a send fails at once, unsent.
    open_breakers: Mutex<HashSet<String>>,
    /// The nodes the router told of a call that ran out of its caller's time.
    timed_out: Arc<Mutex<Vec<String>>>,
    /// The nodes whose connection timed out by itself (the connection's response
    /// timeout, which `connection.rs` tells the node's breaker of).
    connection_timeouts: Mutex<Vec<String>>,
    response_timeout: Duration,
}

impl FakeCluster {
    /// A cluster whose masters serve the slot ranges of `slots`, whose nodes answer
    /// as `script` says and fail a send after `response_timeout` without an answer.
    pub(super) fn new(
        slots: &[(u16, u16, &str)],
        response_timeout: Duration,
        script: impl Fn(&str, &str) -> Answer + Send + Sync + 'static,
    ) -> FakeCluster {
        FakeCluster {
            slots: Mutex::new(
                slots
                    .iter()
                    .map(|&(start, end, addr)| (start, end, addr.to_string()))
                    .collect(),
            ),
            script: Box::new(script),
            log: Mutex::new(Vec::new()),
            connected: Mutex::new(HashSet::new()),
            open_breakers: Mutex::new(HashSet::new()),
            timed_out: Arc::new(Mutex::new(Vec::new())),
            connection_timeouts: Mutex::new(Vec::new()),
            response_timeout,
        }
    }

    /// Moves the slots `start..=end` to `addr` (a migration, a failover).
    pub(super) fn assign(&self, start: u16, end: u16, addr: &str) {
        let mut slots = self.slots.lock();
        slots.retain(|&(s, e, _)| e < start || s > end);
        slots.push((start, end, addr.to_string()));
    }

    /// Opens the circuit breaker of `addr`: sends to it fail at once with
    /// [`Error::CircuitOpen`], as `Pool` does while a node's breaker is open.
    pub(super) fn open_breaker(&self, addr: &str) {
        self.open_breakers.lock().insert(addr.to_string());
    }

    /// The round trips so far (see the `log` field), and forgets them.
    pub(super) fn take_log(&self) -> Vec<String> {
        std::mem::take(&mut *self.log.lock())
    }

    /// Whether a round trip so far was `line` (see the `log` field).
    pub(super) fn log_contains(&self, line: &str) -> bool {
        self.log.lock().iter().any(|l| l == line)
    }

    /// The nodes the router reported timed-out calls of.
    pub(super) fn router_timeouts(&self) -> Vec<String> {
        self.timed_out.lock().clone()
    }

    /// The nodes whose connections timed out by themselves.
    pub(super) fn connection_timeouts(&self) -> Vec<String> {
        self.connection_timeouts.lock().clone()
    }

    fn cluster_slots(&self) -> Value {
        let ranges = self
            .slots
            .lock()
            .iter()
            .map(|(start, end, addr)| {
                let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
                Value::Array(vec![
                    Value::Int(i64::from(*start)),
                    Value::Int(i64::from(*end)),
                    Value::Array(vec![
                        Value::BulkString(host.as_bytes().to_vec()),
                        Value::Int(port.parse().unwrap_or(0)),
                        Value::BulkString(b"id".to_vec()),
                    ]),
                ])
            })
            .collect();
        Value::Array(ranges)
    }

    /// One round trip of `cmds` to `addr`.
    async fn round_trip<'c>(
        &self,
        addr: &str,
        cmds: impl Iterator<Item = &'c Cmd>,
    ) -> Result<Vec<Value>> {
        if self.open_breakers.lock().contains(addr) {
            return Err(Error::CircuitOpen {
                node: addr.to_string(),
                retry_in: Duration::from_secs(1),
            });
        }
        if self.connected.lock().insert(addr.to_string()) {
            self.log.lock().push(format!("{addr}: (connect)"));
        }
        let texts: Vec<String> = cmds.map(text).collect();
        self.log
            .lock()
            .push(format!("{addr}: {}", texts.join(" | ")));
        let mut replies = Vec::with_capacity(texts.len());
        for text in &texts {
            let answer = match text.as_str() {
                "CLUSTER SLOTS" => Answer::Reply(self.cluster_slots()),
                "ASKING" => Answer::Reply(Value::Okay),
                _ => (self.script)(addr, text),
            };
            match answer {
                Answer::Reply(value) => replies.push(value),
                Answer::Hang => {
                    tokio::time::sleep(self.response_timeout).await;
                    self.connected.lock().remove(addr);
                    self.connection_timeouts.lock().push(addr.to_string());
                    return Err(Error::Timeout(self.response_timeout));
                }
                Answer::Drop => {
                    self.connected.lock().remove(addr);
                    return Err(Error::Unavailable(format!("connection to {addr} dropped")));
                }
            }
        }
        Ok(replies)
    }
}

/// A command as text: its arguments joined by spaces.
fn text(cmd: &Cmd) -> String {
    cmd.args_iter()
        .map(|arg| match arg {
            redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => "(cursor)".to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An open connection of a [`FakeCluster`].
pub(super) struct FakeConnection(FakeNode);

/// A node of a [`FakeCluster`], to tell of a timeout.
pub(super) struct FakeNode {
    addr: String,
    timed_out: Arc<Mutex<Vec<String>>>,
}

impl TimedOut for FakeNode {
    fn timed_out(&self) {
        self.timed_out.lock().push(self.addr.clone());
    }
}

impl Transport for FakeCluster {
    type Open = FakeConnection;

    fn open_connection(&self, addr: &str) -> Option<FakeConnection> {
        (self.connected.lock().contains(addr) && self.is_closed(addr)).then(|| {
            FakeConnection(FakeNode {
                addr: addr.to_string(),
                timed_out: self.timed_out.clone(),
            })
        })
    }

    async fn send_one(&self, addr: &str, cmd: &Cmd) -> Result<Value> {
        let mut replies = self.round_trip(addr, std::iter::once(cmd)).await?;
        Ok(replies.pop().unwrap_or(Value::Nil))
    }

    async fn send(&self, addr: &str, pipeline: &Pipeline, _count: usize) -> Result<Vec<Value>> {
        self.round_trip(addr, pipeline.cmd_iter()).await
    }

    fn is_closed(&self, addr: &str) -> bool {
        !self.open_breakers.lock().contains(addr)
    }

    fn timed_out(&self, addr: &str) {
        self.timed_out.lock().push(addr.to_string());
    }
}

impl OpenConnection<FakeCluster> for FakeConnection {
    type Node = FakeNode;

    fn node(&self) -> FakeNode {
        FakeNode {
            addr: self.0.addr.clone(),
            timed_out: self.0.timed_out.clone(),
        }
    }

    async fn send_one(self, cluster: &FakeCluster, cmd: &Cmd) -> Result<Value> {
        cluster.send_one(&self.0.addr, cmd).await
    }
}
