//! An axum service whose slow handler (20 ms) becomes fast behind partcache-axum's
//! `ResponseCacheLayer`.
//!
//! ```text
//! cargo run -p http-cache                       # memory:// store, 127.0.0.1:3000
//! PARTCACHE_URL=redis-cluster://... cargo run -p http-cache   # once a Redis backend is installed
//! curl -i 127.0.0.1:3000/products/42            # x-cache: MISS, ~20 ms
//! curl -i 127.0.0.1:3000/products/42            # x-cache: HIT, Age: 0, fast
//!                                               # cache-status: partcache; hit; ttl=30
//! curl -i '127.0.0.1:3000/products/42?cb=1'     # still a HIT: only `page` is keyed
//! curl -i -X PUT 127.0.0.1:3000/products/42     # drops the product and every list
//! curl -X POST 127.0.0.1:3000/admin/cache/tag -d product:42    # purge by tag
//! curl -X POST 127.0.0.1:3000/admin/cache/path -d /products/42  # purge by path
//! curl 127.0.0.1:3000/admin/cache/stats                         # the counters, as JSON
//! curl -i 127.0.0.1:3000/prices                 # its own route layer: fresh for 2 s
//! ```
//!
//! `HTTP_CACHE_ADDR` sets the listening address.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
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

/// A live price: the origin gives no freshness, its route layer gives it 2 s.
async fn prices() -> &'static str {
    "prices\n"
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manager = CacheManager::from_env()?;
    let addr = std::env::var("HTTP_CACHE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_string());
    let cache = ResponseCache::builder(&manager, "http")
        .max_entries(50_000)
        .host(&addr) // for purges by path
        .default_ttl(Duration::from_secs(30))
        .route("/admin", RoutePolicy::bypass())
        .route(
            "/products",
            RoutePolicy::cached()
                .key_query_params(["page"])
                .invalidates_prefix("/products"),
        )
        .build()
        .await?;
    let app = Router::new()
        .route("/products/{id}", get(product).put(update))
        .route(
            "/prices",
            get(prices).route_layer(cache.layer().ttl(Duration::from_secs(2))),
        )
        .layer(cache.layer())
        // After the layer: administration is never cached.
        .nest("/admin/cache", cache.purge_router())
        .route("/admin/cache/stats", cache.stats_route());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "http-cache on http://{} (store: {})",
        listener.local_addr()?,
        manager.url()
    );
    axum::serve(listener, app).await?;
    Ok(())
}
