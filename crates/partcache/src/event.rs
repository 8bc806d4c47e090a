//! Cache entry events: created, updated, removed, expired, evicted.
//!
//! Stores emit events; the cache hands them to subscribers through a bounded broadcast
//! channel. Emitting costs nothing while nobody listens (the store checks the receiver
//! count first). A subscriber that falls more than the channel's capacity behind is told
//! how many events it lost rather than blocking writers.
//!
//! JCache rules followed: `put_if_absent` on a present key emits nothing; `clear`
//! emits nothing; `remove_all` emits one `Removed` per entry.

use std::sync::Arc;

use tokio::sync::broadcast;

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

/// The sending side stores use. Cheap to clone.
#[derive(Debug)]
pub struct EventSender<K, V> {
    tx: broadcast::Sender<CacheEvent<K, V>>,
}

impl<K, V> Clone for EventSender<K, V> {
    fn clone(&self) -> Self {
        EventSender {
            tx: self.tx.clone(),
        }
    }
}

impl<K: Clone + Send + 'static, V: Send + Sync + 'static> EventSender<K, V> {
    /// A channel that keeps at most `capacity` undelivered events per subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventSender { tx }
    }

    /// `true` when somebody listens: stores skip building events otherwise.
    #[inline]
    pub fn is_listened(&self) -> bool {
        self.tx.receiver_count() > 0
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

    /// A new receiver of every later event.
    pub fn subscribe(&self, filter: EventFilter<K, V>) -> EventReceiver<K, V> {
        EventReceiver {
            rx: self.tx.subscribe(),
            filter,
        }
    }
}

/// Receives the events that pass its filter.
#[derive(Debug)]
pub struct EventReceiver<K, V> {
    rx: broadcast::Receiver<CacheEvent<K, V>>,
    filter: EventFilter<K, V>,
}

/// Why [`EventReceiver::recv`] returned no event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The receiver fell behind and this many events were dropped for it.
    #[error("event subscriber lagged behind and lost {0} events")]
    Lagged(u64),
    /// The cache was dropped.
    #[error("the cache was closed")]
    Closed,
}

impl<K: Clone, V> EventReceiver<K, V> {
    /// Waits for the next event that passes the filter.
    pub async fn recv(&mut self) -> Result<CacheEvent<K, V>, RecvError> {
        loop {
            match self.rx.recv().await {
                Ok(event) if self.filter.accepts(&event) => return Ok(event),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(n)) => return Err(RecvError::Lagged(n)),
                Err(broadcast::error::RecvError::Closed) => return Err(RecvError::Closed),
            }
        }
    }

    /// The next already-delivered event that passes the filter, without waiting.
    pub fn try_recv(&mut self) -> Option<Result<CacheEvent<K, V>, RecvError>> {
        loop {
            match self.rx.try_recv() {
                Ok(event) if self.filter.accepts(&event) => return Some(Ok(event)),
                Ok(_) => continue,
                Err(broadcast::error::TryRecvError::Empty) => return None,
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
