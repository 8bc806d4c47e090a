//! # storefront
//!
//! partcache's main example: a small shop (axum over SQLite, seeded at start-up) in
//! which every partcache integration has the route it suits, with `/metrics` and a
//! live cache dashboard at `/admin/caches`.
//!
//! ```text
//! cargo run --release -p storefront                       # embedded store, no server needed
//! PARTCACHE_URL=redis-cluster://127.0.0.1:7000 cargo run --release -p storefront
//! curl -i localhost:3000/products/42                      # x-cache: MISS, then HIT
//! curl -X PUT localhost:3000/products/42 -H 'content-type: application/json' -d '{"price_cents": 999}'
//! open http://localhost:3000/admin/caches
//! ```
//!
//! The binary is `src/main.rs`; this library is what it and the tests start:
//! [`Storefront::start`] opens everything, [`Storefront::serve`] answers requests. Which
//! route uses which cache: see the `app` module (and the README).

mod admin;
mod app;
mod catalog;
mod db;
mod metrics;
mod pages;
mod seq;

use std::sync::Arc;
use std::time::Duration;

pub use admin::{
    BreakerFigures, CacheFigures, Dashboard, HttpFigures, MasterFigures, OrmFigures, redact_url,
};
pub use catalog::{
    CARDS_CACHE, Invalid, MAX_NAME_CHARS, ProductCard, ProductPatch, RECOMMENDATIONS,
};
pub use db::{PRODUCTS, PoolSettings};
pub use seq::Seq;

/// Where the storefront keeps its data and caches.
#[derive(Debug, Clone)]
pub struct Config {
    /// The cache backend URL (`memory://`, `redis://…`, `redis-cluster://…`).
    pub cache_url: String,
    /// The database URL (`sqlite::memory:`, or `sqlite://shop.db?mode=rwc` to keep edits).
    pub database_url: String,
    /// How the database's connection pool retires connections.
    pub pool: PoolSettings,
    /// How long the HTTP response cache waits for the store before answering from the
    /// origin (fail-open).
    pub store_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cache_url: "memory://".into(),
            database_url: "sqlite::memory:".into(),
            pool: PoolSettings::default(),
            store_timeout: partcache_axum::DEFAULT_STORE_TIMEOUT,
        }
    }
}

impl Config {
    /// `PARTCACHE_URL` (default `memory://`) and `DATABASE_URL` (default
    /// `sqlite::memory:`).
    pub fn from_env() -> Self {
        let mut config = Config::default();
        if let Ok(url) = std::env::var(partcache::URL_ENV) {
            config.cache_url = url;
        }
        if let Ok(url) = std::env::var("DATABASE_URL") {
            config.database_url = url;
        }
        config
    }
}

/// Why the storefront could not start.
#[derive(Debug)]
pub enum StartError {
    /// A cache could not be opened (bad URL, unreachable store, ...).
    Cache(partcache::Error),
    /// The database could not be opened or seeded.
    Database(sea_orm::DbErr),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Cache(e) => write!(f, "cache: {e}"),
            StartError::Database(e) => write!(f, "database: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Cache(e) => Some(e),
            StartError::Database(e) => Some(e),
        }
    }
}

/// A started storefront: database seeded, caches open, router ready.
pub struct Storefront {
    router: axum::Router,
    shared: Arc<app::Shared>,
}

impl std::fmt::Debug for Storefront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storefront")
            .field("router", &self.router)
            .finish_non_exhaustive()
    }
}

impl Storefront {
    /// Opens the database (creating and seeding it) and the caches, and builds the
    /// router. Installs the Prometheus recorder first (once per process), since caches
    /// resolve their latency histograms when built.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let (router, shared) = app::build(config).await?;
        Ok(Storefront { router, shared })
    }

    /// The database connection (the pool every handler uses; writes through it
    /// invalidate nothing).
    pub fn database(&self) -> &sea_orm::DatabaseConnection {
        self.shared.catalog.database()
    }

    /// The cache manager (every cache the storefront opened is in it).
    pub fn manager(&self) -> &partcache::CacheManager {
        &self.shared.manager
    }

    /// The router, to serve or to test with `tower::ServiceExt::oneshot`.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Serves requests on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}
