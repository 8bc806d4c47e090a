//! One multiplexed connection per node address, opened on first use and replaced after
//! it breaks, and the mapping of redis-rs errors to partcache's typed errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use partcache::{Error, Result};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, PushInfo, Value};

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

/// An open connection of a [`Pool`] (see [`Pool::open_connection`]).
pub(crate) struct Connection {
    node: Arc<Node>,
    generation: u64,
    conn: MultiplexedConnection,
}

impl Connection {
    /// Sends one command; a server error comes back as [`Value::ServerError`].
    pub async fn send_one(mut self, pool: &Pool, cmd: &Cmd) -> Result<Value> {
        let sent = self.conn.req_packed_command(cmd).await;
        sent.map_err(|e| self.failed(pool, &e))
    }

    /// Sends a pipeline of `count` commands; the replies come back one per command,
    /// server errors as [`Value::ServerError`].
    async fn send(mut self, pool: &Pool, pipeline: &Pipeline, count: usize) -> Result<Vec<Value>> {
        let sent = self.conn.req_packed_commands(pipeline, 0, count).await;
        sent.map_err(|e| self.failed(pool, &e))
    }

    /// Maps a failed call's error; drops the connection if it broke (unless another
    /// caller replaced it already), so that the next call connects again.
    fn failed(&self, pool: &Pool, e: &redis::RedisError) -> Error {
        let broken = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.is_timeout();
        if broken {
            let mut conn = self.node.conn.lock();
            if conn.as_ref().is_some_and(|(g, _)| *g == self.generation) {
                *conn = None;
            }
        }
        map_error(e, pool.connector.settings.response_timeout)
    }
}

/// One node: its connection while it has one, and the lock that lets one caller at a
/// time (re)connect.
struct Node {
    /// The connection and its generation (so that a caller that saw it break only
    /// drops that one, not a newer one another caller opened meanwhile).
    conn: parking_lot::Mutex<Option<(u64, MultiplexedConnection)>>,
    connecting: tokio::sync::Mutex<()>,
}

impl Node {
    /// The node's connection, if it has one open.
    fn open(self: &Arc<Self>) -> Option<Connection> {
        let (generation, conn) = self.conn.lock().clone()?;
        Some(Connection {
            node: self.clone(),
            generation,
            conn,
        })
    }
}

/// How a node's connection is made (shared by every node of a pool).
struct Connector {
    settings: ConnectSettings,
    pushes: Option<Arc<Routes>>,
    /// Connections that also send `READONLY` (replica reads on a cluster).
    readonly: bool,
}

/// Connections by node address: one multiplexed connection per node, opened on first
/// use and again after it breaks. Callers send on it directly: redis-rs's connection
/// driver already writes whatever requests are waiting in one go and reads the replies
/// in order (auto-pipelining), so 64 concurrent callers become a few large writes.
/// (An earlier design put a writer task of ours in front that gathered requests into
/// pipelines; its extra task hop, channel and reply slot per request bought nothing
/// measurable: issue 3 bench, standalone_get 0.71 with and without it.)
/// Connections with push routes speak RESP3, so that pub/sub messages arrive as pushes
/// beside ordinary replies on one multiplexed connection; replica connections speak
/// RESP2.
pub(crate) struct Pool {
    connector: Connector,
    nodes: RwLock<HashMap<String, Arc<Node>>>,
    generation: AtomicU64,
}

impl Pool {
    pub fn new(settings: ConnectSettings, pushes: Option<Arc<Routes>>, readonly: bool) -> Self {
        Pool {
            connector: Connector {
                settings,
                pushes,
                readonly,
            },
            nodes: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// The node at `addr`, created on first use.
    fn node(&self, addr: &str) -> Arc<Node> {
        if let Some(node) = self.nodes.read().get(addr) {
            return node.clone();
        }
        self.nodes
            .write()
            .entry(addr.to_string())
            .or_insert_with(|| {
                Arc::new(Node {
                    conn: parking_lot::Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                })
            })
            .clone()
    }

    /// The open connection to `addr`, if there is one: a call on it waits only for the
    /// reply, which the connection's response timeout bounds.
    pub fn open_connection(&self, addr: &str) -> Option<Connection> {
        self.nodes.read().get(addr)?.open()
    }

    /// The node's connection, connecting first if it has none.
    async fn connection(&self, addr: &str) -> Result<Connection> {
        let node = self.node(addr);
        if let Some(open) = node.open() {
            return Ok(open);
        }
        let _connecting = node.connecting.lock().await;
        // Someone else may have connected while we waited.
        if let Some(open) = node.open() {
            return Ok(open);
        }
        let conn = self.connector.connect(addr).await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *node.conn.lock() = Some((generation, conn.clone()));
        Ok(Connection {
            node: node.clone(),
            generation,
            conn,
        })
    }

    /// Sends one command to `addr`; a server error comes back as [`Value::ServerError`].
    pub async fn send_one(&self, addr: &str, cmd: &Cmd) -> Result<Value> {
        self.connection(addr).await?.send_one(self, cmd).await
    }

    /// Sends `cmds` back to back to `addr`; the replies come back one per command,
    /// server errors as [`Value::ServerError`] for the caller to inspect.
    pub async fn send_cmds(&self, addr: &str, cmds: Vec<Cmd>) -> Result<Vec<Value>> {
        let count = cmds.len();
        let mut pipe = Pipeline::with_capacity(count);
        for cmd in cmds {
            pipe.add_command(cmd);
        }
        self.send(addr, &pipe, count).await
    }

    /// Sends a pipeline of `count` commands to `addr`; the replies come back one per
    /// command, server errors as [`Value::ServerError`] for the caller to inspect.
    pub async fn send(&self, addr: &str, pipeline: &Pipeline, count: usize) -> Result<Vec<Value>> {
        self.connection(addr)
            .await?
            .send(self, pipeline, count)
            .await
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
