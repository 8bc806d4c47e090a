//! An axum service whose slow handler (20 ms) becomes fast behind partcache-axum's
//! `ResponseCacheLayer`.
//!
//! ```text
//! cargo run -p http-cache                       # memory:// store, 127.0.0.1:3000
//! PARTCACHE_URL=redis-cluster://... cargo run -p http-cache   # once a Redis backend is installed
//! curl -i localhost:3000/products/42            # x-cache: MISS, ~20 ms
//! curl -i localhost:3000/products/42            # x-cache: HIT, Age: 0, fast
//!                                               # cache-status: partcache; hit; ttl=30
//! curl -i 'localhost:3000/products/42?cb=1'     # still a HIT: only `page` is keyed
//! curl -i -X PUT localhost:3000/products/42     # drops the product and every list
//! curl -X POST localhost:3000/admin/products/42/purge  # purge by tag
//! ```
//!
//! `HTTP_CACHE_ADDR` sets the listening address.

use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use partcache::CacheManager;
use partcache_axum::{ResponseCache, RoutePolicy};

/// The slow origin: 20 ms per product, tagged for purging.
async fn product(Path(id): Path<u64>) -> ([(&'static str, String); 2], String) {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let headers = [
        ("cache-control", "max-age=30".to_string()),
        ("cache-tag", format!("product:{id}")),
    ];
    (headers, format!("product {id}\n"))
}

/// A write: the cache layer drops the product's page and, as the route declares,
/// every other page under `/products`.
async fn update(Path(id): Path<u64>) -> String {
    format!("updated product {id}\n")
}

async fn purge(State(cache): State<ResponseCache>, Path(id): Path<u64>) -> String {
    match cache.purge_tag(&format!("product:{id}")).await {
        Ok(n) => format!("purged {n} entries\n"),
        Err(error) => format!("purge failed: {error}\n"),
    }
}

async fn stats(State(cache): State<ResponseCache>) -> String {
    format!("{:#?}\n", cache.stats())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manager = CacheManager::from_env()?;
    let cache = ResponseCache::builder(manager.cache("http").max_entries(50_000).build().await?)
        .tag_index(manager.cache("http:tags").build().await?)
        .default_ttl(Duration::from_secs(30))
        .route("/admin", RoutePolicy::bypass())
        .route(
            "/products",
            RoutePolicy::cached()
                .key_query_params(["page"])
                .invalidates_prefix("/products"),
        )
        .build();
    let app = Router::new()
        .route("/products/{id}", get(product).put(update))
        .route("/admin/products/{id}/purge", post(purge))
        .route("/admin/stats", get(stats))
        .with_state(cache.clone())
        .layer(cache.layer());
    let addr = std::env::var("HTTP_CACHE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_string());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "http-cache on http://{} (store: {})",
        listener.local_addr()?,
        manager.url()
    );
    axum::serve(listener, app).await?;
    Ok(())
}
