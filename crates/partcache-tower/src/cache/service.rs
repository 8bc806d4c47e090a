//! [`CacheService`]: the service a [`CacheLayer`](super::CacheLayer) wraps around another.

use std::sync::Arc;
use std::task::{Context, Poll};

use partcache::{CacheKey, CacheValue, HeldLease};
use tower_service::Service;

use super::future::ResponseFuture;
use super::key::KeyExtractor;
use super::policy::{CachedResponse, StorePredicate};
use super::shared::Shared;
use partcache::flight::{Flight, Joined};

/// A service that answers from a cache when it can and calls `S` when it must. Made
/// by [`CacheLayer`](super::CacheLayer); see there for the behaviour.
pub struct CacheService<S, E, K, V, P> {
    pub(crate) inner: S,
    pub(crate) shared: Arc<Shared<E, K, V, P>>,
}

impl<S: Clone, E, K, V, P> Clone for CacheService<S, E, K, V, P> {
    fn clone(&self) -> Self {
        CacheService {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug, E, K, V, P> std::fmt::Debug for CacheService<S, E, K, V, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, E, K, V, P> Service<Req> for CacheService<S, E, K, V, P>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
    Req: Send + 'static,
    E: KeyExtractor<Req, Key = K>,
    K: CacheKey,
    V: CacheValue + CachedResponse<S::Response>,
    P: StorePredicate<S::Response>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let Some(key) = self.shared.extractor.extract(&request) else {
            self.shared.counters.bypasses.incr();
            return ResponseFuture::bypass(self.inner.call(request));
        };
        // The ready service goes with this request; the clone waits for the next
        // `poll_ready` (tower's rule for services called from a spawned future).
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::cached(Box::pin(serve(self.shared.clone(), inner, request, key)))
    }
}

async fn serve<S, Req, E, K, V, P>(
    shared: Arc<Shared<E, K, V, P>>,
    mut inner: S,
    request: Req,
    key: K,
) -> Result<S::Response, S::Error>
where
    S: Service<Req> + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    E: Send + Sync + 'static,
    K: CacheKey,
    V: CacheValue + CachedResponse<S::Response>,
    P: StorePredicate<S::Response>,
{
    let counters = &shared.counters;
    match shared.fail_open().call("get", shared.cache.get(&key)).await {
        Some(Some(stored)) => {
            counters.hits.incr();
            return Ok(V::to_response(&stored));
        }
        Some(None) => counters.misses.incr(),
        None => {
            // The store failed (logged and counted): the cache is never why a
            // request fails.
            counters.bypasses.incr();
            return inner.call(request).await;
        }
    }
    let flight = match shared.flights.join(&key) {
        Joined::Leader(flight) => flight,
        Joined::Waiter(waiter) => {
            return match waiter.wait().await {
                Some(stored) => {
                    counters.coalesced.incr();
                    Ok(V::to_response(&stored))
                }
                // The leader's response was not shareable: get our own.
                None => inner.call(request).await,
            };
        }
    };
    // Across processes: the key's lease. Another process may have stored the value
    // meanwhile, or be calling its service for it (then this waits for its value).
    // Every way out below that stores nothing ends the lease: an error or a response
    // not stored by dropping it, a dropped request future (a client that went away)
    // too.
    // Each ask gives up after the store timeout, as every store call of the layer does;
    // waiting for another process's value is not a store call (at most the lease time).
    let lease = shared.cache.lease_within(&key, shared.store_timeout).await;
    if let Some(error) = lease.failure() {
        shared.fail_open().failed_or_timed_out("lease", error);
    }
    if let Some(stored) = lease.hit() {
        counters.coalesced.incr();
        flight.complete(stored.clone());
        return Ok(V::to_response(stored));
    }
    let response = match inner.call(request).await {
        Ok(response) => response,
        Err(error) => {
            lease.release().await;
            return Err(error);
        }
    };
    if !shared.predicate.should_store(&response) {
        counters.not_stored.incr();
        lease.release().await;
        return Ok(response);
    }
    let stored = match V::from_response(response).await {
        Ok(stored) => Arc::new(stored),
        Err(response) => {
            counters.not_stored.incr();
            lease.release().await;
            return Ok(response);
        }
    };
    flight.complete(stored.clone());
    let response = V::to_response(&stored);
    let Some(admitted) = shared.backlog.admit((shared.weigher)(&stored)) else {
        lease.release().await;
        return Ok(response);
    };
    if shared.local {
        // No I/O: a task per miss would cost more than the write itself.
        write(&shared, key, stored, flight, lease).await;
        drop(admitted);
        return Ok(response);
    }
    // The write runs beside the response: the flight stays joinable until it ends, so
    // callers arriving meanwhile share `stored` instead of calling the service again.
    let writer = shared.clone();
    tokio::spawn(async move {
        write(&writer, key, stored, flight, lease).await;
        drop(admitted);
    });
    Ok(response)
}

/// Writes `stored` under `key`, unless an invalidation cancelled `flight` meanwhile
/// (in this process) or voided the lease (in any process: the store refuses it then).
/// Either write gives up after the store timeout, as every store call of the layer
/// does.
async fn write<E, K, V, P>(
    shared: &Shared<E, K, V, P>,
    key: K,
    stored: Arc<V>,
    flight: Flight<K, Arc<V>>,
    lease: HeldLease<K, V>,
) where
    K: CacheKey,
    V: CacheValue,
{
    if flight.is_cancelled() {
        // Invalidated while the service ran: storing now would resurrect old data.
        lease.release().await;
        return;
    }
    if lease.is_unleased() {
        drop(lease);
        let write = shared.cache.put(key, stored);
        if shared.fail_open().call("put", write).await.is_some() {
            shared.counters.stored.incr();
        }
    } else {
        // A timeout drops the lease mid-way, which ends it.
        let write = async { Ok::<_, partcache::Error>(lease.store(stored, None).await) };
        if shared.fail_open().call("put", write).await == Some(true) {
            shared.counters.stored.incr();
        }
    }
    // The flight ends with the write: until now late callers shared `stored`.
    drop(flight);
}
