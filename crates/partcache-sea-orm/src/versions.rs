//! Version tokens: one per table (queries), per table for entity rows, per row, per
//! tag, plus a global epoch. They live in a `Cache<String, u64>` of the shared store, so
//! every process attached to it agrees on them.
//!
//! # Tokens, not counters
//!
//! A version is a random 64-bit token, and the only test ever made on it is
//! *equality*: a cached result is keyed by the tokens it was read under, and serves only
//! while every one of them is still current. A bump replaces the token with a fresh
//! random one (through `invoke`, so the replacement is atomic per key and never equal
//! to the token it replaces).
//!
//! Why not a counter: on a Redis failover, a bump acknowledged by the old master but
//! not yet replicated is lost and the version goes back. With counters, the next bump
//! after the failover produces the *same number* the lost bump did, and every result
//! cached under that number before the failover (read from the data of the lost
//! timeline) matches again. With random tokens a lost token never comes back (the
//! chance of a repeat is 2⁻⁶⁴ per pair), so no result from one timeline can ever match a
//! version of another.
//!
//! What a lost bump can still do: the version reverts to the token before it, and results
//! cached under *that* token (read before the lost write) are valid again until the
//! next write to the table, the results' time to live, or an explicit
//! [`QueryCache::invalidate_all`](crate::QueryCache::invalidate_all). That is the same
//! exposure as any write lost by an asynchronously replicated store; the TTL bounds it,
//! and calling `invalidate_all` after a failover (it bumps the epoch on the new master)
//! closes it. A version entry that is missing altogether (evicted, never replicated)
//! is recreated with a fresh token, which invalidates everything cached under the old
//! one: a missing version can never cause a stale hit.
//!
//! # Write markers
//!
//! With [`UnreachableStore::RefuseWrite`](crate::UnreachableStore::RefuseWrite) (the
//! default), a write first replaces the versions it will bump with a *marker*: a token
//! that carries a deadline. While a version holds a live marker, readers neither serve
//! nor store results under it (the write may commit at any moment); after the write
//! the marker is replaced by a fresh token. This is Hibernate's update-timestamps
//! pre-invalidation. A writer that dies between the two leaves a marker that readers
//! stop honouring at its deadline, by which time the write has committed or failed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use partcache::Cache;

use crate::key::KeyBuf;
use crate::stats::Counters;

/// Which version a key names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Version {
    /// Bumped by anything the connection cannot attribute to tables.
    Epoch,
    /// A table, as query results see it: bumped by every write to the table.
    Table(String),
    /// A table, as the entity cache sees it: bumped by writes that may touch many rows.
    Rows(String),
    /// One row of a table (its canonical primary-key text).
    Row(String, String),
    /// A user tag of query results.
    Tag(String),
}

/// The version entries of one namespace.
pub(crate) struct Versions {
    cache: Cache<String, u64>,
    ns: String,
    /// Version keys whose bump failed (the store was down). Until they are bumped, this
    /// process serves nothing from the cache: a result keyed by their old token could be
    /// stale.
    failed: Mutex<BTreeSet<String>>,
    counters: Arc<Counters>,
    /// Whether a task retrying the failed bumps is running.
    retrying: AtomicBool,
    /// The longest a write marker is honoured.
    marker_ttl: Duration,
}

/// The 16 top bits of a write marker.
const MARKER_MAGIC: u64 = 0xC0DE;
const DEADLINE_BITS: u64 = (1 << 34) - 1;

fn fresh_token(old: Option<u64>) -> u64 {
    loop {
        let token = fastrand::u64(..);
        if Some(token) != old && token >> 48 != MARKER_MAGIC {
            return token;
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        & DEADLINE_BITS
}

/// A marker: the magic, a deadline (seconds since the Unix epoch, 34 bits) and 14
/// random bits that tell two writers' markers apart.
fn marker_token(ttl: Duration) -> u64 {
    let deadline = (now_secs() + ttl.as_secs().max(1)) & DEADLINE_BITS;
    (MARKER_MAGIC << 48) | (deadline << 14) | fastrand::u64(..1 << 14)
}

impl Versions {
    pub(crate) fn new(
        cache: Cache<String, u64>,
        ns: String,
        counters: Arc<Counters>,
        marker_ttl: Duration,
    ) -> Self {
        Versions {
            cache,
            ns,
            failed: Mutex::new(BTreeSet::new()),
            counters,
            retrying: AtomicBool::new(false),
            marker_ttl,
        }
    }

    /// The name of the cache the versions live in.
    pub(crate) fn cache_name(&self) -> &str {
        self.cache.name()
    }

    /// Whether `token` is a marker whose deadline has not passed. A deadline further
    /// away than the marker time to live is not one this crate wrote (a random token
    /// of an older release that happens to carry the magic) and is ignored.
    pub(crate) fn is_live_marker(&self, token: u64) -> bool {
        if token >> 48 != MARKER_MAGIC {
            return false;
        }
        let deadline = (token >> 14) & DEADLINE_BITS;
        let now = now_secs();
        deadline >= now && deadline <= now + self.marker_ttl.as_secs() + 1
    }

    /// Puts a fresh marker on every key of `keys`, before a write that will bump them.
    /// Fails when any key could not be marked: the write must then not run.
    pub(crate) async fn mark(&self, keys: &[String]) -> partcache::Result<u64> {
        let marker = marker_token(self.marker_ttl);
        let marks = keys.iter().map(|key| {
            self.cache.invoke(key, move |entry| {
                entry.set_value(marker);
            })
        });
        for result in futures::future::join_all(marks).await {
            if let Err(error) = result {
                self.counters.bump_failures.incr();
                return Err(error);
            }
        }
        Ok(marker)
    }

    /// The store key of a version.
    pub(crate) fn key(&self, version: &Version) -> String {
        let mut k = KeyBuf::new("v", &self.ns);
        match version {
            Version::Epoch => k.field("epoch"),
            Version::Table(t) => k.field("table").field(t),
            Version::Rows(t) => k.field("rows").field(t),
            Version::Row(t, id) => k.field("row").field(t).field(id),
            Version::Tag(tag) => k.field("tag").field(tag),
        };
        k.finish()
    }

    /// The current tokens of `keys`, creating a token for any that has none. Cost on the
    /// local store: one map lookup per key once the tokens exist.
    pub(crate) async fn current(&self, keys: &[String]) -> partcache::Result<Vec<u64>> {
        let mut tokens = Vec::with_capacity(keys.len());
        for key in keys {
            let token = match self.cache.get(key).await? {
                Some(token) => *token,
                None => {
                    self.cache
                        .invoke(key, |entry| match entry.value().copied() {
                            Some(token) => token,
                            None => {
                                let token = fresh_token(None);
                                entry.set_value(token);
                                token
                            }
                        })
                        .await?
                }
            };
            tokens.push(token);
        }
        Ok(tokens)
    }

    /// Replaces the tokens of `keys` with fresh ones. Failures are logged, counted and
    /// remembered (see [`Versions::healthy`]), and retried in the background until they
    /// land; they never fail the write that caused them.
    pub(crate) async fn bump(self: &Arc<Self>, keys: impl IntoIterator<Item = String>) {
        self.bump_after(keys, None).await;
    }

    /// [`Versions::bump`] after a write that marked the keys with `marker`: a key that
    /// holds *another* writer's live marker keeps it (that write is still running; its
    /// own bump replaces the marker).
    pub(crate) async fn bump_after(
        self: &Arc<Self>,
        keys: impl IntoIterator<Item = String>,
        marker: Option<u64>,
    ) {
        let keys: BTreeSet<String> = keys.into_iter().collect();
        let bumps = keys.into_iter().map(|key| async move {
            let result = self
                .cache
                .invoke(&key, |entry| {
                    let old = entry.value().copied();
                    let others = old.is_some_and(|t| Some(t) != marker && self.is_live_marker(t));
                    if !others {
                        entry.set_value(fresh_token(old));
                    }
                })
                .await;
            (key, result)
        });
        for (key, result) in futures::future::join_all(bumps).await {
            match result {
                Ok(()) => {
                    self.counters.bumps.incr();
                }
                Err(error) => {
                    self.counters.bump_failures.incr();
                    tracing::error!(
                        %error, version = %key,
                        "partcache-sea-orm: could not bump a table version; this process bypasses the cache until it can"
                    );
                    self.failed.lock().insert(key);
                }
            }
        }
        if !self.failed.lock().is_empty() {
            self.retry_in_background();
        }
    }

    /// Starts (once) a task that retries the failed bumps until every one has landed,
    /// backing off from 50 ms to 2 s between rounds. Without a Tokio runtime the failed
    /// bumps are retried before this process's next cached read only.
    fn retry_in_background(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.retrying.swap(true, Ordering::AcqRel) {
            return;
        }
        let versions = Arc::downgrade(self);
        runtime.spawn(async move {
            let mut pause = Duration::from_millis(50);
            loop {
                tokio::time::sleep(pause).await;
                let Some(versions) = versions.upgrade() else {
                    return;
                };
                let keys: Vec<String> = std::mem::take(&mut *versions.failed.lock())
                    .into_iter()
                    .collect();
                if !keys.is_empty() {
                    versions.bump_after(keys, None).await;
                }
                if versions.failed.lock().is_empty() {
                    versions.retrying.store(false, Ordering::Release);
                    // A bump that failed after the check above starts its own task.
                    if versions.failed.lock().is_empty()
                        || versions.retrying.swap(true, Ordering::AcqRel)
                    {
                        return;
                    }
                }
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        });
    }

    /// Whether every bump this process attempted has reached the store. Retries the
    /// failed ones first. While this is `false`, readers bypass the cache.
    pub(crate) async fn healthy(self: &Arc<Self>) -> bool {
        if self.failed.lock().is_empty() {
            return true;
        }
        let keys: Vec<String> = std::mem::take(&mut *self.failed.lock())
            .into_iter()
            .collect();
        self.bump(keys).await;
        self.failed.lock().is_empty()
    }
}
