//! Runtime support for the `partcache-macros` attributes (`#[cacheable]`,
//! `#[cache_put]`, `#[cache_evict]`). Not a public API: the generated code calls it as
//! `::partcache::__private::...`, and its shape may change with any release.
//!
//! Three rules drive everything here:
//! - **Types come from the declaration.** Every operation goes through a
//!   [`CacheDecl`]; [`key`] and [`Op::new`] are where an attribute's key and value types
//!   meet the declared ones, each with one error message when they differ. Nothing here
//!   needs `K` or `V` to be serializable (the declaration checked that), so a missing
//!   derive is reported once, at the declaration.
//! - **The hot path does no lookup.** A declaration keeps the cache of the first
//!   manager it was resolved through; later calls through that manager compare one
//!   pointer, check that the cache is still open (one atomic load; a closed one is
//!   replaced by opening the name again) and borrow the handle, and a store that answers in place (the local
//!   store) is read without a future ([`Op::lookup_now`]): a hit returns before the
//!   function's body becomes a future.
//! - **Fail open**: a missing manager, a cache that cannot be opened, a store error or
//!   a timeout never fails the annotated function. It runs uncached, and the problem is
//!   logged with `tracing` (store calls through [`FailOpen`], the rule every adapter
//!   follows, naming the function as the `adapter`; store errors are also counted in
//!   the cache's `store_errors` statistic by [`Cache`] itself).
//!
//! The order of stacked attributes is Spring's (`CacheAspectSupport`): evictions marked
//! `before`, then the lookups of the `#[cacheable]`s (the first hit wins), then the
//! call (skipped on a hit unless a `#[cache_put]` is present), then the `#[cacheable]`
//! stores (on a miss only) and the `#[cache_put]` stores, then the other evictions
//! (after a successful call, or a hit). The generated code spells that sequence out
//! with the pieces below.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;

use crate::adapter::FailOpen;
use crate::cache::Cache;
use crate::cache_decl::Resolved;
pub use crate::cache_decl::{CacheDecl, Deserializable, Evict, Serializable};
use crate::error::Error;
use crate::flight::Loaded;
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

/// An attribute's key as the declared key type: the one place where the key an
/// attribute computes meets the declaration's `K`.
#[inline]
pub fn key<K, V, T: KeyOf<K>>(_cache: &CacheDecl<K, V>, key: T) -> K {
    key.into_key()
}

/// A `#[cache_put]` key computed from the cached value (`key = result.id`): pins the
/// closure's argument to the declared value type.
#[inline]
pub fn key_from_result<K, V, F: FnOnce(&V) -> K>(_cache: &CacheDecl<K, V>, key: F) -> F {
    key
}

/// A key whose type is the declared key type of the cache.
#[diagnostic::on_unimplemented(
    message = "this key is a `{Self}`, but the cache's declaration says its keys are `{K}`",
    label = "a `{Self}`, not a `{K}`",
    note = "a cache's key and value types are those of its `CacheDecl`; every attribute that names it computes keys of that type"
)]
pub trait KeyOf<K> {
    /// The key itself.
    fn into_key(self) -> K;
}

impl<K> KeyOf<K> for K {
    #[inline]
    fn into_key(self) -> K {
        self
    }
}

/// A cached value whose type is the declared value type of the cache.
#[diagnostic::on_unimplemented(
    message = "this function caches a `{Self}`, but the cache's declaration says its values are `{V}`",
    label = "caches a `{Self}`, not a `{V}`",
    note = "a cache's key and value types are those of its `CacheDecl`; the value a function caches is its output, the `T` of `Result<T, E>` or `Option<T>` (see `cache_none`, `cache_err`)"
)]
pub trait ValueOf<V> {
    /// The value itself.
    fn into_value(self) -> V;
    /// And back.
    fn from_value(value: V) -> Self;
    /// `S`, the shape of the [`Op`] caching this value. A projection: when this type is
    /// not `V`, the `Op` the attribute builds has no type, and its uses report nothing
    /// beyond the one error at [`Op::new`].
    type Checked<S>;
}

impl<V> ValueOf<V> for V {
    type Checked<S> = S;
    #[inline]
    fn into_value(self) -> V {
        self
    }
    #[inline]
    fn from_value(value: V) -> V {
        value
    }
}

/// Per-attribute options that are values, not types.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    ttl: Option<Duration>,
}

impl Options {
    /// No TTL of its own.
    pub const fn new() -> Self {
        Options { ttl: None }
    }

    /// Entries written by this function expire after `ttl` (on top of the cache's policy).
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
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
#[derive(Debug)]
pub struct Whole;
/// `Result<T, E>`: only `Ok` values are cached.
#[derive(Debug)]
pub struct OkOnly;
/// `Option<T>`: only `Some` values are cached.
#[derive(Debug)]
pub struct SomeOnly;
/// `Result<Option<T>, E>`: only `Ok(Some(..))` values are cached.
#[derive(Debug)]
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

/// Whether a `Result`-returning function succeeded (for evictions after the call).
pub fn ok_is_success<T, E>(output: &Result<T, E>) -> bool {
    output.is_ok()
}

/// Any other function succeeds when it returns.
pub fn returned_is_success<O>(_: &O) -> bool {
    true
}

/// What a `#[cacheable]` lookup found.
#[derive(Debug)]
pub enum Lookup<V> {
    /// A cached value.
    Hit(Arc<V>),
    /// Nothing: the output is to be stored.
    Miss,
    /// No lookup (a false `condition`), or no cache to ask (no manager, a store error):
    /// nothing is stored either.
    Skipped,
}

/// A cached value handed back to the caller: moved out when no one else holds it.
/// A hit's value is shared with the cache; a load of the count tells so without the
/// failed compare-and-swap of `Arc::try_unwrap`.
#[inline]
fn unshare<V: Clone>(value: Arc<V>) -> V {
    if Arc::strong_count(&value) > 1 {
        return V::clone(&value);
    }
    Arc::try_unwrap(value).unwrap_or_else(|shared| V::clone(&shared))
}

impl<K, V> CacheDecl<K, V> {
    /// The cache, or `None` (logged) when there is no manager or the cache cannot be
    /// opened. A cache not built yet is built with the declared settings.
    pub async fn resolve<'a>(
        &'a self,
        manager: Option<&CacheManager>,
        function: &'static str,
    ) -> Option<Cow<'a, Cache<K, V>>> {
        let Some(manager) = manager else {
            self.report(
                function,
                format_args!(
                    "no default cache manager is set: call `partcache::set_default_manager` at start-up or pass `manager = ...` to the attribute"
                ),
            );
            return None;
        };
        if let Some(cache) = self.resolved(Some(manager)) {
            return Some(Cow::Borrowed(cache));
        }
        match (self.ops.open)(self, manager).await {
            Ok(cache) => {
                self.remember(manager, &cache);
                Some(Cow::Owned(cache))
            }
            Err(error) => {
                self.report(function, format_args!("cache cannot be opened: {error}"));
                None
            }
        }
    }

    /// The cache of the first manager this declaration was resolved through, when
    /// `manager` is that one and the cache is open: the hot path, without a future.
    /// `None` once it is closed, so that [`CacheDecl::resolve`] opens the name again.
    #[inline]
    fn resolved(&self, manager: Option<&CacheManager>) -> Option<&Cache<K, V>> {
        match (self.first.get(), manager) {
            (Some(first), Some(manager)) if first.manager.is_same_manager(manager) => {
                first.open_cache()
            }
            _ => None,
        }
    }

    /// Keeps `cache`, just opened through `manager`, for the hot path: as the first
    /// cache, or as the replacement of a closed one of the first manager.
    fn remember(&self, manager: &CacheManager, cache: &Cache<K, V>) {
        match self.first.get() {
            Some(first) if first.manager.is_same_manager(manager) => first.keep(cache),
            Some(_) => {}
            None => {
                // A racing caller may have set it first; either handle is right.
                let _ = self
                    .first
                    .set(Resolved::new(manager.clone(), cache.clone()));
            }
        }
    }

    fn report(&self, function: &'static str, problem: std::fmt::Arguments<'_>) {
        if self.reported.swap(true, Ordering::Relaxed) {
            tracing::debug!(cache = self.name(), function, "{problem}; running uncached");
        } else {
            tracing::error!(cache = self.name(), function, "{problem}; running uncached");
        }
    }

    /// Store calls of `function` on this cache fail open, as every adapter's do (no
    /// timeout: the store's own bounds the call). The log names the function as the
    /// `adapter`.
    #[inline]
    fn fail_open(&self, function: &'static str) -> FailOpen<'_> {
        FailOpen::new(function, self.name())
    }

    async fn store(
        &self,
        cache: &Cache<K, V>,
        key: K,
        value: Arc<V>,
        ttl: Option<Duration>,
        function: &'static str,
    ) {
        let put = (self.ops.put)(cache, key, value, ttl);
        self.fail_open(function).call("put", put).await;
    }

    /// `#[cache_evict]`: removes `target` (`None` when the `condition` was false).
    pub async fn evict(
        &self,
        manager: Option<&CacheManager>,
        target: Option<Evict<K>>,
        function: &'static str,
    ) {
        let Some(target) = target else {
            return;
        };
        let Some(cache) = self.resolve(manager, function).await else {
            return;
        };
        let evict = (self.ops.evict)(&cache, target);
        self.fail_open(function).call("evict", evict).await;
    }
}

/// A `#[cacheable]` or `#[cache_put]` on a function of output `O`: the declared cache,
/// and the [`Shape`] `S` that says how outputs become values and back (checked by
/// [`Op::new`], where the function's value type meets the declared one). The shape is a
/// type, not a function pointer: a hit's conversion to the output is inlined.
pub struct Op<'a, K, V, O, S> {
    cache: &'a CacheDecl<K, V>,
    function: &'static str,
    /// `fn() -> _`: an `Op` is `Send` and `Sync` whatever `O` and `S` are.
    shape: PhantomData<fn() -> (O, S)>,
}

impl<K, V, O, S> fmt::Debug for Op<'_, K, V, O, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Op")
            .field("cache", &self.cache.name())
            .field("function", &self.function)
            .field("shape", &std::any::type_name::<S>())
            .finish()
    }
}

impl<'a, K, V, O> Op<'a, K, V, O, ()> {
    /// The operation of function `function` on `cache`, caching the part of its output
    /// `shape` says.
    #[inline]
    pub fn new<S>(
        cache: &'a CacheDecl<K, V>,
        _shape: S,
        function: &'static str,
    ) -> Op<'a, K, V, O, <S::Value as ValueOf<V>>::Checked<S>>
    where
        S: Shape<O>,
        S::Value: ValueOf<V>,
    {
        Op {
            cache,
            function,
            shape: PhantomData,
        }
    }
}

impl<K, V, O, S> Op<'_, K, V, O, S>
where
    S: Shape<O>,
    S::Value: ValueOf<V>,
{
    /// The value to cache for `output`, or `None` when this part of it is not cached.
    #[inline]
    fn value(output: &O) -> Option<V> {
        S::value(output).map(ValueOf::into_value)
    }

    /// The output a cached value stands for, as the caller's own copy.
    #[inline]
    pub fn output(&self, value: Arc<V>) -> O
    where
        V: Clone,
    {
        S::output(<S::Value as ValueOf<V>>::from_value(unshare(value)))
    }

    /// Looks `key` up without a future, when nothing needs to wait: the cache is the
    /// declaration's resolved one and its store answers in place (a local hit or miss).
    /// `None` when the caller must await [`Op::lookup`] (nothing was read then).
    #[inline]
    pub fn lookup_now(&self, manager: Option<&CacheManager>, key: Option<&K>) -> Option<Lookup<V>> {
        let Some(key) = key else {
            return Some(Lookup::Skipped);
        };
        let cache = self.cache.resolved(manager)?;
        let found = (self.cache.ops.get_in_place)(cache, key)?;
        Some(self.found(found))
    }

    /// Looks `key` up (`None`: the `condition` was false), opening the cache first when
    /// needed. A future on the heap: the path of a first call or a remote store, kept
    /// out of the function's future, which every hit answered in place creates.
    pub fn lookup<'b>(
        &'b self,
        manager: Option<&'b CacheManager>,
        key: Option<&'b K>,
    ) -> Pin<Box<impl Future<Output = Lookup<V>> + 'b>> {
        Box::pin(async move {
            let Some(key) = key else {
                return Lookup::Skipped;
            };
            let cache = match self.cache.resolved(manager) {
                Some(cache) => Cow::Borrowed(cache),
                None => match self.cache.resolve(manager, self.function).await {
                    Some(cache) => cache,
                    None => return Lookup::Skipped,
                },
            };
            let found = match (self.cache.ops.get_in_place)(&cache, key) {
                Some(found) => found,
                None => (self.cache.ops.get)(&cache, key).await,
            };
            self.found(found)
        })
    }

    /// What a read of the cache means for the call.
    #[inline]
    fn found(&self, found: Result<Option<Arc<V>>, Error>) -> Lookup<V> {
        match found {
            Ok(Some(hit)) => Lookup::Hit(hit),
            Ok(None) => Lookup::Miss,
            Err(error) => {
                // The store is failing: do not add a put's timeout to the call.
                self.cache.fail_open(self.function).failed("get", &error);
                Lookup::Skipped
            }
        }
    }

    /// The output a hit stands for, and what is left of the lookup (`Skipped` after a
    /// hit: nothing is stored then).
    #[inline]
    pub fn hit(&self, lookup: Lookup<V>) -> (Option<O>, Lookup<V>)
    where
        V: Clone,
    {
        match lookup {
            Lookup::Hit(value) => (Some(self.output(value)), Lookup::Skipped),
            other => (None, other),
        }
    }

    /// `#[cache_put]` with a key computed from the value (`key = result.id`): caches the
    /// value of `output` under the key `key` computes from it, unless `unless` says no
    /// (`key` is `None` when the `condition` was false).
    pub async fn store_by_result<KF, U>(
        &self,
        manager: Option<&CacheManager>,
        key: Option<KF>,
        output: &O,
        unless: U,
        options: Options,
    ) where
        KF: FnOnce(&V) -> K,
        U: FnOnce(&V) -> bool,
    {
        let Some(key) = key else {
            return;
        };
        let Some(value) = Self::value(output) else {
            return;
        };
        if unless(&value) {
            return;
        }
        if let Some(cache) = self.cache.resolve(manager, self.function).await {
            let key = key(&value);
            self.cache
                .store(&cache, key, Arc::new(value), options.ttl, self.function)
                .await;
        }
    }

    /// `#[cache_put]`: caches the value of `output` under `key`, unless `unless` says
    /// no (`key` is `None` when the `condition` was false).
    pub async fn store_at<U>(
        &self,
        manager: Option<&CacheManager>,
        key: Option<K>,
        output: &O,
        unless: U,
        options: Options,
    ) where
        U: FnOnce(&V) -> bool,
    {
        let key = key.map(|key| move |_: &V| key);
        self.store_by_result(manager, key, output, unless, options)
            .await;
    }

    /// `#[cacheable]` after the call: stores under the key it looked up, when the lookup
    /// missed (not when it was skipped).
    pub async fn store_miss<U>(
        &self,
        manager: Option<&CacheManager>,
        lookup: &Lookup<V>,
        key: Option<K>,
        output: &O,
        unless: U,
        options: Options,
    ) where
        U: FnOnce(&V) -> bool,
    {
        if matches!(lookup, Lookup::Miss) {
            // On the heap, as `lookup`'s open: a hit's future holds no store's state.
            Box::pin(self.store_at(manager, key, output, unless, options)).await;
        }
    }

    /// `#[cacheable(sync)]`, alone on its function, after a [`Op::lookup_now`] that found
    /// no value (`found`, `None` when it could not answer in place): the cached output
    /// for `key`, or `call`'s. One caller per key runs `call` and caches its output; the
    /// others wait and take the cached value. When the leader's output is not cacheable
    /// (an `Err`, a `None`) or it panics, each waiter runs its own call.
    pub async fn cacheable_sync<F>(
        &self,
        manager: Option<&CacheManager>,
        key: Option<K>,
        found: Option<Lookup<V>>,
        options: Options,
        call: F,
    ) -> O
    where
        K: crate::CacheKey,
        V: crate::CacheValue + Clone,
        F: Future<Output = O>,
    {
        let Some(key) = key else {
            return call.await;
        };
        let cache = match self.cache.resolved(manager) {
            Some(cache) => Cow::Borrowed(cache),
            None => match self.cache.resolve(manager, self.function).await {
                Some(cache) => cache,
                None => return call.await,
            },
        };
        let found = match found {
            Some(found) => found,
            None => self.found(match (self.cache.ops.get_in_place)(&cache, &key) {
                Some(found) => found,
                None => (self.cache.ops.get)(&cache, &key).await,
            }),
        };
        match found {
            Lookup::Hit(hit) => return self.output(hit),
            Lookup::Miss => {}
            // A store error (logged): the call alone, as without a cache.
            Lookup::Skipped => return call.await,
        }
        let decl = self.cache;
        let function = self.function;
        let cache_ref: &Cache<K, V> = &cache;
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
                if let Some(value) = (decl.ops.get_now)(cache_ref, key_ref) {
                    return Ok(Loaded::found(value));
                }
                // Across processes: another one may have stored it, or be calling.
                let lease = cache_ref.lease(key_ref).await;
                if let Some(value) = lease.hit() {
                    return Ok(Loaded::found(value.clone()));
                }
                let Some(call) = call_slot.take() else {
                    return Ok(Loaded::by_loader(None));
                };
                match AssertUnwindSafe(call).catch_unwind().await {
                    Ok(out) => {
                        let value = Self::value(&out).map(Arc::new);
                        match &value {
                            Some(value) if lease.is_unleased() => {
                                decl.store(
                                    cache_ref,
                                    key_ref.clone(),
                                    value.clone(),
                                    options.ttl,
                                    function,
                                )
                                .await;
                            }
                            Some(value) => {
                                lease.store(value.clone(), options.ttl).await;
                            }
                            None => lease.release().await,
                        }
                        *output_slot = Some(out);
                        Ok(Loaded::by_loader(value))
                    }
                    Err(payload) => {
                        lease.release().await;
                        *panic_slot = Some(payload);
                        Err(Error::Panicked("cached function", String::new()))
                    }
                }
            })
            .await
            .map(|loaded| loaded.value);
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
        if let Some(output) = output {
            return output;
        }
        match (shared, call) {
            (Ok(Some(value)), _) => self.output(value),
            (_, Some(call)) => {
                let output = call.await;
                if let Some(value) = Self::value(&output) {
                    decl.store(&cache, key, Arc::new(value), options.ttl, function)
                        .await;
                }
                output
            }
            // Unreachable: the call is consumed only by the leader, which returned above.
            (_, None) => unreachable_call(),
        }
    }
}

#[cold]
fn unreachable_call() -> ! {
    unreachable!("partcache: a cached function's call was consumed without an output")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_decl::MAX_REPLACEMENTS;

    #[tokio::test]
    async fn a_declaration_serves_each_manager_its_own_cache() {
        static SITE: CacheDecl<u32, String> = CacheDecl::new("site-test");
        let (a, b) = (
            CacheManager::from_url("memory://").unwrap(),
            CacheManager::from_url("memory://").unwrap(),
        );
        let from_a = SITE.resolve(Some(&a), "f").await.unwrap().into_owned();
        from_a.put(1, "a".to_string()).await.unwrap();
        let from_b = SITE.resolve(Some(&b), "f").await.unwrap().into_owned();
        assert_eq!(from_b.get(&1).await.unwrap(), None);
        let again = SITE.resolve(Some(&a), "f").await.unwrap();
        assert!(matches!(again, Cow::Borrowed(_)));
        assert_eq!(
            again.get(&1).await.unwrap().as_deref().map(String::as_str),
            Some("a")
        );
    }

    #[tokio::test]
    async fn a_declaration_serves_the_cache_rebuilt_after_a_destroy() {
        static DECL: CacheDecl<u32, String> = CacheDecl::new("decl-destroyed");
        let manager = CacheManager::from_url("memory://").unwrap();
        let first = DECL
            .resolve(Some(&manager), "f")
            .await
            .unwrap()
            .into_owned();
        first.put(1, "a".to_string()).await.unwrap();
        manager.destroy_cache("decl-destroyed").await.unwrap();
        let rebuilt = manager
            .cache::<u32, String>("decl-destroyed")
            .build()
            .await
            .unwrap();
        rebuilt.put(2, "b".to_string()).await.unwrap();
        let via_decl = DECL.resolve(Some(&manager), "f").await.unwrap();
        assert!(!via_decl.is_closed());
        assert_eq!(
            via_decl
                .get(&2)
                .await
                .unwrap()
                .as_deref()
                .map(String::as_str),
            Some("b")
        );
        // The replacement is kept: the next call borrows it without a lookup.
        let again = DECL.resolve(Some(&manager), "f").await.unwrap();
        assert!(matches!(again, Cow::Borrowed(_)));
        assert!(!again.is_closed());
    }

    #[tokio::test]
    async fn a_declaration_opens_its_cache_again_after_a_close() {
        static DECL: CacheDecl<u32, String> = CacheDecl::new("decl-closed");
        let manager = CacheManager::from_url("memory://").unwrap();
        let resolved = DECL
            .resolve(Some(&manager), "f")
            .await
            .unwrap()
            .into_owned();
        resolved.close().await.unwrap();
        let via_decl = DECL.resolve(Some(&manager), "f").await.unwrap();
        assert!(!via_decl.is_closed(), "resolve returned the closed cache");
        via_decl.put(1, "a".to_string()).await.unwrap();
        assert!(manager.get_cache::<u32, String>("decl-closed").is_some());
    }

    #[tokio::test]
    async fn a_declaration_closed_more_often_than_it_keeps_still_resolves_an_open_cache() {
        static DECL: CacheDecl<u32, String> = CacheDecl::new("decl-closed-often");
        let manager = CacheManager::from_url("memory://").unwrap();
        for _ in 0..MAX_REPLACEMENTS + 3 {
            let cache = DECL
                .resolve(Some(&manager), "f")
                .await
                .unwrap()
                .into_owned();
            assert!(!cache.is_closed());
            cache.close().await.unwrap();
        }
        let cache = DECL.resolve(Some(&manager), "f").await.unwrap();
        assert!(!cache.is_closed());
    }

    #[tokio::test]
    async fn no_manager_resolves_to_none() {
        static SITE: CacheDecl<u32, String> = CacheDecl::new("site-test");
        assert!(SITE.resolve(None, "g").await.is_none());
    }

    #[tokio::test]
    async fn declared_settings_apply_when_the_cache_is_built() {
        static SHORT: CacheDecl<u32, String> = CacheDecl::new("short").max_entries(1);
        let manager = CacheManager::from_url("memory://").unwrap();
        let cache = SHORT.open(&manager).await.unwrap();
        // The declared bound reaches the store: a second cache of other settings under
        // the same name is refused, the same settings are not.
        assert!(
            manager
                .cache::<u32, String>("short")
                .max_entries(2)
                .build()
                .await
                .is_err()
        );
        assert!(
            manager
                .cache::<u32, String>("short")
                .max_entries(1)
                .build()
                .await
                .is_ok()
        );
        cache.put(1, "a".to_string()).await.unwrap();
    }
}
