//! A frozen Redis node (SIGSTOP: its port stays open, nothing is answered) costs the
//! HTTP layer nothing once the node's circuit breaker is open: requests are answered by
//! the origin at the origin's own speed, no request waits longer than one store
//! timeout, and caching resumes within the probe interval once the node runs again. On
//! a standalone server and on one master of a cluster (whose other masters keep
//! serving hits).

use crate::support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use partcache::stats::BreakerState;
use partcache_axum::ResponseCache;
use partcache_integration_tests::{
    ClusterOptions, Flavor, RedisCluster, RedisServer, ServerOptions,
};
use support::{respond, serve};

/// The Redis response timeout: below the response cache's store timeout, so that the
/// node's timeouts are what the breaker counts.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(150);
const STORE_TIMEOUT: Duration = Duration::from_millis(250);
const PROBE_INTERVAL: Duration = Duration::from_millis(300);
const FAILURES: u32 = 3;
/// Slack for a loaded 2-core test machine on top of a timeout.
const SLACK: Duration = Duration::from_millis(150);
const PATHS: usize = 24;

fn params() -> String {
    format!(
        "connect_timeout={}ms&response_timeout={}ms&breaker_failures={FAILURES}&breaker_probe_interval={}ms",
        RESPONSE_TIMEOUT.as_millis(),
        RESPONSE_TIMEOUT.as_millis(),
        PROBE_INTERVAL.as_millis()
    )
}

fn handler() -> impl Fn(&support::Seen, usize) -> axum::response::Response + Send + Sync + 'static {
    |_, n| {
        respond(
            200,
            &[("cache-control", "max-age=600")],
            format!("origin {n}"),
        )
    }
}

/// The same origin with no cache in front, for its latency.
async fn bare_origin() -> SocketAddr {
    let app = Router::new()
        .fallback(|| async { respond(200, &[("cache-control", "max-age=600")], "origin 0") });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Median latency of `n` sequential GETs of `/p/<i>` on `addr`.
async fn median_latency(addr: SocketAddr, n: usize) -> Duration {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let request = Request::get(format!("http://{addr}/p/{}", i % PATHS))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let started = Instant::now();
        let response = client.request(request).await.expect("response");
        response.into_body().collect().await.expect("body");
        took.push(started.elapsed());
    }
    took.sort();
    took[n / 2]
}

fn breakers(cache: &ResponseCache) -> Vec<partcache::stats::BreakerStats> {
    cache.responses().breakers()
}

fn any_open(cache: &ResponseCache) -> bool {
    breakers(cache)
        .iter()
        .any(|b| b.state != BreakerState::Closed)
}

/// Sends one request per path, in order; every one must be answered `200` within one
/// store timeout (plus slack). Returns how many were hits, and the slowest.
async fn round(server: &support::Server) -> (usize, Duration) {
    let mut hits = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..PATHS {
        let started = Instant::now();
        let reply = server.get(&format!("/p/{i}")).await;
        let took = started.elapsed();
        assert_eq!(reply.status, StatusCode::OK, "/p/{i}");
        assert!(
            took < STORE_TIMEOUT + SLACK,
            "/p/{i} waited {took:?}, more than one store timeout"
        );
        hits += usize::from(reply.x_cache() == "HIT");
        slowest = slowest.max(took);
    }
    (hits, slowest)
}

/// The scenario, on a deployment whose `url` has one node that `pause` freezes and
/// `resume` thaws; `frozen_share_only` when other nodes keep serving hits.
async fn a_frozen_node_costs_nothing_once_its_breaker_opens(
    url: &str,
    pause: impl FnOnce(),
    resume: impl FnOnce(),
    frozen_share_only: bool,
) {
    let manager = support::redis::manager(url);
    let name = format!("breaker-{}", std::process::id());
    let cache = ResponseCache::builder(&manager, name)
        .store_timeout(STORE_TIMEOUT)
        .build()
        .await
        .expect("build");
    let responses = cache.clone();
    let server = serve(cache, Duration::ZERO, handler()).await;
    // Warm: every path stored, then served from the cache.
    assert_eq!(round(&server).await.0, 0);
    server.stored(PATHS as u64).await;
    assert_eq!(round(&server).await.0, PATHS, "all hits before the freeze");
    let origin = bare_origin().await;

    tokio::task::block_in_place(pause);
    // Until the breaker opens, requests to the frozen node wait (at most one store
    // timeout each); at most `FAILURES` of them per node before it opens.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut rounds = 0;
    while !any_open(&responses) {
        assert!(
            Instant::now() < deadline,
            "no breaker opened: {:?}",
            breakers(&responses)
        );
        round(&server).await;
        rounds += 1;
    }
    eprintln!("open after {rounds} round(s): {:?}", breakers(&responses));
    let (hits, slowest) = round(&server).await;
    if frozen_share_only {
        assert!(
            hits > 0 && hits < PATHS,
            "{hits} hits of {PATHS} with one master frozen"
        );
    } else {
        assert_eq!(hits, 0);
    }
    let through_cache = median_latency(server.addr, 4 * PATHS).await;
    let bare = median_latency(origin, 4 * PATHS).await;
    eprintln!(
        "median latency with the breaker open {through_cache:?}, bare origin {bare:?}, slowest {slowest:?}"
    );
    // What the open breaker saves is the wait on the frozen node: a store timeout per
    // request. The median request pays at most a tenth of that over the bare origin
    // (the cache's own work and the healthy masters' round trips, which on a loaded
    // machine are milliseconds, not the hundreds a timeout costs).
    assert!(
        through_cache <= bare + STORE_TIMEOUT / 10,
        "with the breaker open: median {through_cache:?}, the origin's {bare:?}, a store timeout {STORE_TIMEOUT:?}"
    );

    let resumed = Instant::now();
    tokio::task::block_in_place(resume);
    // Requests keep flowing over every path: a probe starts on the turn of a request
    // for the frozen node (on a cluster only some paths live there), and the breaker
    // closes once it finds the node answering, within a probe interval (plus a probe's
    // round trip).
    let mut next = 0;
    while any_open(&responses) {
        assert!(
            resumed.elapsed() < PROBE_INTERVAL + SLACK,
            "still open {:?} after the node resumed: {:?}",
            resumed.elapsed(),
            breakers(&responses)
        );
        let _ = server.get(&format!("/p/{}", next % PATHS)).await;
        next += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("closed {:?} after the node resumed", resumed.elapsed());
    let stats = breakers(&responses);
    assert!(
        stats
            .iter()
            .any(|b| b.opened >= 1 && b.closed >= 1 && b.rejected > 0),
        "{stats:?}"
    );
    // Caching resumed: everything stored before the freeze is served again.
    assert_eq!(
        round(&server).await.0,
        PATHS,
        "all hits after the node resumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_standalone_server_costs_nothing_once_its_breaker_opens() {
    let redis = tokio::task::block_in_place(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    });
    let url = format!("redis://{}?{}", redis.addr(), params());
    a_frozen_node_costs_nothing_once_its_breaker_opens(
        &url,
        || redis.pause().expect("SIGSTOP"),
        || redis.resume().expect("SIGCONT"),
        false,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_cluster_master_costs_nothing_once_its_breaker_opens() {
    // No replicas, and the other masters keep serving their slots while one is down:
    // what is measured is the frozen master alone, not a failover.
    let cluster = tokio::task::block_in_place(|| {
        RedisCluster::start_with_options(
            Flavor::Redis,
            3,
            0,
            ClusterOptions {
                extra_args: vec!["--cluster-require-full-coverage".into(), "no".into()],
                ..ClusterOptions::default()
            },
        )
        .expect("start a cluster")
    });
    let frozen = tokio::task::block_in_place(|| cluster.masters()[0].index);
    let url = format!("{}?{}", cluster.seed_url(), params());
    a_frozen_node_costs_nothing_once_its_breaker_opens(
        &url,
        || cluster.pause_node(frozen).expect("SIGSTOP"),
        || cluster.resume_node(frozen).expect("SIGCONT"),
        true,
    )
    .await;
}
