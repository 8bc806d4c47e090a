//! The storefront's page cache decides its key, not the client: query parameters a
//! product page does not take cannot create entries.

mod support;

use http::StatusCode;
use storefront::Config;
use support::start;

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
