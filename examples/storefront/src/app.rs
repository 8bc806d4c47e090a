//! The router: which route uses which cache.
//!
//! | route | what caches it |
//! |---|---|
//! | `GET /products/{id}` | the HTTP response cache (whole page, 60 s, `x-cache: MISS/HIT`); on a miss the page is built from the entity cache, `#[cacheable]` recommendations and product cards |
//! | `PUT /products/{id}` | writes through the caching connection; the response cache drops the page (unsafe method on its URI) and every page tagged `product:{id}` |
//! | `GET /` | product cards of the best sellers (`cached_query!` + the `product-cards` cache) |
//! | `GET /search`, `GET /api/products` | the sea-orm query cache |
//! | `GET /api/products/{id}` | the sea-orm entity cache |
//! | `GET /admin/caches`, `/admin/caches.json`, `/metrics` | nothing: live figures |

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Json, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use partcache::CacheManager;
use partcache_axum::{ResponseCache, RoutePolicy};
use partcache_sea_orm::{CachingConnection, QueryCache};
use sea_orm::DbErr;
use serde::Deserialize;

use crate::catalog::{Catalog, ProductPatch, RECOMMENDATIONS, Search, build_cards_cache};
use crate::{Config, StartError, admin, db, metrics, pages};

/// How many best sellers the home page shows.
const BEST_SELLERS: u32 = 12;

/// What every handler shares.
pub(crate) struct Shared {
    pub(crate) manager: CacheManager,
    pub(crate) catalog: Catalog,
    pub(crate) http: ResponseCache,
    pub(crate) metrics: Option<PrometheusHandle>,
    /// Keeps an in-memory database alive for as long as the storefront runs.
    pub(crate) _database: db::ShopDatabase,
}

type AppState = State<Arc<Shared>>;

/// Opens the database and the caches and builds the router.
pub(crate) async fn build(config: &Config) -> Result<(Router, Arc<Shared>), StartError> {
    // Before any cache is built: caches resolve their latency histograms when built.
    let metrics = metrics::install();
    partcache_redis::install();
    let manager = CacheManager::from_url(&config.cache_url).map_err(StartError::Cache)?;

    let queries = QueryCache::builder(&manager)
        .namespace("storefront")
        .ttl(Duration::from_secs(600))
        // Results are keyed by the versions of the tables (and rows) they read, so a
        // write leaves the former results behind, unreachable, until their TTL. A bound
        // near the live working set (200 products, a few hundred common searches) lets
        // eviction reclaim them early: memory levels off within minutes under writes,
        // not at the TTL.
        .max_entries(5_000)
        .build()
        .await
        .map_err(StartError::Cache)?;
    let database = db::open_and_seed(&config.database_url, config.pool)
        .await
        .map_err(StartError::Database)?;
    let cards = build_cards_cache(&manager)
        .await
        .map_err(StartError::Cache)?;
    // `#[cacheable]` opens its cache on the first call; opening it now (through its
    // declaration: same types, same settings) lists it on the dashboard from the start.
    RECOMMENDATIONS
        .open(&manager)
        .await
        .map_err(StartError::Cache)?;
    let http = ResponseCache::builder(&manager, "http")
        .max_entries(50_000)
        .store_timeout(config.store_timeout)
        // Only product pages are cached whole: everything else is live or already served
        // from finer-grained caches.
        .route("/", RoutePolicy::bypass())
        // A product page takes no query parameters: `?cb=<random>` is dropped from the
        // key (and from the request the handler sees), so it cannot bust the cache. An
        // unknown product's 404 is kept briefly, not for the page TTL.
        .route(
            "/products",
            RoutePolicy::ttl(Duration::from_secs(60))
                .key_query_params(Vec::<String>::new())
                .error_ttl(Duration::from_secs(5)),
        )
        .build()
        .await
        .map_err(StartError::Cache)?;

    let catalog = Catalog::new(
        manager.clone(),
        CachingConnection::new(database.connection.clone(), queries.clone()),
        queries,
        cards,
    );
    // The database was just seeded: a shared store may still hold another run's edits.
    if !manager.is_local() {
        catalog
            .forget_cached_products()
            .await
            .map_err(StartError::Cache)?;
        if let Err(error) = http.clear().await {
            tracing::warn!(%error, "could not clear cached pages at start-up");
        }
    }

    let shared = Arc::new(Shared {
        manager,
        catalog,
        http: http.clone(),
        metrics,
        _database: database,
    });
    let router = Router::new()
        .route("/", get(home))
        .route("/products/{id}", get(product_page).put(update_product))
        .route("/search", get(search_page))
        .route("/api/products", get(api_search))
        .route("/api/products/{id}", get(api_product))
        .route("/admin/caches", get(admin_page))
        .route("/admin/caches.json", get(admin_json))
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(shared.clone())
        .layer(http.layer());
    Ok((router, shared))
}

/// A database error, answered with 500 and logged.
struct ServerError(DbErr);

impl From<DbErr> for ServerError {
    fn from(e: DbErr) -> Self {
        ServerError(e)
    }
}

impl IntoResponse for ServerError {
    fn into_response(self) -> Response {
        tracing::error!(error = %self.0, "database error");
        (StatusCode::INTERNAL_SERVER_ERROR, "database error\n").into_response()
    }
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(pages::layout(
            "Not found",
            &format!("<h1>Not found</h1><p>{}</p>", pages::escape(what)),
        )),
    )
        .into_response()
}

async fn home(State(s): AppState) -> Result<Response, ServerError> {
    let ids = s.catalog.best_sellers(BEST_SELLERS).await?;
    let cards = s.catalog.cards(&ids).await?;
    let store = admin::redact_url(s.manager.url());
    Ok(Html(pages::home(&cards, &store)).into_response())
}

async fn product_page(State(s): AppState, Path(id): Path<i32>) -> Result<Response, ServerError> {
    let Some(product) = s.catalog.product(id).await? else {
        return Ok(not_found(&format!("There is no product {id}.")));
    };
    let category = s.catalog.category_name(product.category_id).await?;
    let together = s.catalog.recommendations(id).await?;
    let cards = s.catalog.cards(&together).await?;
    // The page shows other products' names and prices: a change to any of them purges it.
    let tags: Vec<String> = std::iter::once(id)
        .chain(cards.iter().map(|c| c.id))
        .map(|id| format!("product:{id}"))
        .collect();
    Ok((
        [("cache-tag", tags.join(" "))],
        Html(pages::product(&product, &category, &cards)),
    )
        .into_response())
}

/// `422 Unprocessable Content` with `{"field": …, "error": …}`: the request was well
/// formed HTTP, but its content is refused, and nothing was written.
fn unprocessable(field: &str, reason: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(serde_json::json!({"field": field, "error": reason})),
    )
        .into_response()
}

async fn update_product(
    State(s): AppState,
    Path(id): Path<i32>,
    patch: Result<Json<ProductPatch>, JsonRejection>,
) -> Result<Response, ServerError> {
    // Everything is checked before anything is written: a refused patch changes nothing,
    // and the response cache keeps its pages (an error answer invalidates nothing,
    // RFC 9111 §4.4).
    let patch = match patch {
        Ok(Json(patch)) => patch,
        // Not JSON, or JSON of the wrong shape (unknown field, a price that is not an
        // integer): serde's message names the field.
        Err(rejection) => {
            let status = rejection.status();
            let mut response = unprocessable("body", &rejection.body_text());
            *response.status_mut() = status;
            return Ok(response);
        }
    };
    if let Err(invalid) = patch.validate() {
        return Ok(unprocessable(invalid.field, &invalid.reason));
    }
    let Some(updated) = s.catalog.update_product(id, patch).await? else {
        return Ok(not_found(&format!("There is no product {id}.")));
    };
    // The response cache drops `/products/{id}` itself (a successful PUT on its URI);
    // pages that show this product's card are tagged with it.
    if let Err(error) = s.http.purge_tag(&format!("product:{id}")).await {
        tracing::error!(%error, id, "pages showing the product could not be purged");
    }
    Ok(Json(updated).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct SearchForm {
    #[serde(default)]
    q: String,
    category: Option<i32>,
    max_price_cents: Option<i32>,
}

impl SearchForm {
    fn search(&self) -> Search {
        Search {
            category: self.category,
            max_price_cents: self.max_price_cents,
            q: Some(self.q.trim().to_string()),
        }
    }
}

async fn search_page(
    State(s): AppState,
    Query(form): Query<SearchForm>,
) -> Result<Response, ServerError> {
    let results = s.catalog.search(&form.search()).await?;
    Ok(Html(pages::search(&form.q, &results)).into_response())
}

async fn api_search(
    State(s): AppState,
    Query(form): Query<SearchForm>,
) -> Result<Response, ServerError> {
    Ok(Json(s.catalog.search(&form.search()).await?).into_response())
}

async fn api_product(State(s): AppState, Path(id): Path<i32>) -> Result<Response, ServerError> {
    match s.catalog.product(id).await? {
        Some(product) => Ok(Json(product).into_response()),
        None => Ok((
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no such product"})),
        )
            .into_response()),
    }
}

async fn dashboard(s: &Shared) -> admin::Dashboard {
    admin::collect(&s.manager, s.http.stats(), s.catalog.query_cache().stats()).await
}

async fn admin_page(State(s): AppState) -> Html<String> {
    Html(admin::render(&dashboard(&s).await))
}

async fn admin_json(State(s): AppState) -> Json<admin::Dashboard> {
    Json(dashboard(&s).await)
}

async fn metrics_text(State(s): AppState) -> Response {
    match &s.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            metrics::render(
                handle,
                &s.manager,
                s.http.stats(),
                s.catalog.query_cache().stats(),
            ),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are off: another metrics recorder was installed first\n",
        )
            .into_response(),
    }
}
