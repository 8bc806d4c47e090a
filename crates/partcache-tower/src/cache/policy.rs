//! What may be stored, and in which form.

use std::future::Future;
use std::sync::Arc;

use partcache::CacheValue;

/// The stored form of a service's response.
///
/// A cache stores values that serialize (so that the same layer works on a Redis
/// store); many responses do not (streams, handles). Implement this on the stored
/// type to say how a response becomes storable and how a stored value is turned back
/// into a response. Every `Clone` cache value is its own stored form.
///
/// On the local store a hit never deserializes: [`CachedResponse::to_response`] gets
/// the shared value (`Arc<Self>`) the store holds, so keep large parts (bodies) in
/// cheaply clonable types such as `bytes::Bytes`.
pub trait CachedResponse<Resp>: CacheValue + Sized {
    /// Turns `response` into its stored form, or gives it back unchanged when it
    /// cannot be stored (it is then returned to the caller uncached).
    fn from_response(response: Resp) -> impl Future<Output = Result<Self, Resp>> + Send;

    /// A response equal to the one that was stored.
    fn to_response(stored: &Arc<Self>) -> Resp;
}

impl<T> CachedResponse<T> for T
where
    T: CacheValue + Clone,
{
    fn from_response(response: T) -> impl Future<Output = Result<T, T>> + Send {
        std::future::ready(Ok(response))
    }

    fn to_response(stored: &Arc<T>) -> T {
        T::clone(stored)
    }
}

/// Decides which responses are stored. Every closure `Fn(&Resp) -> bool` is one.
///
/// Responses it declines are returned to their caller as they are; concurrent callers
/// of the same key that were waiting on it then call the service themselves.
pub trait StorePredicate<Resp>: Send + Sync + 'static {
    /// Whether `response` may be stored.
    fn should_store(&self, response: &Resp) -> bool;
}

impl<Resp, F> StorePredicate<Resp> for F
where
    F: Fn(&Resp) -> bool + Send + Sync + 'static,
{
    fn should_store(&self, response: &Resp) -> bool {
        self(response)
    }
}

/// The default predicate: every response (that converts) is stored.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreAll;

impl<Resp> StorePredicate<Resp> for StoreAll {
    fn should_store(&self, _: &Resp) -> bool {
        true
    }
}
