//! A standalone server.

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use redis::FromRedisValue;

use crate::admin::{self, Endpoint};
use crate::binaries::{Flavor, RedisBinaries};
use crate::error::Result;
use crate::process::{self, NodeProcess};
use crate::tls::{TlsFiles, TlsMode};

/// Options for [`RedisServer::start`].
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Extra server arguments appended after the harness's own, e.g.
    /// `["--maxmemory", "10mb"]`. They may override the defaults (later wins).
    pub extra_args: Vec<String>,
    /// How long to wait for the server to answer PING (default 10 s).
    pub startup_timeout: Duration,
    /// Serve TLS only (default `None`: plain TCP). The harness makes a throwaway CA and
    /// certificates ([`TlsFiles`]) and starts the server with `--port 0 --tls-port
    /// <port>`; [`RedisServer::url`] then is a `rediss://` URL that trusts that CA.
    pub tls: Option<TlsMode>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            extra_args: Vec::new(),
            startup_timeout: Duration::from_secs(10),
            tls: None,
        }
    }
}

impl ServerOptions {
    /// Appends one extra server argument (builder style).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Appends extra server arguments (builder style).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets the startup deadline (builder style).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Serves TLS only, in `mode` (builder style; see [`ServerOptions::tls`]).
    pub fn tls(mut self, mode: TlsMode) -> Self {
        self.tls = Some(mode);
        self
    }
}

/// A standalone `redis-server` / `valkey-server` on `127.0.0.1`.
///
/// Runs in a fresh temporary directory with `--save "" --appendonly no` (no persistence:
/// data does not survive [`stop`](Self::stop)/[`kill`](Self::kill) +
/// [`restart`](Self::restart)), `--bind 127.0.0.1`, and `--enable-debug-command yes` when
/// the server supports it. With [`ServerOptions::tls`] it serves TLS only, on the same
/// kind of port. Dropping it SIGKILLs its process, reaps it and removes the directory
/// (and the TLS files).
pub struct RedisServer {
    node: NodeProcess,
    opts: ServerOptions,
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer")
            .field("flavor", &self.flavor())
            .field("port", &self.port())
            .field("pid", &self.pid())
            .finish()
    }
}

impl RedisServer {
    /// Starts a server of `flavor` and waits (up to `opts.startup_timeout`) until it answers
    /// PING. Fails with [`HarnessError::Unavailable`](crate::HarnessError::Unavailable) if the binaries are missing.
    pub fn start(flavor: Flavor, opts: ServerOptions) -> Result<RedisServer> {
        let binaries = RedisBinaries::locate(flavor)?;
        Self::start_with(&binaries, opts)
    }

    /// Starts a server from explicit binaries.
    pub fn start_with(binaries: &RedisBinaries, opts: ServerOptions) -> Result<RedisServer> {
        let tls = opts.tls.map(TlsFiles::generate).transpose()?.map(Arc::new);
        let node = NodeProcess::new(binaries.clone(), false, opts.extra_args.clone(), tls)?;
        let mut nodes = [node];
        process::start_all(&mut nodes, opts.startup_timeout)?;
        let [node] = nodes;
        Ok(RedisServer { node, opts })
    }

    /// The flavour of this server.
    pub fn flavor(&self) -> Flavor {
        self.node.binaries().flavor()
    }

    /// The binaries this server runs.
    pub fn binaries(&self) -> &RedisBinaries {
        self.node.binaries()
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.node.port())
    }

    /// The TCP port (the TLS port of a TLS server).
    pub fn port(&self) -> u16 {
        self.node.port()
    }

    /// `redis://127.0.0.1:PORT`; for a TLS server the partcache URL
    /// `rediss://127.0.0.1:PORT?tls_ca=<CA file>` (plus `&tls_cert=…&tls_key=…` for
    /// [`TlsMode::Mutual`]).
    pub fn url(&self) -> String {
        match self.node.tls() {
            None => format!("redis://127.0.0.1:{}", self.node.port()),
            Some(tls) => format!(
                "rediss://127.0.0.1:{}?{}",
                self.node.port(),
                tls.url_params()
            ),
        }
    }

    /// The CA and certificates of a TLS server (`None` for a plain one).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.node.tls()
    }

    /// Pid of the running process, `None` after [`kill`](Self::kill)/[`stop`](Self::stop) or
    /// if it crashed.
    pub fn pid(&self) -> Option<u32> {
        self.node.pid()
    }

    /// Pid of the most recently started process, running or not (to check that a killed
    /// or dropped server's process is really gone).
    pub fn last_pid(&self) -> u32 {
        self.node.last_pid()
    }

    /// Whether the process is running (a paused process counts as running).
    pub fn is_running(&self) -> bool {
        self.node.is_running()
    }

    /// The server's temporary working directory (logs are in `server.log` and `stdout.log`).
    pub fn dir(&self) -> &Path {
        self.node.dir()
    }

    /// SIGKILLs the server and reaps it. Returns whether it was running.
    pub fn kill(&self) -> bool {
        self.node.kill()
    }

    /// Stops the server gracefully (SIGTERM, SIGKILL after 10 s). Returns whether it was
    /// running.
    pub fn stop(&self) -> bool {
        self.node.stop(Duration::from_secs(10))
    }

    /// Starts the server again on the same port and directory (stopping it first if it is
    /// running) and waits until it answers. The data set is empty afterwards.
    pub fn restart(&self) -> Result<()> {
        self.stop();
        self.node.respawn_and_wait(self.opts.startup_timeout)
    }

    /// Freezes the process with SIGSTOP: the port stays open but nothing is answered
    /// (for client timeout tests). Undo with [`resume`](Self::resume).
    pub fn pause(&self) -> Result<()> {
        self.node.signal(process::SIGSTOP)
    }

    /// Continues a process frozen by [`pause`](Self::pause).
    pub fn resume(&self) -> Result<()> {
        self.node.signal(process::SIGCONT)
    }

    /// Runs `redis-cli -h 127.0.0.1 -p PORT <args>` (with `--tls --cacert …` and, for
    /// mutual TLS, `--cert … --key …` on a TLS server) and returns its stdout (server
    /// errors appear in the output as `ERR ...`).
    ///
    /// # Panics
    ///
    /// If `redis-cli` cannot be run.
    pub fn redis_cli<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_cli(self.node.binaries(), self.node.endpoint(), args)
    }

    /// Runs one command on a fresh synchronous admin connection and converts the reply,
    /// e.g. `server.query::<String>(&["CONFIG", "GET", "maxmemory"])`.
    pub fn query<T: FromRedisValue>(&self, args: &[&str]) -> Result<T> {
        admin::query(self.node.endpoint(), args)
    }

    /// Calls per command from `INFO commandstats` (`"get" -> 3`, subcommands as
    /// `"cluster|slots"`). Includes the harness's own admin commands (`info`, `ping`, ...).
    pub fn commandstats(&self) -> Result<std::collections::HashMap<String, u64>> {
        let text: String = admin::query(self.node.endpoint(), &["INFO", "commandstats"])?;
        Ok(admin::parse_commandstats(&text))
    }

    /// `CONFIG RESETSTAT`.
    pub fn reset_stats(&self) -> Result<()> {
        let _: redis::Value = admin::query(self.node.endpoint(), &["CONFIG", "RESETSTAT"])?;
        Ok(())
    }

    /// The last `n` lines of the server's log (for assertion messages).
    pub fn log_tail(&self, n: usize) -> String {
        self.node.log_tail(n)
    }
}

/// Runs the cli against `127.0.0.1:port` (over TLS for a TLS server); panics if it
/// cannot be run.
pub(crate) fn run_cli<I, S>(binaries: &RedisBinaries, at: Endpoint<'_>, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let out = Command::new(binaries.cli_path())
        .args(["-h", "127.0.0.1", "-p", &at.port.to_string()])
        .args(at.tls.map(TlsFiles::cli_args).unwrap_or_default())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binaries.cli_path().display()));
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.stderr.is_empty() {
        s.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    s
}
