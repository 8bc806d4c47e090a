//! The storefront on a real Redis Cluster (3 masters, started by the harness in
//! `integration-tests/`): the same MISS/HIT/PUT behaviour as on the embedded store, and
//! the dashboard's partitions and entries per master.

use crate::support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use http::StatusCode;
use partcache_integration_tests::{ClusterOptions, Flavor, RedisCluster};
use storefront::Config;
use support::{cache, start};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_the_dashboard_shows_partitions_and_entries_per_master() {
    let cluster = tokio::task::spawn_blocking(|| RedisCluster::start(Flavor::Redis, 3, 0))
        .await
        .expect("harness thread")
        .expect("start a 3-master cluster");
    let shop = start(Config {
        cache_url: cluster.seed_url(),
        // A loaded test machine can take longer than the 250 ms default for a round
        // trip; a timeout would show as BYPASS here (fail-open is tested elsewhere).
        store_timeout: Duration::from_secs(2),
        ..Config::default()
    })
    .await;

    assert_eq!(shop.get("/products/42").await.x_cache(), "MISS");
    shop.wait_for_stored_pages(1).await;
    assert_eq!(shop.get("/products/42").await.x_cache(), "HIT");
    let put = shop.put_json("/products/42", r#"{"stock": 0}"#).await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let after = shop.get("/products/42").await;
    assert_eq!(after.x_cache(), "MISS");
    assert!(after.body.contains("0 in stock"), "{}", after.body);
    assert_eq!(shop.get("/").await.status, StatusCode::OK);
    // On Redis the product cards have a near cache: rendering the home page again
    // serves its cards locally.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        assert_eq!(shop.get("/").await.status, StatusCode::OK);
        let dashboard = shop.dashboard().await;
        let cards = dashboard
            .caches
            .iter()
            .find(|c| c.name == storefront::CARDS_CACHE)
            .expect("the product cards cache is on the dashboard");
        if cards.near_hits > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the product cards were never served from the near cache: {cards:?}"
        );
    }

    let dashboard = shop.dashboard().await;
    assert!(dashboard.partitioned);
    assert!(
        dashboard.store.starts_with("redis-cluster://"),
        "{}",
        dashboard.store
    );
    let masters: BTreeSet<String> = tokio::task::block_in_place(|| cluster.masters())
        .into_iter()
        .map(|m| m.addr)
        .collect();
    for c in &dashboard.caches {
        assert_eq!(c.error, None, "`{}`", c.name);
        let partitions = c.partitions.expect("partitioned");
        let rows = c.masters.as_ref().expect("a balance report");
        let seen: BTreeSet<String> = rows.iter().map(|m| m.master.clone()).collect();
        assert_eq!(seen, masters, "`{}` spreads over every master", c.name);
        assert_eq!(
            rows.iter().map(|m| m.partitions).sum::<u16>(),
            partitions,
            "`{}`",
            c.name
        );
        for m in rows {
            // 231 partitions over 3 balanced masters: 77 each.
            assert_eq!(m.partitions, partitions / 3, "`{}` on {}", c.name, m.master);
        }
        assert_eq!(
            rows.iter().map(|m| m.entries).sum::<u64>(),
            c.entries.expect("entries"),
            "`{}`: entries per master add up",
            c.name
        );
    }
    let http = cache(&dashboard, "http");
    assert_eq!(
        http.entries,
        Some(1),
        "the page stored again after the PUT: {http:?}"
    );
    let cards = cache(&dashboard, "product-cards");
    let spread = cards
        .masters
        .as_ref()
        .unwrap()
        .iter()
        .filter(|m| m.entries > 0)
        .count();
    assert!(
        spread >= 2,
        "a dozen cards land on more than one master: {cards:?}"
    );

    let page = shop.get("/admin/caches").await;
    assert_eq!(page.status, StatusCode::OK);
    let svg_start = page
        .body
        .find("<svg class=\"balance\" data-cache=\"product-cards\"")
        .expect("bars for product-cards");
    let svg = &page.body[svg_start..svg_start + page.body[svg_start..].find("</svg>").unwrap()];
    for m in cards.masters.as_ref().unwrap() {
        let group = format!(
            "<g data-master=\"{}\" data-partitions=\"{}\" data-entries=\"{}\">",
            m.master, m.partitions, m.entries
        );
        assert!(svg.contains(&group), "{group} in {svg}");
    }
}

/// A master frozen under traffic shows on the dashboard (JSON and page) and in
/// `/metrics` as an open circuit breaker, and as closed again once it runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_shows_as_an_open_breaker_on_the_dashboard_and_in_metrics() {
    let cluster = tokio::task::spawn_blocking(|| {
        RedisCluster::start_with_options(
            Flavor::Redis,
            3,
            0,
            ClusterOptions {
                // The other masters keep serving while one is stopped.
                extra_args: vec!["--cluster-require-full-coverage".into(), "no".into()],
                ..ClusterOptions::default()
            },
        )
    })
    .await
    .expect("harness thread")
    .expect("start a 3-master cluster");
    let probe_interval = Duration::from_millis(300);
    let shop = start(Config {
        cache_url: format!(
            "{}?response_timeout=200ms&connect_timeout=200ms&breaker_probe_interval={}ms",
            cluster.seed_url(),
            probe_interval.as_millis()
        ),
        store_timeout: Duration::from_millis(500),
        ..Config::default()
    })
    .await;
    for id in 1..=12 {
        assert_eq!(
            shop.get(&format!("/products/{id}")).await.status,
            StatusCode::OK
        );
    }
    let frozen = tokio::task::block_in_place(|| cluster.masters()[0].clone());
    let breaker_of = |dashboard: &storefront::Dashboard| {
        dashboard
            .breakers
            .iter()
            .find(|b| b.node == frozen.addr)
            .cloned()
    };
    assert_eq!(
        breaker_of(&shop.dashboard().await)
            .map(|b| b.state)
            .as_deref(),
        Some("closed")
    );

    tokio::task::block_in_place(|| cluster.pause_node(frozen.index)).expect("SIGSTOP");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut id = 0;
    loop {
        // Pages and the product API keep answering: the store fails open.
        id = id % 12 + 1;
        assert_eq!(
            shop.get(&format!("/products/{id}")).await.status,
            StatusCode::OK
        );
        if breaker_of(&shop.dashboard().await).is_some_and(|b| b.state != "closed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the frozen master's breaker never opened"
        );
    }
    let page = shop.get("/admin/caches").await;
    let row = format!("<tr data-node=\"{}\">", frozen.addr);
    let row_at = page
        .body
        .find(&row)
        .unwrap_or_else(|| panic!("{row} in {}", page.body));
    let row_html = &page.body[row_at..row_at + page.body[row_at..].find("</tr>").unwrap()];
    assert!(
        row_html.contains("class=\"breaker-open\">open<")
            || row_html.contains("class=\"breaker-probing\">probing<"),
        "{row_html}"
    );
    let metrics = shop.get("/metrics").await.body;
    let open = format!("partcache_breaker_open{{node=\"{}\"}} 1", frozen.addr);
    assert!(metrics.contains(&open), "{open} in /metrics");

    let resumed = Instant::now();
    tokio::task::block_in_place(|| cluster.resume_node(frozen.index)).expect("SIGCONT");
    let opened_seen;
    loop {
        id = id % 12 + 1;
        assert_eq!(
            shop.get(&format!("/products/{id}")).await.status,
            StatusCode::OK
        );
        let breaker = breaker_of(&shop.dashboard().await).expect("the frozen master's breaker");
        if breaker.state == "closed" {
            assert!(breaker.opened >= 1 && breaker.closed >= 1, "{breaker:?}");
            opened_seen = breaker.opened;
            break;
        }
        assert!(
            resumed.elapsed() < probe_interval + Duration::from_secs(2),
            "still {breaker:?} {:?} after the master resumed",
            resumed.elapsed()
        );
    }
    // The metric counts what the dashboard counted. A master that has just been woken
    // on a loaded machine may miss a probe's response timeout and open its breaker once
    // more, so the metric (read later, a counter) is at least the dashboard's count.
    let metrics = shop.get("/metrics").await.body;
    let series = format!(
        "partcache_breaker_opened_total{{node=\"{}\"}} ",
        frozen.addr
    );
    let opened: u64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix(series.as_str()))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} in /metrics"));
    assert!(
        opened >= opened_seen,
        "{opened} openings in /metrics, {opened_seen} on the dashboard"
    );
}
