//! # partcache-redis
//!
//! Redis and Valkey stores for [`partcache`]: a standalone server, a Redis Cluster
//! across whose masters every cache is split into partitions, or several
//! such deployments joined into one partitioned store, with JCache
//! semantics (expiry, max-idle, per-entry TTL, conditional writes, eviction, events)
//! implemented server-side in Lua functions whose work per entry stays within its
//! partition's slot.
//!
//! Call [`install`] once at start-up; then a URL picks the backend:
//!
//! ```no_run
//! # async fn demo() -> partcache::Result<()> {
//! use partcache::{CacheManager, ExpiryPolicy};
//! use std::time::Duration;
//!
//! partcache_redis::install();
//! let manager = CacheManager::from_url("redis-cluster://127.0.0.1:7000,127.0.0.1:7001?partitions=231")?;
//! let sessions = manager
//!     .cache::<String, String>("sessions")
//!     .expiry(ExpiryPolicy::Accessed(Duration::from_secs(1800)))
//!     .build()
//!     .await?;
//! sessions.put("s1".to_string(), "alice".to_string()).await?;
//! println!("{}", sessions.balance_report().await?);
//! # Ok(()) }
//! ```
//!
//! # URLs
//!
//! | form | deployment |
//! |---|---|
//! | `redis://[user:password@]host[:port][/db]` | one server (`valkey://` is the same) |
//! | `rediss://…`, `valkeys://…` | one server over TLS (see [TLS](#tls)) |
//! | `redis-cluster://[user:password@]h1:p1,h2:p2,…` | a cluster, from seed nodes (`valkey-cluster://` is the same; `tls=true` for TLS) |
//! | `redis-joined://?member=<url>&member=<url>…` | several deployments joined into one store (`valkey-joined://` is the same; see [`joined`]) |
//!
//! Parameters (anything else is an [`Error::Config`](partcache::Error::Config) naming it):
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `partitions` | 231 | partition count of caches that do not set one (3 to 16384) |
//! | `connect_timeout` | `1s` | deadline for opening a connection |
//! | `response_timeout` | `1s` | every call returns within it, counted from the start of the cache call (encoding included): [`Error::Timeout`](partcache::Error::Timeout); on a write, a `Timeout` means the write may or may not have been applied |
//! | `breaker_failures` | `3` | timeouts in a row that open a node's circuit breaker; `0` turns breakers off (see [Circuit breakers](#circuit-breakers)) |
//! | `breaker_probe_interval` | `500ms` | how often an open breaker probes its node |
//! | `read_from_replicas` | `false` | on a cluster, serve plain reads from replicas (see below) |
//! | `max_pending_batched` | `4096` | most requests waiting to go in a batch (see [Costs](#costs)); one that finds this many waiting is sent alone; `0` turns batching off (every request is then counted as sent alone) |
//! | `max_pending_batched_bytes` | `16777216` (16 MiB) | most bytes (keys and values) the requests waiting to go in a batch hold together; one that does not fit is sent alone |
//! | `tls` | `false` | TLS on a `redis://` or cluster URL (what `rediss://` means) |
//! | `tls_ca` | system roots | path of a PEM file of CA certificates to trust instead of the system's (private or self-signed CAs) |
//! | `tls_cert`, `tls_key` | none | paths of the PEM client certificate (chain) and its private key, for mutual TLS; both or neither |
//! | `tls_insecure` | `false` | accept any server certificate, unverified: **for tests only** |
//!
//! Parsing never connects; the only I/O it does is reading the `tls_*` files (see
//! [TLS](#tls)).
//! Connections open on the first `build()` of a cache, which tells a configuration
//! mistake from an outage:
//!
//! * **Permanent** (retrying cannot fix it): `build()` fails with
//!   [`Error::Config`](partcache::Error::Config) carrying the server's reason. These
//!   are a refused password or user (`WRONGPASS`, `NOAUTH`), a user without the
//!   permissions partcache needs (`NOPERM`), a database index the server refuses, a
//!   TLS handshake that fails (an untrusted or misnamed certificate, a missing client
//!   certificate) or a TLS URL for a server that speaks plain text, and a server
//!   without the function library (Redis older than 7.0). A malformed URL (a host
//!   that is not a name, an IPv4 address or a bracketed IPv6 address, a bad port)
//!   fails `CacheManager::from_url` already.
//! * **Transient** (an outage): a refused connection, a timeout, and a node that is
//!   `LOADING` its data or answers `CLUSTERDOWN`, `MASTERDOWN` or `TRYAGAIN`.
//!   `build()` returns the cache, whose calls fail with
//!   [`Error::Unavailable`](partcache::Error::Unavailable) or
//!   [`Error::Timeout`](partcache::Error::Timeout) within the timeouts above until the
//!   deployment answers; then it opens.
//!
//! A permanent error met later (a password rotated on the server) fails the calls that
//! meet it with the same [`Error::Config`](partcache::Error::Config).
//!
//! # Circuit breakers
//!
//! Each node has a circuit breaker (per deployment and kind of connection). After
//! `breaker_failures` timeouts in a row with no reply from the node in between (a
//! stopped process, a network black hole), it opens: calls that need that node fail at
//! once with [`Error::CircuitOpen`](partcache::Error::CircuitOpen), which is transient
//! like a timeout (adapters fail open at once, at the origin's or the database's own
//! speed), while partitions on other nodes go on as before. Once per
//! `breaker_probe_interval`, a call that meets the open breaker starts one probe in the
//! background (a `PING`, on the node's connection or a new one, within the timeouts);
//! no caller waits for it. The breaker closes when the node answers the probe, or
//! answers any call. On a cluster, a call that meets an open breaker also has the slot
//! map read again, at most once per probe interval, so a failover to a replica is
//! followed. A node is thus waited for at most `breaker_failures` times per freeze,
//! each time at most one response timeout. [`BreakerSettings`] sets both in code;
//! [`partcache::store::raw::RawStore::breakers`] (and `AnyCache::breakers`) report
//! each node's state and transitions ([`partcache::stats::BreakerStats`], with
//! `publish` for the `metrics` facade).
//!
//! # TLS
//!
//! The `tls` cargo feature (on by default; rustls with the *ring* provider) serves
//! `rediss://`, `valkeys://` and `tls=true`. Without it, such a URL is an
//! [`Error::Config`](partcache::Error::Config) saying so.
//!
//! ```text
//! rediss://cache.internal:6380?tls_ca=/etc/partcache/ca.pem
//! rediss://cache.internal:6380?tls_ca=/etc/partcache/ca.pem&tls_cert=/etc/partcache/client.pem&tls_key=/etc/partcache/client.key
//! redis-cluster://10.0.0.1:7000,10.0.0.2:7000?tls=true&tls_ca=/etc/partcache/ca.pem
//! ```
//!
//! * **Files** are read (and their PEM checked) when the URL is parsed, so a missing
//!   or unreadable file, a CA file without a certificate, a key file without a key, or
//!   `tls_cert` without `tls_key` (or the reverse) is an
//!   [`Error::Config`](partcache::Error::Config) from `CacheManager::from_url` naming
//!   the parameter and the file. Paths are percent-decoded; relative paths are relative
//!   to the working directory. Replacing a file later affects nothing until the URL is
//!   parsed again. In code, the same settings are [`TlsOptions`] in
//!   [`url::DeploymentUrl::tls_options`] (files read with [`PemFile::read`]).
//! * **Every connection** of the deployment uses them: data connections, replica
//!   connections, and the subscription connections of events and near caches. On a
//!   cluster, the nodes must serve TLS on the ports `CLUSTER SLOTS` reports (with
//!   `tls-cluster yes`, Redis reports its TLS ports), and their certificates must name
//!   the addresses it reports (an IP address needs an IP subject alternative name).
//! * **Verification**: the server's certificate must chain to `tls_ca` (else the
//!   system's roots) and name the host the connection was made to. A failed handshake
//!   (unknown CA, no client certificate where the server requires one) is a
//!   configuration mistake: `build()` fails with
//!   [`Error::Config`](partcache::Error::Config) naming the cause (rustls' reason, such
//!   as `UnknownIssuer` or `CertificateRequired`). So is a TLS URL for a server that
//!   speaks plain text: a handshake that has not finished within a quarter of the
//!   connect timeout (at most 100 ms) is accompanied by a plain-text `PING` to the same
//!   address, and a RESP answer to it ends the attempt.
//! * **Crypto provider**: redis-rs takes rustls' process-wide default provider. If
//!   the application installed none, partcache installs ring's on the first TLS
//!   connection (so another crate enabling rustls' `aws-lc-rs` as well cannot make
//!   rustls panic for want of a choice); an application's own choice is kept.
//!
//! # Layout and atomicity
//!
//! Every Redis key of partition `i` of a cache holds the partition's hash tag
//! (`PartitionMap::tag`), so a partition lives in one slot and every per-partition
//! operation is one atomic call of a Lua function. The functions form one library
//! (`FUNCTION LOAD`; its name carries a hash of its source, so clients of different
//! versions never call each other's code), loaded on a node by the first call that
//! finds it missing: **Redis 7.0 or later, or Valkey**. The key layout is in the `layout` module's docs. The
//! partition count, codec and layout version are recorded beside the data (in a meta
//! key whose slot depends on the cache name only); opening a cache with another
//! partition count or codec is an [`Error::Mismatch`](partcache::Error::Mismatch), and
//! so is opening it with `max_entries`
//! or `max_idle` when it was created with neither, or the other way round (whether the
//! cache keeps an entry index, below).
//!
//! Atomicity is per key for single-key operations and per partition for batches
//! (`get_all`, `put_all`, `remove_all`), never across partitions.
//!
//! # Costs
//!
//! * A hit costs one round trip. On a cache with no max-idle, no `Accessed`/`Touched`
//!   policy and no `max_entries`, reads are plain `GET`s / `MGET`s (which
//!   `read_from_replicas` sends to replicas); otherwise reads run a function that
//!   slides deadlines and refreshes the LRU order. On a standalone server, one-key
//!   plain reads that arrive while another is on its way wait for it and then go
//!   together as one `MGET`, so under load many reads cost the server one command.
//!   Likewise unconditional puts (that want no previous value, on caches without
//!   listeners in this process) are sent per node in one function call for all the
//!   puts that arrived meanwhile. The requests waiting for a batch are bounded per
//!   deployment, by count and bytes (`max_pending_batched`,
//!   `max_pending_batched_bytes`): a request that does not fit is sent alone at once,
//!   never dropped, and counted ([`RedisStore::batching_stats`], and the
//!   [`SENT_ALONE_METRIC`] counter of the `metrics` facade).
//! * A write is one function call. An unconditional put on a cache whose deadline does
//!   not depend on the entry it replaces (every policy but `Created` and `Accessed`)
//!   writes first (`SET … GET`) rather than reading first; on an eternal cache without
//!   max-idle or `max_entries` it is a lighter function of its own.
//! * Calls from many tasks share one multiplexed connection per node, whose driver
//!   writes whatever requests are waiting in one go (auto-pipelining).
//! * Batch operations group keys by partition, then by node: one pipeline per node,
//!   all nodes concurrently, results in the caller's order. partcache routes by node
//!   address with its own slot map (`CLUSTER SLOTS`), following `MOVED`/`ASK` and
//!   loading partcache's function library where a node lacks it.
//! * Only a cache with `max_entries` (LRU order) or `max_idle` (last use) keeps an
//!   entry index per partition. Without one, each entry is its Redis key alone (with
//!   no expiry records either while nobody listens, unless a later call needs them), a
//!   third or more less memory per entry; `len`, iteration, `clear` and the balance
//!   report then `SCAN` each master that serves a partition, visiting all its keys,
//!   the cache's or not.
//! * With an index, `len` is the sum of the per-partition indexes (`ZCARD`):
//!   approximate, it counts entries Redis expired until the reaper reclaimed them.
//!   Without, it counts the live entry keys a `SCAN` finds.
//! * `clear`, `remove_all` and iteration work partition by partition (with an index)
//!   or `SCAN` step by step (without), at most 256 entries per script call.
//!
//! # Expiry
//!
//! The JCache table of `partcache::expiry` is implemented server-side, with server
//! time. An entry's hard deadline is Redis' own expiry (`SET … PXAT`, `PEXPIREAT`), so
//! an expired entry is never returned. A background reaper per cache visits 24
//! partitions every 100 ms and reclaims the bookkeeping of expired entries (at most 256
//! per partition per visit), counting them and emitting `Expired` events; since Redis
//! already dropped the value, those events carry the key but no value.
//! `run_pending_tasks` runs a full reaper pass.
//!
//! On a max-idle cache, an entry whose only deadline is max-idle (eternal policy, no
//! TTL) and that was written while no process listened to the cache keeps its
//! deadline in its index score alone (two server calls less per write): its expiry is
//! exact and counted like any other, but not announced to a listener that arrived
//! after its last write. On a cache without an index, an entry written while no
//! process listened keeps no expiry records when its value's own expiry says all a
//! later call needs: its expiry is exact, but neither announced nor counted.
//!
//! # Eviction
//!
//! With `max_entries(n)`, each partition holds at most `max(1, floor(n / P))` entries
//! (so the cache never exceeds `n` when `n ≥ P`; with uneven keys it may hold fewer).
//! A write that creates an entry beyond its partition's budget evicts the partition's
//! least recently used entries (writes and reads refresh the order), counts them as
//! evictions and emits `Evicted` events with their values.
//!
//! # Events
//!
//! A process's own events reach its listeners from the replies of its calls, before
//! each call returns. Other processes' events travel on the partition's channel:
//! `SPUBLISH` on a cluster (sharded pub/sub), `PUBLISH` on a standalone server. A
//! process subscribes to a cache's channels only once it wants them: when its first
//! listener appears ([`partcache::Cache::subscribe`] starts the subscription,
//! [`partcache::Cache::listen`] returns once it is confirmed) or a near cache is
//! attached. Writers publish only while some process is subscribed (the functions ask
//! `PUBSUB SHARDNUMSUB` / `NUMSUB`, as Redisson's scripts do), so a cache nobody
//! listens to costs no messages. Listeners see the events of every process, in order
//! per partition. With `publish_events(false)` events stay in the process that caused
//! them.
//!
//! # Joined deployments
//!
//! `redis-joined://` joins several deployments, each a standalone server or a cluster
//! URL (percent-encoded as a `member` parameter; [`joined::build_url`] builds one), into
//! one store: partition `i` of cache `N` lives on the member that wins rendezvous
//! hashing of `(member id, N, i)`, so adding a member moves about `1/(D+1)` of the
//! partitions, all to the new member. Member ids (the member's `id` parameter, else its
//! normalised URL) must be the same in every process. A member that is down fails the
//! operations on its own partitions only. The [`joined`] module docs give the URL, the
//! id rule, costs, failure behaviour and what changing the members does.
//!
//! # Balance
//!
//! [`partcache::Cache::balance_report`] lists partitions, entries and bytes per master
//! (on a joined store, per master of every member).
//! Entries are the per-partition index counts (or, without an index, the entry keys a
//! `SCAN` finds); bytes are estimated per partition as the mean blob length of 16
//! entries (random ones with an index, the first found without) times the entry count
//! (blob bytes, not Redis' memory overhead).

mod arguments;
mod backend;
mod batching;
mod breaker;
mod connection;
mod delivery;
mod deployment;
mod events;
mod feed;
pub mod joined;
mod layout;
mod push;
mod refusal;
mod routing;
mod scripts;
mod settings;
mod slots;
mod store;
mod subscriber;
mod tls;
mod transport;
pub mod url;

pub use backend::{RedisBackend, RedisBackendFactory, SCHEMES};
pub use batching::bound::{BatchingStats, SENT_ALONE_METRIC};
pub use breaker::BreakerSettings;
pub use settings::{
    BatchingSettings, DEFAULT_MAX_PENDING_BATCHED, DEFAULT_MAX_PENDING_BATCHED_BYTES,
};
pub use store::RedisStore;
pub use tls::{ClientCertificate, PemFile, TlsOptions};

use std::sync::Arc;

/// Registers the Redis / Valkey schemes ([`SCHEMES`] and the joined
/// [`joined::SCHEMES`]) with [`partcache::CacheManager::from_url`]. Idempotent; call it
/// once at start-up.
pub fn install() {
    partcache::store::raw::register_backend(Arc::new(RedisBackendFactory));
    partcache::store::raw::register_backend(Arc::new(joined::JoinedBackendFactory));
}

/// The crate README's example, compiled as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
