//! The harness's error type.

use std::time::Duration;

use crate::binaries::SkipReason;

/// Everything that can go wrong while starting, driving or inspecting test servers.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The server binaries of the requested flavour are not installed.
    #[error("server binaries unavailable: {0}")]
    Unavailable(#[from] SkipReason),
    /// An I/O error (spawning a process, creating a temporary directory, binding a port...).
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A command sent to a server failed.
    #[error("redis error while {context}: {source}")]
    Redis {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: redis::RedisError,
    },
    /// A server process exited (or never answered) during startup.
    #[error("server failed to start: {message}\n--- server log tail ---\n{log_tail}")]
    Startup {
        /// What happened.
        message: String,
        /// The last lines of the server's log and stdout/stderr.
        log_tail: String,
    },
    /// A condition was not reached before its deadline.
    #[error("timed out after {elapsed:?} waiting for {what}; last observation: {last}")]
    Timeout {
        /// What the harness waited for.
        what: String,
        /// How long it waited.
        elapsed: Duration,
        /// Why the last check failed.
        last: String,
    },
    /// `redis-cli` (e.g. `--cluster create`) failed.
    #[error("redis-cli {args} failed ({status}):\n{output}")]
    Cli {
        /// The arguments passed to `redis-cli`.
        args: String,
        /// The exit status, or a note that it was killed.
        status: String,
        /// Its combined stdout and stderr.
        output: String,
    },
    /// Another tool the harness runs (`openssl`) failed.
    #[error("{command} failed ({status}):\n{output}")]
    Command {
        /// The command line.
        command: String,
        /// The exit status.
        status: String,
        /// Its combined stdout and stderr.
        output: String,
    },
    /// A request that cannot be honoured (bad node index, unsupported topology...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The servers answered something the harness did not expect.
    #[error("unexpected server state: {0}")]
    Unexpected(String),
}

/// Result alias for harness operations.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

impl HarnessError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn redis(context: impl Into<String>, source: redis::RedisError) -> Self {
        Self::Redis {
            context: context.into(),
            source,
        }
    }
}
