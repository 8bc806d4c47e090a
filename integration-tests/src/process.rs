//! One server process: spawning (with parent-death SIGKILL), readiness, signals, logs.

use std::ffi::c_int;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::admin::{self, Endpoint};
use crate::binaries::RedisBinaries;
use crate::error::{HarnessError, Result};
use crate::ports;
use crate::tls::TlsFiles;

#[allow(unsafe_code)] // the harness's only foreign functions; see the manifest
mod sys {
    use std::ffi::c_int;

    unsafe extern "C" {
        pub(super) fn prctl(option: c_int, ...) -> c_int;
        pub(super) fn getppid() -> c_int;
        pub(super) fn kill(pid: c_int, sig: c_int) -> c_int;
    }

    pub(super) const PR_SET_PDEATHSIG: c_int = 1;
    pub(crate) const SIGINT: c_int = 2;
    pub(super) const SIGKILL: c_int = 9;
    pub(super) const SIGTERM: c_int = 15;
    pub(crate) const SIGCONT: c_int = 18;
    pub(crate) const SIGSTOP: c_int = 19;
}

pub(crate) use sys::{SIGCONT, SIGINT, SIGSTOP};

/// How many times startup moves a server to a fresh port after "Address already in use".
const PORT_RETRIES: u32 = 5;

struct SpawnRequest {
    cmd: Command,
    reply: mpsc::SyncSender<io::Result<Child>>,
}

static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();

/// Spawns `cmd` from one long-lived thread. Children get `PR_SET_PDEATHSIG(SIGKILL)`, which
/// fires when the *thread* that forked them exits; this thread lives as long as the process,
/// so servers die exactly when the test process dies (even by SIGKILL or abort), and not
/// when the test thread that started them ends.
pub(crate) fn spawn_child(mut cmd: Command) -> io::Result<Child> {
    let parent = std::process::id() as c_int;
    // SAFETY: the closure only calls the async-signal-safe prctl(2) and getppid(2).
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            if sys::prctl(sys::PR_SET_PDEATHSIG, sys::SIGKILL as std::ffi::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            if sys::getppid() != parent {
                return Err(io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("partcache-server-spawner".into())
            .spawn(move || {
                for mut req in rx {
                    let _ = req.reply.send(req.cmd.spawn());
                }
            })
            .expect("cannot start the server spawner thread");
        tx
    });
    let (reply, rx) = mpsc::sync_channel(1);
    tx.send(SpawnRequest { cmd, reply })
        .map_err(|_| io::Error::other("server spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("server spawner thread is gone"))?
}

/// Sends `sig` to `pid`.
pub(crate) fn send_signal(pid: u32, sig: c_int) -> io::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    #[allow(unsafe_code)]
    let sent = unsafe { sys::kill(pid as c_int, sig) };
    if sent == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Outcome of one readiness probe.
pub(crate) enum Probe {
    Ready,
    NotYet(String),
    Exited(String),
}

/// A server process bound to a fixed port and temp dir (the port may change only during
/// initial startup, when a bind race is detected).
pub(crate) struct NodeProcess {
    binaries: RedisBinaries,
    port: u16,
    cluster: bool,
    args: Vec<String>,
    /// TLS only on `port` (`--port 0 --tls-port <port>`) with these files.
    tls: Option<Arc<TlsFiles>>,
    child: Mutex<Option<Child>>,
    last_exit: Mutex<Option<ExitStatus>>,
    last_pid: AtomicU32,
    down_since: Mutex<Option<Instant>>,
    paused: AtomicBool,
    // Dropped last (field order), after Drop killed the process.
    dir: TempDir,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl NodeProcess {
    /// Prepares (does not spawn) a server. `args` are extra server arguments appended after
    /// the harness's own (`--port`, `--bind`, `--dir`, `--logfile`, no persistence...).
    /// With `tls`, the server listens with TLS only, on the port plain servers use.
    pub(crate) fn new(
        binaries: RedisBinaries,
        cluster: bool,
        args: Vec<String>,
        tls: Option<Arc<TlsFiles>>,
    ) -> Result<Self> {
        let port = if cluster {
            ports::free_cluster_port()
        } else {
            ports::free_port()
        }
        .map_err(|e| HarnessError::io("picking a free port", e))?;
        let dir = crate::scratch::scratch_dir(binaries.flavor().name())
            .map_err(|e| HarnessError::io("creating a temp dir", e))?;
        Ok(Self {
            binaries,
            port,
            cluster,
            args,
            tls,
            child: Mutex::new(None),
            last_exit: Mutex::new(None),
            last_pid: AtomicU32::new(0),
            down_since: Mutex::new(None),
            paused: AtomicBool::new(false),
            dir,
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn binaries(&self) -> &RedisBinaries {
        &self.binaries
    }

    /// The TLS files of a TLS-only server.
    pub(crate) fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_deref()
    }

    /// Where admin commands for this server go.
    pub(crate) fn endpoint(&self) -> Endpoint<'_> {
        Endpoint {
            port: self.port,
            tls: self.tls(),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn stdout_path(&self) -> PathBuf {
        self.dir.path().join("stdout.log")
    }

    fn command(&self) -> Result<Command> {
        let mut c = Command::new(self.binaries.server_path());
        let port = self.port.to_string();
        let dir = self.dir.path().to_string_lossy().into_owned();
        let log = self.log_path().to_string_lossy().into_owned();
        match &self.tls {
            None => c.args(["--port", &port]),
            Some(tls) => c.args(tls.server_args(self.port, self.cluster)),
        };
        c.args(["--bind", "127.0.0.1", "--daemonize", "no"])
            .args(["--dir", &dir, "--logfile", &log])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--repl-diskless-sync-delay", "0"]);
        if self.binaries.supports_enable_debug_command() {
            c.args(["--enable-debug-command", "yes"]);
        }
        c.args(&self.args);
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.stdout_path())
            .map_err(|e| HarnessError::io("opening stdout.log", e))?;
        let err = out
            .try_clone()
            .map_err(|e| HarnessError::io("opening stdout.log", e))?;
        c.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        Ok(c)
    }

    /// Spawns the server (error if it is already running). Does not wait for readiness.
    pub(crate) fn spawn(&self) -> Result<()> {
        let mut child = lock(&self.child);
        if let Some(c) = child.as_mut()
            && matches!(c.try_wait(), Ok(None))
        {
            return Err(HarnessError::Invalid(format!(
                "server on port {} is already running (pid {})",
                self.port,
                c.id()
            )));
        }
        let cmd = self.command()?;
        let c = spawn_child(cmd).map_err(|e| {
            HarnessError::io(
                format!("spawning {}", self.binaries.server_path().display()),
                e,
            )
        })?;
        self.last_pid.store(c.id(), Ordering::SeqCst);
        *child = Some(c);
        *lock(&self.last_exit) = None;
        *lock(&self.down_since) = None;
        self.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Pid of the running process, `None` when it is not running.
    pub(crate) fn pid(&self) -> Option<u32> {
        let mut child = lock(&self.child);
        self.reap(&mut child);
        child.as_ref().map(Child::id)
    }

    /// Pid of the most recently spawned process (running or not).
    pub(crate) fn last_pid(&self) -> u32 {
        self.last_pid.load(Ordering::SeqCst)
    }

    /// Whether the process is running (a SIGSTOPped process counts as running).
    pub(crate) fn is_running(&self) -> bool {
        self.pid().is_some()
    }

    /// When the process was last SIGKILLed through [`NodeProcess::kill`] or SIGSTOPped
    /// through [`NodeProcess::signal`] (cleared by a respawn or SIGCONT).
    pub(crate) fn down_since(&self) -> Option<Instant> {
        *lock(&self.down_since)
    }

    /// Whether the process was SIGSTOPped through [`NodeProcess::signal`] and not continued.
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Running and not paused.
    pub(crate) fn is_responsive(&self) -> bool {
        !self.is_paused() && self.is_running()
    }

    fn reap(&self, child: &mut Option<Child>) {
        if let Some(c) = child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            *lock(&self.last_exit) = Some(status);
            *child = None;
        }
    }

    /// SIGKILLs and reaps the process. Returns whether it was running.
    pub(crate) fn kill(&self) -> bool {
        let mut child = lock(&self.child);
        self.reap(&mut child);
        let Some(mut c) = child.take() else {
            return false;
        };
        let _ = c.kill();
        let status = c.wait().ok();
        *lock(&self.last_exit) = status;
        *lock(&self.down_since) = Some(Instant::now());
        self.paused.store(false, Ordering::SeqCst);
        true
    }

    /// Sends SIGKILL without waiting (used to kill many processes in parallel before
    /// reaping them with [`NodeProcess::kill`]).
    pub(crate) fn kill_nowait(&self) {
        let child = lock(&self.child);
        if let Some(c) = child.as_ref() {
            let _ = send_signal(c.id(), sys::SIGKILL);
        }
    }

    /// SIGTERM (the server exits without saving: persistence is off), then SIGKILL after
    /// `grace`. Returns whether it was running.
    pub(crate) fn stop(&self, grace: Duration) -> bool {
        let mut child = lock(&self.child);
        self.reap(&mut child);
        let Some(mut c) = child.take() else {
            return false;
        };
        // A stopped (SIGSTOP) process must be continued to handle SIGTERM.
        let _ = send_signal(c.id(), sys::SIGTERM);
        let _ = send_signal(c.id(), sys::SIGCONT);
        self.paused.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + grace;
        loop {
            match c.try_wait() {
                Ok(Some(status)) => {
                    *lock(&self.last_exit) = Some(status);
                    return true;
                }
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
                _ => {
                    let _ = c.kill();
                    *lock(&self.last_exit) = c.wait().ok();
                    return true;
                }
            }
        }
    }

    /// Sends a signal to the running process.
    pub(crate) fn signal(&self, sig: c_int) -> Result<()> {
        let pid = self.pid().ok_or_else(|| {
            HarnessError::Invalid(format!("server on port {} is not running", self.port))
        })?;
        send_signal(pid, sig).map_err(|e| HarnessError::io(format!("signalling pid {pid}"), e))?;
        match sig {
            sys::SIGSTOP => {
                self.paused.store(true, Ordering::SeqCst);
                *lock(&self.down_since) = Some(Instant::now());
            }
            sys::SIGCONT => {
                self.paused.store(false, Ordering::SeqCst);
                *lock(&self.down_since) = None;
            }
            _ => {}
        }
        Ok(())
    }

    /// The last `n` lines of the server log and of its stdout/stderr.
    pub(crate) fn log_tail(&self, n: usize) -> String {
        let mut out = String::new();
        for (name, p) in [
            ("server.log", self.log_path()),
            ("stdout/stderr", self.stdout_path()),
        ] {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(n);
            if !lines.is_empty() {
                out.push_str(&format!("[{name} of port {}]\n", self.port));
                for l in &lines[from..] {
                    out.push_str(l);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// One readiness probe: the process runs, answers PING, and `INFO server` reports our
    /// own pid (so a foreign server that grabbed the port is never mistaken for ours).
    pub(crate) fn probe(&self) -> Probe {
        let Some(pid) = self.pid() else {
            let status = lock(&self.last_exit)
                .map(|s| s.to_string())
                .unwrap_or_else(|| "never started".into());
            return Probe::Exited(status);
        };
        let mut con = match admin::connect_with(
            self.endpoint(),
            Duration::from_millis(200),
            Duration::from_secs(1),
        ) {
            Ok(c) => c,
            Err(e) => return Probe::NotYet(e.to_string()),
        };
        let pong: Result<String> = admin::query_on(&mut con, self.port, &["PING"]);
        if let Err(e) = pong {
            return Probe::NotYet(e.to_string());
        }
        let info: Result<String> = admin::query_on(&mut con, self.port, &["INFO", "server"]);
        match info {
            Ok(text) => {
                let fields = admin::parse_info(&text);
                match fields.get("process_id").and_then(|p| p.parse::<u32>().ok()) {
                    Some(p) if p == pid => Probe::Ready,
                    other => Probe::NotYet(format!(
                        "port {} answered by process_id {other:?}, not our pid {pid}",
                        self.port
                    )),
                }
            }
            Err(e) => Probe::NotYet(e.to_string()),
        }
    }

    /// Restarts a stopped/killed server on its port and waits until it answers.
    pub(crate) fn respawn_and_wait(&self, timeout: Duration) -> Result<()> {
        self.spawn()?;
        let start = Instant::now();
        loop {
            match self.probe() {
                Probe::Ready => return Ok(()),
                Probe::Exited(status) => {
                    return Err(HarnessError::Startup {
                        message: format!(
                            "{} on port {} exited with {status} during restart",
                            self.binaries.server_path().display(),
                            self.port
                        ),
                        log_tail: self.log_tail(30),
                    });
                }
                Probe::NotYet(why) if start.elapsed() > timeout => {
                    self.kill();
                    return Err(HarnessError::Startup {
                        message: format!(
                            "server on port {} not ready after {timeout:?}: {why}",
                            self.port
                        ),
                        log_tail: self.log_tail(30),
                    });
                }
                Probe::NotYet(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns every node, then waits for all of them in one polling loop (so startup time is
/// that of the slowest node, not the sum). A node that exits with "Address already in use"
/// (another process took its port between the check and its bind) is moved to a fresh port
/// and respawned, up to [`PORT_RETRIES`] times.
pub(crate) fn start_all(nodes: &mut [NodeProcess], timeout: Duration) -> Result<()> {
    for n in nodes.iter() {
        n.spawn()?;
    }
    let start = Instant::now();
    let mut ready = vec![false; nodes.len()];
    let mut retries = vec![0u32; nodes.len()];
    let mut last = vec![String::new(); nodes.len()];
    loop {
        for i in 0..nodes.len() {
            if ready[i] {
                continue;
            }
            match nodes[i].probe() {
                Probe::Ready => ready[i] = true,
                Probe::NotYet(why) => last[i] = why,
                Probe::Exited(status) => {
                    let tail = nodes[i].log_tail(30);
                    if tail.contains("already in use") && retries[i] < PORT_RETRIES {
                        retries[i] += 1;
                        trace!(
                            "port {} was taken before the server could bind it; retrying",
                            nodes[i].port
                        );
                        let n = &mut nodes[i];
                        n.port = if n.cluster {
                            ports::free_cluster_port()
                        } else {
                            ports::free_port()
                        }
                        .map_err(|e| HarnessError::io("picking a free port", e))?;
                        n.spawn()?;
                        continue;
                    }
                    return Err(HarnessError::Startup {
                        message: format!(
                            "{} on port {} exited with {status} before answering",
                            nodes[i].binaries.server_path().display(),
                            nodes[i].port
                        ),
                        log_tail: tail,
                    });
                }
            }
        }
        if ready.iter().all(|r| *r) {
            return Ok(());
        }
        if start.elapsed() > timeout {
            let i = ready.iter().position(|r| !r).unwrap_or(0);
            return Err(HarnessError::Startup {
                message: format!(
                    "server on port {} not ready after {timeout:?}: {}",
                    nodes[i].port, last[i]
                ),
                log_tail: nodes[i].log_tail(30),
            });
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpListener};

    /// Needs `redis-server` (scripts/servers.sh).
    #[test]
    fn start_moves_to_a_fresh_port_when_the_port_was_taken() {
        let bins = RedisBinaries::redis().expect("redis-server installed (scripts/servers.sh)");
        let mut nodes = [NodeProcess::new(bins, true, Vec::new(), None).unwrap()];
        let taken = nodes[0].port();
        // Someone else grabs the port between the check and the server's bind.
        let _squatter = TcpListener::bind((Ipv4Addr::LOCALHOST, taken)).unwrap();
        start_all(&mut nodes, Duration::from_secs(10)).expect("start with retry");
        assert_ne!(nodes[0].port(), taken);
        assert!(matches!(nodes[0].probe(), Probe::Ready));
        let pid = nodes[0].pid().unwrap();
        drop(nodes);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
