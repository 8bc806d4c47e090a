//! [`QueryCache`] and its builder: where cached query results, entity rows and table
//! versions live. The read path is in `read.rs`, the counters in `stats.rs`.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use parking_lot::RwLock;
use partcache::adapter::FailOpen;
use partcache::{Cache, CacheManager, CacheValue, Codec, ExpiryPolicy};

use crate::catalog::Catalog;
use crate::key::{KeyBuf, normalize_table};
use crate::reader::Reader;
use crate::stats::{Counters, QueryCacheStats};
use crate::versions::{Version, Versions};

/// Default time to live of cached results and rows: bounds how long a result can
/// survive a version bump lost in a store failover (see [`crate::versions`]).
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// What a write does when the versions it must bump cannot be reached (the store is
/// down, or this process is cut off from it while other processes still read it); see
/// [`QueryCacheBuilder::on_unreachable_store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UnreachableStore {
    /// The default. Before a write runs, the versions it will bump are replaced by a
    /// *write marker* (readers neither serve nor store results under a marker); when
    /// that fails, the write is refused with an error and never runs: nothing changed,
    /// so nothing is stale. After the write, the markers are replaced by fresh versions.
    /// A write through a [`CachingTransaction`](crate::CachingTransaction) is checked
    /// at its commit: a refused commit is rolled back. Hibernate's update-timestamps
    /// cache pre-invalidates the same way.
    #[default]
    RefuseWrite,
    /// The write runs whatever the store's state; a bump that fails is retried in the
    /// background until it lands (and this process serves nothing from the cache until
    /// then). Meanwhile *other* processes may serve results the write made stale, for at
    /// most the results' time to live ([`QueryCacheBuilder::ttl`], default
    /// [`DEFAULT_TTL`]): choose it for availability of writes over freshness of reads.
    RetryAfterWrite,
}

/// Per-query knobs: [`Cached::ttl`](crate::Cached::ttl),
/// [`Cached::tags`](crate::Cached::tags), [`Cached::depends_on`](crate::Cached::depends_on).
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheOptions {
    pub(crate) ttl: Option<Duration>,
    pub(crate) tags: Vec<String>,
    pub(crate) depends_on: Vec<String>,
}

/// The query cache of one application namespace: cached query results, the entity
/// cache's rows, and the table versions that invalidate both, all in the caches of one
/// [`CacheManager`]. Cheap to clone.
///
/// Every process (or [`CachingConnection`](crate::CachingConnection)) that builds a
/// `QueryCache` with the same namespace on the same store shares results and versions:
/// a write through any of them makes the others miss.
///
/// # Failing open
///
/// A store error never fails a query: the query runs against the database, the error
/// is logged and counted in [`QueryCacheStats`]' `store_errors` (through
/// [`partcache::adapter::FailOpen`], as every partcache adapter). A write whose
/// invalidation cannot reach the store is refused before it runs (the default,
/// [`UnreachableStore::RefuseWrite`]) or runs and has its invalidation retried in the
/// background ([`UnreachableStore::RetryAfterWrite`]); a version bump that fails after
/// a write is logged, counted, retried until it lands, and until then this process
/// serves nothing from the cache.
#[derive(Clone)]
pub struct QueryCache {
    pub(crate) inner: Arc<Inner>,
}

type TypedCaches = HashMap<(TypeId, &'static str), Box<dyn Any + Send + Sync>>;

/// What the primary-key registry holds for a table two entities map with different
/// keys: no key names one row of it.
const KEY_CONFLICT: &str = "*conflicting keys*";

pub(crate) struct Inner {
    pub(crate) manager: CacheManager,
    pub(crate) ns: String,
    pub(crate) versions: Arc<Versions>,
    pub(crate) unreachable: UnreachableStore,
    primary_keys: Cache<String, Vec<String>>,
    /// Result caches by value type: a local hit hands out the decoded value itself.
    typed: RwLock<TypedCaches>,
    prefix: String,
    ttl: Duration,
    max_entries: u64,
    codec: Codec,
    pub(crate) counters: Arc<Counters>,
    pub(crate) warned_mismatch: AtomicBool,
    /// Declared functions, views, and the tables each cached select reads.
    pub(crate) reader: Arc<Reader>,
}

impl std::fmt::Debug for QueryCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryCache")
            .field("namespace", &self.inner.ns)
            .finish_non_exhaustive()
    }
}

/// Builds a [`QueryCache`]; see [`QueryCache::builder`].
#[derive(Debug)]
pub struct QueryCacheBuilder {
    manager: CacheManager,
    ns: String,
    prefix: String,
    ttl: Duration,
    max_entries: u64,
    codec: Codec,
    catalog: Catalog,
    unreachable: UnreachableStore,
    marker_ttl: Duration,
}

impl QueryCacheBuilder {
    /// The application namespace every key starts with (default `"default"`). Two
    /// applications sharing a store keep their results and versions apart by it; two
    /// processes of one application must use the same one.
    pub fn namespace(mut self, ns: impl Into<String>) -> Self {
        self.ns = ns.into();
        self
    }

    /// The prefix of the partcache cache names this query cache opens (default
    /// `"orm"`): `<prefix>:versions`, `<prefix>:primary-keys`, one
    /// `<prefix>:entities:<table>:<hash>` per entity of the entity cache, and one
    /// `<prefix>:rows:<result type>:<hash>` per type of cached query result, with the
    /// type's paths shortened (`orm:rows:Vec<product::Model>:…` for `all()` over
    /// `product`, `orm:rows:u64:…` for counts). The hash, of the value type's full
    /// name, keeps two types with the same short name apart; names are the same in every
    /// process built from the same code, so [`CacheManager::caches`] and dashboards
    /// list one line per entity and result type.
    pub fn cache_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Time to live of every cached result and row (default [`DEFAULT_TTL`]). A
    /// per-query [`Cached::ttl`](crate::Cached::ttl) can only shorten it.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Maximum entries per result type (default 100 000).
    pub fn max_entries(mut self, max: u64) -> Self {
        self.max_entries = max;
        self
    }

    /// The codec of result caches on a remote store (default JSON: postcard cannot
    /// decode `serde_json::Value`, which JSON columns and `into_json` produce). The local
    /// store keeps decoded values and uses no codec.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Declares `name` a read-only function that reads `tables` (none for a pure
    /// function). The SQL reader knows the built-in functions of PostgreSQL, SQLite and
    /// MySQL that read no table and change nothing; a call of any other function is
    /// taken to write unknown tables (a raw statement calling it bumps the global epoch)
    /// and to read unknown tables (a select calling it is not cached), unless declared
    /// here. Names are matched without schema and case.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let qc = partcache_sea_orm::QueryCache::builder(&manager)
    ///     .read_only_function("slugify", [] as [&str; 0])
    ///     .read_only_function("product_rating", ["review"])
    ///     .build()
    ///     .await?;
    /// # let _ = qc;
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub fn read_only_function<I, S>(mut self, name: &str, tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tables = tables.into_iter().map(|t| normalize_table(t.as_ref()));
        self.catalog
            .functions
            .insert(normalize_table(name), tables.collect());
        self
    }

    /// Declares `view` a view over `tables`, for a view the database's catalog cannot
    /// answer for (see [`QueryCache::refresh_views`]); a declaration wins over what is
    /// learnt and survives refreshes.
    pub fn view<I, S>(mut self, view: &str, tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let tables = tables.into_iter().map(|t| normalize_table(t.as_ref()));
        self.catalog
            .declared_views
            .insert(normalize_table(view), tables.collect());
        self
    }

    /// What a write does when its invalidation cannot reach the store (default
    /// [`UnreachableStore::RefuseWrite`]: the write is refused before it runs).
    pub fn on_unreachable_store(mut self, mode: UnreachableStore) -> Self {
        self.unreachable = mode;
        self
    }

    /// The longest readers honour a write marker (default 60 s; see
    /// [`UnreachableStore::RefuseWrite`]): a write that takes longer may have its
    /// results cached before it commits, until its own bump after the write replaces
    /// them. A writer that dies mid-write leaves its marker until then, and readers of
    /// the tables it wrote bypass the cache meanwhile.
    pub fn write_marker_ttl(mut self, ttl: Duration) -> Self {
        self.marker_ttl = ttl;
        self
    }

    /// Opens the version caches (`<prefix>:versions`, `<prefix>:primary-keys`); the
    /// result and entity caches open on first use. On a remote store this connects.
    ///
    /// # Errors
    ///
    /// The manager's errors opening a cache: the store cannot be reached, or holds
    /// these caches with another layout ([`partcache::Error::Mismatch`]).
    pub async fn build(self) -> partcache::Result<QueryCache> {
        let counters = Arc::new(Counters::default());
        let versions = self
            .manager
            .cache::<String, u64>(&format!("{}:versions", self.prefix))
            .build()
            .await?;
        let primary_keys = self
            .manager
            .cache::<String, Vec<String>>(&format!("{}:primary-keys", self.prefix))
            .build()
            .await?;
        Ok(QueryCache {
            inner: Arc::new(Inner {
                versions: Arc::new(Versions::new(
                    versions,
                    self.ns.clone(),
                    counters.clone(),
                    self.marker_ttl,
                )),
                unreachable: self.unreachable,
                manager: self.manager,
                ns: self.ns,
                primary_keys,
                typed: RwLock::new(HashMap::new()),
                prefix: self.prefix,
                ttl: self.ttl,
                max_entries: self.max_entries,
                codec: self.codec,
                counters,
                warned_mismatch: AtomicBool::new(false),
                reader: Arc::new(Reader::new(self.catalog)),
            }),
        })
    }
}

/// 64-bit FNV-1a: a stable name for a Rust type in cache names (the same on every
/// platform and process, unlike `TypeId`).
fn stable_hash(text: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The longest label kept in a cache name; the hash after it tells longer ones apart.
const MAX_LABEL: usize = 96;

/// The name of the cache of `kind` holding values of the type named `type_name`:
/// `<prefix>:<kind>:<label>:<hash>`. The label says what a dashboard user needs to know
/// (the table of entity rows, the short result type of query results, see
/// [`short_type_name`]); the hash, of the full type name, keeps two types with one
/// label apart, so two value types never share a cache. Both are the same in every
/// process built from the same code.
pub(crate) fn cache_name(prefix: &str, kind: &str, label: &str, type_name: &str) -> String {
    let mut label: String = label
        .chars()
        .filter(|c| !c.is_whitespace() && !c.is_control())
        .collect();
    if label.len() > MAX_LABEL {
        let mut end = MAX_LABEL;
        while !label.is_char_boundary(end) {
            end -= 1;
        }
        label.truncate(end);
    }
    format!("{prefix}:{kind}:{label}:{:016x}", stable_hash(type_name))
}

/// A Rust type name with each path shortened to what names it for a reader: the
/// standard library's paths to their last segment (`Vec`, `Option`, `String`), every
/// other path to its last two (`product::Model`, `serde_json::Value`'s
/// `value::Value`). `alloc::vec::Vec<shop::entities::product::Model>` becomes
/// `Vec<product::Model>`.
pub(crate) fn short_type_name(full: &str) -> String {
    let mut out = String::with_capacity(full.len());
    let mut path = String::new();
    let flush = |path: &mut String, out: &mut String| {
        if path.is_empty() {
            return;
        }
        let segments: Vec<&str> = path.split("::").collect();
        let std_path = matches!(segments.first(), Some(&("alloc" | "core" | "std")));
        let keep = if std_path { 1 } else { 2 };
        out.push_str(&segments[segments.len().saturating_sub(keep)..].join("::"));
        path.clear();
    };
    for c in full.chars() {
        if c.is_alphanumeric() || c == '_' || c == ':' {
            path.push(c);
        } else {
            flush(&mut path, &mut out);
            if !c.is_whitespace() {
                out.push(c);
            }
        }
    }
    flush(&mut path, &mut out);
    out
}

impl QueryCache {
    /// Starts building a query cache over `manager`'s store: namespace, time to live,
    /// codec, declared views and functions, what a write does when the store is out of
    /// reach.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use partcache_sea_orm::{QueryCache, UnreachableStore};
    ///
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let qc = QueryCache::builder(&manager)
    ///     .namespace("shop")
    ///     .ttl(Duration::from_secs(120))
    ///     .on_unreachable_store(UnreachableStore::RefuseWrite)
    ///     .build()
    ///     .await?;
    /// assert_eq!(qc.namespace(), "shop");
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub fn builder(manager: &CacheManager) -> QueryCacheBuilder {
        QueryCacheBuilder {
            manager: manager.clone(),
            ns: "default".into(),
            prefix: "orm".into(),
            ttl: DEFAULT_TTL,
            max_entries: 100_000,
            codec: Codec::Json,
            catalog: Catalog::default(),
            unreachable: UnreachableStore::default(),
            marker_ttl: Duration::from_secs(60),
        }
    }

    /// A query cache with the default settings under namespace `ns`: every process that
    /// opens namespace `ns` on the same store shares its results and table versions.
    /// Cheap to clone; build one per application and namespace, not per request.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let manager = partcache::CacheManager::from_url("memory://")?; // or redis://…
    /// let qc = partcache_sea_orm::QueryCache::new(&manager, "shop").await?;
    /// assert_eq!(qc.stats().cache.hits, 0);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// As [`QueryCacheBuilder::build`].
    pub async fn new(manager: &CacheManager, ns: impl Into<String>) -> partcache::Result<Self> {
        Self::builder(manager).namespace(ns).build().await
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.inner.ns
    }

    /// The manager the caches live in.
    pub fn manager(&self) -> &CacheManager {
        &self.inner.manager
    }

    /// A snapshot of this process's counters (every clone of this query cache and the
    /// [`EntityCache`](crate::EntityCache)s over it count together); serialisable as
    /// it is. Each cache's own statistics (per entity, per result type) are on
    /// [`CacheManager::caches`].
    pub fn stats(&self) -> QueryCacheStats {
        self.inner.counters.snapshot()
    }

    /// Invalidates every cached result and row of this namespace, in every process (one
    /// bump of the global epoch). Call it after a store failover (see
    /// [`crate::versions`]) or after writes that bypassed the [`CachingConnection`](crate::CachingConnection).
    ///
    /// **Across processes.** The epoch lives in the shared store: from the moment this
    /// returns, no process serves a result cached before it (each reads the epoch
    /// before every cached read). Nothing is deleted; old entries age out by their
    /// time to live. **Cost:** one atomic update in the store.
    ///
    /// A bump that cannot reach the store never fails the call: it is logged, counted in
    /// [`QueryCacheStats::bump_failures`], retried in the background until it lands,
    /// and until then this process serves nothing from the cache.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let qc = partcache_sea_orm::QueryCache::new(&manager, "doc").await?;
    /// qc.invalidate_all().await;
    /// assert_eq!(qc.stats().bumps, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub async fn invalidate_all(&self) {
        self.inner
            .versions
            .bump([self.inner.versions.key(&Version::Epoch)])
            .await;
    }

    /// Invalidates every cached result and row that read `table` (e.g. after a write by
    /// another program, or a database trigger or cascade the connection cannot see), in
    /// every process on the store: two version bumps (the table's query version and
    /// its row set), failing open as [`QueryCache::invalidate_all`] does.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let qc = partcache_sea_orm::QueryCache::new(&manager, "doc").await?;
    /// // A nightly import wrote `product` without going through a CachingConnection.
    /// qc.invalidate_table("product").await;
    /// assert_eq!(qc.stats().bumps, 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    pub async fn invalidate_table(&self, table: &str) {
        let table = normalize_table(table);
        let v = &self.inner.versions;
        v.bump([
            v.key(&Version::Table(table.clone())),
            v.key(&Version::Rows(table)),
        ])
        .await;
    }

    /// Invalidates every cached result tagged with one of `tags` (see
    /// [`Cached::tags`](crate::Cached::tags)), in every process on the store: one
    /// version bump per tag, failing open as [`QueryCache::invalidate_all`] does.
    pub async fn invalidate_tags<I, S>(&self, tags: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let v = &self.inner.versions;
        v.bump(tags.into_iter().map(|t| v.key(&Version::Tag(t.into()))))
            .await;
    }

    pub(crate) fn same_as(&self, other: &QueryCache) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
            || (self.inner.ns == other.inner.ns
                && self.inner.prefix == other.inner.prefix
                && self.inner.manager.is_same_manager(&other.inner.manager))
    }

    /// The primary-key columns registered for `table` by the entity cache (in any
    /// process), each with the [kind](crate::key::value_kind) of value it is keyed by.
    /// `None` when nothing is registered, or when two entities over the table were
    /// registered with different keys (a row then has two identities, and a write
    /// through one of them must invalidate the other's rows too).
    pub(crate) async fn primary_key_columns(&self, table: &str) -> Option<Vec<(String, String)>> {
        let key = KeyBuf::new("pk-kinds", &self.inner.ns)
            .field(table)
            .clone_finish();
        let keys = &self.inner.primary_keys;
        let flat = self
            .fail_open(keys.name())
            .call("get", keys.get(&key))
            .await??;
        // Stored flat: column, kind, column, kind... (the conflict mark is one item).
        if flat.len() % 2 != 0 {
            return None;
        }
        Some(
            flat.chunks(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect(),
        )
    }

    /// Registers `columns` as the primary key of `table` for writers in every process.
    /// The first registration stays; a different one (a second entity over the table,
    /// keyed by other columns or kinds) replaces it with the conflict mark for good, so
    /// that every write to the table invalidates all its cached rows.
    pub(crate) async fn register_primary_key(&self, table: &str, columns: Vec<(String, String)>) {
        let key = KeyBuf::new("pk-kinds", &self.inner.ns)
            .field(table)
            .clone_finish();
        let keys = &self.inner.primary_keys;
        let fail_open = self.fail_open(keys.name());
        let flat: Vec<String> = columns.into_iter().flat_map(|(c, k)| [c, k]).collect();
        match fail_open.call("get", keys.get(&key)).await {
            Some(Some(registered)) if *registered == flat => return,
            Some(Some(registered)) if *registered == [KEY_CONFLICT] => return,
            Some(Some(_)) => {}
            Some(None) => {
                // Atomic: of two processes registering different keys at once, the
                // second one sees the first's and marks the conflict below.
                match fail_open
                    .call(
                        "put_if_absent",
                        keys.put_if_absent(key.clone(), flat.clone()),
                    )
                    .await
                {
                    Some(true) | None => return,
                    Some(false) => {
                        let again = fail_open.call("get", keys.get(&key)).await;
                        if again.is_none_or(|r| r.is_some_and(|r| *r == flat)) {
                            return;
                        }
                    }
                }
            }
            None => return,
        }
        fail_open
            .call("put", keys.put(key, vec![KEY_CONFLICT.to_string()]))
            .await;
    }

    /// Store calls on the cache named `cache`, failing open: a failure is logged and
    /// counted in [`QueryCacheStats`]' `store_errors`, and the caller carries on
    /// without the cache.
    pub(crate) fn fail_open<'a>(&'a self, cache: &'a str) -> FailOpen<'a> {
        FailOpen::new("partcache-sea-orm", cache).counters(&self.inner.counters.cache)
    }

    /// The cache for values of type `V` (`kind`: `rows` or `entities`; `label`: what it
    /// holds, see [`cache_name`]), opened on first use. After that, a read lock and a
    /// map lookup. `None` when it cannot be opened (failing open: logged, counted).
    pub(crate) async fn typed_cache<V: CacheValue>(
        &self,
        kind: &'static str,
        label: impl FnOnce() -> String,
    ) -> Option<Cache<String, V>> {
        let id = (TypeId::of::<V>(), kind);
        if let Some(cache) = self
            .inner
            .typed
            .read()
            .get(&id)
            .and_then(|c| c.downcast_ref::<Cache<String, V>>())
        {
            return Some(cache.clone());
        }
        let name = cache_name(
            &self.inner.prefix,
            kind,
            &label(),
            std::any::type_name::<V>(),
        );
        let open = self
            .inner
            .manager
            .cache::<String, V>(&name)
            .expiry(ExpiryPolicy::Created(self.inner.ttl))
            .max_entries(self.inner.max_entries)
            .codec(self.inner.codec)
            .build();
        let cache = self.fail_open(&name).call("open", open).await?;
        self.inner.typed.write().insert(id, Box::new(cache.clone()));
        Some(cache)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_type_names_keep_what_names_the_entity() {
        assert_eq!(
            short_type_name("alloc::vec::Vec<shop::entities::product::Model>"),
            "Vec<product::Model>"
        );
        assert_eq!(
            short_type_name(
                "alloc::vec::Vec<(a::product::Model, core::option::Option<a::category::Model>)>"
            ),
            "Vec<(product::Model,Option<category::Model>)>"
        );
        assert_eq!(short_type_name("u64"), "u64");
        assert_eq!(
            short_type_name("alloc::vec::Vec<(i32, alloc::string::String)>"),
            "Vec<(i32,String)>"
        );
    }

    #[test]
    fn cache_names_say_what_they_hold_and_keep_two_types_apart() {
        let a = cache_name(
            "orm",
            "rows",
            "Vec<product::Model>",
            "Vec<a::product::Model>",
        );
        let b = cache_name(
            "orm",
            "rows",
            "Vec<product::Model>",
            "Vec<b::product::Model>",
        );
        assert!(a.starts_with("orm:rows:Vec<product::Model>:"), "{a}");
        assert_ne!(a, b);
        assert_eq!(
            a,
            cache_name(
                "orm",
                "rows",
                "Vec<product::Model>",
                "Vec<a::product::Model>"
            )
        );
        let long = cache_name("orm", "rows", &"x".repeat(500), "t");
        assert!(long.len() < 140, "{long}");
    }
}
