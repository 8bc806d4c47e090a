//! A real PostgreSQL server for integration tests (the `partcache-sea-orm` suite).
//!
//! [`PostgresServer::start`] runs `initdb` into a fresh temporary directory as an
//! unprivileged user (PostgreSQL refuses to run as root: as root the harness creates
//! and uses the system user `partcache`), starts `postgres` on a free port on
//! `127.0.0.1` with trust authentication and durability off (tests need no fsync),
//! waits until it accepts connections, and SIGINT-stops it (fast shutdown) and removes
//! the directory on drop. The server also dies with the test process (parent-death
//! SIGKILL), so an aborted test leaves nothing running.
//!
//! Binaries: `$PARTCACHE_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else
//! `PATH`. `scripts/postgres.sh` installs them (Debian's `postgresql` package) when
//! missing. When none are found, [`PostgresServer::start_or_skip`] prints a loud
//! `SKIPPED (postgres): ...` line and returns `None`.
//!
//! ```no_run
//! let pg = partcache_integration_tests::postgres::PostgresServer::start().unwrap();
//! let url = pg.create_database("suite").unwrap(); // postgres://postgres@127.0.0.1:port/suite
//! # let _ = url;
//! ```

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{HarnessError, Result};
use crate::ports;
use crate::process::{SIGINT, send_signal, spawn_child};

/// The unprivileged user the server runs as when the tests run as root.
pub const SYSTEM_USER: &str = "partcache";

/// How long startup may take before it is an error.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Where `initdb`, `postgres`, `pg_isready` and `createdb` are.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PARTCACHE_PG_BIN") {
        let dir = PathBuf::from(dir);
        if dir.join("postgres").exists() {
            return Some(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).find(|d| d.join("postgres").exists() && d.join("initdb").exists())
}

/// `(uid, gid)` to run the server as: the current user, or [`SYSTEM_USER`] (created if
/// needed) when running as root.
fn server_identity() -> Result<Option<(u32, u32)>> {
    let uid = command_output(Command::new("id").arg("-u"))?;
    if uid.trim() != "0" {
        return Ok(None);
    }
    if Command::new("id")
        .arg("-u")
        .arg(SYSTEM_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                SYSTEM_USER,
            ])
            .status()
            .map_err(|e| HarnessError::io("running useradd", e))?;
        if !status.success() {
            return Err(HarnessError::Unexpected(format!(
                "useradd {SYSTEM_USER} failed ({status})"
            )));
        }
    }
    let parse = |flag: &str| -> Result<u32> {
        command_output(Command::new("id").arg(flag).arg(SYSTEM_USER))?
            .trim()
            .parse::<u32>()
            .map_err(|e| HarnessError::Unexpected(format!("id {flag} {SYSTEM_USER}: {e}")))
    };
    Ok(Some((parse("-u")?, parse("-g")?)))
}

fn command_output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .map_err(|e| HarnessError::io(format!("running {cmd:?}"), e))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn as_identity(cmd: &mut Command, identity: Option<(u32, u32)>) -> &mut Command {
    if let Some((uid, gid)) = identity {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// A running PostgreSQL server; stopped and deleted on drop.
pub struct PostgresServer {
    child: Mutex<Child>,
    port: u16,
    bin: PathBuf,
    dir: TempDir,
}

impl std::fmt::Debug for PostgresServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresServer")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl PostgresServer {
    /// Starts a server, or prints `SKIPPED (postgres): <why>` and returns `None` when
    /// the binaries are not installed (run `scripts/postgres.sh`).
    pub fn start_or_skip() -> Option<Self> {
        if bin_dir().is_none() {
            eprintln!(
                "SKIPPED (postgres): no PostgreSQL binaries (set PARTCACHE_PG_BIN or run scripts/postgres.sh)"
            );
            return None;
        }
        match Self::start() {
            Ok(server) => Some(server),
            Err(e) => panic!("PostgreSQL is installed but did not start: {e}"),
        }
    }

    /// Runs `initdb` and starts the server; returns once it accepts connections.
    pub fn start() -> Result<Self> {
        let bin = bin_dir().ok_or_else(|| {
            HarnessError::Invalid("no PostgreSQL binaries found (run scripts/postgres.sh)".into())
        })?;
        let identity = server_identity()?;
        let dir = crate::scratch::scratch_dir("pg")
            .map_err(|e| HarnessError::io("creating the postgres temp dir", e))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| HarnessError::io("creating the data dir", e))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(|e| HarnessError::io("chmod of the temp dir", e))?;
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| HarnessError::io("chmod of the data dir", e))?;
        if let Some((uid, gid)) = identity {
            std::os::unix::fs::chown(&data, Some(uid), Some(gid))
                .map_err(|e| HarnessError::io("chown of the data dir", e))?;
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| HarnessError::io("chown of the temp dir", e))?;
        }
        let out = as_identity(&mut Command::new(bin.join("initdb")), identity)
            .args(["-D"])
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .current_dir(dir.path())
            .output()
            .map_err(|e| HarnessError::io("running initdb", e))?;
        if !out.status.success() {
            return Err(HarnessError::Startup {
                message: format!("initdb failed ({})", out.status),
                log_tail: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        let port = ports::free_port().map_err(|e| HarnessError::io("picking a port", e))?;
        let log_path = dir.path().join("postgres.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| HarnessError::io("creating the postgres log", e))?;
        if let Some((uid, gid)) = identity {
            let _ = std::os::unix::fs::chown(&log_path, Some(uid), Some(gid));
        }
        let log_err = log
            .try_clone()
            .map_err(|e| HarnessError::io("cloning the log handle", e))?;
        let mut cmd = Command::new(bin.join("postgres"));
        as_identity(&mut cmd, identity)
            .arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=100",
            ])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let child = spawn_child(cmd).map_err(|e| HarnessError::io("spawning postgres", e))?;
        let server = PostgresServer {
            child: Mutex::new(child),
            port,
            bin,
            dir,
        };
        server.wait_ready(&log_path)?;
        Ok(server)
    }

    fn wait_ready(&self, log_path: &Path) -> Result<()> {
        let start = Instant::now();
        let log_tail = || {
            let text = std::fs::read_to_string(log_path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        loop {
            if let Ok(mut child) = self.child.lock()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(HarnessError::Startup {
                    message: format!("postgres exited during startup ({status})"),
                    log_tail: log_tail(),
                });
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-t",
                    "1",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(());
            }
            if start.elapsed() > STARTUP_TIMEOUT {
                return Err(HarnessError::Startup {
                    message: format!("postgres not ready after {STARTUP_TIMEOUT:?}"),
                    log_tail: log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` (user `postgres`, no password).
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub fn create_database(&self, name: &str) -> Result<String> {
        let out = Command::new(self.bin.join("createdb"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .map_err(|e| HarnessError::io("running createdb", e))?;
        if !out.status.success() {
            return Err(HarnessError::Unexpected(format!(
                "createdb {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(self.url(name))
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let Ok(mut child) = self.child.lock() else {
            return;
        };
        // SIGINT is PostgreSQL's "fast shutdown": no waiting for clients.
        let _ = send_signal(child.id(), SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
