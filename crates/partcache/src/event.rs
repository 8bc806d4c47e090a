//! Cache entry events: created, updated, removed, expired, evicted.
//!
//! Stores emit events; the cache hands them to subscribers through a bounded broadcast
//! channel. Emitting costs nothing while nobody listens (the store checks the receiver
//! count first). A subscriber that falls more than the channel's capacity behind is told
//! how many events it lost rather than blocking writers.
//!
//! JCache rules followed: `put_if_absent` on a present key emits nothing; `clear`
//! emits nothing; `remove_all` emits one `Removed` per entry. Closing the cache removes
//! its listeners: each receiver gets the events sent before, then
//! [`RecvError::Closed`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, broadcast};

/// What happened to an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A key that had no entry got one.
    Created,
    /// An existing entry's value was replaced.
    Updated,
    /// An entry was removed by a caller.
    Removed,
    /// An entry reached its expiry deadline.
    Expired,
    /// An entry was evicted to respect the size limit.
    Evicted,
}

/// One event. Values are shared, not copied. On remote stores `old_value` is not
/// carried across processes and is `None`.
#[derive(Debug)]
pub struct CacheEvent<K, V> {
    /// What happened.
    pub kind: EventKind,
    /// The entry's key.
    pub key: K,
    /// The new value (`Created`, `Updated`), or the value that went away (`Removed`,
    /// `Expired`, `Evicted`) where the store knows it.
    pub value: Option<Arc<V>>,
    /// The value an `Updated` replaced, where the store knows it.
    pub old_value: Option<Arc<V>>,
}

impl<K: Clone, V> Clone for CacheEvent<K, V> {
    fn clone(&self) -> Self {
        CacheEvent {
            kind: self.kind,
            key: self.key.clone(),
            value: self.value.clone(),
            old_value: self.old_value.clone(),
        }
    }
}

/// A predicate over events.
type EventPredicate<K, V> = Arc<dyn Fn(&CacheEvent<K, V>) -> bool + Send + Sync>;

/// Which events a subscriber wants.
pub struct EventFilter<K, V> {
    kinds: Option<Vec<EventKind>>,
    predicate: Option<EventPredicate<K, V>>,
}

impl<K, V> Clone for EventFilter<K, V> {
    fn clone(&self) -> Self {
        EventFilter {
            kinds: self.kinds.clone(),
            predicate: self.predicate.clone(),
        }
    }
}

impl<K, V> Default for EventFilter<K, V> {
    fn default() -> Self {
        Self::all()
    }
}

impl<K, V> EventFilter<K, V> {
    /// Every event.
    pub fn all() -> Self {
        EventFilter {
            kinds: None,
            predicate: None,
        }
    }

    /// Only events of these kinds.
    pub fn kinds(kinds: impl IntoIterator<Item = EventKind>) -> Self {
        EventFilter {
            kinds: Some(kinds.into_iter().collect()),
            predicate: None,
        }
    }

    /// Additionally require `predicate` to hold (evaluated in the subscriber's task).
    pub fn matching(
        mut self,
        predicate: impl Fn(&CacheEvent<K, V>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.predicate = Some(Arc::new(predicate));
        self
    }

    /// Whether `event` passes this filter.
    pub fn accepts(&self, event: &CacheEvent<K, V>) -> bool {
        self.kinds
            .as_ref()
            .is_none_or(|kinds| kinds.contains(&event.kind))
            && self.predicate.as_ref().is_none_or(|p| p(event))
    }
}

/// The end of a cache's event channel, shared by its sender and every receiver. The
/// broadcast channel itself ends only when its last sender drops, and senders are held
/// by what the cache's store runs (a remote store's listener probe, the forwarding of
/// its events), which may outlive the cache's close: closing is signalled here instead.
#[derive(Debug, Default)]
struct Closing {
    closed: AtomicBool,
    /// Wakes receivers waiting in [`EventReceiver::recv`].
    wake: Notify,
}

impl Closing {
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// The sending side stores use. Cheap to clone.
#[derive(Debug)]
pub struct EventSender<K, V> {
    tx: broadcast::Sender<CacheEvent<K, V>>,
    closing: Arc<Closing>,
}

impl<K, V> Clone for EventSender<K, V> {
    fn clone(&self) -> Self {
        EventSender {
            tx: self.tx.clone(),
            closing: self.closing.clone(),
        }
    }
}

impl<K: Clone + Send + 'static, V: Send + Sync + 'static> EventSender<K, V> {
    /// A channel that keeps at most `capacity` undelivered events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventSender {
            tx,
            closing: Arc::default(),
        }
    }

    /// `true` when somebody listens: stores skip building events otherwise. Never
    /// after [`EventSender::close`].
    #[inline]
    pub fn is_listened(&self) -> bool {
        self.tx.receiver_count() > 0 && !self.closing.is_closed()
    }

    /// Ends the channel (the cache was closed): every receiver, present or later, gets
    /// the events sent before, then [`RecvError::Closed`]; nothing is sent any more.
    pub fn close(&self) {
        self.closing.closed.store(true, Ordering::Release);
        self.closing.wake.notify_waiters();
    }

    /// Whether [`EventSender::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closing.is_closed()
    }

    /// Emits an event if anybody listens.
    #[inline]
    pub fn emit(
        &self,
        kind: EventKind,
        key: impl FnOnce() -> K,
        value: Option<Arc<V>>,
        old_value: Option<Arc<V>>,
    ) {
        if self.is_listened() {
            // A send error only means every receiver went away meanwhile.
            let _ = self.tx.send(CacheEvent {
                kind,
                key: key(),
                value,
                old_value,
            });
        }
    }

    /// A new receiver of every later event; closed at once (its first `recv` is
    /// [`RecvError::Closed`]) when the channel is.
    pub fn subscribe(&self, filter: EventFilter<K, V>) -> EventReceiver<K, V> {
        EventReceiver {
            rx: self.tx.subscribe(),
            filter,
            closing: self.closing.clone(),
        }
    }
}

/// Receives the events that pass its filter.
#[derive(Debug)]
pub struct EventReceiver<K, V> {
    rx: broadcast::Receiver<CacheEvent<K, V>>,
    filter: EventFilter<K, V>,
    closing: Arc<Closing>,
}

/// Why [`EventReceiver::recv`] returned no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The receiver fell behind and this many events were dropped for it.
    #[error("event subscriber lagged behind and lost {0} events")]
    Lagged(u64),
    /// The cache was closed ([`crate::Cache::close`], or destroyed) or dropped: no
    /// event follows.
    #[error("the cache was closed")]
    Closed,
}

impl<K: Clone, V> EventReceiver<K, V> {
    /// Waits for the next event that passes the filter. Once the cache is closed, the
    /// events sent before are still delivered, then [`RecvError::Closed`].
    pub async fn recv(&mut self) -> Result<CacheEvent<K, V>, RecvError> {
        // Its own handle: the wait below borrows it while `self` is read.
        let state = self.closing.clone();
        loop {
            // Registered before the flag is read, so a close in between still wakes it.
            let closing = state.wake.notified();
            let mut closing = std::pin::pin!(closing);
            closing.as_mut().enable();
            if state.is_closed() {
                return self.try_recv().unwrap_or(Err(RecvError::Closed));
            }
            tokio::select! {
                received = self.rx.recv() => match received {
                    Ok(event) if self.filter.accepts(&event) => return Ok(event),
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        return Err(RecvError::Lagged(n));
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(RecvError::Closed),
                },
                // Closed: the next turn hands out what was sent before, then `Closed`.
                () = &mut closing => {}
            }
        }
    }

    /// The next already-delivered event that passes the filter, without waiting;
    /// `None` when there is none yet, [`RecvError::Closed`] when none will come.
    pub fn try_recv(&mut self) -> Option<Result<CacheEvent<K, V>, RecvError>> {
        let mut seen_closed = false;
        loop {
            match self.rx.try_recv() {
                Ok(event) if self.filter.accepts(&event) => return Some(Ok(event)),
                Ok(_) => continue,
                Err(broadcast::error::TryRecvError::Empty) => {
                    if !self.closing.is_closed() {
                        return None;
                    }
                    if seen_closed {
                        return Some(Err(RecvError::Closed));
                    }
                    // An event sent just before the close may have landed after the
                    // read above: one more read once the close is seen.
                    seen_closed = true;
                }
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    return Some(Err(RecvError::Lagged(n)));
                }
                Err(broadcast::error::TryRecvError::Closed) => return Some(Err(RecvError::Closed)),
            }
        }
    }
}

impl<K, V> std::fmt::Debug for EventFilter<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFilter")
            .field("kinds", &self.kinds)
            .field("predicate", &self.predicate.is_some())
            .finish()
    }
}
