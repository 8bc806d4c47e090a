//! One multiplexed connection per node address, opened on first use and replaced after
//! it breaks, and the mapping of redis-rs errors to partcache's typed errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use parking_lot::RwLock;
use partcache::{Error, Result};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, PushInfo, Value};
use tokio::sync::{mpsc, oneshot};

use crate::events::Routes;

use crate::url::{DeploymentUrl, TlsOptions};

/// How to reach and log into any node of a deployment.
#[derive(Clone, Debug)]
pub(crate) struct ConnectSettings {
    pub tls: bool,
    /// CA, client certificate and verification of TLS connections (with `tls` only).
    pub tls_options: TlsOptions,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

impl ConnectSettings {
    pub fn from_url(url: &DeploymentUrl) -> Self {
        ConnectSettings {
            tls: url.tls,
            tls_options: url.tls_options.clone(),
            username: url.username.clone(),
            password: url.password.clone(),
            db: url.db,
            connect_timeout: url.connect_timeout,
            response_timeout: url.response_timeout,
        }
    }

    fn client(&self, addr: &str, resp3: bool) -> Result<redis::Client> {
        let (host, port) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
            .ok_or_else(|| Error::Config(format!("`{addr}` is not host:port")))?;
        let addr = if self.tls {
            redis::ConnectionAddr::TcpTls {
                host: host.to_string(),
                port,
                insecure: self.tls_options.insecure,
                // Filled from `tls_options` by `build_with_tls` below.
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.to_string(), port)
        };
        let mut redis_settings = redis::RedisConnectionInfo::default().set_db(self.db);
        if let Some(user) = &self.username {
            redis_settings = redis_settings.set_username(user);
        }
        if let Some(password) = &self.password {
            redis_settings = redis_settings.set_password(password);
        }
        if resp3 {
            redis_settings = redis_settings.set_protocol(redis::ProtocolVersion::RESP3);
        }
        let info = addr
            .into_connection_info()
            .map_err(|e| Error::Config(e.to_string()))?
            .set_redis_settings(redis_settings);
        if self.tls {
            // The same CA and client certificate for every node, data, replica and
            // subscription connections alike (all of them are made here).
            return crate::tls::client(info, &self.tls_options);
        }
        redis::Client::open(info).map_err(|e| Error::Config(e.to_string()))
    }
}

use redis::IntoConnectionInfo;

/// Most commands one batch carries: bounds the memory of one pipeline.
const MAX_BATCH: usize = 1024;
/// Batches a node's writer keeps in flight. While they are out, requests queue up and
/// go together in the next batch: this is what turns 64 concurrent callers into a few
/// large pipelines instead of 64 small writes (each a `writev` on both sides).
/// Measured (issue 3 bench, 2 cores): one syscall per request was the largest cost of
/// both the client and the servers.
const MAX_IN_FLIGHT: usize = 2;

/// Commands to send back to back, and where their replies go.
struct Job {
    cmds: Vec<Cmd>,
    reply: oneshot::Sender<Result<Vec<Value>>>,
}

/// One node: the queue its writer task drains.
struct Node {
    queue: mpsc::UnboundedSender<Job>,
}

/// How a writer connects (shared with every node's writer task).
struct Connector {
    settings: ConnectSettings,
    pushes: Option<Arc<Routes>>,
    /// Connections that also send `READONLY` (replica reads on a cluster).
    readonly: bool,
}

/// Connections by node address, each behind a writer task that pipelines whatever
/// requests are waiting (auto-pipelining). Connections with push routes speak RESP3, so
/// that pub/sub messages arrive as pushes beside ordinary replies on one multiplexed
/// connection; replica connections speak RESP2.
pub(crate) struct Pool {
    connector: Arc<Connector>,
    nodes: RwLock<HashMap<String, Arc<Node>>>,
}

impl Pool {
    pub fn new(settings: ConnectSettings, pushes: Option<Arc<Routes>>, readonly: bool) -> Self {
        Pool {
            connector: Arc::new(Connector {
                settings,
                pushes,
                readonly,
            }),
            nodes: RwLock::new(HashMap::new()),
        }
    }

    /// The node at `addr`, its writer started on first use.
    fn node(&self, addr: &str) -> Arc<Node> {
        if let Some(node) = self.nodes.read().get(addr) {
            return node.clone();
        }
        self.nodes
            .write()
            .entry(addr.to_string())
            .or_insert_with(|| {
                let (queue, jobs) = mpsc::unbounded_channel();
                tokio::spawn(write_loop(self.connector.clone(), addr.to_string(), jobs));
                Arc::new(Node { queue })
            })
            .clone()
    }

    async fn submit(&self, addr: &str, cmds: Vec<Cmd>) -> Result<Vec<Value>> {
        let (reply, replied) = oneshot::channel();
        let job = Job { cmds, reply };
        if self.node(addr).queue.send(job).is_err() {
            return Err(Error::Unavailable(format!(
                "connection to {addr} is closed"
            )));
        }
        replied.await.unwrap_or_else(|_| {
            Err(Error::Unavailable(format!(
                "connection to {addr} is closed"
            )))
        })
    }

    /// Sends one command to `addr`; a server error comes back as [`Value::ServerError`].
    pub async fn send_one(&self, addr: &str, cmd: &Cmd) -> Result<Value> {
        let mut values = self.submit(addr, vec![cmd.clone()]).await?;
        Ok(values.pop().unwrap_or(Value::Nil))
    }

    /// Sends `cmds` back to back to `addr`; the replies come back one per command,
    /// server errors as [`Value::ServerError`] for the caller to inspect.
    pub async fn send_cmds(&self, addr: &str, cmds: Vec<Cmd>) -> Result<Vec<Value>> {
        self.submit(addr, cmds).await
    }

    /// Sends a pipeline of `count` commands to `addr`; the replies come back one per
    /// command, server errors as [`Value::ServerError`] for the caller to inspect.
    pub async fn send(&self, addr: &str, pipeline: &Pipeline, count: usize) -> Result<Vec<Value>> {
        let cmds: Vec<Cmd> = pipeline.cmd_iter().cloned().collect();
        debug_assert_eq!(cmds.len(), count);
        self.submit(addr, cmds).await
    }
}

/// The writer of one node: takes every job waiting (up to [`MAX_BATCH`] commands),
/// sends them as one pipeline, and hands each job its replies; keeps at most
/// [`MAX_IN_FLIGHT`] pipelines out. Connects on demand and again after the connection
/// breaks. Ends when the pool is dropped.
async fn write_loop(
    connector: Arc<Connector>,
    addr: String,
    mut jobs: mpsc::UnboundedReceiver<Job>,
) {
    let mut conn: Option<(u64, MultiplexedConnection)> = None;
    let mut generation = 0u64;
    let mut in_flight = FuturesUnordered::new();
    let mut closed = false;
    loop {
        let first = tokio::select! {
            job = jobs.recv(), if !closed && in_flight.len() < MAX_IN_FLIGHT => match job {
                Some(job) => job,
                None => {
                    closed = true;
                    continue;
                }
            },
            Some((used, broken)) = in_flight.next() => {
                if broken && conn.as_ref().is_some_and(|(g, _)| *g == used) {
                    conn = None;
                }
                continue;
            }
            else => return,
        };
        let mut batch = vec![first];
        let mut count = batch[0].cmds.len();
        while count < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => {
                    count += job.cmds.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        if conn.is_none() {
            match connector.connect(&addr).await {
                Ok(c) => {
                    generation += 1;
                    conn = Some((generation, c));
                }
                Err(e) => {
                    for job in batch {
                        let _ = job.reply.send(Err(e.clone()));
                    }
                    continue;
                }
            }
        }
        if let Some((used, c)) = &conn {
            let timeout = connector.settings.response_timeout;
            in_flight.push(send_batch(c.clone(), *used, batch, count, timeout));
        }
    }
}

/// Sends `batch` as one pipeline of `count` commands; returns the connection's
/// generation and whether it broke.
async fn send_batch(
    mut conn: MultiplexedConnection,
    used: u64,
    batch: Vec<Job>,
    count: usize,
    timeout: Duration,
) -> (u64, bool) {
    let mut replies = Vec::with_capacity(batch.len());
    let result = if count == 1 {
        // One command: no pipeline to build.
        let mut result = Ok(Vec::new());
        for job in batch {
            replies.push((job.cmds.len(), job.reply));
            if let Some(cmd) = job.cmds.first() {
                result = conn.req_packed_command(cmd).await.map(|v| vec![v]);
            }
        }
        result
    } else {
        let mut pipe = Pipeline::with_capacity(count);
        for job in batch {
            replies.push((job.cmds.len(), job.reply));
            for cmd in job.cmds {
                pipe.add_command(cmd);
            }
        }
        conn.req_packed_commands(&pipe, 0, count).await
    };
    match result {
        Ok(values) => {
            let mut values = values.into_iter();
            for (n, reply) in replies {
                let mine: Vec<Value> = (0..n)
                    .map(|_| values.next().unwrap_or(Value::Nil))
                    .collect();
                let _ = reply.send(Ok(mine));
            }
            (used, false)
        }
        Err(e) => {
            let broken = e.is_io_error()
                || e.is_connection_dropped()
                || e.is_unrecoverable_error()
                || e.is_timeout();
            let error = map_error(&e, timeout);
            for (_, reply) in replies {
                let _ = reply.send(Err(error.clone()));
            }
            (used, broken)
        }
    }
}

impl Connector {
    async fn connect(&self, addr: &str) -> Result<MultiplexedConnection> {
        let client = self.settings.client(addr, self.pushes.is_some())?;
        let mut config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(self.settings.response_timeout));
        if let Some(pushes) = &self.pushes {
            let routes = pushes.clone();
            let from = addr.to_string();
            config = config.set_push_sender(move |info: PushInfo| {
                routes.dispatch(&from, info);
                Ok::<(), std::convert::Infallible>(())
            });
        }
        let connecting = client.get_multiplexed_async_connection_with_config(&config);
        let mut conn = tokio::time::timeout(self.settings.connect_timeout, connecting)
            .await
            .map_err(|_| Error::Timeout(self.settings.connect_timeout))?
            .map_err(|e| connect_error(addr, &e, self.settings.connect_timeout))?;
        if self.readonly {
            conn.req_packed_command(&redis::cmd("READONLY"))
                .await
                .map_err(|e| map_error(&e, self.settings.response_timeout))?;
        }
        tracing::debug!(%addr, "connected");
        Ok(conn)
    }
}

fn connect_error(addr: &str, e: &redis::RedisError, timeout: Duration) -> Error {
    if e.is_timeout() {
        Error::Timeout(timeout)
    } else if e.is_io_error() || e.is_connection_refusal() || e.is_connection_dropped() {
        Error::Unavailable(format!("cannot connect to {addr}: {e}"))
    } else {
        // Authentication and the like: the server answered, but not as hoped.
        Error::Unavailable(format!("cannot log into {addr}: {e}"))
    }
}

/// A redis-rs error as a partcache error.
pub(crate) fn map_error(e: &redis::RedisError, timeout: Duration) -> Error {
    if e.is_timeout() {
        Error::Timeout(timeout)
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        Error::Unavailable(e.to_string())
    } else if e.is_cluster_error() {
        Error::Unavailable(format!("cluster not ready: {e}"))
    } else {
        Error::Store(e.to_string())
    }
}
