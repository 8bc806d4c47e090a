//! Runtime support for the `partcache-macros` attributes (`#[cacheable]`,
//! `#[cache_put]`, `#[cache_evict]`). Not a public API: the generated code calls it as
//! `::partcache::__private::...`, and its shape may change with any release.
//!
//! Two rules drive everything here:
//! - **The hot path does no lookup.** Each annotated function owns a `static`
//!   [`CallSite`] that keeps the resolved `Cache<K, V>` of the first manager it saw;
//!   later calls through that manager compare one pointer and borrow the handle.
//! - **Fail open** (DESIGN §7): a missing manager, a cache that cannot be opened, a store
//!   error or a timeout never fails the annotated function. It runs uncached, and the
//!   problem is logged with `tracing` (store errors are also counted in the cache's
//!   `store_errors` statistic by [`Cache`] itself).

use std::borrow::Cow;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::FutureExt;

use crate::cache::{Cache, CacheKey, CacheValue};
use crate::error::{Error, Result};
use crate::manager::CacheManager;

/// The process-wide default manager, by reference (no clone on the hot path).
#[inline]
pub fn default_manager() -> Option<&'static CacheManager> {
    crate::default_manager::default_manager_ref()
}

/// The manager an attribute's `manager = expr` names. A function (not `Some(..)`) so
/// that `&Arc<CacheManager>` and `&&CacheManager` deref-coerce to `&CacheManager`.
#[inline]
pub fn explicit_manager(manager: &CacheManager) -> Option<&CacheManager> {
    Some(manager)
}

/// Two handles to the same manager (clones share their caches).
fn same_manager(a: &CacheManager, b: &CacheManager) -> bool {
    a.is_same_manager(b)
}

/// One annotated function's handle on its cache: a `static` in the generated code.
pub struct CallSite<K, V> {
    cache: &'static str,
    function: &'static str,
    /// The first manager this site resolved its cache through, and that cache. Calls
    /// through other managers (tests, multi-tenant setups) look their cache up each time.
    first: OnceLock<(CacheManager, Cache<K, V>)>,
    /// Whether a resolution failure was already logged at `error` level (later ones go
    /// to `debug`, so a misconfiguration does not flood the log).
    reported: AtomicBool,
}

impl<K, V> CallSite<K, V> {
    /// A site for the function `function` (a path, for logs) caching in `cache`.
    pub const fn new(cache: &'static str, function: &'static str) -> Self {
        CallSite {
            cache,
            function,
            first: OnceLock::new(),
            reported: AtomicBool::new(false),
        }
    }
}

impl<K: CacheKey, V: CacheValue> CallSite<K, V> {
    /// The cache, or `None` (logged) when there is no manager or the cache cannot be
    /// opened. A cache not built yet is built with the manager's settings for its name
    /// (from the configuration file, else the defaults).
    pub async fn resolve<'a>(
        &'a self,
        manager: Option<&CacheManager>,
    ) -> Option<Cow<'a, Cache<K, V>>> {
        let Some(manager) = manager else {
            self.report(format_args!(
                "no default cache manager is set: call `partcache::set_default_manager` at start-up or pass `manager = ...` to the attribute"
            ));
            return None;
        };
        if let Some((first, cache)) = self.first.get()
            && same_manager(first, manager)
        {
            return Some(Cow::Borrowed(cache));
        }
        let opened = match manager.get_cache::<K, V>(self.cache) {
            Some(cache) => Ok(cache),
            None => manager.cache::<K, V>(self.cache).build().await,
        };
        match opened {
            Ok(cache) => {
                if self.first.get().is_none() {
                    // A racing caller may have set it first; either handle is right.
                    let _ = self.first.set((manager.clone(), cache.clone()));
                }
                Some(Cow::Owned(cache))
            }
            Err(error) => {
                self.report(format_args!("cache cannot be opened: {error}"));
                None
            }
        }
    }

    fn report(&self, problem: std::fmt::Arguments<'_>) {
        if self.reported.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                cache = self.cache,
                function = self.function,
                "{problem}; running uncached"
            );
        } else {
            tracing::error!(
                cache = self.cache,
                function = self.function,
                "{problem}; running uncached"
            );
        }
    }

    fn store_error(&self, operation: &str, error: &Error) {
        tracing::warn!(
            cache = self.cache,
            function = self.function,
            operation,
            %error,
            "cache store error; the function runs uncached"
        );
    }

    async fn store(&self, cache: &Cache<K, V>, key: K, value: Arc<V>, ttl: Option<Duration>) {
        let stored = match ttl {
            Some(ttl) => cache.put_with_ttl(key, value, ttl).await,
            None => cache.put(key, value).await,
        };
        if let Err(error) = stored {
            self.store_error("put", &error);
        }
    }
}

/// Per-attribute options that are values, not types.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    ttl: Option<Duration>,
    sync: bool,
    before: bool,
}

impl Options {
    /// No TTL, no single-flight, evict after the call.
    pub const fn new() -> Self {
        Options {
            ttl: None,
            sync: false,
            before: false,
        }
    }

    /// Entries written by this function expire after `ttl` (on top of the cache's policy).
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Concurrent misses of one key call the function once.
    pub const fn sync(mut self) -> Self {
        self.sync = true;
        self
    }

    /// Evict before the call, whatever its outcome.
    pub const fn before(mut self) -> Self {
        self.before = true;
        self
    }
}

/// Which part of a function's output is cached, and how a cached value becomes an
/// output again.
pub trait Shape<O> {
    /// The cache's value type.
    type Value;
    /// The value to cache for `output`, or `None` when it is not cached.
    fn value(output: &O) -> Option<Self::Value>;
    /// The output a cached value stands for.
    fn output(value: Self::Value) -> O;
}

/// The whole output is cached (plain values; `Option` with `cache_none`; `Result` with
/// `cache_err`).
pub struct Whole;
/// `Result<T, E>`: only `Ok` values are cached.
pub struct OkOnly;
/// `Option<T>`: only `Some` values are cached.
pub struct SomeOnly;
/// `Result<Option<T>, E>`: only `Ok(Some(..))` values are cached.
pub struct OkSomeOnly;

impl<T: Clone> Shape<T> for Whole {
    type Value = T;
    fn value(output: &T) -> Option<T> {
        Some(output.clone())
    }
    fn output(value: T) -> T {
        value
    }
}

impl<T: Clone, E> Shape<Result<T, E>> for OkOnly {
    type Value = T;
    fn value(output: &Result<T, E>) -> Option<T> {
        output.as_ref().ok().cloned()
    }
    fn output(value: T) -> Result<T, E> {
        Ok(value)
    }
}

impl<T: Clone> Shape<Option<T>> for SomeOnly {
    type Value = T;
    fn value(output: &Option<T>) -> Option<T> {
        output.clone()
    }
    fn output(value: T) -> Option<T> {
        Some(value)
    }
}

impl<T: Clone, E> Shape<Result<Option<T>, E>> for OkSomeOnly {
    type Value = T;
    fn value(output: &Result<Option<T>, E>) -> Option<T> {
        match output {
            Ok(Some(value)) => Some(value.clone()),
            _ => None,
        }
    }
    fn output(value: T) -> Result<Option<T>, E> {
        Ok(Some(value))
    }
}

/// Whether a `Result`-returning function succeeded (for `#[cache_evict]`).
pub fn ok_is_success<T, E>(output: &Result<T, E>) -> bool {
    output.is_ok()
}

/// Any other function succeeds when it returns.
pub fn returned_is_success<O>(_: &O) -> bool {
    true
}

/// What `#[cache_evict]` removes.
#[derive(Debug)]
pub enum Evict<K> {
    /// One key's entry.
    Key(K),
    /// Every entry (`Cache::clear`).
    AllEntries,
}

/// A cached value handed back to the caller: moved out when no one else holds it.
fn unshare<V: Clone>(value: Arc<V>) -> V {
    Arc::try_unwrap(value).unwrap_or_else(|shared| V::clone(&shared))
}

impl<K: CacheKey, V: CacheValue + Clone> CallSite<K, V> {
    /// `#[cacheable]`: the cached output for `key`, or `call`'s output (cached when `S`
    /// says so and `unless` is false). `key` is `None` when the `condition` was false.
    pub async fn cacheable<O, S, U, F>(
        &self,
        manager: Option<&CacheManager>,
        key: Option<K>,
        options: Options,
        _shape: S,
        unless: U,
        call: F,
    ) -> O
    where
        S: Shape<O, Value = V>,
        U: FnOnce(&V) -> bool,
        F: Future<Output = O>,
    {
        let site = self;
        let Some(key) = key else {
            return call.await;
        };
        let Some(cache) = site.resolve(manager).await else {
            return call.await;
        };
        match cache.get(&key).await {
            Ok(Some(hit)) => return S::output(unshare(hit)),
            Ok(None) => {}
            Err(error) => {
                // The store is failing: do not add a put's timeout to the call.
                site.store_error("get", &error);
                return call.await;
            }
        }
        if options.sync {
            return single_flight::<K, V, O, S, F>(site, &cache, key, options, call).await;
        }
        let output = call.await;
        if let Some(value) = S::value(&output)
            && !unless(&value)
        {
            site.store(&cache, key, Arc::new(value), options.ttl).await;
        }
        output
    }
}

/// The `sync` miss path: one caller per key runs `call` and caches its output; the
/// others wait and take the cached value. When the leader's output is not cacheable (an
/// `Err`, a `None`) or it panics, each waiter runs its own call.
async fn single_flight<K, V, O, S, F>(
    site: &CallSite<K, V>,
    cache: &Cache<K, V>,
    key: K,
    options: Options,
    call: F,
) -> O
where
    K: CacheKey,
    V: CacheValue + Clone,
    S: Shape<O, Value = V>,
    F: Future<Output = O>,
{
    let mut call = Some(call);
    let mut output = None;
    let mut panic = None;
    let (call_slot, output_slot, panic_slot) = (&mut call, &mut output, &mut panic);
    let key_ref = &key;
    let shared = cache
        .inner
        .flights
        .run(&key, move || async move {
            // A caller that missed just before the previous leader stored its value.
            if let Some(Ok(Some(value))) = cache.inner.store.get_now(key_ref) {
                return Ok(Some(value));
            }
            let Some(call) = call_slot.take() else {
                return Ok(None);
            };
            match AssertUnwindSafe(call).catch_unwind().await {
                Ok(out) => {
                    let value = S::value(&out).map(Arc::new);
                    if let Some(value) = &value {
                        site.store(cache, key_ref.clone(), value.clone(), options.ttl)
                            .await;
                    }
                    *output_slot = Some(out);
                    Ok(value)
                }
                Err(payload) => {
                    *panic_slot = Some(payload);
                    Err(Error::Panicked("cached function", String::new()))
                }
            }
        })
        .await;
    if let Some(payload) = panic {
        std::panic::resume_unwind(payload);
    }
    if let Some(output) = output {
        return output;
    }
    match (shared, call) {
        (Ok(Some(value)), _) => S::output(unshare(value)),
        (_, Some(call)) => {
            let output = call.await;
            if let Some(value) = S::value(&output) {
                site.store(cache, key, Arc::new(value), options.ttl).await;
            }
            output
        }
        // Unreachable: the call is consumed only by the leader, which returned above.
        (_, None) => unreachable_call(),
    }
}

#[cold]
fn unreachable_call() -> ! {
    unreachable!("partcache: a cached function's call was consumed without an output")
}

impl<K: CacheKey, V: CacheValue + Clone> CallSite<K, V> {
    /// `#[cache_put]`: runs `call`, then caches its output (when `S` says so and `unless`
    /// is false) under the key `key` computes (`None` when the `condition` was false).
    pub async fn cache_put<O, S, KF, U, F>(
        &self,
        manager: Option<&CacheManager>,
        key: Option<KF>,
        options: Options,
        _shape: S,
        unless: U,
        call: F,
    ) -> O
    where
        S: Shape<O, Value = V>,
        KF: FnOnce(&V) -> K,
        U: FnOnce(&V) -> bool,
        F: Future<Output = O>,
    {
        let site = self;
        let output = call.await;
        let Some(key) = key else {
            return output;
        };
        let Some(value) = S::value(&output) else {
            return output;
        };
        if unless(&value) {
            return output;
        }
        if let Some(cache) = site.resolve(manager).await {
            let key = key(&value);
            site.store(&cache, key, Arc::new(value), options.ttl).await;
        }
        output
    }
}

impl<K: CacheKey, V: CacheValue> CallSite<K, V> {
    /// `#[cache_evict]`: removes `target` before `call` (`before`) or after a successful
    /// call. `target` is `None` when the `condition` was false.
    pub async fn cache_evict<O, F>(
        &self,
        manager: Option<&CacheManager>,
        target: Option<Evict<K>>,
        options: Options,
        succeeded: fn(&O) -> bool,
        call: F,
    ) -> O
    where
        F: Future<Output = O>,
    {
        let site = self;
        let Some(target) = target else {
            return call.await;
        };
        if options.before {
            site.evict(manager, target).await;
            return call.await;
        }
        let output = call.await;
        if succeeded(&output) {
            site.evict(manager, target).await;
        }
        output
    }

    async fn evict(&self, manager: Option<&CacheManager>, target: Evict<K>) {
        let Some(cache) = self.resolve(manager).await else {
            return;
        };
        let evicted: Result<()> = match target {
            Evict::Key(key) => cache.remove(&key).await.map(drop),
            Evict::AllEntries => cache.clear().await,
        };
        if let Err(error) = evicted {
            self.store_error("evict", &error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manager_is_the_same_as_its_clones_and_not_as_another_with_the_same_url() {
        let a = CacheManager::from_url("memory://").unwrap();
        let b = CacheManager::from_url("memory://").unwrap();
        assert!(same_manager(&a, &a.clone()));
        assert!(!same_manager(&a, &b));
    }

    #[tokio::test]
    async fn a_site_serves_each_manager_its_own_cache() {
        static SITE: CallSite<u32, String> = CallSite::new("site-test", "tests::f");
        let (a, b) = (
            CacheManager::from_url("memory://").unwrap(),
            CacheManager::from_url("memory://").unwrap(),
        );
        let from_a = SITE.resolve(Some(&a)).await.unwrap().into_owned();
        from_a.put(1, "a".to_string()).await.unwrap();
        let from_b = SITE.resolve(Some(&b)).await.unwrap().into_owned();
        assert_eq!(from_b.get(&1).await.unwrap(), None);
        let again = SITE.resolve(Some(&a)).await.unwrap();
        assert!(matches!(again, Cow::Borrowed(_)));
        assert_eq!(
            again.get(&1).await.unwrap().as_deref().map(String::as_str),
            Some("a")
        );
    }

    #[tokio::test]
    async fn no_manager_resolves_to_none() {
        static SITE: CallSite<u32, String> = CallSite::new("site-test", "tests::g");
        assert!(SITE.resolve(None).await.is_none());
    }
}
