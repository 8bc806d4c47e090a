//! Opening a cache: its [`StoreInner`] from the spec, the check of the layout recorded
//! beside its data, its event subscription, its reaper, and [`OpenState`], which
//! finishes an open the deployment could not answer when it is next used.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use partcache::expiry::ExpiryPolicy;
use partcache::store::raw::RawCacheSpec;
use partcache::{Error, LayoutMismatch, Result};
use redis::Value;
use tokio::sync::broadcast;

use super::cache::StoreInner;
use super::{reaper, replies};
use crate::arguments::{CacheSettings, EventMode, millis};
use crate::batching::Batcher;
use crate::batching::puts::{BatchFunction, UpsertSettings};
use crate::delivery::Delivery;
use crate::events;
use crate::feed::Feed;
use crate::layout::{LAYOUT_VERSION, Layout};
use crate::scripts::scripts;

/// Events buffered per receiver of [`RawStore::subscribe`].
const EVENT_CAPACITY: usize = 4096;

/// Whether the store finished opening (layout check, event subscriptions, reaper).
///
/// Opening needs the server. An application that starts while its Redis is down must
/// still be able to build its caches and serve (fail-open), so an open that
/// fails with a transient error (`Unavailable`/`Timeout`) returns a store that is not
/// open yet: every operation first tries to finish opening. At most one attempt is in
/// flight at a time, and a new one starts at most every `retry_every` (the connect
/// timeout) after the previous one *started* (so that a caller that gives up on an
/// attempt, e.g. a store timeout dropping its future, cannot make the store hammer a
/// dead server); meanwhile operations answer `Error::Unavailable` at once. Once open,
/// the only cost is one atomic load per operation.
pub(super) struct OpenState {
    /// Set (to the reaper) once the store is open; never unset.
    pub(super) reaper: OnceLock<reaper::Reaper>,
    /// Held by the attempt in flight; when the last attempt started.
    attempt: tokio::sync::Mutex<Option<Instant>>,
    retry_every: Duration,
}

impl OpenState {
    /// A store not open yet, which tries again at most every `retry_every`.
    pub(super) fn new(retry_every: Duration) -> OpenState {
        OpenState {
            reaper: OnceLock::new(),
            attempt: tokio::sync::Mutex::new(None),
            retry_every,
        }
    }

    /// Whether the store is open.
    pub(super) fn is_open(&self) -> bool {
        self.reaper.get().is_some()
    }

    /// Finishes opening the store if it is not open yet : `Ok` once
    /// it is open; the attempt's error, or `Unavailable` while another attempt is in
    /// flight or the last one is too recent.
    pub(super) async fn ready(&self, inner: &Arc<StoreInner>) -> Result<()> {
        let state = self;
        if state.reaper.get().is_some() {
            return Ok(());
        }
        let not_yet = || {
            Err(Error::Unavailable(format!(
                "cache `{}` is not open yet: {} was unreachable (retrying every {:?})",
                inner.name,
                inner.deployment.describe(),
                state.retry_every
            )))
        };
        let Ok(mut last) = state.attempt.try_lock() else {
            return not_yet();
        };
        if state.reaper.get().is_some() {
            return Ok(());
        }
        if last.is_some_and(|at| at.elapsed() < state.retry_every) {
            return not_yet();
        }
        *last = Some(Instant::now());
        // Boxed: opening happens once, and its future is large; in place it would size
        // the future of every call of the store, which each call copies.
        Box::pin(inner.finish_open()).await?;
        let _ = state.reaper.set(reaper::spawn(inner));
        Ok(())
    }
}

impl StoreInner {
    /// The cache `spec` describes, on the deployment of `batcher` (no I/O).
    pub(super) fn new(batcher: Arc<Batcher>, mut spec: RawCacheSpec) -> StoreInner {
        // Durations beyond the longest deadline set none, as on every store.
        spec.expiry = spec.expiry.effective();
        let deployment = batcher.deployment.clone();
        let event_mode = EventMode::new(spec.publish_events, deployment.router.is_cluster());
        let database = deployment.database();
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let layout = Layout::new(spec.partitions.clone(), database);
        let settings = CacheSettings::new(&spec);
        StoreInner {
            upsert_batch: BatchFunction::UpsertBatch(Arc::new(UpsertSettings::new(
                settings.clone(),
                event_mode,
            ))),
            settings,
            custom: spec.expiry.custom.clone(),
            max_idle_ms: spec.expiry.max_idle.map(millis),
            event_mode,
            plain_reads: !spec.expiry.reads_extend() && spec.max_entries.is_none(),
            indexed: spec.max_entries.is_some() || spec.expiry.max_idle.is_some(),
            fast_puts: matches!(spec.expiry.policy, ExpiryPolicy::Eternal)
                && spec.expiry.custom.is_none()
                && spec.expiry.max_idle.is_none()
                && spec.max_entries.is_none(),
            deployment,
            batcher,
            name: spec.name.clone(),
            codec: spec.codec,
            hashing: spec.hashing.clone(),
            stats: spec.stats.clone(),
            listened: spec.listened.clone(),
            wants_feed: std::sync::atomic::AtomicBool::new(false),
            subscribed: tokio::sync::Mutex::new(false),
            feed: Arc::new(Feed {
                delivery: Delivery::new(events.clone()),
                events,
                listened: spec.listened.clone(),
                sink: OnceLock::new(),
                resumed: std::sync::atomic::AtomicBool::new(false),
                partitions: (0..spec.partitions.partitions()).collect(),
                sequences: (0..spec.partitions.partitions())
                    .map(|p| (layout.sequence_key(p).to_string(), layout.slot(p)))
                    .collect(),
                links: Default::default(),
            }),
            layout,
        }
    }

    /// What opening needs the server for: checks the recorded layout and subscribes to
    /// the cache's events. Safe to repeat after a failure.
    pub(super) async fn finish_open(&self) -> Result<()> {
        self.check_layout().await?;
        if self.wants_feed.load(std::sync::atomic::Ordering::Acquire) {
            self.start_feed().await?;
        }
        Ok(())
    }

    /// Subscribes to the cache's channels if that is not done yet (see
    /// [`StoreInner::wants_feed`]), then gives a near cache, if any, the partitions'
    /// current numbers. `Ok(false)`: subscribed before, nothing done (a reseed would
    /// make a running near cache drop its copies). Safe to repeat after a failure.
    pub(super) async fn start_feed(&self) -> Result<bool> {
        if !self.publishes() {
            return Ok(false);
        }
        let mut subscribed = self.subscribed.lock().await;
        if *subscribed {
            return Ok(false);
        }
        self.deployment
            .subscribe(&self.channels(), &self.feed)
            .await?;
        *subscribed = true;
        drop(subscribed);
        events::reseed(&self.deployment, &self.feed).await?;
        Ok(true)
    }

    /// Checks the layout recorded beside the cache's data (creating it if there is
    /// none) against the one it is opened with: partition count, codec, layout
    /// version, entry index, hashing rules, events.
    pub(super) async fn check_layout(&self) -> Result<()> {
        // The meta record's key does not depend on the partition count.
        let mut request = self.script(&scripts().open, 0, std::iter::empty());
        let (meta_index, slot) = self.layout.meta_index_key();
        request.slot = slot;
        request.cmd = redis::cmd("FCALL");
        request
            .cmd
            .arg(&scripts().open.function)
            .arg(2)
            .arg(meta_index)
            .arg(format!("{}meta", meta_index.trim_end_matches("ix")));
        self.settings.write(&mut request.cmd, None);
        // The open function makes no events.
        self.event_args(&mut request.cmd, 0);
        request.events = None;
        request
            .cmd
            .arg(self.layout.partitions())
            .arg(self.codec.id())
            .arg(LAYOUT_VERSION)
            .arg(u8::from(self.indexed))
            .arg(u8::from(self.publishes()))
            .arg(hashing_fingerprint(&self.hashing))
            .arg(self.hashing.describe());
        let reply = self
            .execute(vec![request])
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        let recorded = self.outcome(reply)?;
        let texts: Vec<Option<String>> = match &recorded {
            Value::Array(items) => items.iter().map(replies::text).collect(),
            _ => Vec::new(),
        };
        let field = |i: usize| texts.get(i).cloned().flatten();
        let number = |i: usize| field(i).and_then(|t| t.parse::<u64>().ok());
        let (partitions, codec, layout, index) = match (number(0), number(1), number(2)) {
            (Some(p), Some(c), Some(l)) => (p, c, l, number(3)),
            _ => {
                return Err(Error::Store(format!(
                    "cache `{}` has an unreadable layout record: {recorded:?}",
                    self.name
                )));
            }
        };
        let mismatch = if partitions != u64::from(self.layout.partitions()) {
            LayoutMismatch::Partitions {
                stored: partitions,
                opened: u64::from(self.layout.partitions()),
            }
        } else if codec != u64::from(self.codec.id()) {
            LayoutMismatch::Codec {
                stored: codec,
                opened: u64::from(self.codec.id()),
                opened_name: self.codec.name().to_string(),
            }
        } else if layout != u64::from(LAYOUT_VERSION) {
            LayoutMismatch::Version {
                stored: layout,
                supported: u64::from(LAYOUT_VERSION),
            }
        } else if index != Some(u64::from(self.indexed)) {
            LayoutMismatch::EntryIndex {
                stored: index == Some(1),
                opened: self.indexed,
            }
        } else if let Some(mismatch) = self.hashing_mismatch(field(5), field(6)) {
            mismatch
        } else if let Some(stored) = number(4)
            && stored != u64::from(self.publishes())
        {
            LayoutMismatch::Events {
                stored: stored == 1,
                opened: self.publishes(),
            }
        } else {
            return Ok(());
        };
        Err(Error::Mismatch {
            cache: self.name.clone(),
            mismatch,
        })
    }

    /// The hashing rules' mismatch, if the record's (`fingerprint`, `described`)
    /// differ from the cache's. A record without them (written by an older release,
    /// and only opened since by processes of one) is no mismatch.
    fn hashing_mismatch(
        &self,
        fingerprint: Option<String>,
        described: Option<String>,
    ) -> Option<LayoutMismatch> {
        let stored = fingerprint?;
        if stored == hashing_fingerprint(&self.hashing) {
            return None;
        }
        Some(LayoutMismatch::Hashing {
            stored: described.unwrap_or_else(|| format!("with fingerprint {stored}")),
            opened: self.hashing.describe(),
        })
    }
}

/// The hashing rules' fingerprint as the layout record holds it: 16 hex digits.
fn hashing_fingerprint(hashing: &partcache::partition::HashingPolicy) -> String {
    format!("{:016x}", hashing.fingerprint())
}
