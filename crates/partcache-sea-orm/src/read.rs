//! The read path every cached query and entity lookup takes: which versions key the
//! result, whether the cache may serve it at all (transactions, write markers, store
//! health), and who loads it on a miss.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use partcache::{Cache, CacheValue};
use sea_orm::{DbErr, Statement};

use crate::capture::Captured;
use crate::key::{KeyBuf, normalize_table};
use crate::query_cache::{CacheOptions, QueryCache, short_type_name};
use crate::scope::CacheAware;
use crate::versions::Version;

/// A loader's failure, carried past the single-flight machinery (the `DbErr` itself
/// goes back to the caller through a slot).
#[derive(Debug)]
struct LoadFailed;

impl std::fmt::Display for LoadFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the database query failed")
    }
}

impl std::error::Error for LoadFailed {}

impl QueryCache {
    /// Caches the result of `load` (any computation over the database: several queries,
    /// a report) under `key`, invalidated like a cached select that read `tables`. This
    /// is what [`cached_query!`](crate::cached_query) expands to.
    ///
    /// `key` must identify the computation and its inputs (e.g.
    /// `format!("top-products:{limit}")`); `tables` must list every table `load`
    /// reads, since there is no statement to audit.
    ///
    /// **Who runs, who waits.** The first task of this process to miss the key runs
    /// `load`; the others of this process wait for it and share its value (other
    /// processes on a shared store run their own). Inside a
    /// [`CachingTransaction`](crate::CachingTransaction) a hit is served but nothing is
    /// stored, and a table the transaction wrote is read from the database.
    ///
    /// **Cost.** A hit: one version lookup per table (plus the epoch) and one cache
    /// lookup; on the local store the value is handed out without decoding. A miss adds
    /// `load` and one cache write.
    ///
    /// **Across processes.** A write to one of `tables` through any
    /// [`CachingConnection`](crate::CachingConnection) on the store bumps the table's
    /// version: every process misses from then on. A write the connection cannot see
    /// needs [`QueryCache::invalidate_table`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use partcache_sea_orm::{CachingConnection, QueryCache};
    /// use sea_orm::{ConnectionTrait, Database, DbErr, Statement};
    ///
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let qc = QueryCache::new(&manager, "doc").await?;
    /// let db = CachingConnection::new(Database::connect("sqlite::memory:").await?, qc.clone());
    /// db.execute_unprepared("CREATE TABLE review (stars INTEGER)").await?;
    /// db.execute_unprepared("INSERT INTO review VALUES (4), (5)").await?;
    /// let reviews = || async {
    ///     let stmt = Statement::from_string(db.get_database_backend(), "SELECT count(*) AS n FROM review");
    ///     let row = db.query_one_raw(stmt).await?.ok_or(DbErr::RecordNotFound("count".into()))?;
    ///     row.try_get::<i64>("", "n")
    /// };
    /// assert_eq!(*qc.remember(&db, "review-count", &["review"], reviews).await?, 2); // runs it
    /// assert_eq!(*qc.remember(&db, "review-count", &["review"], reviews).await?, 2); // a hit
    /// db.execute_unprepared("INSERT INTO review VALUES (1)").await?; // bumps `review`
    /// assert_eq!(*qc.remember(&db, "review-count", &["review"], reviews).await?, 3);
    /// assert_eq!((qc.stats().cache.hits, qc.stats().cache.misses), (1, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// The error of `load` (the waiters of a failed load run `load` themselves). A
    /// store error never fails it: the cache is passed by (logged, counted in
    /// `store_errors` of [`QueryCache::stats`](crate::QueryCache::stats)).
    pub async fn remember<C, V, F, Fut>(
        &self,
        db: &C,
        key: &str,
        tables: &[&str],
        load: F,
    ) -> Result<Arc<V>, DbErr>
    where
        C: CacheAware,
        V: CacheValue,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, DbErr>>,
    {
        let tables: Vec<String> = tables.iter().map(|t| normalize_table(t)).collect();
        let captured = Captured {
            stmt: Statement::from_string(db.get_database_backend(), key),
            reads: self.inner.reader.expand(&tables).map(Arc::new),
        };
        self.fetch(db, captured, "remember", &CacheOptions::default(), |_| {
            load()
        })
        .await
    }

    /// Whether `db` belongs to this query cache; warns once when it does not (its
    /// writes would not invalidate this cache's results, so the read bypasses it).
    fn serves<C: CacheAware>(&self, db: &C) -> bool {
        if db.cache_scope().cache.same_as(self) {
            return true;
        }
        if !self.inner.warned_mismatch.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                namespace = %self.inner.ns,
                "partcache-sea-orm: a cached query ran on a CachingConnection of another QueryCache; not caching"
            );
        }
        false
    }

    /// The read path of every cached query. `load` runs the captured statement against
    /// `db` and decodes it; it is called at most once on the happy path, and again only
    /// when the cache fails (fail-open).
    pub(crate) async fn fetch<C, V, F, Fut>(
        &self,
        db: &C,
        captured: Captured,
        shape: &'static str,
        options: &CacheOptions,
        load: F,
    ) -> Result<Arc<V>, DbErr>
    where
        C: CacheAware,
        V: CacheValue,
        F: Fn(Statement) -> Fut,
        Fut: Future<Output = Result<V, DbErr>>,
    {
        let counters = &self.inner.counters;
        let Captured { stmt, reads } = captured;
        let bypass = |stmt: Statement| {
            counters.cache.bypasses.incr();
            let run = load(stmt);
            async move { run.await.map(Arc::new) }
        };
        let Some(read) = reads else {
            // A part of the statement could not be audited (or it locks): never cache
            // it under fewer tables than it reads.
            return bypass(stmt).await;
        };
        if !self.serves(db) {
            return bypass(stmt).await;
        }
        let reader = &self.inner.reader;
        let reads: std::borrow::Cow<'_, [String]> = if options.depends_on.is_empty() {
            std::borrow::Cow::Borrowed(read.as_slice())
        } else {
            let Some(more) = reader.expand(&options.depends_on) else {
                return bypass(stmt).await;
            };
            let mut all = read.to_vec();
            all.extend(more);
            all.sort();
            all.dedup();
            std::borrow::Cow::Owned(all)
        };
        let scope = db.cache_scope();
        if let Some(tx) = scope.tx
            && tx.wrote_any(&reads)
        {
            // Read-your-writes: the database sees this transaction's uncommitted
            // writes, the cache does not.
            return bypass(stmt).await;
        }
        let versions = &self.inner.versions;
        if !versions.healthy().await {
            return bypass(stmt).await;
        }
        let deps: Vec<Version> = std::iter::once(Version::Epoch)
            .chain(reads.iter().cloned().map(Version::Table))
            .chain(options.tags.iter().cloned().map(Version::Tag))
            .collect();
        let version_keys: Vec<String> = deps.iter().map(|d| versions.key(d)).collect();
        let current = versions.current(&version_keys);
        let fail_open = self.fail_open(versions.cache_name());
        let Some(tokens) = fail_open.call("get", current).await else {
            return bypass(stmt).await;
        };
        if tokens.iter().any(|t| versions.is_live_marker(*t)) {
            // A write to a table read here is running: its result may commit at any
            // moment, so nothing is served or stored under these versions.
            return bypass(stmt).await;
        }
        let mut key = KeyBuf::new("q", &self.inner.ns);
        key.backend(stmt.db_backend).field(shape).field(&stmt.sql);
        let values = stmt.values.as_ref().map(|v| v.0.as_slice()).unwrap_or(&[]);
        key.field(&values.len().to_string());
        for value in values {
            key.value(value);
        }
        for (dep, token) in deps.iter().zip(&tokens) {
            match dep {
                Version::Epoch => key.field("e"),
                Version::Table(t) => key.field("t").field(t),
                Version::Tag(t) => key.field("g").field(t),
                Version::Rows(_) | Version::Row(..) => key.field("?"),
            };
            key.token(*token);
        }
        let key = key.finish();
        let label = || short_type_name(std::any::type_name::<V>());
        let Some(cache) = self.typed_cache::<V>("rows", label).await else {
            return bypass(stmt).await;
        };
        self.get_or_load(&cache, key, scope.tx.is_some(), options.ttl, || {
            load(stmt.clone())
        })
        .await
    }

    /// Serves `key` from `cache`, or loads it with `load()` and caches it (unless
    /// `hit_only`: inside a transaction, whose snapshot may be older than the versions
    /// just read, nothing is stored). Counted as a hit or a miss.
    pub(crate) async fn get_or_load<V, F, Fut>(
        &self,
        cache: &Cache<String, V>,
        key: String,
        hit_only: bool,
        ttl: Option<Duration>,
        load: F,
    ) -> Result<Arc<V>, DbErr>
    where
        V: CacheValue,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, DbErr>>,
    {
        let (value, served) = self
            .get_or_load_uncounted(cache, key, hit_only, ttl, load)
            .await?;
        self.count(served);
        Ok(value)
    }

    /// Counts how a value was served.
    pub(crate) fn count(&self, served: Served) {
        let counters = &self.inner.counters.cache;
        match served {
            Served::Hit => counters.hits.incr(),
            Served::Loaded => {
                counters.misses.incr();
                counters.stored.incr();
            }
            // Counted when the cache was passed by, whatever the query then did.
            Served::Bypassed => {}
        }
    }

    /// [`QueryCache::get_or_load`] without counting: the caller counts what it makes of
    /// the value (the entity cache checks a cached absence before calling it a hit).
    /// Store errors are counted here.
    pub(crate) async fn get_or_load_uncounted<V, F, Fut>(
        &self,
        cache: &Cache<String, V>,
        key: String,
        hit_only: bool,
        ttl: Option<Duration>,
        load: F,
    ) -> Result<(Arc<V>, Served), DbErr>
    where
        V: CacheValue,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<V, DbErr>>,
    {
        if hit_only {
            let fail_open = self.fail_open(cache.name());
            if let Some(Some(value)) = fail_open.call("get", cache.get(&key)).await {
                return Ok((value, Served::Hit));
            }
            self.inner.counters.cache.bypasses.incr();
            return Ok((Arc::new(load().await?), Served::Bypassed));
        }
        let failure: Mutex<Option<DbErr>> = Mutex::new(None);
        let loaded = AtomicBool::new(false);
        let tracked_load = |_| async {
            loaded.store(true, Ordering::Relaxed);
            match load().await {
                Ok(value) => Ok(value),
                Err(error) => {
                    *failure.lock() = Some(error);
                    Err(LoadFailed)
                }
            }
        };
        // The TTL goes with the load's own write: no second write of the same value.
        let result = match ttl {
            Some(ttl) => cache.get_or_load_with_ttl(&key, ttl, tracked_load).await,
            None => cache.get_or_load(&key, tracked_load).await,
        };
        match result {
            Ok(value) if loaded.load(Ordering::Relaxed) => Ok((value, Served::Loaded)),
            Ok(value) => Ok((value, Served::Hit)),
            Err(error) => {
                if let Some(db_error) = failure.lock().take() {
                    return Err(db_error);
                }
                // Another caller's load failed (we waited on it), or the store failed:
                // run the query ourselves.
                if !matches!(error, partcache::Error::Loader(_)) {
                    self.fail_open(cache.name()).failed("get_or_load", &error);
                }
                self.inner.counters.cache.bypasses.incr();
                Ok((Arc::new(load().await?), Served::Bypassed))
            }
        }
    }
}

/// How [`QueryCache::get_or_load`] served a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// From the cache.
    Hit,
    /// Loaded from the database and cached.
    Loaded,
    /// Loaded from the database without the cache (already counted as a bypass).
    Bypassed,
}
