//! [`EntityCache`]: find-by-primary-key served from the cache, invalidated per row.

use std::collections::HashSet;
use std::sync::Arc;

use parking_lot::Mutex;
use partcache::CacheValue;
use sea_orm::sea_query::{FromValueTuple, IntoValueTuple, Value, ValueTuple};
use sea_orm::{
    DbErr, EntityName, EntityTrait, IdenStatic, Iterable, PrimaryKeyToColumn, PrimaryKeyTrait,
};

use crate::key::{KeyBuf, normalize_table, row_id, value_kind};
use crate::query_cache::QueryCache;
use crate::read::Served;
use crate::scope::CacheAware;
use crate::versions::Version;

/// What the entity cache keeps under a primary key.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
enum Slot<M> {
    /// The row.
    Row(Arc<M>),
    /// No row had the key while the table's query version (bumped by every write to
    /// the table, an `INSERT` too) held this token, read before the lookup ran; `None`
    /// when it could not be read. Valid while the version still holds it.
    Absent(Option<u64>),
}

/// A second-level cache of entities by primary key (Hibernate's entity cache), over a
/// [`QueryCache`]'s store and versions. Cheap to clone.
///
/// A cached row is keyed by three versions: the global epoch, its table's *row set*
/// version, and its own row version. Writes through a
/// [`CachingConnection`](crate::CachingConnection) bump:
///
/// - the row's version, for an `UPDATE`/`DELETE` whose `WHERE` pins every primary-key
///   column (ActiveModel `update`/`save`/`delete`, `delete_by_id`, an `update_many`
///   filtered on the key): other cached rows of the table stay valid;
/// - the table's row-set version, for every other `UPDATE`/`DELETE`/upsert on the
///   table (bulk writes, raw SQL): every cached row of the table misses;
/// - nothing, for a plain `INSERT`: it changes no existing row.
///
/// A key with no row is cached too, as an *absence*, valid while the table's query
/// version (bumped by every write to the table, an `INSERT` included) is the one read
/// before the lookup: asking again for a row that does not exist is a hit, and it is
/// found as soon as a write may have created it. A lookup that finds no row is counted
/// as a miss (`misses` of [`QueryCache::stats`](crate::QueryCache::stats)), never as a
/// failed load: in the statistics of the cache's own store, `load_failures` counts
/// database calls that failed.
///
/// The first `find_by_id` of an entity records its primary-key columns in the store,
/// with the type of value each is keyed by, which is how a writer in another process
/// recognises a single-row write; until then writers treat every write to the table as
/// a bulk write. So does a write that binds a key column with another type (`'1'` or
/// `1.0` for an integer key): the database may convert it and reach the row (SQLite's
/// type affinity), so it cannot name one row. When two entities map one table with
/// different keys (columns, or the types they are keyed by), no key names one row of
/// it: every write to the table then invalidates all its cached rows.
#[derive(Clone, Debug)]
pub struct EntityCache {
    cache: QueryCache,
    /// The entities whose key this process has registered.
    registered: Arc<Mutex<HashSet<std::any::TypeId>>>,
}

impl EntityCache {
    /// An entity cache over `cache`'s store and namespace.
    pub fn new(cache: &QueryCache) -> Self {
        EntityCache {
            cache: cache.clone(),
            registered: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// The row of `E` with primary key `id`, as `E::find_by_id(id).one(db)` returns it,
    /// from the cache while neither the row nor the table's row set has been written.
    ///
    /// **Who runs, who waits.** The first task of this process to miss the key runs
    /// the query; the others of this process wait for it and share its row (other
    /// processes run their own). A key with no row is cached as an absence until the
    /// next write to the table (see the type's documentation).
    ///
    /// **Cost.** A local hit: three version lookups, one cache lookup and the clone of
    /// the row ([`find_by_id_shared`](Self::find_by_id_shared) skips the clone); no
    /// SQL is built. A cached absence adds one version lookup.
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
    /// use partcache_sea_orm::{CachingConnection, EntityCache, QueryCache};
    /// use sea_orm::{entity::prelude::*, ActiveValue::Set, ConnectionTrait, Database, Schema};
    ///
    /// let manager = partcache::CacheManager::from_url("memory://")?;
    /// let qc = QueryCache::new(&manager, "doc").await?;
    /// let db = CachingConnection::new(Database::connect("sqlite::memory:").await?, qc.clone());
    /// db.execute(&Schema::new(db.get_database_backend()).create_table_from_entity(product::Entity)).await?;
    /// let entities = EntityCache::new(&qc);
    ///
    /// assert_eq!(entities.find_by_id::<product::Entity, _>(&db, 7).await?, None); // a miss
    /// assert_eq!(entities.find_by_id::<product::Entity, _>(&db, 7).await?, None); // a hit
    /// product::ActiveModel { id: Set(7), price: Set(3) }.insert(&db).await?;
    /// let found = entities.find_by_id::<product::Entity, _>(&db, 7).await?; // a miss again
    /// assert_eq!(found.map(|p| p.price), Some(3));
    /// assert_eq!((qc.stats().cache.hits, qc.stats().cache.misses), (1, 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
    /// ```
    ///
    /// # Errors
    ///
    /// The database's errors. A store error never fails it: the row is read from the
    /// database (logged, counted in
    /// `store_errors` of [`QueryCache::stats`](crate::QueryCache::stats)).
    pub async fn find_by_id<E, C>(
        &self,
        db: &C,
        id: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    ) -> Result<Option<E::Model>, DbErr>
    where
        E: EntityTrait,
        E::Model: CacheValue + Clone,
        C: CacheAware,
    {
        Ok(self
            .find_by_id_shared::<E, C>(db, id)
            .await?
            .map(Arc::unwrap_or_clone))
    }

    /// Like [`EntityCache::find_by_id`], sharing the cached row (no clone on a hit).
    ///
    /// Cost of a local hit: three version lookups and one cache lookup; no SQL is built.
    pub async fn find_by_id_shared<E, C>(
        &self,
        db: &C,
        id: impl Into<<E::PrimaryKey as PrimaryKeyTrait>::ValueType>,
    ) -> Result<Option<Arc<E::Model>>, DbErr>
    where
        E: EntityTrait,
        E::Model: CacheValue + Clone,
        C: CacheAware,
    {
        let tuple: ValueTuple = id.into().into_value_tuple();
        let table = normalize_table(E::default().table_name());
        let load = || {
            let id =
                <<E::PrimaryKey as PrimaryKeyTrait>::ValueType>::from_value_tuple(tuple.clone());
            let table = &table;
            async move {
                // Read before the query: an INSERT racing with it bumps the version
                // after its commit, so an absence it makes stale is never served.
                let token = self.table_token(table).await;
                Ok(match E::find_by_id(id).one(db).await? {
                    Some(model) => Slot::Row(Arc::new(model)),
                    None => Slot::Absent(token),
                })
            }
        };
        self.lookup::<E, C, _, _>(db, &table, &tuple, load).await
    }

    /// The current token of `table`'s query version, or `None` when the store cannot
    /// answer (counted as a store error) or a write to the table is running.
    async fn table_token(&self, table: &str) -> Option<u64> {
        let versions = &self.cache.inner.versions;
        let key = versions.key(&Version::Table(table.to_string()));
        let fail_open = self.cache.fail_open(versions.cache_name());
        let tokens = fail_open.call("get", versions.current(&[key])).await?;
        tokens
            .first()
            .copied()
            .filter(|token| !versions.is_live_marker(*token))
    }

    async fn lookup<E, C, F, Fut>(
        &self,
        db: &C,
        table: &str,
        tuple: &ValueTuple,
        load: F,
    ) -> Result<Option<Arc<E::Model>>, DbErr>
    where
        E: EntityTrait,
        E::Model: CacheValue,
        C: CacheAware,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Slot<E::Model>, DbErr>>,
    {
        let qc = &self.cache;
        let counters = &qc.inner.counters;
        let bypass = || async {
            counters.cache.bypasses.incr();
            Ok(load().await?.into_row())
        };
        let scope = db.cache_scope();
        if !scope.cache.same_as(qc) {
            return bypass().await;
        }
        if let Some(tx) = scope.tx
            && tx.wrote_any(&[table.to_string()])
        {
            return bypass().await;
        }
        if !qc.inner.versions.healthy().await {
            return bypass().await;
        }
        let columns: Vec<String> = E::PrimaryKey::iter()
            .map(|pk| normalize_table(pk.into_column().as_str()))
            .collect();
        let values: Vec<Value> = tuple.clone().into_iter().collect();
        let entity = std::any::TypeId::of::<E>();
        if !self.registered.lock().contains(&entity) {
            let kinds = values.iter().map(value_kind);
            qc.register_primary_key(table, columns.iter().cloned().zip(kinds).collect())
                .await;
            self.registered.lock().insert(entity);
        }
        let mut pairs: Vec<(String, &Value)> = columns.into_iter().zip(values.iter()).collect();
        let row = row_id(&mut pairs);
        let versions = &qc.inner.versions;
        let keys = [
            versions.key(&Version::Epoch),
            versions.key(&Version::Rows(table.to_string())),
            versions.key(&Version::Row(table.to_string(), row.clone())),
        ];
        let fail_open = qc.fail_open(versions.cache_name());
        let Some(tokens) = fail_open.call("get", versions.current(&keys)).await else {
            return bypass().await;
        };
        if tokens.iter().any(|t| versions.is_live_marker(*t)) {
            // A write to this row is running (see `UnreachableStore::RefuseWrite`).
            return bypass().await;
        }
        let mut key = KeyBuf::new("e", &qc.inner.ns);
        key.backend(db.get_database_backend())
            .field(table)
            .field(&row);
        for token in tokens {
            key.token(token);
        }
        let key = key.finish();
        let Some(cache) = qc
            .typed_cache::<Slot<E::Model>>("entities", || table.to_string())
            .await
        else {
            return bypass().await;
        };
        let hit_only = scope.tx.is_some();
        let (slot, served) = qc
            .get_or_load_uncounted(&cache, key.clone(), hit_only, None, &load)
            .await?;
        if let Slot::Absent(token) = &*slot
            && served == Served::Hit
            && (token.is_none() || self.table_token(table).await != *token)
        {
            // The absence was cached under a table version that has moved on (a row
            // may have been inserted since): look again, and cache what is found.
            let fresh = load().await?;
            let row = fresh.row();
            counters.cache.misses.incr();
            if !hit_only {
                let fail_open = qc.fail_open(cache.name());
                if fail_open.call("put", cache.put(key, fresh)).await.is_some() {
                    counters.cache.stored.incr();
                }
            }
            return Ok(row);
        }
        qc.count(served);
        Ok(slot.row())
    }
}

impl<M> Slot<M> {
    /// The row, shared.
    fn row(&self) -> Option<Arc<M>> {
        match self {
            Slot::Row(model) => Some(model.clone()),
            Slot::Absent(_) => None,
        }
    }

    fn into_row(self) -> Option<Arc<M>> {
        match self {
            Slot::Row(model) => Some(model),
            Slot::Absent(_) => None,
        }
    }
}

/// The table name of entity `E`, for [`cached_query!`](crate::cached_query).
pub fn table_of<E: EntityName + Default>() -> &'static str {
    E::default().table_name()
}
