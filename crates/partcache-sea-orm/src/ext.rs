//! `.cached(&query_cache)` on sea-orm selects, and the cached executors it leads to.

use std::sync::Arc;
use std::time::Duration;

use partcache::CacheValue;
use sea_orm::{
    DbErr, EntityTrait, PaginatorTrait, QueryResult, QueryTrait, Select, SelectTwo, SelectTwoMany,
    Selector, SelectorTrait, Statement,
};
use sea_orm::{Paginator, SelectModel, SelectTwoModel};

use crate::capture::{Captured, learn};
use crate::probe::{Probe, capture, probe};
use crate::query_cache::{CacheOptions, QueryCache};
use crate::scope::CacheAware;

/// Adds [`cached`](QueryCacheExt::cached) to sea-orm's selects: [`Select`],
/// [`Selector`] (what `into_model`, `into_partial_model`, `into_json` and `into_tuple`
/// return), [`SelectTwo`] and [`SelectTwoMany`].
pub trait QueryCacheExt: Sized {
    /// Runs this select through `cache`: the executors of the returned [`Cached`]
    /// (`one`, `all`, `count`, `paginate`) return what the uncached ones return, from
    /// the cache while no table the select reads has been written since, by any process
    /// on the store. Building the [`Cached`] costs a clone of `cache` (one reference
    /// count); see [`Cached`] for who runs the query, cost and errors.
    fn cached(self, cache: &QueryCache) -> Cached<Self> {
        Cached {
            query: self,
            cache: cache.clone(),
            options: CacheOptions::default(),
        }
    }
}

impl<E: EntityTrait> QueryCacheExt for Select<E> {}
impl<S: SelectorTrait> QueryCacheExt for Selector<S> {}
impl<E: EntityTrait, F: EntityTrait> QueryCacheExt for SelectTwo<E, F> {}
impl<E: EntityTrait, F: EntityTrait> QueryCacheExt for SelectTwoMany<E, F> {}

/// A select bound to a [`QueryCache`]; see [`QueryCacheExt::cached`]. Its executors
/// (`all`, `all_shared`, `one`, `count`, `paginate`) return what sea-orm's return.
///
/// **Who runs, who waits.** The first task of this process to miss a result runs the
/// select; the others of this process asking for the same statement wait for it and
/// share its rows (other processes on a shared store run their own). A select that
/// locks rows, or that cannot be fully audited, always runs. Inside a
/// [`CachingTransaction`](crate::CachingTransaction), a hit is served but nothing is
/// stored, and tables the transaction wrote are read from the database.
///
/// **Cost.** Results are kept decoded (`Arc<Vec<Model>>` on the local store), so a
/// local hit costs building the statement's SQL (for the key), one version lookup per
/// table read, one cache lookup, and the clone of the rows that `all` hands back
/// (`all_shared` skips the clone). Nothing is decoded and no SQL runs. A miss adds the
/// query and one cache write.
///
/// **Across processes.** A write through any
/// [`CachingConnection`](crate::CachingConnection) on the store to a table the select
/// reads (anywhere in it: joins, subqueries, views' base tables) makes every process
/// miss from then on.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # mod product {
/// #     use sea_orm::entity::prelude::*;
/// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
/// #     #[sea_orm(table_name = "product")]
/// #     pub struct Model { #[sea_orm(primary_key)] pub id: i32, pub price: i32 }
/// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
/// #     pub enum Relation {}
/// #     impl ActiveModelBehavior for ActiveModel {}
/// # }
/// use partcache_sea_orm::{CachingConnection, QueryCache, QueryCacheExt};
/// use sea_orm::{entity::prelude::*, ConnectionTrait, Database, Schema};
///
/// let manager = partcache::CacheManager::from_url("memory://")?;
/// let qc = QueryCache::new(&manager, "doc").await?;
/// let db = CachingConnection::new(Database::connect("sqlite::memory:").await?, qc.clone());
/// db.execute(&Schema::new(db.get_database_backend()).create_table_from_entity(product::Entity)).await?;
///
/// let cheap = || product::Entity::find().filter(product::Column::Price.lt(10));
/// assert_eq!(cheap().cached(&qc).count(&db).await?, 0); // runs the count
/// assert!(cheap().cached(&qc).one(&db).await?.is_none()); // runs the select
/// assert_eq!(cheap().cached(&qc).count(&db).await?, 0); // a hit
/// assert_eq!(qc.stats().cache.hits, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
///
/// # Errors
///
/// The executors return the database's errors, as sea-orm's do. A store error never
/// fails them: the select runs against the database (logged, counted in
/// `store_errors` of [`QueryCache::stats`](crate::QueryCache::stats)).
#[derive(Debug)]
pub struct Cached<Q> {
    query: Q,
    cache: QueryCache,
    options: CacheOptions,
}

impl<Q> Cached<Q> {
    /// A time to live for this result, on top of the query cache's own (the earlier
    /// deadline wins).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options.ttl = Some(ttl);
        self
    }

    /// Tags for this result: [`QueryCache::invalidate_tags`] invalidates every result
    /// carrying one of them.
    pub fn tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Tables this result depends on beyond those its statement names, e.g. one a
    /// database trigger writes when a read table changes. (Tables named anywhere in the
    /// statement, custom SQL expressions included, are found without it.)
    pub fn depends_on<I, S>(mut self, tables: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.options
            .depends_on
            .extend(tables.into_iter().map(Into::into));
        self
    }

    fn map<R>(self, f: impl FnOnce(Q) -> R) -> Cached<R> {
        Cached {
            query: f(self.query),
            cache: self.cache,
            options: self.options,
        }
    }
}

fn captured(found: Option<Captured>) -> Result<Captured, DbErr> {
    found.ok_or_else(|| {
        DbErr::Custom("partcache-sea-orm: the select sent no statement to the connection".into())
    })
}

fn decode_all<S: SelectorTrait>(rows: Vec<QueryResult>) -> Result<Vec<S::Item>, DbErr> {
    rows.into_iter().map(S::from_raw_query_result).collect()
}

fn decode_count(row: Option<QueryResult>) -> Result<u64, DbErr> {
    // As sea-orm's own `count`/`num_items` read it.
    match row {
        Some(row) => Ok(row.try_get::<i64>("", "num_items")? as u64),
        None => Ok(0),
    }
}

async fn run_all<S, C>(
    cache: &QueryCache,
    db: &C,
    captured: Captured,
    shape: &'static str,
    options: &CacheOptions,
) -> Result<Arc<Vec<S::Item>>, DbErr>
where
    S: SelectorTrait,
    S::Item: CacheValue,
    C: CacheAware,
{
    cache
        .fetch(db, captured, shape, options, |stmt: Statement| async move {
            decode_all::<S>(db.query_all_raw(stmt).await?)
        })
        .await
}

async fn run_one<S, C>(
    cache: &QueryCache,
    db: &C,
    captured: Captured,
    options: &CacheOptions,
) -> Result<Option<S::Item>, DbErr>
where
    S: SelectorTrait,
    S::Item: CacheValue + Clone,
    C: CacheAware,
{
    let item = cache
        .fetch(db, captured, "one", options, |stmt: Statement| async move {
            db.query_one_raw(stmt)
                .await?
                .map(S::from_raw_query_result)
                .transpose()
        })
        .await?;
    Ok(Arc::unwrap_or_clone(item))
}

async fn run_count<C: CacheAware>(
    cache: &QueryCache,
    db: &C,
    found: Option<Captured>,
    options: &CacheOptions,
) -> Result<u64, DbErr> {
    let count = cache
        .fetch(
            db,
            captured(found)?,
            "count",
            options,
            |stmt: Statement| async move { decode_count(db.query_one_raw(stmt).await?) },
        )
        .await?;
    Ok(*count)
}

impl<S> Cached<Selector<S>>
where
    S: SelectorTrait + Send + Sync + 'static,
    S::Item: CacheValue + Clone,
{
    /// Every row, as `Selector::all` returns them.
    pub async fn all<C: CacheAware>(self, db: &C) -> Result<Vec<S::Item>, DbErr> {
        Ok(Arc::unwrap_or_clone(self.all_shared(db).await?))
    }

    /// Every row, shared with the cache (no clone of the rows on a hit).
    pub async fn all_shared<C: CacheAware>(self, db: &C) -> Result<Arc<Vec<S::Item>>, DbErr> {
        let found = capture(
            &self.cache.inner.reader,
            self.query.all(probe(db.get_database_backend())),
        );
        run_all::<S, C>(&self.cache, db, captured(found)?, "all", &self.options).await
    }

    /// The first row, as `Selector::one` returns it.
    pub async fn one<C: CacheAware>(self, db: &C) -> Result<Option<S::Item>, DbErr> {
        let found = capture(
            &self.cache.inner.reader,
            self.query.one(probe(db.get_database_backend())),
        );
        run_one::<S, C>(&self.cache, db, captured(found)?, &self.options).await
    }

    /// The number of rows, as `PaginatorTrait::count` returns it.
    pub async fn count<C: CacheAware>(self, db: &C) -> Result<u64, DbErr> {
        let found = capture(
            &self.cache.inner.reader,
            PaginatorTrait::count(self.query, probe(db.get_database_backend())),
        );
        run_count(&self.cache, db, found, &self.options).await
    }

    /// Pages of `page_size` rows, each page and the count cached on their own.
    ///
    /// # Panics
    ///
    /// When `page_size` is zero, as sea-orm's `paginate` does.
    pub fn paginate<C: CacheAware>(self, db: &C, page_size: u64) -> CachedPaginator<'_, C, S> {
        CachedPaginator {
            pages: self
                .query
                .paginate(probe(db.get_database_backend()), page_size),
            page_size,
            db,
            cache: self.cache,
            options: self.options,
        }
    }
}

/// The executors of a select whose statement object sea-orm hands out
/// ([`QueryTrait::as_query`]): `all` and `one` build and audit that statement (as
/// sea-orm's own `all` and `one` send it: `one` adds `LIMIT 1`); `count` and
/// `paginate` go through the selector sea-orm runs them with (`Select::all` is
/// `into_model().all()`), whose count and page statements sea-orm builds privately.
/// `$item` is one result (`$what` names it in the docs), `$model` the selector's model.
macro_rules! executors_of_query {
    (select = $select:literal, what = $what:literal, item = $item:ty, model = $model:ty) => {
        #[doc = concat!("Every ", $what, ", as `", $select, "::all` returns them.")]
        pub async fn all<C: CacheAware>(self, db: &C) -> Result<Vec<$item>, DbErr> {
            Ok(Arc::unwrap_or_clone(self.all_shared(db).await?))
        }

        #[doc = concat!("Every ", $what, ", shared with the cache (no clone of the rows on a hit).")]
        pub async fn all_shared<C: CacheAware>(self, db: &C) -> Result<Arc<Vec<$item>>, DbErr> {
            let backend = db.get_database_backend();
            let found = learn(&self.cache.inner.reader, backend, self.query.as_query());
            run_all::<$model, C>(&self.cache, db, found, "all", &self.options).await
        }

        #[doc = concat!("The first ", $what, ", as `", $select, "::one` returns it.")]
        pub async fn one<C: CacheAware>(self, db: &C) -> Result<Option<$item>, DbErr> {
            let mut stmt = self.query.into_query();
            stmt.limit(1);
            let found = learn(&self.cache.inner.reader, db.get_database_backend(), &stmt);
            run_one::<$model, C>(&self.cache, db, found, &self.options).await
        }

        /// The number of rows, as `PaginatorTrait::count` returns it.
        pub async fn count<C: CacheAware>(self, db: &C) -> Result<u64, DbErr> {
            self.selector().count(db).await
        }

        #[doc = concat!("Pages of `page_size` ", $what, "s; see [`Cached::<Selector<S>>::paginate`](Cached::paginate).")]
        pub fn paginate<C: CacheAware>(self, db: &C, page_size: u64) -> CachedPaginator<'_, C, $model> {
            self.selector().paginate(db, page_size)
        }
    };
}

/// The selector a [`Select`] runs through (`Select::all` is `into_model().all()`).
type EntitySelector<E> = Selector<SelectModel<<E as EntityTrait>::Model>>;

impl<E> Cached<Select<E>>
where
    E: EntityTrait,
    E::Model: CacheValue + Clone,
{
    fn selector(self) -> Cached<EntitySelector<E>> {
        self.map(|q| q.into_model::<E::Model>())
    }

    executors_of_query!(
        select = "Select",
        what = "row",
        item = E::Model,
        model = SelectModel<E::Model>
    );
}

/// The selector a [`SelectTwo`] runs through.
type PairSelector<E, F> =
    Selector<SelectTwoModel<<E as EntityTrait>::Model, <F as EntityTrait>::Model>>;

impl<E, F> Cached<SelectTwo<E, F>>
where
    E: EntityTrait,
    F: EntityTrait,
    E::Model: CacheValue + Clone,
    F::Model: CacheValue + Clone,
{
    fn selector(self) -> Cached<PairSelector<E, F>> {
        self.map(|q| q.into_model::<E::Model, F::Model>())
    }

    executors_of_query!(
        select = "SelectTwo",
        what = "row pair",
        item = (E::Model, Option<F::Model>),
        model = SelectTwoModel<E::Model, F::Model>
    );
}

impl<E, F> Cached<SelectTwoMany<E, F>>
where
    E: EntityTrait,
    F: EntityTrait,
    E::Model: CacheValue + Clone,
    F::Model: CacheValue + Clone,
{
    /// Every parent with its related rows, as `SelectTwoMany::all` returns them
    /// (sea-orm offers no `one`/`paginate` on this shape).
    pub async fn all<C: CacheAware>(self, db: &C) -> Result<Vec<(E::Model, Vec<F::Model>)>, DbErr> {
        Ok(Arc::unwrap_or_clone(self.all_shared(db).await?))
    }

    /// Every parent with its related rows, shared with the cache.
    pub async fn all_shared<C: CacheAware>(
        self,
        db: &C,
    ) -> Result<Arc<Vec<(E::Model, Vec<F::Model>)>>, DbErr> {
        let backend = db.get_database_backend();
        let found = learn(&self.cache.inner.reader, backend, self.query.as_query());
        let query = &self.query;
        // sea-orm groups the joined rows itself (privately); on a miss the original
        // select runs, so the grouping is exactly sea-orm's.
        self.cache
            .fetch(db, found, "all-many", &self.options, |_| async move {
                query.clone().all(db).await
            })
            .await
    }
}

/// Pages of a cached select; see [`Cached::paginate`]. Each page and the row count are
/// cached results of their own, invalidated like any other.
pub struct CachedPaginator<'db, C, S: SelectorTrait + 'static> {
    pages: Paginator<'static, Probe, S>,
    page_size: u64,
    db: &'db C,
    cache: QueryCache,
    options: CacheOptions,
}

impl<C, S: SelectorTrait + 'static> std::fmt::Debug for CachedPaginator<'_, C, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedPaginator")
            .field("page_size", &self.page_size)
            .finish_non_exhaustive()
    }
}

impl<C, S> CachedPaginator<'_, C, S>
where
    C: CacheAware,
    S: SelectorTrait + Send + Sync + 'static,
    S::Item: CacheValue + Clone,
{
    /// The rows of page `page` (from 0), as `Paginator::fetch_page` returns them.
    pub async fn fetch_page(&self, page: u64) -> Result<Vec<S::Item>, DbErr> {
        let found = capture(&self.cache.inner.reader, self.pages.fetch_page(page));
        let rows = run_all::<S, C>(
            &self.cache,
            self.db,
            captured(found)?,
            "page",
            &self.options,
        )
        .await?;
        Ok(Arc::unwrap_or_clone(rows))
    }

    /// The number of rows over all pages, as `Paginator::num_items` returns it.
    pub async fn num_items(&self) -> Result<u64, DbErr> {
        let found = capture(&self.cache.inner.reader, self.pages.num_items());
        run_count(&self.cache, self.db, found, &self.options).await
    }

    /// The number of pages, as `Paginator::num_pages` returns it.
    pub async fn num_pages(&self) -> Result<u64, DbErr> {
        let items = self.num_items().await?;
        Ok(items / self.page_size + u64::from(items % self.page_size > 0))
    }
}
