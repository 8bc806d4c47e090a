//! How a request becomes a cache key.

use partcache::CacheKey;

/// Derives the cache key of a request, or declines to cache it.
///
/// Every closure `Fn(&Req) -> Option<K>` is a key extractor, so most users never name
/// this trait; implement it on a type when the extraction has configuration of its own.
///
/// The key must capture everything the response depends on: two requests with the same
/// key get the same stored response. Return `None` for requests that must not be
/// cached (they go straight to the service, counted as `bypassed`).
///
/// ```
/// use partcache_tower::KeyExtractor;
///
/// struct ByUserId;
///
/// impl KeyExtractor<(u64, String)> for ByUserId {
///     type Key = u64;
///     fn extract(&self, request: &(u64, String)) -> Option<u64> {
///         Some(request.0)
///     }
/// }
///
/// let by_path = |request: &String| Some(request.clone());
/// assert_eq!(by_path.extract(&"/a".to_string()), Some("/a".to_string()));
/// assert_eq!(ByUserId.extract(&(7, "x".into())), Some(7));
/// ```
pub trait KeyExtractor<Req>: Send + Sync + 'static {
    /// The cache's key type.
    type Key: CacheKey;

    /// The key of `request`, or `None` to send it to the service uncached.
    fn extract(&self, request: &Req) -> Option<Self::Key>;
}

impl<Req, K, F> KeyExtractor<Req> for F
where
    F: Fn(&Req) -> Option<K> + Send + Sync + 'static,
    K: CacheKey,
{
    type Key = K;

    fn extract(&self, request: &Req) -> Option<K> {
        self(request)
    }
}
