//! One multiplexed connection per node address, opened on first use and replaced after
//! it breaks, and the mapping of redis-rs errors to partcache's typed errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::FutureExt;
use futures::future::FusedFuture;
use parking_lot::RwLock;
use partcache::{Error, Result};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Cmd, Pipeline, PushInfo, Value};

use crate::breaker::{Admission, Breaker, BreakerSettings};
use crate::push::Routes;

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
    pub breaker: BreakerSettings,
}

impl ConnectSettings {
    pub(crate) fn from_url(url: &DeploymentUrl) -> Self {
        ConnectSettings {
            tls: url.tls,
            tls_options: url.tls_options.clone(),
            username: url.username.clone(),
            password: url.password.clone(),
            db: url.db,
            connect_timeout: url.connect_timeout,
            response_timeout: url.response_timeout,
            breaker: url.breaker,
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
    pub(crate) async fn send_one(mut self, pool: &Pool, cmd: &Cmd) -> Result<Value> {
        let sent = self.conn.req_packed_command(cmd).await;
        self.node.breaker.answered_if(sent.is_ok());
        sent.map_err(|e| self.failed(pool, &e))
    }

    /// The connection's node (a caller whose own deadline ended the wait tells its
    /// breaker: [`Node::timed_out`]).
    pub(crate) fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// Sends a pipeline of `count` commands; the replies come back one per command,
    /// server errors as [`Value::ServerError`].
    async fn send(mut self, pool: &Pool, pipeline: &Pipeline, count: usize) -> Result<Vec<Value>> {
        let sent = self.conn.req_packed_commands(pipeline, 0, count).await;
        self.node.breaker.answered_if(sent.is_ok());
        sent.map_err(|e| self.failed(pool, &e))
    }

    /// Maps a failed call's error; drops the connection if it broke (unless another
    /// caller replaced it already), so that the next call connects again.
    fn failed(&self, pool: &Pool, e: &redis::RedisError) -> Error {
        let broken = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.is_timeout();
        if e.is_timeout() {
            self.node.breaker.timed_out();
        }
        if broken {
            let mut conn = self.node.conn.lock();
            if conn.as_ref().is_some_and(|(g, _)| *g == self.generation) {
                *conn = None;
            }
        }
        map_error(e, pool.connector.settings.response_timeout)
    }
}

/// One node: its connection while it has one, the lock that lets one caller at a
/// time (re)connect, and its circuit breaker.
pub(crate) struct Node {
    addr: String,
    /// The connection and its generation (so that a caller that saw it break only
    /// drops that one, not a newer one another caller opened meanwhile).
    conn: parking_lot::Mutex<Option<(u64, MultiplexedConnection)>>,
    connecting: tokio::sync::Mutex<()>,
    breaker: Breaker,
}

impl Node {
    /// A call to the node ran out of its caller's time (see [`Breaker::timed_out`]).
    pub(crate) fn timed_out(&self) {
        self.breaker.timed_out();
    }

    /// The node's connection, connecting first if it has none (whatever the breaker
    /// says: callers ask [`Pool::connection`]).
    async fn connect(self: &Arc<Self>, connector: &Connector) -> Result<Connection> {
        if let Some(open) = self.open() {
            return Ok(open);
        }
        let _connecting = self.connecting.lock().await;
        // Someone else may have connected while we waited.
        if let Some(open) = self.open() {
            return Ok(open);
        }
        // Boxed: connecting is rare, and its future (TLS probing, timeouts) is large;
        // in place it would size every send's future, which each call copies.
        let conn = match Box::pin(connector.connect(&self.addr)).await {
            Ok(conn) => conn,
            Err(e) => {
                if matches!(e, Error::Timeout(_)) {
                    self.breaker.timed_out();
                }
                return Err(e);
            }
        };
        let generation = connector.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.conn.lock() = Some((generation, conn.clone()));
        Ok(Connection {
            node: self.clone(),
            generation,
            conn,
        })
    }

    /// The probe of an open breaker: whether the node answers a `PING` (on its
    /// connection, or a new one) within the response timeout.
    async fn probe(self: Arc<Self>, connector: Arc<Connector>) {
        let timeout = connector.settings.response_timeout;
        let ping = async {
            let mut conn = self.connect(&connector).await.ok()?.conn;
            conn.req_packed_command(&redis::cmd("PING")).await.ok()
        };
        let answered = matches!(
            tokio::time::timeout(
                timeout.saturating_add(connector.settings.connect_timeout),
                ping
            )
            .await,
            Ok(Some(_))
        );
        tracing::debug!(node = %self.addr, answered, "circuit breaker probe");
        self.breaker.probed(answered);
    }

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

/// How long a TLS handshake may take before the address is asked, in plain text,
/// whether it speaks TLS at all (see `Connector::connect`).
const PLAIN_TEXT_PROBE_AFTER: Duration = Duration::from_millis(100);

/// How a node's connection is made (shared by every node of a pool).
struct Connector {
    settings: ConnectSettings,
    pushes: Option<Arc<Routes>>,
    /// Connections that also send `READONLY` (replica reads on a cluster).
    readonly: bool,
    /// Numbers the connections (see `Node::conn`).
    generation: AtomicU64,
}

/// Connections by node address: one multiplexed connection per node, opened on first
/// use and again after it breaks. Callers send on it directly: redis-rs's connection
/// driver already writes whatever requests are waiting in one go and reads the replies
/// in order (auto-pipelining), so 64 concurrent callers become a few large writes.
/// (An earlier design put a writer task of ours in front that gathered requests into
/// pipelines; its extra task hop, channel and reply slot per request bought nothing
/// measurable: standalone_get 0.71 with and without it.)
/// Connections with push routes speak RESP3, so that pub/sub messages arrive as pushes
/// beside ordinary replies on one multiplexed connection; replica connections speak
/// RESP2.
pub(crate) struct Pool {
    connector: Arc<Connector>,
    /// Looked up on every command, by address: foldhash rather than SipHash.
    nodes: RwLock<HashMap<String, Arc<Node>, foldhash::fast::RandomState>>,
}

impl Pool {
    pub(crate) fn new(
        settings: ConnectSettings,
        pushes: Option<Arc<Routes>>,
        readonly: bool,
    ) -> Self {
        Pool {
            connector: Arc::new(Connector {
                settings,
                pushes,
                readonly,
                generation: AtomicU64::new(0),
            }),
            nodes: RwLock::new(HashMap::default()),
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
                    addr: addr.to_string(),
                    conn: parking_lot::Mutex::new(None),
                    connecting: tokio::sync::Mutex::new(()),
                    breaker: Breaker::new(addr, self.connector.settings.breaker),
                })
            })
            .clone()
    }

    /// The open connection to `addr`, if there is one and its breaker is closed: a
    /// call on it waits only for the reply, which the connection's response timeout
    /// bounds.
    pub(crate) fn open_connection(&self, addr: &str) -> Option<Connection> {
        let nodes = self.nodes.read();
        let node = nodes.get(addr)?;
        if !node.breaker.is_closed() {
            return None;
        }
        node.open()
    }

    /// The node's connection, connecting first if it has none; [`Error::CircuitOpen`]
    /// at once while its breaker is open (see `breaker.rs`).
    async fn connection(&self, addr: &str) -> Result<Connection> {
        let node = self.node(addr);
        match node.breaker.admit() {
            Admission::Go => node.connect(&self.connector).await,
            Admission::Refuse(e) => Err(e),
            Admission::Probe(e) => {
                tokio::spawn(node.clone().probe(self.connector.clone()));
                Err(e)
            }
        }
    }

    /// Whether calls to `addr` go through (its breaker is closed, or it is new).
    pub(crate) fn is_closed(&self, addr: &str) -> bool {
        self.nodes
            .read()
            .get(addr)
            .is_none_or(|node| node.breaker.is_closed())
    }

    /// A call to `addr` ran out of its caller's time (see [`Breaker::timed_out`]).
    pub(crate) fn timed_out(&self, addr: &str) {
        if let Some(node) = self.nodes.read().get(addr) {
            node.timed_out();
        }
    }

    /// The circuit breakers of the nodes this pool has talked to, by address.
    pub(crate) fn breakers(&self) -> Vec<partcache::stats::BreakerStats> {
        let mut breakers: Vec<_> = self
            .nodes
            .read()
            .values()
            .map(|node| node.breaker.stats())
            .collect();
        breakers.sort_by(|a, b| a.node.cmp(&b.node));
        breakers
    }

    /// Sends one command to `addr`; a server error comes back as [`Value::ServerError`].
    pub(crate) async fn send_one(&self, addr: &str, cmd: &Cmd) -> Result<Value> {
        self.connection(addr).await?.send_one(self, cmd).await
    }

    /// Sends a pipeline of `count` commands to `addr`; the replies come back one per
    /// command, server errors as [`Value::ServerError`] for the caller to inspect.
    pub(crate) async fn send(
        &self,
        addr: &str,
        pipeline: &Pipeline,
        count: usize,
    ) -> Result<Vec<Value>> {
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
        let connecting = tokio::time::timeout(self.settings.connect_timeout, connecting);
        tokio::pin!(connecting);
        let connected = if self.settings.tls {
            // A TLS client talking to a plain-text server waits for a handshake reply
            // that never comes (the server waits for the end of an inline command). A
            // handshake that takes a while is asked about in plain text meanwhile.
            // The probe has a budget of its own: a handshake that times out first (a
            // loaded machine, a short connect timeout) still waits for its answer, since
            // "plain text" is a configuration error and a timeout is not.
            let probe_after = (self.settings.connect_timeout / 4).min(PLAIN_TEXT_PROBE_AFTER);
            tokio::select! {
                connected = &mut connecting => connected,
                () = tokio::time::sleep(probe_after) => {
                    let probe = self.plain_text_server(addr).fuse();
                    tokio::pin!(probe);
                    let connected = tokio::select! {
                        connected = &mut connecting => connected,
                        Some(plain) = &mut probe => return Err(plain),
                    };
                    if connected.is_err()
                        && !probe.is_terminated()
                        && let Some(plain) = probe.await
                    {
                        return Err(plain);
                    }
                    connected
                }
            }
        } else {
            connecting.await
        };
        let mut conn = connected
            .map_err(|_| Error::Timeout(self.settings.connect_timeout))?
            .map_err(|e| connect_error(addr, &e, self.settings.connect_timeout))?;
        if self.readonly {
            let reply = conn
                .req_packed_command(&redis::cmd("READONLY"))
                .await
                .map_err(|e| map_error(&e, self.settings.response_timeout))?;
            if let Some(refused) = crate::refusal::refused(&reply, addr) {
                return Err(refused);
            }
        }
        tracing::debug!(%addr, "connected");
        Ok(conn)
    }

    /// A configuration error if `addr` answers a plain-text `PING` (so a TLS
    /// connection to it can never succeed); `None` if it does not (it may be down, or
    /// speak TLS and be slow), within the connect timeout.
    async fn plain_text_server(&self, addr: &str) -> Option<Error> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let probe = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
            stream.write_all(b"PING\r\n").await.ok()?;
            let mut first = [0u8; 1];
            stream.read_exact(&mut first).await.ok()?;
            // A RESP reply: `+PONG`, or `-NOAUTH ...` from a server with a password.
            matches!(first[0], b'+' | b'-').then_some(())
        };
        tokio::time::timeout(self.settings.connect_timeout, probe)
            .await
            .ok()
            .flatten()
            .map(|()| {
                Error::Config(format!(
                    "{addr} speaks plain text, not TLS: the URL asks for TLS \
                     (`rediss://`, `valkeys://` or `tls=true`) of a server that does not serve it"
                ))
            })
    }
}

/// A failed connection's error: [`Error::Config`] for what retrying cannot fix
/// ([`permanent`]), else transient.
fn connect_error(addr: &str, e: &redis::RedisError, timeout: Duration) -> Error {
    if let Some(reason) = permanent(e) {
        Error::Config(format!(
            "cannot connect to {addr} with the URL's settings: {reason}"
        ))
    } else if e.is_timeout() {
        Error::Timeout(timeout)
    } else {
        Error::Unavailable(format!("cannot connect to {addr}: {e}"))
    }
}

/// Why `e` cannot go away by retrying, if it cannot: the server refused the
/// credentials (`WRONGPASS`, `NOAUTH`, `NOPERM`: the same credentials get the same
/// answer), refused the database index (`SELECT`), or the TLS handshake failed for a
/// reason of its own (an untrusted or misnamed certificate, a missing client
/// certificate, a peer that does not speak TLS). Refused connections, timeouts and a
/// server still loading or electing a master are transient.
pub(crate) fn permanent(e: &redis::RedisError) -> Option<String> {
    use redis::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::AuthenticationFailed
            | ErrorKind::InvalidClientConfig
            | ErrorKind::RESP3NotSupported
    ) || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
    {
        return Some(e.to_string());
    }
    let text = e.to_string();
    if text.contains("refused to switch database") || text.contains("DB index") {
        return Some(text);
    }
    #[cfg(feature = "tls")]
    if let Some(tls) = crate::tls::handshake_error(e) {
        return Some(format!("TLS handshake failed: {tls}"));
    }
    None
}

/// A redis-rs error as a partcache error.
pub(crate) fn map_error(e: &redis::RedisError, timeout: Duration) -> Error {
    if let Some(reason) = permanent(e) {
        Error::Config(reason)
    } else if e.is_timeout() {
        Error::Timeout(timeout)
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        Error::Unavailable(e.to_string())
    } else if e.is_cluster_error() {
        Error::Unavailable(format!("cluster not ready: {e}"))
    } else {
        Error::Store(e.to_string())
    }
}
