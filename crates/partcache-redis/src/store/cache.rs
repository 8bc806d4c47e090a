//! [`StoreInner`]: what one cache is on its deployment (name, layout, codec, settings,
//! feed), and how its requests run: in a span naming the cache, with the events their
//! replies carry handed to the cache's listeners in order.

use std::collections::BTreeMap;
use std::sync::Arc;

use partcache::codec::Codec;
use partcache::expiry::Custom;
use partcache::stats::StatsCounters;
use partcache::store::raw::{ListenerProbe, RawKey, RawWriteOutcome};
use partcache::{Error, Result};
use redis::Value;
use tracing::Instrument;

use super::replies;
use crate::arguments::{CacheSettings, EventMode};
use crate::batching::Batcher;
use crate::batching::puts::BatchFunction;
use crate::deployment::Deployment;
use crate::feed::Feed;
use crate::layout::Layout;
use crate::routing::Request;

/// Most entries one script call touches: keeps every script short, so the server is
/// never blocked for long by one cache (clear, reap, batch writes).
pub(crate) const BATCH: usize = 256;

/// One cache's settings and handles, shared by the store and its reaper.
pub(crate) struct StoreInner {
    pub(super) deployment: Arc<Deployment>,
    /// The deployment's batching queues.
    pub(super) batcher: Arc<Batcher>,
    pub(super) name: String,
    pub(super) layout: Layout,
    pub(super) codec: Codec,
    /// How keys are hashed to partitions: checked against the layout record.
    pub(super) hashing: partcache::partition::HashingPolicy,
    pub(super) stats: Arc<StatsCounters>,
    /// The settings every function takes first.
    pub(super) settings: CacheSettings,
    /// A custom expiry policy, asked for a duration only when a call needs it
    /// (`asking.rs`).
    pub(super) custom: Option<Custom>,
    /// The batches this cache's upserts join (`batching/puts.rs`).
    pub(super) upsert_batch: BatchFunction,
    /// The cache's max-idle, ms: entries whose only deadline it is may keep it in
    /// their index score alone (`lua/common.lua`, lean), which the reaper reads too.
    pub(super) max_idle_ms: Option<u64>,
    /// How the cache's functions publish its events.
    pub(super) event_mode: EventMode,
    /// Reads need no bookkeeping: plain `MGET`, one round trip, no script.
    pub(super) plain_reads: bool,
    /// Plain puts (no condition, TTL or previous value) may use `lua/put.lua`: no
    /// expiry policy, no max-idle, no budget.
    pub(super) fast_puts: bool,
    /// The cache keeps the index `<P>ix` (it has a budget or a max-idle); without
    /// one, iteration, `len`, `clear` and the balance report find the entries by key
    /// scan (`scan.rs`).
    pub(super) indexed: bool,
    /// Where the cache's channels' messages go (listeners, near cache).
    pub(super) feed: Arc<Feed>,
    /// Whether the cache has listeners in this process.
    pub(super) listened: ListenerProbe,
    /// Whether this process wants other processes' events (a listener asked for them,
    /// or a near cache is attached): only then does it subscribe to the cache's
    /// channels, and only while some process subscribes do writers publish (the
    /// scripts ask `PUBSUB (SHARD)NUMSUB`), so that a cache nobody listens to costs
    /// no messages at all.
    pub(super) wants_feed: std::sync::atomic::AtomicBool,
    /// Whether the subscription is in place (held while subscribing).
    pub(super) subscribed: tokio::sync::Mutex<bool>,
}

impl StoreInner {
    pub(super) fn partitions(&self) -> u16 {
        self.layout.partitions()
    }

    pub(super) fn channels(&self) -> Vec<(String, u16)> {
        (0..self.layout.partitions())
            .map(|p| (self.layout.channel(p).to_string(), self.layout.slot(p)))
            .collect()
    }

    /// Whether the cache publishes its events (and so subscribes to them).
    pub(super) fn publishes(&self) -> bool {
        self.event_mode.publishes()
    }

    /// Groups `keys` (by index) by partition, keeping the caller's order inside each.
    pub(super) fn by_partition<'k>(
        &self,
        keys: impl Iterator<Item = &'k RawKey>,
    ) -> Result<BTreeMap<u16, Vec<usize>>> {
        let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, key) in keys.enumerate() {
            self.check_partition(key)?;
            groups.entry(key.partition).or_default().push(i);
        }
        Ok(groups)
    }

    /// Whether `key` names a partition of this cache.
    pub(super) fn check_partition(&self, key: &RawKey) -> Result<()> {
        if key.partition >= self.layout.partitions() {
            return Err(Error::Store(format!(
                "key `{}` names partition {} of a cache with {}",
                key.text,
                key.partition,
                self.layout.partitions()
            )));
        }
        Ok(())
    }

    pub(super) fn key_only(&self, blob: &[u8]) -> Vec<u8> {
        // The blob was just encoded by the core, so it splits; fall back to the whole
        // blob rather than fail a write over an event detail.
        self.codec
            .key_only_blob(blob)
            .unwrap_or_else(|_| blob.to_vec())
    }

    /// Runs `requests` in a `partcache.redis` span naming the cache and the partition
    /// (the first one's, with how many a many-key call touches): the routing's
    /// `partcache.node` spans nest under it.
    ///
    /// Replies that return events (the cache has listeners in this process) hand them
    /// to the cache's [`Delivery`](crate::delivery::Delivery), which puts each
    /// partition's events on the channel in the order the server made them; this
    /// returns once they are there.
    pub(super) async fn execute(&self, requests: Vec<Request>) -> Result<Vec<Value>> {
        let span = tracing::debug_span!(
            "partcache.redis",
            cache = %self.name,
            partition = requests.first().and_then(|r| self.layout.partition_of_slot(r.slot)),
            requests = requests.len()
        );
        if requests.iter().all(|r| r.events.is_none()) {
            return self.deployment.execute(requests).instrument(span).await;
        }
        let delivery = &self.feed.delivery;
        // Taken before sending (see `delivery.rs`); a ticket dropped unresolved (an
        // error, or this future dropped) releases the replies that wait for it.
        let deadline = self.deployment.router.deadline();
        let tickets: Vec<_> = requests
            .iter()
            .map(|r| r.events.map(|p| delivery.ticket(p, deadline)))
            .collect();
        let mut replies = self.deployment.execute(requests).instrument(span).await?;
        let mut waits = Vec::new();
        for (ticket, reply) in tickets.into_iter().zip(replies.iter_mut()) {
            if let Some(ticket) = ticket {
                waits.extend(ticket.resolve(replies::take_events(&self.stats, reply)));
            }
        }
        if !waits.is_empty() {
            for delivered in waits {
                delivered.wait(deadline).await;
            }
        }
        Ok(replies)
    }

    /// A function's reply (see [`replies::outcome`]).
    #[inline]
    pub(super) fn outcome(&self, reply: Value) -> Result<Value> {
        replies::outcome(&self.name, &self.stats, reply)
    }

    /// A read's reply (see [`replies::read_result`]).
    #[inline]
    pub(super) fn read_result(&self, reply: Value) -> Result<Value> {
        replies::read_result(&self.name, self.plain_reads, &self.stats, reply)
    }

    /// A write's reply (see [`replies::write_outcome`]).
    #[inline]
    pub(super) fn write_outcome(&self, reply: Value) -> Result<RawWriteOutcome> {
        replies::write_outcome(&self.name, &self.stats, reply)
    }
}
