//! Review findings (branch review3): each test fails on the reviewed commit.

mod product {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "product")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub price: i32,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

mod account {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "account")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub email: String,
        pub balance: i32,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

/// Two entities over one table, keyed by different unique columns.
mod member {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "member")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        pub email: String,
        pub points: i32,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

mod member_by_email {
    use sea_orm::entity::prelude::*;
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "member")]
    pub struct Model {
        pub id: i32,
        #[sea_orm(primary_key, auto_increment = false)]
        pub email: String,
        pub points: i32,
    }
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
    impl ActiveModelBehavior for ActiveModel {}
}

use partcache::CacheManager;
use partcache_sea_orm::{CachingConnection, EntityCache, QueryCache, QueryCacheExt};
use sea_orm::sea_query::Expr;
use sea_orm::{ConnectionTrait, Database, DbBackend, EntityTrait, QueryFilter, Statement};

async fn setup() -> (CachingConnection, QueryCache) {
    let manager = CacheManager::from_url("memory://").unwrap();
    let qc = QueryCache::new(&manager, "review3").await.unwrap();
    let db = CachingConnection::new(
        Database::connect("sqlite::memory:").await.unwrap(),
        qc.clone(),
    );
    db.execute_unprepared(
        "CREATE TABLE product (id INTEGER PRIMARY KEY, price INTEGER NOT NULL);
         CREATE TABLE category (id INTEGER PRIMARY KEY);
         CREATE TABLE review (id INTEGER PRIMARY KEY, product_id INTEGER NOT NULL, category_id INTEGER NOT NULL);
         INSERT INTO product VALUES (1, 10), (2, 20);
         INSERT INTO category VALUES (1);",
    )
    .await
    .unwrap();
    (db, qc)
}

/// A text primary key with a case-insensitive collation (SQLite `COLLATE NOCASE`,
/// PostgreSQL `citext`, MySQL's default collations): `WHERE email = ?` with another
/// spelling reaches the same row, but the write bumps the row version of the spelling it
/// bound, and the entity cache keeps serving the row under the spelling it was read by.
#[tokio::test]
async fn case_insensitive_text_keys_name_one_row_two_ways() {
    use sea_orm::{ActiveModelTrait, ActiveValue::Set};
    let (db, qc) = setup().await;
    db.execute_unprepared(
        "CREATE TABLE account (email TEXT PRIMARY KEY COLLATE NOCASE, balance INTEGER NOT NULL);
         INSERT INTO account VALUES ('bob@example.com', 100);",
    )
    .await
    .unwrap();
    let entities = EntityCache::new(&qc);
    let read = || entities.find_by_id::<account::Entity, _>(&db, "Bob@Example.com".to_string());
    assert_eq!(read().await.unwrap().unwrap().balance, 100);
    account::ActiveModel {
        email: Set("bob@example.com".into()),
        balance: Set(0),
    }
    .update(&db)
    .await
    .unwrap();
    let plain = account::Entity::find_by_id("Bob@Example.com".to_string())
        .one(db.inner())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain.balance, 0, "the database has the new balance");
    assert_eq!(
        read().await.unwrap().unwrap().balance,
        0,
        "stale entity after the update returned Ok"
    );
}

/// PostgreSQL declarative partitioning (and table inheritance): a select from the
/// parent reads every partition, but an insert written straight into a partition bumps
/// only the partition's version, so the cached select over the parent is served stale
/// (the same holds the other way round: a select from a partition, a write to the parent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_partitions_share_rows_with_their_parent() {
    use partcache_integration_tests::postgres::PostgresServer;
    let Some(server) = tokio::task::spawn_blocking(PostgresServer::start_or_skip)
        .await
        .unwrap()
    else {
        panic!("PostgreSQL not available");
    };
    let url = server.create_database("review3_parts").unwrap();
    let manager = CacheManager::from_url("memory://").unwrap();
    let qc = QueryCache::new(&manager, "review3-pg").await.unwrap();
    let db = CachingConnection::connect(Database::connect(&url).await.unwrap(), qc.clone())
        .await
        .unwrap();
    db.execute_unprepared(
        "CREATE TABLE product (id INTEGER NOT NULL, price INTEGER NOT NULL) PARTITION BY RANGE (id);
         CREATE TABLE product_low PARTITION OF product FOR VALUES FROM (0) TO (100);
         INSERT INTO product VALUES (1, 10);",
    )
    .await
    .unwrap();
    let cached = || product::Entity::find().cached(&qc).all(&db);
    assert_eq!(cached().await.unwrap().len(), 1);
    db.execute_unprepared("INSERT INTO product_low VALUES (2, 20)")
        .await
        .unwrap();
    assert_eq!(
        product::Entity::find().all(db.inner()).await.unwrap().len(),
        2
    );
    assert_eq!(
        cached().await.unwrap().len(),
        2,
        "stale select over the parent table"
    );
}
