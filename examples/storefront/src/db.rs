//! The shop's database: three tables in SQLite, created and seeded at start-up with the
//! same data every time (a deterministic generator, no files to ship).

use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbErr, EntityTrait, Schema, Set};

/// Product categories.
pub mod category {
    use sea_orm::entity::prelude::*;

    /// A category row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "category")]
    pub struct Model {
        /// Primary key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: i32,
        /// Display name.
        pub name: String,
    }

    /// No relations are declared: the shop joins by hand where it needs to.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Products: what `/products/{id}` shows and `PUT /products/{id}` changes.
pub mod product {
    use sea_orm::entity::prelude::*;

    /// A product row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "product")]
    pub struct Model {
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
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Past orders, one row per product in an order: where "bought together" comes from.
pub mod order_line {
    use sea_orm::entity::prelude::*;

    /// An order line row.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
    #[sea_orm(table_name = "order_line")]
    pub struct Model {
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
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Products in the seeded catalogue (ids `1..=PRODUCTS`).
pub const PRODUCTS: i32 = 200;
/// Orders in the seeded history.
pub const ORDERS: i32 = 800;

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

/// A small deterministic generator (xorshift64), so every start seeds the same shop.
struct Seq(u64);

impl Seq {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Opens `url` (`sqlite::memory:` by default), creates the tables and seeds them.
/// Returns the plain connection: the caller wraps it in a `CachingConnection`.
pub async fn open_and_seed(url: &str) -> Result<DatabaseConnection, DbErr> {
    let db = Database::connect(url).await?;
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
    if product::Entity::find().one(&db).await?.is_some() {
        return Ok(db);
    }
    seed(&db).await?;
    Ok(db)
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
            let r = seq.below(1000);
            let product_id = 1 + (r * r / 5000) as i32 % PRODUCTS;
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
