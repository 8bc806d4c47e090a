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
use crate::scope::CacheAware;
use crate::versions::Version;

/// The marker a loader returns for "no such row": missing rows are not cached (a later
/// `INSERT` then needs no invalidation).
const NO_ROW: &str = "partcache-sea-orm: no row with this primary key";

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
/// - nothing, for a plain `INSERT`: it changes no existing row, and missing rows are
///   never cached.
///
/// The first `find_by_id` of an entity records its primary-key columns in the store,
/// with the type of value each is keyed by, which is how a writer in another process
/// recognises a single-row write; until then writers treat every write to the table as
/// a bulk write. So does a write that binds a key column with another type (`'1'` or
/// `1.0` for an integer key): the database may convert it and reach the row (SQLite's
/// type affinity), so it cannot name one row.
#[derive(Clone, Debug)]
pub struct EntityCache {
    cache: QueryCache,
    registered: Arc<Mutex<HashSet<&'static str>>>,
}

impl EntityCache {
    /// An entity cache over `cache`'s store and namespace.
    pub fn new(cache: &QueryCache) -> Self {
        EntityCache {
            cache: cache.clone(),
            registered: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// The row of `E` with primary key `id`, as `E::find_by_id(id).one(db)` returns it.
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
        let load = || {
            let id =
                <<E::PrimaryKey as PrimaryKeyTrait>::ValueType>::from_value_tuple(tuple.clone());
            async move {
                E::find_by_id(id)
                    .one(db)
                    .await?
                    .ok_or_else(|| DbErr::RecordNotFound(NO_ROW.into()))
            }
        };
        let found = self.lookup::<E, C, _, _>(db, &tuple, load).await;
        match found {
            Ok(model) => Ok(Some(model)),
            Err(DbErr::RecordNotFound(message)) if message == NO_ROW => Ok(None),
            Err(error) => Err(error),
        }
    }

    async fn lookup<E, C, F, Fut>(
        &self,
        db: &C,
        tuple: &ValueTuple,
        load: F,
    ) -> Result<Arc<E::Model>, DbErr>
    where
        E: EntityTrait,
        E::Model: CacheValue,
        C: CacheAware,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<E::Model, DbErr>>,
    {
        let qc = &self.cache;
        let counters = &qc.inner.counters;
        let bypass = || async {
            counters.bypasses.incr();
            load().await.map(Arc::new)
        };
        let scope = db.cache_scope();
        let raw_table = E::default().table_name();
        let table = normalize_table(raw_table);
        if !scope.cache.same_as(qc) {
            return bypass().await;
        }
        if let Some(tx) = scope.tx
            && tx.wrote_any(std::slice::from_ref(&table))
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
        if !self.registered.lock().contains(raw_table) {
            let kinds = values.iter().map(value_kind);
            qc.register_primary_key(&table, columns.iter().cloned().zip(kinds).collect())
                .await;
            self.registered.lock().insert(raw_table);
        }
        let mut pairs: Vec<(String, &Value)> = columns.into_iter().zip(values.iter()).collect();
        let row = row_id(&mut pairs);
        let versions = &qc.inner.versions;
        let keys = [
            versions.key(&Version::Epoch),
            versions.key(&Version::Rows(table.clone())),
            versions.key(&Version::Row(table.clone(), row.clone())),
        ];
        let tokens = match versions.current(&keys).await {
            Ok(tokens) => tokens,
            Err(error) => {
                qc.store_error(&error);
                return bypass().await;
            }
        };
        if tokens.iter().any(|t| versions.is_live_marker(*t)) {
            // A write to this row is running (see `UnreachableStore::RefuseWrite`).
            return bypass().await;
        }
        let mut key = KeyBuf::new("e", &qc.inner.ns);
        key.backend(db.get_database_backend())
            .field(&table)
            .field(&row);
        for token in tokens {
            key.token(token);
        }
        let key = key.finish();
        let cache = match qc.typed_cache::<E::Model>("entities").await {
            Ok(cache) => cache,
            Err(error) => {
                qc.store_error(&error);
                return bypass().await;
            }
        };
        qc.get_or_load(&cache, key, scope.tx.is_some(), None, load)
            .await
    }
}

/// The table name of entity `E`, for [`cached_query!`](crate::cached_query).
pub fn table_of<E: EntityName + Default>() -> &'static str {
    E::default().table_name()
}
