//! [`CacheDecl`]: a cache declared once, with its name, key and value types and
//! settings, for the `#[cacheable]`, `#[cache_put]` and `#[cache_evict]` attributes to
//! name.

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures::future::BoxFuture;

use crate::cache::{Cache, CacheKey, CacheValue};
use crate::error::Result;
use crate::expiry::ExpiryPolicy;
use crate::manager::{CacheBuilder, CacheManager};

/// A cache declared once: its name, its key type `K`, its value type `V` and its
/// settings. The attributes name it (`#[cacheable(cache = PRODUCTS)]`), so every
/// function that reads, writes or evicts a cache agrees on its types at compile time:
/// a key or value of another type, or a name that is not declared, does not compile.
///
/// Declare it as a `static` (it keeps the handle of the cache it opened, so an
/// annotated call does no lookup by name; once that cache is closed, by
/// [`Cache::close`] or [`CacheManager::destroy_cache`], the next call opens the name
/// again, taking the cache built since or building one with the declared settings):
///
/// ```
/// use partcache::{CacheDecl, CacheManager, ExpiryPolicy, cacheable};
/// use serde::{Deserialize, Serialize};
/// use std::time::Duration;
///
/// #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// struct Product {
///     id: u64,
///     name: String,
/// }
///
/// /// Products by id, for 5 minutes after they are written.
/// static PRODUCTS: CacheDecl<u64, Product> = CacheDecl::new("products")
///     .expiry(ExpiryPolicy::Modified(Duration::from_secs(300)))
///     .max_entries(10_000);
///
/// #[cacheable(cache = PRODUCTS, manager = caches)]
/// async fn product(caches: &CacheManager, id: u64) -> Product {
///     Product { id, name: format!("product {id}") }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let caches = CacheManager::from_url("memory://")?;
/// product(&caches, 7).await;
/// // The same cache, typed, for code that works with it directly.
/// let products = PRODUCTS.open(&caches).await?;
/// assert_eq!(products.get(&7).await?.map(|p| p.name.clone()), Some("product 7".into()));
/// # Ok::<(), partcache::Error>(()) }).unwrap();
/// ```
///
/// `K` must be a [`CacheKey`] and `V` a [`CacheValue`] that is also `Clone` (a hit
/// hands the caller its own copy; return `Arc<T>` to share instead). A type that is not
/// (a missing `#[derive(Serialize, Deserialize)]`, say) is a compile error at the
/// declaration, naming what is missing.
///
/// **Settings.** [`expiry`](Self::expiry), [`max_idle`](Self::max_idle) and
/// [`max_entries`](Self::max_entries) apply when the cache is built on first use; they
/// override the manager's configuration file for that cache, as the same calls on a
/// [`CacheBuilder`] do. A cache the application built itself beforehand (with a
/// loader, a near cache, any setting) is used as it is, provided its types match; build
/// it from [`builder`](Self::builder) to start from the declared settings.
pub struct CacheDecl<K, V> {
    name: &'static str,
    expiry: Option<ExpiryPolicy>,
    max_idle: Option<Duration>,
    max_entries: Option<u64>,
    /// The typed cache operations, reached through function pointers so that the attributes'
    /// generated code carries no `Serialize`/`Deserialize` bounds of its own: a value
    /// type missing a derive is reported once, here, not at every annotated function.
    pub(crate) ops: Ops<K, V>,
    /// The first manager a cache was resolved through, and that cache, followed by the
    /// caches that replaced it once it was closed. Calls through other managers (tests,
    /// multi-tenant setups) look their cache up each time.
    pub(crate) first: OnceLock<Resolved<K, V>>,
    /// Whether a resolution failure was already logged at `error` level (later ones go
    /// to `debug`, so a misconfiguration does not flood the log).
    pub(crate) reported: AtomicBool,
}

impl<K, V> CacheDecl<K, V>
where
    // `CacheKey` and `CacheValue + Clone`, spelled out so that a missing derive is
    // reported once, by name (see `Serializable`).
    K: Hash + Eq + Clone + Send + Sync + 'static + Serializable + Deserializable,
    V: Clone + Send + Sync + 'static + Serializable + Deserializable,
{
    /// Declares the cache `name` with keys of type `K` and values of type `V`.
    pub const fn new(name: &'static str) -> Self {
        CacheDecl {
            name,
            expiry: None,
            max_idle: None,
            max_entries: None,
            ops: Ops::TYPED,
            first: OnceLock::new(),
            reported: AtomicBool::new(false),
        }
    }

    /// A builder for this cache with the declared settings applied, to add what a
    /// declaration does not hold (a loader, a near cache...) before the first call.
    pub fn builder(&self, manager: &CacheManager) -> CacheBuilder<K, V> {
        let mut builder = manager.cache::<K, V>(self.name);
        if let Some(policy) = self.expiry {
            builder = builder.expiry(policy);
        }
        if let Some(idle) = self.max_idle {
            builder = builder.max_idle(idle);
        }
        if let Some(max) = self.max_entries {
            builder = builder.max_entries(max);
        }
        builder
    }
}

impl<K, V> CacheDecl<K, V> {
    /// The expiry policy the cache is built with (default: the manager's).
    pub const fn expiry(mut self, policy: ExpiryPolicy) -> Self {
        self.expiry = Some(policy);
        self
    }

    /// The idle time after which an entry expires (default: the manager's).
    pub const fn max_idle(mut self, idle: Duration) -> Self {
        self.max_idle = Some(idle);
        self
    }

    /// The most entries the cache keeps (default: the manager's).
    pub const fn max_entries(mut self, max: u64) -> Self {
        self.max_entries = Some(max);
        self
    }

    /// The cache's name in its manager.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The cache in `manager`: the one already built under this name, or a new one with
    /// the declared settings. An [`Error::Config`](crate::Error::Config) when a cache of
    /// that name is open with other types or conflicting settings.
    pub async fn open(&self, manager: &CacheManager) -> Result<Cache<K, V>> {
        (self.ops.open)(self, manager).await
    }
}

/// How many caches of its name a declaration keeps after the first one was closed.
/// Each kept handle holds its cache's memory; a name closed and rebuilt more often than
/// this is looked up by name on every call instead (correct, only slower).
pub(crate) const MAX_REPLACEMENTS: usize = 4;

/// A cache a declaration resolved through `manager`, and the one that replaced it
/// after it was closed ([`Cache::close`], [`CacheManager::destroy_cache`]).
pub(crate) struct Resolved<K, V> {
    pub(crate) manager: CacheManager,
    pub(crate) cache: Cache<K, V>,
    /// Set once, when a call finds `cache` closed and opens the name again.
    pub(crate) next: OnceLock<Box<Resolved<K, V>>>,
}

impl<K, V> Resolved<K, V> {
    pub(crate) fn new(manager: CacheManager, cache: Cache<K, V>) -> Self {
        Resolved {
            manager,
            cache,
            next: OnceLock::new(),
        }
    }

    /// The first open cache of this chain, `None` when every kept handle is closed.
    /// The first one is open in the common case: the hot path costs one atomic load.
    #[inline]
    pub(crate) fn open_cache(&self) -> Option<&Cache<K, V>> {
        let mut at = self;
        loop {
            if !at.cache.is_closed() {
                return Some(&at.cache);
            }
            at = at.next.get()?;
        }
    }

    /// Keeps `cache`, just opened through this chain's manager, after the last kept
    /// handle, unless the chain is full or a racing call already kept an open one.
    pub(crate) fn keep(&self, cache: &Cache<K, V>) {
        let mut at = self;
        for _ in 0..MAX_REPLACEMENTS {
            if !at.cache.is_closed() {
                return;
            }
            match at.next.get() {
                Some(next) => at = next,
                None => {
                    let _ = at
                        .next
                        .set(Box::new(Resolved::new(self.manager.clone(), cache.clone())));
                    return;
                }
            }
        }
    }
}

impl<K, V> fmt::Debug for CacheDecl<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheDecl")
            .field("name", &self.name)
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .field("expiry", &self.expiry)
            .field("max_idle", &self.max_idle)
            .field("max_entries", &self.max_entries)
            .finish()
    }
}

/// What the macros' runtime removes from a cache.
#[derive(Debug)]
pub enum Evict<K> {
    /// One key's entry.
    Key(K),
    /// Every entry ([`Cache::clear`]).
    AllEntries,
}

type Found<V> = Result<Option<Arc<V>>>;
type OpenFn<K, V> =
    for<'a> fn(&'a CacheDecl<K, V>, &'a CacheManager) -> BoxFuture<'a, Result<Cache<K, V>>>;
type PutFn<K, V> =
    for<'a> fn(&'a Cache<K, V>, K, Arc<V>, Option<Duration>) -> BoxFuture<'a, Result<()>>;
type EvictFn<K, V> = for<'a> fn(&'a Cache<K, V>, Evict<K>) -> BoxFuture<'a, Result<()>>;

/// The operations on a declared cache that need its types' bounds, as plain function
/// pointers (filled in by [`CacheDecl::new`], where the bounds hold).
pub(crate) struct Ops<K, V> {
    pub(crate) open: OpenFn<K, V>,
    pub(crate) get: for<'a> fn(&'a Cache<K, V>, &'a K) -> BoxFuture<'a, Found<V>>,
    /// [`Cache::get`] without a future, when it needs none (see `Cache::get_in_place`):
    /// a local hit then boxes nothing.
    pub(crate) get_in_place: fn(&Cache<K, V>, &K) -> Option<Found<V>>,
    /// A value the store holds in this process (local store, near cache), without a
    /// round trip; `None` when it would need one.
    pub(crate) get_now: fn(&Cache<K, V>, &K) -> Option<Arc<V>>,
    pub(crate) put: PutFn<K, V>,
    pub(crate) evict: EvictFn<K, V>,
}

impl<K: CacheKey, V: CacheValue + Clone> Ops<K, V> {
    const TYPED: Ops<K, V> = Ops {
        open: open::<K, V>,
        get: get::<K, V>,
        get_in_place: get_in_place::<K, V>,
        get_now: get_now::<K, V>,
        put: put::<K, V>,
        evict: evict::<K, V>,
    };
}

fn open<'a, K: CacheKey, V: CacheValue + Clone>(
    decl: &'a CacheDecl<K, V>,
    manager: &'a CacheManager,
) -> BoxFuture<'a, Result<Cache<K, V>>> {
    Box::pin(async move {
        match manager.get_cache::<K, V>(decl.name) {
            Some(cache) => Ok(cache),
            None => decl.builder(manager).build().await,
        }
    })
}

fn get<'a, K: CacheKey, V: CacheValue>(
    cache: &'a Cache<K, V>,
    key: &'a K,
) -> BoxFuture<'a, Found<V>> {
    Box::pin(cache.get(key))
}

fn get_in_place<K: CacheKey, V: CacheValue>(cache: &Cache<K, V>, key: &K) -> Option<Found<V>> {
    cache.get_in_place(key)
}

fn get_now<K: CacheKey, V: CacheValue>(cache: &Cache<K, V>, key: &K) -> Option<Arc<V>> {
    match cache.inner.store.get_now(key) {
        Some(Ok(found)) => found,
        _ => None,
    }
}

fn put<'a, K: CacheKey, V: CacheValue>(
    cache: &'a Cache<K, V>,
    key: K,
    value: Arc<V>,
    ttl: Option<Duration>,
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        match ttl {
            Some(ttl) => cache.put_with_ttl(key, value, ttl).await,
            None => cache.put(key, value).await,
        }
    })
}

fn evict<'a, K: CacheKey, V: CacheValue>(
    cache: &'a Cache<K, V>,
    target: Evict<K>,
) -> BoxFuture<'a, Result<()>> {
    Box::pin(async move {
        match target {
            Evict::Key(key) => cache.remove(&key).await.map(drop),
            Evict::AllEntries => cache.clear().await,
        }
    })
}

/// A type that serde can serialize, named in the error when it cannot. The blanket
/// impl is not recommended in errors, so a type without the derive gets this trait's
/// message (one error per missing derive) instead of the chain of bounds behind it.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in a cache: it does not implement serde's `Serialize`",
    label = "`{Self}` is not `Serialize`",
    note = "add `#[derive(serde::Serialize)]` to the type (to each part of a tuple or container; for a type of another crate, enable its `serde` feature)"
)]
pub trait Serializable: serde::Serialize {}

#[diagnostic::do_not_recommend]
impl<T: serde::Serialize> Serializable for T {}

/// A type that serde can deserialize into an owned value; see [`Serializable`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored in a cache: it does not implement serde's `Deserialize`",
    label = "`{Self}` is not `Deserialize`",
    note = "add `#[derive(serde::Deserialize)]` to the type (to each part of a tuple or container; for a type of another crate, enable its `serde` feature); a cached value must own its data (no borrowed `&str`)"
)]
pub trait Deserializable: serde::de::DeserializeOwned {}

#[diagnostic::do_not_recommend]
impl<T: serde::de::DeserializeOwned> Deserializable for T {}
