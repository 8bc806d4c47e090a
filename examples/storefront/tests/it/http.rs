//! The storefront over a real socket on the embedded store: what a newcomer sees with
//! curl, `/metrics`, and the dashboard's JSON.
//!
//! The Prometheus recorder is process-wide, so the storefronts of this binary's tests
//! share it: metric assertions here are "at least", never exact.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http::StatusCode;
use storefront::Config;
use support::{cache, card_ids, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_page_is_a_miss_then_a_hit_and_a_put_invalidates_it() {
    let shop = start(Config::default()).await;

    let first = shop.get("/products/42").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.x_cache(), "MISS");
    shop.wait_for_stored_pages(1).await;
    let second = shop.get("/products/42").await;
    assert_eq!(second.x_cache(), "HIT");
    assert_eq!(second.body, first.body, "a hit serves the stored page");

    let put = shop
        .put_json("/products/42", r#"{"price_cents": 4242}"#)
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert!(put.body.contains("\"price_cents\":4242"), "{}", put.body);

    let after = shop.get("/products/42").await;
    assert_eq!(after.x_cache(), "MISS", "the PUT invalidated the page");
    assert!(
        after.body.contains("$42.42"),
        "new price shown: {}",
        after.body
    );
    shop.wait_for_stored_pages(2).await;
    assert_eq!(shop.get("/products/42").await.x_cache(), "HIT");

    // Page 42 shows the cards of products bought with it; changing one of them purges
    // page 42 too (it is tagged with every product it shows).
    let other = *card_ids(&after.body)
        .first()
        .expect("product 42 has products bought together with it");
    let put = shop
        .put_json(&format!("/products/{other}"), r#"{"price_cents": 1717}"#)
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let purged = shop.get("/products/42").await;
    assert_eq!(purged.x_cache(), "MISS", "tag purge of product:{other}");
    assert!(
        purged.body.contains("$17.17"),
        "the card of {other} shows its new price: {}",
        purged.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_products_and_bad_input_get_client_errors() {
    let shop = start(Config::default()).await;
    assert_eq!(
        shop.get("/products/999999").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        shop.get("/products/abc").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        shop.put_json("/products/999999", r#"{"price_cents": 1}"#)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let bad = shop.put_json("/products/42", r#"{"price_cents": "#).await;
    assert!(bad.status.is_client_error(), "{}", bad.status);
    assert_eq!(
        shop.get("/api/products/999999").await.status,
        StatusCode::NOT_FOUND
    );
}

/// The product row as the database holds it, read on the plain connection.
async fn product_row(shop: &support::Running, id: i32) -> (String, i32, i32) {
    use sea_orm::{ConnectionTrait, Statement};
    let row = shop
        .database
        .query_one_raw(Statement::from_sql_and_values(
            shop.database.get_database_backend(),
            "SELECT name, price_cents, stock FROM product WHERE id = ?",
            [id.into()],
        ))
        .await
        .expect("the product table answers")
        .expect("the product exists");
    (
        row.try_get("", "name").expect("name"),
        row.try_get("", "price_cents").expect("price_cents"),
        row.try_get("", "stock").expect("stock"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_with_invalid_fields_is_422_naming_the_field_and_writes_nothing() {
    let shop = start(Config::default()).await;
    let page = shop.get("/products/42").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    shop.wait_for_stored_pages(1).await;
    let before = product_row(&shop, 42).await;

    let long_name = format!(r#"{{"name": "{}"}}"#, "x".repeat(100 * 1024));
    let cases: [(&str, &str, &str); 7] = [
        (r#"{"price_cents": -1}"#, "price_cents", "0 or more"),
        (r#"{"stock": -5}"#, "stock", "0 or more"),
        (r#"{"name": ""}"#, "name", "empty"),
        (r#"{"name": "   "}"#, "name", "empty"),
        (&long_name, "name", "at most 200"),
        (r#"{"prices_cents": 5}"#, "body", "prices_cents"),
        (r#"{}"#, "body", "nothing to change"),
    ];
    for (body, field, why) in cases {
        let shown = &body[..body.len().min(40)];
        let reply = shop.put_json("/products/42", body).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{shown}: {}",
            reply.body
        );
        let answer: serde_json::Value = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{shown}: {e}: {}", reply.body));
        assert_eq!(answer["field"], field, "{shown}: {}", reply.body);
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(why), "{shown}: {error:?} says why");
    }

    assert_eq!(product_row(&shop, 42).await, before, "nothing was written");
    let after = shop.get("/products/42").await;
    assert_eq!(after.x_cache(), "HIT", "a refused PUT invalidates nothing");
    assert_eq!(after.body, page.body);
}

/// An in-memory SQLite database lives as long as one connection to it: the storefront's
/// default database must outlive the pool retiring its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_database_survives_connection_recycling() {
    let config = Config {
        pool: storefront::PoolSettings {
            idle_timeout: Some(Duration::from_millis(50)),
            max_lifetime: Some(Duration::from_millis(100)),
        },
        ..Config::default()
    };
    assert_eq!(
        config.database_url, "sqlite::memory:",
        "the binary's default"
    );
    let shop = start(config).await;
    let pool = shop.database.get_sqlite_connection_pool().clone();
    for round in 1..=3 {
        // Wait until the pool has closed every connection it had: without something
        // holding the database, this is the moment it is gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        while pool.size() > 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: the pool still holds {} connections after 10 s",
                pool.size()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let name = format!("Recycled pen {round}");
        let put = shop
            .put_json("/products/7", &format!(r#"{{"name": "{name}"}}"#))
            .await;
        assert_eq!(put.status, StatusCode::OK, "round {round}: {}", put.body);
        let read = shop.get("/api/products/7").await;
        assert_eq!(read.status, StatusCode::OK, "round {round}: {}", read.body);
        assert!(read.body.contains(&name), "round {round}: {}", read.body);
        let search = shop.get("/api/products?q=Recycled").await;
        assert!(
            search.body.contains(&name),
            "round {round}: {}",
            search.body
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_and_api_reads_are_served_by_the_orm_caches_and_see_writes() {
    let shop = start(Config::default()).await;
    let before = shop.dashboard().await.orm;

    let q = "/api/products?category=3&max_price_cents=3000";
    let first: Vec<serde_json::Value> = serde_json::from_str(&shop.get(q).await.body).unwrap();
    assert!(
        !first.is_empty(),
        "the seeded shop has cheap products in category 3"
    );
    assert!(
        first
            .iter()
            .all(|p| p["category_id"] == 3 && p["price_cents"].as_i64().unwrap() <= 3000)
    );
    let again: Vec<serde_json::Value> = serde_json::from_str(&shop.get(q).await.body).unwrap();
    assert_eq!(again, first);
    let after_reads = shop.dashboard().await.orm;
    assert!(
        after_reads.hits > before.hits,
        "the second search was a query-cache hit"
    );

    // Price one product of the results out of range: the cached result must not survive.
    let id = first[0]["id"].as_i64().unwrap();
    let put = shop
        .put_json(&format!("/products/{id}"), r#"{"price_cents": 999999}"#)
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let now: Vec<serde_json::Value> = serde_json::from_str(&shop.get(q).await.body).unwrap();
    assert_eq!(now.len(), first.len() - 1);
    assert!(now.iter().all(|p| p["id"] != id));

    let product: serde_json::Value =
        serde_json::from_str(&shop.get(&format!("/api/products/{id}")).await.body).unwrap();
    assert_eq!(
        product["price_cents"], 999999,
        "the entity cache saw the write"
    );

    let search = shop.get("/search?q=pen").await;
    assert_eq!(search.status, StatusCode::OK);
    assert_eq!(
        search.x_cache(),
        "BYPASS",
        "only product pages are cached whole"
    );
    assert!(search.body.contains("/products/"), "{}", search.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_expose_per_cache_series_in_prometheus_text() {
    let shop = start(Config::default()).await;
    for path in ["/", "/"] {
        assert_eq!(shop.get(path).await.status, StatusCode::OK, "{path}");
    }
    assert_eq!(shop.get("/products/7").await.x_cache(), "MISS");
    shop.wait_for_stored_pages(1).await;
    assert_eq!(shop.get("/products/7").await.x_cache(), "HIT");
    let metrics = shop.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let content_type = metrics.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = &metrics.body;

    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no series `{series}` in /metrics:\n{text}"))
    };
    // Every cache has its counters, labelled with its name.
    for name in [
        "http",
        "http:tags",
        "product-cards",
        "recommendations",
        "orm:versions",
    ] {
        for counter in [
            "hits",
            "misses",
            "puts",
            "evictions",
            "expirations",
            "store_errors",
        ] {
            value(&format!("partcache_{counter}_total{{cache=\"{name}\"}}"));
        }
    }
    assert!(
        value("partcache_hits_total{cache=\"http\"}") >= 1.0,
        "{}",
        text.lines()
            .filter(|l| l.contains("hits"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        value("partcache_hits_total{cache=\"product-cards\"}") >= 1.0,
        "the second home page read cached cards"
    );
    assert!(value("partcache_http_responses_total{result=\"hit\"}") >= 1.0);
    // Latency histograms, per cache and operation.
    assert!(
        value("partcache_operation_duration_seconds_count{cache=\"product-cards\",op=\"get\"}")
            >= 2.0
    );
    assert!(
        text.contains(
            "partcache_operation_duration_seconds_bucket{cache=\"http\",op=\"get\",le=\""
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_json_and_page_report_every_cache_with_its_figures() {
    let shop = start(Config::default()).await;
    assert_eq!(shop.get("/products/42").await.x_cache(), "MISS");
    shop.wait_for_stored_pages(1).await;
    assert_eq!(shop.get("/products/42").await.x_cache(), "HIT");
    assert_eq!(shop.get("/").await.status, StatusCode::OK);
    assert_eq!(shop.get("/").await.status, StatusCode::OK);

    let dashboard = shop.dashboard().await;
    assert_eq!(dashboard.store, "memory://");
    assert!(!dashboard.partitioned);
    assert_eq!(
        (
            dashboard.http.hits,
            dashboard.http.misses,
            dashboard.http.coalesced
        ),
        (1, 1, 0)
    );
    let http = cache(&dashboard, "http");
    assert_eq!(http.entries, Some(1), "one stored page");
    assert!(http.hits >= 1 && http.hit_ratio > 0.0, "{http:?}");
    assert!(http.avg_get_us > 0.0);
    assert!(http.masters.is_none() && http.partitions.is_none());
    let cards = cache(&dashboard, "product-cards");
    assert!(
        cards.entries.unwrap() >= 12,
        "best sellers' cards are cached: {cards:?}"
    );
    assert!(
        cards.hits >= 12,
        "the second home page hit every card: {cards:?}"
    );
    let recommendations = cache(&dashboard, "recommendations");
    assert_eq!(
        recommendations.entries,
        Some(1),
        "product 42's, stored by #[cacheable]"
    );
    assert!(
        dashboard
            .caches
            .iter()
            .any(|c| c.name.starts_with("orm:entities:"))
    );

    let page = shop.get("/admin/caches").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains("<meta http-equiv=\"refresh\""),
        "the page refreshes itself"
    );
    for c in &dashboard.caches {
        // HTML-escaped: ORM result caches are named after types (`Vec<i32>`).
        let name = c
            .name
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(
            page.body.contains(&format!("<tr data-cache=\"{name}\">")),
            "row for {}",
            c.name
        );
    }
    assert!(page.body.contains(&format!(
        "<td data-field=\"http_hits\">{}</td>",
        dashboard.http.hits
    )));
    assert!(
        !page.body.contains("<svg"),
        "no balance bars on the embedded store"
    );
}

/// Kills the child on drop, so a failing test leaves no server behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The issue's promise: `cargo run -p storefront`, and the shop answers within 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_answers_within_two_seconds_of_start() {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_storefront"))
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("PARTCACHE_URL", "memory://")
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run the storefront binary");
    let stdout = child.stdout.take().expect("stdout");
    let _guard = KillOnDrop(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the storefront prints where it listens");
    let addr = line
        .strip_prefix("storefront listening on http://")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();

    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let uri: http::Uri = format!("http://{addr}/products/42").parse().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(10), client.get(uri))
        .await
        .expect("an answer")
        .expect("a response");
    let elapsed = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-cache"], "MISS");
    eprintln!("storefront binary: first page answered {elapsed:?} after spawn");
    assert!(
        elapsed < Duration::from_secs(2),
        "first answer after {elapsed:?}"
    );
}

/// The page cache decides its key, not the client: query parameters a product page
/// does not take cannot create entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_query_parameter_cannot_bust_the_page_cache() {
    let shop = start(Config::default()).await;

    let first = shop.get("/products/42?cb=1").await;
    assert_eq!(
        (first.status, first.x_cache()),
        (StatusCode::OK, "MISS"),
        "{}",
        first.body
    );
    shop.wait_for_stored_pages(1).await;
    for path in [
        "/products/42?cb=2",
        "/products/42",
        "/products/42?utm=x&cb=3",
    ] {
        let reply = shop.get(path).await;
        assert_eq!(reply.x_cache(), "HIT", "{path}");
        assert_eq!(reply.body, first.body, "{path}");
    }
}
