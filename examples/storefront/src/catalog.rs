//! The shop's service layer: every read goes through the cache that suits it.
//!
//! | read | cache | invalidated by |
//! |---|---|---|
//! | a product / category by id ([`Catalog::product`]) | sea-orm entity cache | a write to that row through the connection |
//! | search results ([`Catalog::search`]) | sea-orm query cache (`.cached(..)`) | any write to `product` |
//! | best sellers ([`Catalog::best_sellers`]) | `cached_query!` over raw SQL | any write to `order_line` |
//! | "bought together" ([`Catalog::recommendations`]) | `#[cacheable]`, 5 minutes | time (orders are not written here) |
//! | product cards ([`Catalog::cards`]) | the `product-cards` cache (near-cache candidate) | [`Catalog::update_product`] removes the card |
//!
//! Whole product pages are cached on top of this by the HTTP response cache (see
//! `crate::app`).

use std::sync::Arc;
use std::time::Duration;

use partcache::{Cache, CacheDecl, CacheManager, ExpiryPolicy, NearCache, cacheable};
use partcache_sea_orm::{CachingConnection, EntityCache, QueryCache, QueryCacheExt, cached_query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, Set, Statement,
};
use serde::{Deserialize, Serialize};

use crate::db::{category, order_line, product};

/// Name of the cache of product cards.
pub const CARDS_CACHE: &str = "product-cards";
/// The cache `#[cacheable]` keeps recommendations in: a product's id → the ids of the
/// products most often bought with it.
pub static RECOMMENDATIONS: CacheDecl<i32, Vec<i32>> = CacheDecl::new("recommendations");

/// What a product looks like in a grid or a list: the product with its category's name.
/// Several pages render cards for products other than their own (the home page's best
/// sellers, "bought together" on every product page), so cards are the hottest reads
/// of the shop, by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProductCard {
    /// Product id.
    pub id: i32,
    /// Product name.
    pub name: String,
    /// Category name.
    pub category: String,
    /// Price in cents.
    pub price_cents: i32,
    /// Whether any units are in stock.
    pub in_stock: bool,
}

/// What `PUT /products/{id}` may change; absent fields stay as they are. A field the
/// shop does not know is refused (a typo such as `prices_cents` would otherwise be a
/// silent no-op).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductPatch {
    /// New name: 1 to [`MAX_NAME_CHARS`] characters, not only spaces.
    pub name: Option<String>,
    /// New price in cents: zero or more.
    pub price_cents: Option<i32>,
    /// New stock: zero or more.
    pub stock: Option<i32>,
}

/// The longest product name the shop accepts, in characters: a name is shown on every
/// card and page, so an unbounded one is a way to make every page huge.
pub const MAX_NAME_CHARS: usize = 200;

/// Why a [`ProductPatch`] was refused: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Invalid {
    /// The field at fault (`name`, `price_cents`, `stock`), or `body` for the patch as
    /// a whole.
    pub field: &'static str,
    /// What is wrong, in words a client can act on.
    pub reason: String,
}

impl ProductPatch {
    /// Checks every field before anything is written; the first fault found is
    /// returned.
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |field, reason: String| Err(Invalid { field, reason });
        if self.name.is_none() && self.price_cents.is_none() && self.stock.is_none() {
            return invalid(
                "body",
                "nothing to change: send at least one of name, price_cents, stock".into(),
            );
        }
        if let Some(name) = &self.name {
            if name.trim().is_empty() {
                return invalid("name", "must not be empty".into());
            }
            let chars = name.chars().count();
            if chars > MAX_NAME_CHARS {
                return invalid(
                    "name",
                    format!("is {chars} characters long; at most {MAX_NAME_CHARS} are allowed"),
                );
            }
            if name.chars().any(char::is_control) {
                return invalid("name", "must not contain control characters".into());
            }
        }
        if let Some(price) = self.price_cents
            && price < 0
        {
            return invalid("price_cents", format!("is {price}; it must be 0 or more"));
        }
        if let Some(stock) = self.stock
            && stock < 0
        {
            return invalid("stock", format!("is {stock}; it must be 0 or more"));
        }
        Ok(())
    }
}

/// Search filters (`GET /api/products?category=2&max_price_cents=1500&q=pen`).
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct Search {
    /// Category id.
    pub category: Option<i32>,
    /// Highest price, in cents.
    pub max_price_cents: Option<i32>,
    /// A substring of the name.
    pub q: Option<String>,
}

/// Builds the shop's own caches. This is the one place their settings live.
pub(crate) async fn build_cards_cache(
    manager: &CacheManager,
) -> partcache::Result<Cache<i32, ProductCard>> {
    let cards = manager
        .cache::<i32, ProductCard>(CARDS_CACHE)
        .max_entries(10_000)
        .expiry(ExpiryPolicy::Created(Duration::from_secs(600)));
    // Product cards are read by id on every page render (best sellers on the home
    // page, "bought together" on product pages) and change only through
    // `Catalog::update_product`. On a Redis store each card read is a round trip; a
    // near cache turns the hot ones into local hits, invalidated on every instance
    // when any instance writes. (On `memory://` the store is local already.)
    let cards = if manager.is_local() {
        cards
    } else {
        cards.near_cache(NearCache::max_entries(1_000).ttl(Duration::from_secs(30)))
    };
    cards.build().await
}

/// The shop's reads and writes. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Catalog {
    manager: CacheManager,
    db: CachingConnection,
    queries: QueryCache,
    entities: EntityCache,
    cards: Cache<i32, ProductCard>,
}

impl Catalog {
    /// A catalogue over `db`, whose query cache is `queries`.
    pub(crate) fn new(
        manager: CacheManager,
        db: CachingConnection,
        queries: QueryCache,
        cards: Cache<i32, ProductCard>,
    ) -> Self {
        Catalog {
            entities: EntityCache::new(&queries),
            manager,
            db,
            queries,
            cards,
        }
    }

    /// The query cache (for its statistics).
    pub(crate) fn query_cache(&self) -> &QueryCache {
        &self.queries
    }

    /// A product by id, from the entity cache.
    pub(crate) async fn product(&self, id: i32) -> Result<Option<product::Model>, DbErr> {
        self.entities
            .find_by_id::<product::Entity, _>(&self.db, id)
            .await
    }

    /// A category's name by id, from the entity cache.
    pub(crate) async fn category_name(&self, id: i32) -> Result<String, DbErr> {
        Ok(self
            .entities
            .find_by_id_shared::<category::Entity, _>(&self.db, id)
            .await?
            .map(|c| c.name.clone())
            .unwrap_or_else(|| "Uncategorised".to_string()))
    }

    /// Products matching `search` (at most 50, by id), from the query cache.
    pub(crate) async fn search(&self, search: &Search) -> Result<Vec<product::Model>, DbErr> {
        let mut select = product::Entity::find();
        if let Some(category) = search.category {
            select = select.filter(product::Column::CategoryId.eq(category));
        }
        if let Some(max) = search.max_price_cents {
            select = select.filter(product::Column::PriceCents.lte(max));
        }
        if let Some(q) = search.q.as_deref().filter(|q| !q.is_empty()) {
            select = select.filter(product::Column::Name.contains(q));
        }
        select
            .order_by_asc(product::Column::Id)
            .limit(50)
            .cached(&self.queries)
            .all(&self.db)
            .await
    }

    /// The `limit` best-selling product ids, by units ordered: one aggregate over every
    /// order line, cached with `cached_query!` until `order_line` is written.
    pub(crate) async fn best_sellers(&self, limit: u32) -> Result<Vec<i32>, DbErr> {
        let db = &self.db;
        let ids = cached_query!(
            self.queries,
            db,
            key = format!("best-sellers:{limit}"),
            tables = [order_line::Entity],
            async {
                let rows = db
                    .query_all_raw(Statement::from_sql_and_values(
                        db.get_database_backend(),
                        "SELECT product_id, SUM(quantity) AS units FROM order_line
                         GROUP BY product_id ORDER BY units DESC, product_id LIMIT ?",
                        [i64::from(limit).into()],
                    ))
                    .await?;
                rows.iter()
                    .map(|row| row.try_get_by_index::<i32>(0))
                    .collect::<Result<Vec<i32>, DbErr>>()
            }
        )
        .await?;
        Ok(ids.as_ref().clone())
    }

    /// Products most often bought together with `product_id` (up to 4): a self-join over
    /// the order history, cached per product for 5 minutes by `#[cacheable]`
    /// (concurrent misses of one product compute it once: `sync`). The orders table is
    /// not written by this service, so time is the only invalidation needed.
    #[cacheable(cache = RECOMMENDATIONS, key = product_id, ttl = "5m", sync, manager = self.manager)]
    pub async fn recommendations(&self, product_id: i32) -> Result<Vec<i32>, DbErr> {
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                self.db.get_database_backend(),
                "SELECT b.product_id, SUM(b.quantity) AS units
                 FROM order_line a JOIN order_line b
                   ON a.order_id = b.order_id AND b.product_id <> a.product_id
                 WHERE a.product_id = ?
                 GROUP BY b.product_id ORDER BY units DESC, b.product_id LIMIT 4",
                [product_id.into()],
            ))
            .await?;
        rows.iter()
            .map(|row| row.try_get_by_index::<i32>(0))
            .collect()
    }

    /// Cards for `ids`, in order (unknown ids are left out): one batch read of the
    /// cards cache, then each missing card built from the entity cache and cached. A
    /// cards-cache failure is logged and the cards are built from the database.
    pub(crate) async fn cards(&self, ids: &[i32]) -> Result<Vec<Arc<ProductCard>>, DbErr> {
        let cached = match self.cards.get_all(ids).await {
            Ok(cached) => cached,
            Err(error) => {
                tracing::warn!(%error, "product cards cache failed; building cards from the database");
                vec![None; ids.len()]
            }
        };
        let mut cards = Vec::with_capacity(ids.len());
        for (id, card) in ids.iter().zip(cached) {
            let card = match card {
                Some(card) => Some(card),
                None => self.load_card(*id).await?,
            };
            cards.extend(card);
        }
        Ok(cards)
    }

    async fn load_card(&self, id: i32) -> Result<Option<Arc<ProductCard>>, DbErr> {
        let Some(product) = self.product(id).await? else {
            return Ok(None);
        };
        let card = Arc::new(ProductCard {
            id,
            category: self.category_name(product.category_id).await?,
            name: product.name,
            price_cents: product.price_cents,
            in_stock: product.stock > 0,
        });
        if let Err(error) = self.cards.put(id, card.clone()).await {
            tracing::warn!(%error, id, "product card could not be cached");
        }
        Ok(Some(card))
    }

    /// Applies `patch` to product `id` through the caching connection (which
    /// invalidates the entity cache's row and every cached query over `product`) and
    /// drops its card. `None` when there is no such product.
    pub(crate) async fn update_product(
        &self,
        id: i32,
        patch: ProductPatch,
    ) -> Result<Option<product::Model>, DbErr> {
        // Read from the database itself: a write starts from the row as it is.
        let Some(current) = product::Entity::find_by_id(id).one(self.db.inner()).await? else {
            return Ok(None);
        };
        let mut row = current.into_active_model();
        if let Some(name) = patch.name {
            row.name = Set(name);
        }
        if let Some(price) = patch.price_cents {
            row.price_cents = Set(price);
        }
        if let Some(stock) = patch.stock {
            row.stock = Set(stock);
        }
        let updated = row.update(&self.db).await?;
        if let Err(error) = self.cards.remove(&id).await {
            // The card expires on its own (10 minutes); log so an operator knows why a
            // stale price may show meanwhile.
            tracing::error!(%error, id, "product card could not be removed after an update");
        }
        Ok(Some(updated))
    }

    /// The plain database connection under the caching one.
    pub(crate) fn database(&self) -> &sea_orm::DatabaseConnection {
        self.db.inner()
    }

    /// Forgets what is cached about products (used at start-up: the database was just
    /// seeded, but a shared Redis store may remember another run's edits). The order
    /// history is the same on every start, so recommendations stay valid.
    pub(crate) async fn forget_cached_products(&self) -> partcache::Result<()> {
        self.queries.invalidate_all().await;
        self.cards.clear().await
    }
}
