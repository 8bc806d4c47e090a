//! Joined deployments: several independent Redis / Valkey deployments (standalone
//! servers, clusters, or a mix) joined into one partitioned store (`redis-joined://`,
//! as Redisson's `ShardedRedisson` does).
//!
//! ```no_run
//! # async fn demo() -> partcache::Result<()> {
//! partcache_redis::install();
//! let url = partcache_redis::joined::build_url([
//!     "redis://10.0.0.1:6379",
//!     "redis://10.0.0.2:6379?id=eu-2",
//!     "redis-cluster://10.0.1.1:7000,10.0.1.2:7000,10.0.1.3:7000",
//! ]);
//! // redis-joined://?member=redis://10.0.0.1:6379&member=redis://10.0.0.2:6379%3Fid%3Deu-2&...
//! let manager = partcache::CacheManager::from_url(&url)?;
//! let users = manager.cache::<u64, String>("users").build().await?;
//! users.put(7, "alice".to_string()).await?;
//! println!("{}", users.balance_report().await?);
//! # Ok(()) }
//! ```
//!
//! # URL
//!
//! `redis-joined://?member=<url>&member=<url>…[&partitions=N]` (`valkey-joined://` is
//! the same). Each member is a standalone or cluster URL (`redis://`, `rediss://`,
//! `redis-cluster://`, their `valkey` forms) with its own credentials and parameters,
//! percent-encoded as a query value: a member with at most one parameter may be written
//! as is; [`build_url`] encodes any. `partitions` belongs on the joined URL (a member
//! URL that sets it is an error: every member must use the same count), and so does
//! `lease_ttl` (a default of caches, which span all members: a member URL that sets it
//! is an error rather than a setting nothing reads); a member URL
//! may carry `id=<text>`, the member's id (below). No member, a member that does not
//! parse, a member that is itself joined, a deployment listed twice, or two members
//! with one id are each an [`Error::Config`](partcache::Error::Config) naming the member
//! (1-based).
//!
//! # Which member holds what
//!
//! Every cache keeps its `P` partitions. Partition `i` of cache `N`
//! lives on the member with the highest [`score`]`(id, N, i)`: XXH3-64 of the member's
//! id, a zero byte, the cache name, a zero byte and `i` as two little-endian bytes
//! (rendezvous hashing; ties, about one in 2^64, go to the smaller id). Every process
//! that lists the same member ids routes every key the same way, whatever the order of
//! the members. Adding a member moves about `1/(D+1)` of each cache's partitions, all
//! of them to the new member (`tests/it/joined.rs`: 15–35 % of 231 when a fourth member
//! joins three); removing one moves only its partitions.
//!
//! A member's **id** is its `id` parameter if it has one, else [`deployment_id`] of its
//! URL: `redis://<host:port>/<db>` or `redis-cluster://<sorted seeds>`, lower-cased,
//! port always written, without scheme flavour, TLS, credentials or parameters. So
//! every process must name each member the same way: the same host spelling (not
//! `10.0.0.1` here and `cache-1.internal` there) and, for a cluster, the same seed list,
//! or the same explicit `id`. Give ids when seed lists may differ between processes or
//! change over time.
//!
//! # Semantics and costs
//!
//! * Opening a cache opens it on **every** member with the same settings, so each
//!   member records and checks the partition count and codec (another count on any
//!   member fails `build()`), subscribes to the cache's events and runs its reaper.
//!   `max_entries` keeps its meaning: each partition's budget is `max_entries / P` and
//!   each partition lives on one member.
//! * A single-key operation goes to its partition's member and costs what it costs
//!   there. Many-key operations (`get_all`, `put_all`, `remove_all`, `contains`) are
//!   split per member and run on all members concurrently, results in the caller's
//!   order; atomicity stays per partition, never across partitions or members.
//! * `clear`, `remove_all()` (every entry), `len`, `run_pending_tasks` and the balance
//!   report fan out to every member concurrently; iteration visits the members one
//!   after the other.
//! * Events: each member's events (of every process) are merged into the cache's
//!   stream, in order per partition; an operation's own events reach local listeners
//!   before it returns, as on a single deployment.
//! * A near cache works in front of a joined store: each partition's invalidation feed
//!   (sequence numbers, losses, vouches) is taken from the member that holds it alone,
//!   so the near cache's staleness bound holds as on one deployment.
//! * [`partcache::Cache::balance_report`] has one row per master of every member,
//!   named `<member id> <master address>`: the partitions of the cache that master
//!   holds, and its entries and bytes.
//!
//! # When a member is unreachable
//!
//! Each member connects, fails and recovers on its own (as a standalone or cluster
//! store does). A cache builds while a member is down; operations on partitions of the
//! other members keep working; an operation that needs the down member fails with
//! [`Error::Unavailable`](partcache::Error::Unavailable) (its message names the member)
//! or [`Error::Timeout`](partcache::Error::Timeout) within the member's timeouts. A
//! many-key or cache-wide operation that touches it fails as a whole, though the other
//! members did their share (a `put_all` may have stored the other members' entries);
//! iteration yields the member's error as one item and goes on with the next member.
//! Partitions never move to another member because one is down: that would serve
//! stale data once it is back.
//!
//! # Changing the members
//!
//! Partitions that move to another member start empty there; their entries stay on the
//! old member, unreachable by key, still counted by `len`, listed by iteration, and
//! removed by `clear` or by expiry. Moving a partition back (removing a member that was
//! added) would make those old entries visible again, stale. So after changing the
//! members of a deployment, clear the caches whose entries do not expire soon (or let
//! them expire), and roll the change out to every process at once: processes with
//! different member lists route some keys to different members.

mod rendezvous;
mod store;
mod url;

use std::sync::Arc;

use async_trait::async_trait;
use partcache::Result;
use partcache::store::raw::{BackendFactory, RawCacheSpec, RawStore, RemoteBackend};

use crate::backend::RedisBackend;

pub use rendezvous::{Rendezvous, score};
pub use store::JoinedStore;
use store::describe;
pub use url::{JoinedUrl, Member, SCHEMES, build_url, deployment_id, parse};

/// Serves the `redis-joined` and `valkey-joined` schemes. Registered by
/// [`crate::install`].
#[derive(Debug, Default, Clone, Copy)]
pub struct JoinedBackendFactory;

impl BackendFactory for JoinedBackendFactory {
    fn schemes(&self) -> &'static [&'static str] {
        SCHEMES
    }

    fn connect(&self, url: &str) -> Result<Arc<dyn RemoteBackend>> {
        Ok(Arc::new(JoinedBackend::new(parse(url)?)?))
    }
}

/// Several deployments joined into one partitioned store. Connects lazily: nothing
/// touches the network before the first cache is opened.
#[derive(Debug)]
pub struct JoinedBackend {
    url: JoinedUrl,
    members: Vec<(String, RedisBackend)>,
    rendezvous: Rendezvous,
}

impl JoinedBackend {
    /// A backend for a parsed URL. An [`Error::Config`](partcache::Error::Config) when
    /// it has no member or two members share an id.
    pub fn new(url: JoinedUrl) -> Result<JoinedBackend> {
        let rendezvous = Rendezvous::new(url.members.iter().map(|m| m.id.clone()))?;
        let members = url
            .members
            .iter()
            .map(|m| (m.id.clone(), RedisBackend::new(m.url.clone())))
            .collect();
        Ok(JoinedBackend {
            url,
            members,
            rendezvous,
        })
    }

    /// The member ids and which member holds each partition.
    pub fn rendezvous(&self) -> &Rendezvous {
        &self.rendezvous
    }
}

#[async_trait]
impl RemoteBackend for JoinedBackend {
    fn describe(&self) -> String {
        describe(self.rendezvous.ids().iter().map(String::as_str))
    }

    /// Opens the cache on every member (concurrently). A member that is unreachable
    /// opens lazily (see the module docs); any other error of a member (another
    /// partition count) fails the open.
    async fn open(&self, spec: RawCacheSpec) -> Result<Arc<dyn RawStore>> {
        Ok(Arc::new(
            JoinedStore::open(&self.members, &self.rendezvous, spec).await?,
        ))
    }

    fn default_partitions(&self) -> u16 {
        self.url
            .partitions
            .unwrap_or(partcache::partition::DEFAULT_PARTITIONS)
    }

    fn default_lease_ttl(&self) -> Option<std::time::Duration> {
        self.url.lease_ttl
    }
}
