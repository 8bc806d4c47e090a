//! [`Entries`]: iteration over a cache, as JCache's iterator.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::{BoxStream, Stream};

use crate::error::{Error, Result};
use crate::stats::StatsCounters;

/// What the stream needs of its cache besides the entries: removing a key as
/// [`Cache::remove`](crate::Cache::remove) does. A trait, so that this file does not
/// import the cache that returns it.
pub(crate) trait RemoveKey<K>: Sync {
    /// Removes `key` (event, writer call, counted removal); whether it was there.
    fn remove_key<'a>(&'a self, key: &'a K) -> BoxFuture<'a, Result<bool>>;
}

/// The stream [`Cache::entries`](crate::Cache::entries) returns: every live entry once, each counted as a hit
/// (JSR-107 §12.2: the iterator's `next` is a get). [`Entries::remove`] removes the entry
/// returned last.
pub struct Entries<'a, K, V> {
    cache: &'a dyn RemoveKey<K>,
    stats: &'a StatsCounters,
    inner: BoxStream<'a, Result<(K, Arc<V>)>>,
    last: Option<K>,
}

impl<'a, K, V> Entries<'a, K, V> {
    pub(crate) fn new(
        cache: &'a dyn RemoveKey<K>,
        stats: &'a StatsCounters,
        inner: BoxStream<'a, Result<(K, Arc<V>)>>,
    ) -> Self {
        Entries {
            cache,
            stats,
            inner,
            last: None,
        }
    }

    /// Removes the entry the stream returned last, as
    /// [`Cache::remove`](crate::Cache::remove) does (a
    /// `Removed` event, a writer `delete`, a removal counted); returns whether it was
    /// still there. Calling it before the first entry, or twice for one entry, is an
    /// [`Error::Rejected`] (JCache's `IllegalStateException`).
    pub async fn remove(&mut self) -> Result<bool> {
        let key = self.last.take().ok_or_else(|| {
            Error::Rejected(
                "no entry to remove: the iteration has not returned one since the last removal"
                    .into(),
            )
        })?;
        self.cache.remove_key(&key).await
    }
}

// No field is pinned structurally (the inner stream is boxed), whatever `K` is.
impl<K, V> Unpin for Entries<'_, K, V> {}

impl<K: Clone, V> Stream for Entries<'_, K, V> {
    type Item = Result<(K, Arc<V>)>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let polled = this.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Ok((key, _)))) = &polled {
            this.stats.hits.incr();
            this.last = Some(key.clone());
        }
        polled
    }
}

impl<K, V> std::fmt::Debug for Entries<'_, K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries").finish_non_exhaustive()
    }
}
