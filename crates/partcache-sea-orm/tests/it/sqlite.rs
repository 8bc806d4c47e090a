//! The invalidation suite on SQLite (a temporary database file per test, WAL mode so a
//! second connection can read while a transaction writes) and the in-process store.

use crate::common;

use partcache::CacheManager;

async fn env(name: &str) -> (common::Env, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = common::sqlite_wal_url(&dir.path().join("db.sqlite")).await;
    let manager = CacheManager::from_url("memory://").expect("manager");
    (common::env(&manager, &url, name).await, dir)
}

macro_rules! sqlite_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (env, _dir) = env(stringify!($name)).await;
                common::$name(env).await;
            }
        )*
    };
}

with_suite_fns!(sqlite_tests);

#[test]
fn suite_list_matches_the_sqlite_tests() {
    assert_eq!(common::all_tests().len(), 30);
}

/// An account keyed by its email, compared without case (`COLLATE NOCASE`).
mod account {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "account")]
    pub(crate) struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub email: String,
        pub balance: i32,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The documented limitation of case-insensitive text keys (SQLite `NOCASE`, `citext`):
/// the entity cache keys a row by the key as bound, so one row spelled two ways is two
/// cache identities. A write invalidates the spelling it binds; the other spelling's
/// cached row is served until it expires or the table is written in bulk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_insensitive_key_spelled_two_ways_is_two_cache_identities() {
    use partcache_sea_orm::{CachingConnection, EntityCache, QueryCache};
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, ConnectionTrait, Database};
    let dir = tempfile::tempdir().expect("temp dir");
    let url = common::sqlite_wal_url(&dir.path().join("db.sqlite")).await;
    let manager = CacheManager::from_url("memory://").expect("manager");
    let qc = QueryCache::new(&manager, "nocase")
        .await
        .expect("query cache");
    let db = CachingConnection::new(Database::connect(&url).await.expect("connect"), qc.clone());
    db.execute_unprepared(
        "CREATE TABLE account (email TEXT PRIMARY KEY COLLATE NOCASE, balance INTEGER NOT NULL);
         INSERT INTO account VALUES ('bob@example.com', 100);",
    )
    .await
    .expect("schema");
    let entities = EntityCache::new(&qc);
    let balance = |email: &'static str| async {
        entities
            .find_by_id::<account::Entity, _>(&db, email.to_string())
            .await
            .expect("read")
            .map(|a| a.balance)
    };
    assert_eq!(balance("bob@example.com").await, Some(100));
    assert_eq!(balance("Bob@Example.com").await, Some(100), "the same row");
    account::ActiveModel {
        email: Set("bob@example.com".into()),
        balance: Set(0),
    }
    .update(&db)
    .await
    .expect("update");
    assert_eq!(
        balance("bob@example.com").await,
        Some(0),
        "the spelling written through is fresh"
    );
    assert_eq!(
        balance("Bob@Example.com").await,
        Some(100),
        "the other spelling is another cache identity (see the README)"
    );
}
