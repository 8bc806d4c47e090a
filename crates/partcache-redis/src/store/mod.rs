//! [`RedisStore`]: one cache on a Redis / Valkey deployment (the [`RawStore`] the core
//! calls). Every operation becomes per-partition commands (mostly function calls, see
//! `scripts.rs`) that the router sends as one pipeline per node.
//!
//! This file holds the store and its operations; each other job has its file, and
//! none imports one above it: `cache.rs` ([`StoreInner`]: the cache's settings and
//! how its requests run) at the bottom, then `requests.rs` (function calls and their
//! arguments) and `replies.rs` (reading the replies), then `asking.rs` (the calls of a
//! cache with a custom expiry policy, which ask it only what they need), `open.rs`
//! (opening and the layout check), `puts.rs` (a put joining its node's batch), `reaper.rs`, `scan.rs`
//! (key scans, scan steps, counts), `clear.rs`, `balance.rs`, `near.rs` (what a
//! near cache asks of the store) and `lease.rs` (leases of loads).

mod asking;
mod balance;
mod cache;
mod clear;
mod lease;
mod near;
mod open;
mod puts;
mod reaper;
mod replies;
mod requests;
mod scan;

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use partcache::balance::BalanceReport;
use partcache::store::LeasedPut;
use partcache::store::raw::{
    InvalidationSink, RawAction, RawCacheSpec, RawCondition, RawEvent, RawFound, RawKey, RawLease,
    RawStore, RawWrite, RawWriteOutcome,
};
use partcache::{Error, Result};
use redis::{Cmd, Value};
use tokio::sync::broadcast;

use crate::arguments::ttl_arg;
use crate::batching::Batcher;
use crate::batching::bound::BatchingStats;
use crate::batching::puts::BatchFunction;
use crate::routing::Request;
use crate::scripts::scripts;
use cache::{BATCH, StoreInner};
use open::OpenState;
use replies::{blob, int};
use scan::KeyScan;

pub use reaper::{
    CLAIM as REAPER_CLAIM, TAKEOVER as REAPER_TAKEOVER, TAKEOVER_BOTH as REAPER_TAKEOVER_BOTH,
};

/// One cache on a Redis deployment. See the module docs.
pub struct RedisStore {
    pub(crate) inner: Arc<StoreInner>,
    opening: OpenState,
    /// The near cache's heartbeat (see `events::heartbeat_loop`), once one is attached.
    heartbeat: OnceLock<tokio::task::JoinHandle<()>>,
}

impl RedisStore {
    /// Opens (creating if needed) the cache described by `spec` on `deployment`:
    /// checks the recorded layout, subscribes to its events, starts its reaper. If the
    /// deployment is unreachable (a transient error) the store is returned anyway and
    /// finishes opening on first use once the server answers (see [`OpenState`]); any
    /// other error (a layout mismatch) is returned.
    pub(crate) async fn open(batcher: Arc<Batcher>, spec: RawCacheSpec) -> Result<RedisStore> {
        let inner = Arc::new(StoreInner::new(batcher, spec));
        let store = RedisStore {
            opening: OpenState::new(inner.deployment.connect_timeout()),
            heartbeat: OnceLock::new(),
            inner,
        };
        match store.ready().await {
            Ok(()) => Ok(store),
            // The deployment is unreachable: open lazily (see `OpenState`).
            Err(e) if e.is_transient() => {
                tracing::warn!(
                    cache = %store.inner.name,
                    error = %e,
                    "the cache's store is unreachable; it opens once the store answers"
                );
                Ok(store)
            }
            // A wrong layout (partition count, codec) fails `build()`.
            Err(e) => Err(e),
        }
    }

    /// Finishes opening the store if it is not open yet (see [`OpenState`]).
    async fn ready(&self) -> Result<()> {
        self.opening.ready(&self.inner).await
    }
}

impl RedisStore {
    /// The state of the batching queues of the store's deployment (shared by every
    /// cache on it): requests waiting to go in a batch, the most that ever waited, and
    /// how many were sent alone because the queues were at their limit
    /// (`max_pending_batched`, `max_pending_batched_bytes`).
    ///
    /// ```no_run
    /// # async fn demo() -> partcache::Result<()> {
    /// partcache_redis::install();
    /// let manager = partcache::CacheManager::from_url("redis://127.0.0.1:6379?max_pending_batched=1024")?;
    /// let cache = manager.cache::<u64, String>("users").build().await?;
    /// let store = cache.raw_store().and_then(|raw| raw.as_any().downcast_ref::<partcache_redis::RedisStore>());
    /// if let Some(store) = store {
    ///     println!("{:?}", store.batching_stats());
    /// }
    /// # Ok(()) }
    /// ```
    pub fn batching_stats(&self) -> BatchingStats {
        self.inner.batcher.bound.stats()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop();
    }
}

impl RedisStore {
    /// Stops the cache's work in this process: the reaper, the near cache's heartbeat
    /// and the routing of its channels' messages (the server-side subscriptions stay
    /// until the connection closes). Safe to repeat.
    fn stop(&self) {
        if let Some(reaper) = self.opening.reaper.get() {
            reaper.stop();
        }
        if let Some(heartbeat) = self.heartbeat.get() {
            heartbeat.abort();
        }
        if self
            .inner
            .wants_feed
            .load(std::sync::atomic::Ordering::Acquire)
        {
            self.inner
                .deployment
                .subscriber()
                .forget(&self.inner.channels());
        }
    }
}

impl RedisStore {
    /// [`RawStore::scan`] of a cache without an index: the entries a key scan finds,
    /// read as a `get_all` of them reads them (an access, JSR-107 §6.4).
    fn scan_keys(&self) -> BoxStream<'_, Result<Vec<u8>>> {
        struct State {
            scan: KeyScan,
            opened: bool,
            done: bool,
        }
        let start = State {
            scan: KeyScan::new(),
            opened: false,
            done: false,
        };
        let s = &self.inner;
        stream::unfold(start, move |mut state| async move {
            if state.done {
                return None;
            }
            if !state.opened {
                if let Err(e) = self.ready().await {
                    state.done = true;
                    return Some((vec![Err(e)], state));
                }
                state.opened = true;
            }
            let found = match state.scan.step(&s.deployment, &s.layout).await {
                Ok(Some(found)) => found,
                Ok(None) => return None,
                Err(e) => {
                    state.done = true;
                    return Some((vec![Err(e)], state));
                }
            };
            let keys: Vec<RawKey> = found
                .into_iter()
                .map(|(partition, text)| RawKey { text, partition })
                .collect();
            if keys.is_empty() {
                return Some((Vec::new(), state));
            }
            match self.get_all(&keys).await {
                // An entry that expired or went since the scan saw its key is left out.
                Ok(blobs) => Some((blobs.into_iter().flatten().map(Ok).collect(), state)),
                Err(e) => {
                    state.done = true;
                    Some((vec![Err(e)], state))
                }
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }
}

#[async_trait]
impl RawStore for RedisStore {
    fn describe(&self) -> String {
        self.inner.deployment.describe()
    }

    async fn get_all(&self, keys: &[RawKey]) -> Result<Vec<Option<Vec<u8>>>> {
        self.ready().await?;
        let s = &self.inner;
        if let Some(policy) = &s.custom {
            return s.get_all_asking(policy, keys).await;
        }
        if let [key] = keys {
            return Ok(vec![self.get(key).await?]);
        }
        let groups = s.by_partition(keys.iter())?;
        let requests: Vec<Request> = groups
            .iter()
            .map(|(&p, indexes)| {
                if s.plain_reads {
                    // No bookkeeping on reads: a plain MGET (all keys share the
                    // partition's slot), which replicas may serve.
                    let mut cmd = Cmd::new();
                    cmd.arg("MGET");
                    for &i in indexes {
                        cmd.arg(s.layout.entry_key_arg(p, &keys[i].text));
                    }
                    Request {
                        read_only: true,
                        ..Request::new(s.layout.slot(p), cmd)
                    }
                } else {
                    s.keyed_script(&scripts().get, p, keys, indexes)
                }
            })
            .collect();
        let replies = s.execute(requests).await?;
        let mut out = vec![None; keys.len()];
        for (indexes, reply) in groups.values().zip(replies) {
            let Value::Array(values) = s.read_result(reply)? else {
                return Err(Error::Store("unexpected read reply".into()));
            };
            for (&i, value) in indexes.iter().zip(values) {
                out[i] = blob(value);
            }
        }
        Ok(out)
    }

    async fn get(&self, key: &RawKey) -> Result<Option<Vec<u8>>> {
        self.ready().await?;
        let s = &self.inner;
        // The common case, one key: no grouping, and a plain `GET` where reads
        // need no bookkeeping (a bulk reply, not an array), batched with the
        // concurrent reads of the server (`MGET`) or the node (a pipeline).
        s.check_partition(key)?;
        let p = key.partition;
        if s.plain_reads && !s.deployment.router.is_cluster() {
            let key = s.layout.entry_key(p, &key.text);
            let reply = crate::batching::reads::get(&s.batcher.reads, key).await?;
            return Ok(blob(s.read_result(reply)?));
        }
        if s.plain_reads {
            let mut cmd = Cmd::with_capacity(2, 8 + key.text.len() + 48);
            cmd.arg("GET").arg(s.layout.entry_key_arg(p, &key.text));
            let request = Request {
                read_only: true,
                ..Request::new(s.layout.slot(p), cmd)
            };
            let bytes = s.layout.prefix(p).len() + key.text.len();
            let reply =
                crate::batching::node_reads::get(&s.batcher.node_reads, request, bytes).await?;
            return Ok(blob(s.read_result(reply)?));
        }
        if let Some(policy) = &s.custom {
            let found = s.get_all_asking(policy, std::slice::from_ref(key)).await?;
            return Ok(found.into_iter().next().flatten());
        }
        let request = s.keyed_script(&scripts().get, p, std::slice::from_ref(key), &[0]);
        let reply = s.execute(vec![request]).await?.pop().unwrap_or(Value::Nil);
        match s.read_result(reply)? {
            // The function's reply: the blobs of the texts it was given.
            Value::Array(values) => Ok(values.into_iter().next().and_then(blob)),
            other => Err(Error::Store(format!("unexpected read reply: {other:?}"))),
        }
    }

    async fn peek(&self, key: &RawKey) -> Result<Option<Vec<u8>>> {
        self.ready().await?;
        let s = &self.inner;
        s.check_partition(key)?;
        // The entry key alone: a plain `GET` moves no deadline and no LRU order. An
        // entry Redis expired reads as absent; the write that follows cleans up.
        let mut cmd = Cmd::new();
        cmd.arg("GET")
            .arg(s.layout.entry_key_arg(key.partition, &key.text));
        let request = Request::new(s.layout.slot(key.partition), cmd);
        match s.execute(vec![request]).await?.pop().unwrap_or(Value::Nil) {
            Value::ServerError(e) => Err(Error::Store(format!(
                "read on cache `{}` failed: {e:?}",
                s.name
            ))),
            reply => Ok(blob(reply)),
        }
    }

    async fn touch(&self, key: &RawKey) -> Result<()> {
        // Where reads keep no bookkeeping (no expiry they move, no LRU order), an
        // access changes nothing: no round trip.
        if self.inner.plain_reads {
            return Ok(());
        }
        self.get(key).await.map(drop)
    }

    async fn contains_all(&self, keys: &[RawKey]) -> Result<Vec<bool>> {
        self.ready().await?;
        let s = &self.inner;
        let groups = s.by_partition(keys.iter())?;
        let requests: Vec<Request> = groups
            .iter()
            .map(|(&p, indexes)| s.keyed_script(&scripts().contains, p, keys, indexes))
            .collect();
        let replies = s.execute(requests).await?;
        let mut out = vec![false; keys.len()];
        for (indexes, reply) in groups.values().zip(replies) {
            let Value::Array(values) = s.outcome(reply)? else {
                return Err(Error::Store("unexpected contains reply".into()));
            };
            for (&i, value) in indexes.iter().zip(values) {
                out[i] = int(Some(&value)) == 1;
            }
        }
        Ok(out)
    }

    async fn write(&self, key: &RawKey, write: RawWrite) -> Result<RawWriteOutcome> {
        self.ready().await?;
        let s = &self.inner;
        s.check_partition(key)?;
        if let (true, RawCondition::Always, RawAction::Put { ttl: None, .. }, false) = (
            s.fast_puts,
            &write.condition,
            &write.action,
            write.want_previous,
        ) {
            let RawAction::Put { blob, .. } = write.action else {
                return Err(Error::Store("unreachable write action".into()));
            };
            return s
                .put_batched(key, blob, None, &BatchFunction::PutBatch)
                .await;
        }
        if let Some(policy) = &s.custom {
            return Box::pin(s.write_asking(policy, key, &write)).await;
        }
        // Batched upserts share one set of settings per batch (a custom policy's writes
        // went above).
        if let (RawCondition::Always, RawAction::Put { .. }, false) =
            (&write.condition, &write.action, write.want_previous)
        {
            let RawAction::Put { blob, ttl } = write.action else {
                return Err(Error::Store("unreachable write action".into()));
            };
            return s.put_batched(key, blob, ttl, &s.upsert_batch).await;
        }
        let r = s.write_request(key, &write, None);
        // Boxed, as the batched puts' lone sends are: in place, this call's future
        // would size every put's.
        let reply = Box::pin(s.execute(vec![r]))
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        s.write_outcome(reply)
    }

    async fn put_all(&self, entries: Vec<(RawKey, Vec<u8>)>, ttl: Option<Duration>) -> Result<u64> {
        self.ready().await?;
        let s = &self.inner;
        if let Some(policy) = &s.custom {
            return s.put_all_asking(policy, entries, ttl).await;
        }
        let groups = s.by_partition(entries.iter().map(|(k, _)| k))?;
        let ttl = ttl_arg(ttl);
        let mut requests = Vec::new();
        for (&p, indexes) in &groups {
            for chunk in indexes.chunks(BATCH) {
                let texts = chunk.iter().map(|&i| entries[i].0.text.as_str());
                let mut r = s.script(&scripts().put_many, p, texts);
                r.cmd.arg(&ttl);
                for &i in chunk {
                    let (key, blob) = &entries[i];
                    r.cmd
                        .arg(&key.text)
                        .arg(blob.as_slice())
                        .arg(s.key_only(blob));
                }
                requests.push(r);
            }
        }
        let mut stored = 0;
        for reply in s.execute(requests).await? {
            stored += int(Some(&s.outcome(reply)?));
        }
        Ok(stored)
    }

    async fn remove_all(&self, keys: &[RawKey]) -> Result<u64> {
        self.ready().await?;
        let s = &self.inner;
        let groups = s.by_partition(keys.iter())?;
        let mut requests = Vec::new();
        for (&p, indexes) in &groups {
            for chunk in indexes.chunks(BATCH) {
                requests.push(s.keyed_script(&scripts().remove_many, p, keys, chunk));
            }
        }
        let mut removed = 0;
        for reply in s.execute(requests).await? {
            removed += int(Some(&s.outcome(reply)?));
        }
        Ok(removed)
    }

    async fn remove_everything(&self) -> Result<u64> {
        self.ready().await?;
        self.inner.clear_all(true).await
    }

    async fn clear(&self) -> Result<()> {
        self.ready().await?;
        self.inner.clear_all(false).await.map(|_| ())
    }

    fn scan(&self) -> BoxStream<'_, Result<Vec<u8>>> {
        if !self.inner.indexed {
            return self.scan_keys();
        }
        struct State {
            partition: u16,
            cursor: String,
            seen: HashSet<String>,
            done: bool,
            opened: bool,
        }
        let start = State {
            partition: 0,
            cursor: "0".to_string(),
            seen: HashSet::new(),
            done: false,
            opened: false,
        };
        let store = self;
        let s = &self.inner;
        stream::unfold(start, move |mut state| async move {
            if state.done || state.partition >= s.partitions() {
                return None;
            }
            if !state.opened {
                if let Err(e) = store.ready().await {
                    state.done = true;
                    return Some((vec![Err(e)], state));
                }
                state.opened = true;
            }
            match s.scan_step(state.partition, &state.cursor).await {
                Err(e) => {
                    state.done = true;
                    Some((vec![Err(e)], state))
                }
                Ok((next, found)) => {
                    // ZSCAN may return a member twice while the index rehashes: the
                    // per-partition set of seen keys keeps every entry to once.
                    let found: Vec<(String, Vec<u8>)> = found
                        .into_iter()
                        .filter(|(t, _)| state.seen.insert(t.clone()))
                        .collect();
                    let blobs = match &s.custom {
                        None => found.into_iter().map(|(_, b)| Ok(b)).collect(),
                        Some(policy) => {
                            match s.access_scanned(policy, state.partition, found).await {
                                Ok(blobs) => blobs.into_iter().map(Ok).collect(),
                                Err(e) => {
                                    state.done = true;
                                    return Some((vec![Err(e)], state));
                                }
                            }
                        }
                    };
                    if next == "0" {
                        state.partition += 1;
                        state.seen.clear();
                    }
                    state.cursor = next;
                    Some((blobs, state))
                }
            }
        })
        .flat_map(stream::iter)
        .boxed()
    }

    async fn len(&self) -> Result<u64> {
        self.ready().await?;
        let s = &self.inner;
        if !s.indexed {
            return Ok(s.count_scanned(false).await?.0);
        }
        let requests = (0..s.partitions())
            .map(|p| {
                let mut cmd = redis::cmd("ZCARD");
                cmd.arg(s.layout.index_key(p));
                Request {
                    read_only: true,
                    ..Request::new(s.layout.slot(p), cmd)
                }
            })
            .collect();
        let mut total = 0;
        for reply in s.execute(requests).await? {
            if let Value::ServerError(e) = &reply {
                return Err(Error::Store(format!("ZCARD failed: {e:?}")));
            }
            total += int(Some(&reply));
        }
        Ok(total)
    }

    async fn get_all_with_deadlines(&self, keys: &[RawKey]) -> Result<Vec<Option<RawFound>>> {
        self.ready().await?;
        self.inner.get_all_with_deadlines(keys).await
    }

    fn plain_reads(&self) -> bool {
        self.inner.plain_reads
    }

    async fn lease(
        &self,
        key: &RawKey,
        token: &str,
        ttl: Duration,
        waited: bool,
    ) -> Result<RawLease> {
        self.ready().await?;
        self.inner.lease(key, token, ttl, waited).await
    }

    async fn put_leased(
        &self,
        key: &RawKey,
        token: &str,
        blob: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<LeasedPut> {
        self.ready().await?;
        self.inner.put_leased(key, token, blob, ttl).await
    }

    async fn release_lease(&self, key: &RawKey, token: &str) -> Result<()> {
        self.ready().await?;
        self.inner.release_lease(key, token).await
    }

    async fn attach_invalidation_sink(
        &self,
        sink: Arc<dyn InvalidationSink>,
        heartbeat: Duration,
    ) -> Result<()> {
        let s = &self.inner;
        if !s.publishes() {
            return Err(Error::Config(format!(
                "cache `{}` does not publish events (`publish_events(false)`): a near cache needs them",
                s.name
            )));
        }
        if s.feed.sink.set(sink).is_err() {
            return Err(Error::Config(format!(
                "cache `{}` already has a near cache",
                s.name
            )));
        }
        s.wants_feed
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self.heartbeat.set(s.start_heartbeat(heartbeat));
        if self.opening.is_open() {
            // Open already: subscribe if no listener did yet, and the near cache
            // starts from the current numbers. Should this fail, the next heartbeat
            // finds the partitions lost and wakes the resubscription, which retries.
            let started = match s.start_feed().await {
                Ok(true) => Ok(()),
                // Subscribed for a listener before: the new near cache needs the
                // numbers all the same.
                Ok(false) => crate::events::reseed(&s.deployment, &s.feed).await,
                Err(e) => Err(e),
            };
            if let Err(e) = started {
                tracing::warn!(cache = %s.name, error = %e, "near cache not started yet");
            }
        } else if let Err(e) = self.ready().await {
            // Opening (which starts the near cache) happens on first use.
            tracing::warn!(cache = %s.name, error = %e, "near cache not started yet");
        }
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<RawEvent> {
        self.inner.feed.events.subscribe()
    }

    async fn listen(&self) -> Result<()> {
        let s = &self.inner;
        if !s.publishes() {
            // `publish_events(false)`: no process publishes, there is nothing to hear.
            return Ok(());
        }
        s.wants_feed
            .store(true, std::sync::atomic::Ordering::Release);
        if self.opening.is_open() {
            s.start_feed().await.map(|_| ())
        } else {
            // Opening subscribes, now that the feed is wanted.
            self.ready().await
        }
    }

    async fn close(&self) -> Result<()> {
        self.stop();
        Ok(())
    }

    async fn destroy(&self) -> Result<()> {
        self.ready().await?;
        let s = &self.inner;
        // The entries (and a `clear` message, so other processes' near caches drop
        // their copies), then each partition's bookkeeping, then the layout record.
        // The sequence keys stay: a near cache elsewhere must never see a partition's
        // numbers go back (it would take new messages for old ones).
        s.clear_all(false).await?;
        let mut requests: Vec<Request> = (0..s.layout.partitions())
            .map(|p| {
                let [index, deadlines, fixed, _sequence] = s.layout.partition_keys(p);
                let mut cmd = redis::cmd("DEL");
                cmd.arg(index).arg(deadlines).arg(fixed);
                Request::new(s.layout.slot(p), cmd)
            })
            .collect();
        let (meta_index, slot) = s.layout.meta_index_key();
        let mut cmd = redis::cmd("DEL");
        cmd.arg(meta_index)
            .arg(format!("{}meta", meta_index.trim_end_matches("ix")));
        requests.push(Request::new(slot, cmd));
        for reply in s.execute(requests).await? {
            if let Value::ServerError(e) = &reply {
                return Err(Error::Store(format!(
                    "destroying cache `{}` failed: {e:?}",
                    s.name
                )));
            }
        }
        self.stop();
        Ok(())
    }

    async fn run_pending_tasks(&self) -> Result<()> {
        self.ready().await?;
        self.inner.reap_all().await
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    async fn balance_report(&self) -> Result<BalanceReport> {
        self.ready().await?;
        self.inner.balance_report().await
    }

    fn breakers(&self) -> Vec<partcache::stats::BreakerStats> {
        self.inner.deployment.breakers()
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").finish_non_exhaustive()
    }
}
