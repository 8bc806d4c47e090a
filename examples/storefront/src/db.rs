//! The shop's database: three tables in SQLite, created and seeded at start-up with the
//! same data every time (a deterministic generator, no files to ship).

use std::time::Duration;

use crate::seq::Seq;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePoolOptions};
use sea_orm::sqlx::{self, Connection};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait, Schema, Set,
};

/// Product categories.
pub(crate) mod category {
    use sea_orm::entity::prelude::*;

    /// A category row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "category")]
    pub(crate) struct Model {
        /// Primary key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        /// Display name.
        pub name: String,
    }

    /// No relations are declared: the shop joins by hand where it needs to.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Products: what `/products/{id}` shows and `PUT /products/{id}` changes.
pub(crate) mod product {
    use sea_orm::entity::prelude::*;

    /// A product row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "product")]
    pub(crate) struct Model {
        /// Primary key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        /// Display name.
        pub name: String,
        /// The category's id.
        pub category_id: i32,
        /// Price in cents.
        pub price_cents: i32,
        /// Units in stock.
        pub stock: i32,
        /// A sentence about the product.
        pub description: String,
    }

    /// No relations are declared: the shop joins by hand where it needs to.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Past orders, one row per product in an order: where "bought together" comes from.
pub(crate) mod order_line {
    use sea_orm::entity::prelude::*;

    /// An order line row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "order_line")]
    pub(crate) struct Model {
        /// Primary key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        /// The order this line belongs to.
        pub order_id: i32,
        /// The product ordered.
        pub product_id: i32,
        /// Units ordered.
        pub quantity: i32,
    }

    /// No relations are declared: the shop joins by hand where it needs to.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub(crate) enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Products in the seeded catalogue (ids `1..=PRODUCTS`).
pub const PRODUCTS: i32 = 200;
/// Orders in the seeded history.
pub(crate) const ORDERS: i32 = 800;

/// Categories and the kinds of product each sells.
const CATEGORIES: [(&str, [&str; 3]); 8] = [
    ("Pens", ["fountain pen", "gel pen", "rollerball"]),
    ("Notebooks", ["dotted notebook", "planner", "journal"]),
    ("Paper", ["letter paper", "sticky notes", "envelopes"]),
    ("Desk", ["desk lamp", "paper tray", "stapler"]),
    ("Bags", ["tote bag", "pencil case", "laptop sleeve"]),
    (
        "Art supplies",
        ["sketchbook", "watercolour box", "brush set"],
    ),
    ("Ink", ["ink bottle", "ink cartridges", "converter"]),
    ("Gifts", ["gift card", "bookmark", "pen gift set"]),
];
const ADJECTIVES: [&str; 10] = [
    "Classic", "Pocket", "Studio", "Travel", "Recycled", "Deluxe", "Mini", "Heritage", "Bright",
    "Quiet",
];

/// How the database's connection pool retires its connections.
///
/// The defaults are sqlx's own (a connection idle for 10 minutes, or open for 30, is
/// closed): the storefront keeps them so that it runs the way a service would, and
/// tests shorten them to see several recycles in a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Close a connection idle for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Close a connection open for this long (`None`: never).
    pub max_lifetime: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            idle_timeout: Some(Duration::from_secs(10 * 60)),
            max_lifetime: Some(Duration::from_secs(30 * 60)),
        }
    }
}

/// The opened database: the pooled connection every handler uses, and, for an
/// in-memory database, the connection that keeps it alive.
pub(crate) struct ShopDatabase {
    /// The pooled connection.
    pub connection: DatabaseConnection,
    /// Held, never used, for as long as the storefront runs (see [`open`]).
    _anchor: Option<SqliteConnection>,
}

/// Whether sqlx opens `url` as an in-memory database: `:memory:` or `mode=memory`,
/// the two spellings its URL parser accepts.
fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Opens `url` (`sqlite::memory:` by default) with `pool`'s settings.
///
/// An in-memory SQLite database lives exactly as long as one connection to it is open.
/// A pool retires its connections (idle timeout, maximum lifetime): once it has closed
/// the last one, the next connection opens a new, empty database and every query fails
/// with "no such table". So for an in-memory URL the storefront opens one extra
/// connection outside the pool, the anchor, and holds it until it stops: the pool may
/// recycle its connections as it likes, and the data stays. The anchor and the pool
/// open the very same named, shared-cache database because they share one parsed
/// `SqliteConnectOptions` (each parse of `:memory:` names a new database).
async fn open(url: &str, pool: PoolSettings) -> Result<ShopDatabase, DbErr> {
    if !is_in_memory(url) {
        let mut options = ConnectOptions::new(url);
        options
            .idle_timeout(pool.idle_timeout)
            .max_lifetime(pool.max_lifetime);
        return Ok(ShopDatabase {
            connection: Database::connect(options).await?,
            _anchor: None,
        });
    }
    let options: SqliteConnectOptions = url.parse().map_err(connection_error)?;
    // A private-cache in-memory database is one database per connection: the anchor
    // would keep an empty one alive. Shared cache is what makes the pool's connections
    // (and the anchor) see one database.
    let options = options.shared_cache(true);
    let anchor = SqliteConnection::connect_with(&options)
        .await
        .map_err(connection_error)?;
    let pooled = SqlitePoolOptions::new()
        // One connection, as sea-orm opens SQLite by default: shared-cache connections
        // lock whole tables against each other, so more would only wait on each other.
        .max_connections(1)
        .idle_timeout(pool.idle_timeout)
        .max_lifetime(pool.max_lifetime)
        .connect_with(options)
        .await
        .map_err(connection_error)?;
    Ok(ShopDatabase {
        connection: DatabaseConnection::from(pooled),
        _anchor: Some(anchor),
    })
}

fn connection_error(error: sqlx::Error) -> DbErr {
    DbErr::Conn(sea_orm::RuntimeErr::SqlxError(error.into()))
}

/// Opens `url` (see [`open`]), creates the tables and seeds them.
/// Returns the plain connection: the caller wraps it in a `CachingConnection`.
pub(crate) async fn open_and_seed(url: &str, pool: PoolSettings) -> Result<ShopDatabase, DbErr> {
    let database = open(url, pool).await?;
    let db = &database.connection;
    let schema = Schema::new(db.get_database_backend());
    for statement in [
        schema
            .create_table_from_entity(category::Entity)
            .if_not_exists()
            .to_owned(),
        schema
            .create_table_from_entity(product::Entity)
            .if_not_exists()
            .to_owned(),
        schema
            .create_table_from_entity(order_line::Entity)
            .if_not_exists()
            .to_owned(),
    ] {
        db.execute(&statement).await?;
    }
    // The recommendation query joins order lines on both columns.
    db.execute_unprepared(
        "CREATE INDEX IF NOT EXISTS order_line_product ON order_line (product_id, order_id);
         CREATE INDEX IF NOT EXISTS order_line_order ON order_line (order_id, product_id);",
    )
    .await?;
    // A database file that is already seeded is kept as it is (with its edits).
    if product::Entity::find().one(db).await?.is_some() {
        return Ok(database);
    }
    seed(db).await?;
    Ok(database)
}

async fn seed(db: &DatabaseConnection) -> Result<(), DbErr> {
    let mut seq = Seq(0x5EED_CAFE_F00D_1234);
    category::Entity::insert_many(CATEGORIES.iter().enumerate().map(|(i, (name, _))| {
        category::ActiveModel {
            id: Set(i as i32 + 1),
            name: Set(name.to_string()),
        }
    }))
    .exec(db)
    .await?;

    let products: Vec<product::ActiveModel> = (1..=PRODUCTS)
        .map(|id| {
            let category = (id - 1) as usize % CATEGORIES.len();
            let nouns = CATEGORIES[category].1;
            let noun = nouns[seq.below(nouns.len() as u64) as usize];
            let adjective = ADJECTIVES[seq.below(ADJECTIVES.len() as u64) as usize];
            product::ActiveModel {
                id: Set(id),
                name: Set(format!("{adjective} {noun}")),
                category_id: Set(category as i32 + 1),
                price_cents: Set(199 + 10 * seq.below(500) as i32),
                stock: Set(seq.below(60) as i32),
                description: Set(format!(
                    "The {} {noun}, product no. {id}: made to last, priced to move.",
                    adjective.to_lowercase()
                )),
            }
        })
        .collect();
    for chunk in products.chunks(100) {
        product::Entity::insert_many(chunk.to_vec())
            .exec(db)
            .await?;
    }

    // Popular products are ordered more often: pick ids skewed towards the low end.
    let mut lines = Vec::new();
    let mut next_id = 1;
    for order_id in 1..=ORDERS {
        let items = 1 + seq.below(4);
        let mut seen = Vec::new();
        for _ in 0..items {
            let product_id = seq.popular_product();
            if seen.contains(&product_id) {
                continue;
            }
            seen.push(product_id);
            lines.push(order_line::ActiveModel {
                id: Set(next_id),
                order_id: Set(order_id),
                product_id: Set(product_id),
                quantity: Set(1 + seq.below(3) as i32),
            });
            next_id += 1;
        }
    }
    for chunk in lines.chunks(200) {
        order_line::Entity::insert_many(chunk.to_vec())
            .exec(db)
            .await?;
    }
    Ok(())
}
