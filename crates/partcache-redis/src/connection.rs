//! One multiplexed connection per node address, opened on first use and replaced after
//! it breaks, and the mapping of redis-rs errors to partcache's typed errors.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use partcache::{Error, Result};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Pipeline, PushInfo, Value};
use tokio::sync::OnceCell;

use crate::events::Routes;

use crate::url::DeploymentUrl;

/// How to reach and log into any node of a deployment.
#[derive(Clone, Debug)]
pub(crate) struct ConnectSettings {
    pub tls: bool,
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
                insecure: false,
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
        redis::Client::open(info).map_err(|e| Error::Config(e.to_string()))
    }
}

use redis::IntoConnectionInfo;

type Slot = Arc<OnceCell<MultiplexedConnection>>;

/// Connections by node address. Connections with push routes speak RESP3, so that
/// pub/sub messages arrive as pushes beside ordinary replies on one multiplexed
/// connection; replica connections speak RESP2.
pub(crate) struct Pool {
    settings: ConnectSettings,
    pushes: Option<Arc<Routes>>,
    /// Connections that also send `READONLY` (replica reads on a cluster).
    readonly: bool,
    conns: Mutex<HashMap<String, Slot>>,
}

impl Pool {
    pub fn new(settings: ConnectSettings, pushes: Option<Arc<Routes>>, readonly: bool) -> Self {
        Pool {
            settings,
            pushes,
            readonly,
            conns: Mutex::new(HashMap::new()),
        }
    }

    async fn connection(&self, addr: &str) -> Result<(Slot, MultiplexedConnection)> {
        let slot = self
            .conns
            .lock()
            .entry(addr.to_string())
            .or_default()
            .clone();
        let conn = slot.get_or_try_init(|| self.connect(addr)).await?.clone();
        Ok((slot, conn))
    }

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

    /// Forgets the connection to `addr` if it is still `slot` (a newer one may exist).
    fn discard(&self, addr: &str, slot: &Slot) {
        let mut conns = self.conns.lock();
        if conns.get(addr).is_some_and(|s| Arc::ptr_eq(s, slot)) {
            conns.remove(addr);
        }
    }

    /// Sends one command to `addr`; a server error comes back as [`Value::ServerError`].
    pub async fn send_one(&self, addr: &str, cmd: &redis::Cmd) -> Result<Value> {
        let (slot, mut conn) = self.connection(addr).await?;
        match conn.req_packed_command(cmd).await {
            Ok(value) => Ok(value),
            Err(e) => Err(self.failed(addr, &slot, &e)),
        }
    }

    /// Sends a pipeline of `count` commands to `addr`; the replies come back one per
    /// command, server errors as [`Value::ServerError`] for the caller to inspect.
    pub async fn send(&self, addr: &str, pipeline: &Pipeline, count: usize) -> Result<Vec<Value>> {
        let (slot, mut conn) = self.connection(addr).await?;
        match conn.req_packed_commands(pipeline, 0, count).await {
            Ok(values) => Ok(values),
            Err(e) => Err(self.failed(addr, &slot, &e)),
        }
    }

    /// Maps a failed request's error, dropping the connection if it is broken.
    fn failed(&self, addr: &str, slot: &Slot, e: &redis::RedisError) -> Error {
        if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_unrecoverable_error()
            || e.is_timeout()
        {
            self.discard(addr, slot);
        }
        map_error(e, self.settings.response_timeout)
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
