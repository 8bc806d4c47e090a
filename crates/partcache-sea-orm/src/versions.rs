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

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;
use partcache::Cache;

use crate::key::KeyBuf;
use crate::query_cache::Counters;

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
}

fn fresh_token(old: Option<u64>) -> u64 {
    loop {
        let token = fastrand::u64(..);
        if Some(token) != old {
            return token;
        }
    }
}

impl Versions {
    pub(crate) fn new(cache: Cache<String, u64>, ns: String, counters: Arc<Counters>) -> Self {
        Versions {
            cache,
            ns,
            failed: Mutex::new(BTreeSet::new()),
            counters,
        }
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
    /// remembered (see [`Versions::healthy`]); they never fail the write that caused them.
    pub(crate) async fn bump(&self, keys: impl IntoIterator<Item = String>) {
        let keys: BTreeSet<String> = keys.into_iter().collect();
        let bumps = keys.into_iter().map(|key| async move {
            let result = self
                .cache
                .invoke(&key, |entry| {
                    let old = entry.value().copied();
                    entry.set_value(fresh_token(old));
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
    }

    /// Whether every bump this process attempted has reached the store. Retries the
    /// failed ones first. While this is `false`, readers bypass the cache.
    pub(crate) async fn healthy(&self) -> bool {
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
