//! `cargo bench -p partcache-axum --bench http`: an example-style axum server in this
//! process and a keep-alive load generator (32 HTTP/1.1 connections, hyper client)
//! against three routes with identical bytes:
//!
//! * `/static`: the handler returns the bytes, no cache;
//! * `/cached`: a handler that sleeps 20 ms, behind `ResponseCacheLayer` (all hits
//!   after the first request);
//! * `/slow`: the same 20 ms handler, no cache.
//!
//! Prints `BENCH http_hit ratio=<cached/static> cached=<req/s> static=<req/s>` and
//! `BENCH http_speedup speedup=<cached/uncached>`. Figures run on whatever store
//! `PARTCACHE_URL` names (memory:// by default).
//!
//! Before that, in process (`tower::ServiceExt::oneshot` on the router, no sockets),
//! in alternating rounds, medians printed:
//!
//! * `BENCH http_miss ratio=<cached/bare>`: every request a new URL, a cache of
//!   10 000 entries, the time including the wait until the cache's background
//!   work (its store writes) has drained;
//! * `BENCH http_hit_inproc ratio=<cached/bare>`: one URL, every request a hit;
//! * `BENCH http_flood`: 200 000 unique-URL misses, 256 at a time, with the default
//!   bounds on pending store work: the most pending writes and bytes seen, how many
//!   responses were stored and dropped, and the process's resident memory after
//!   50 000 requests and at the end (`HTTP_BENCH_FLOOD_ONLY=1` runs only this, e.g.
//!   on a Redis store, where writes run in tasks of their own;
//!   `HTTP_FLOOD_MAX_PENDING=<n>` sets a smaller bound).
//!
//! `HTTP_BENCH_INPROC_ONLY=1` stops after the flood (no sockets); `=hit` or `=miss`
//! times that in-process path alone, for a profiler (`HTTP_BENCH_ROUNDS=<n>` sets the
//! number of rounds, 7 by default: 1 under an instruction counter such as callgrind).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use partcache::CacheManager;
use partcache_axum::ResponseCache;
use tower::ServiceExt;

const CONNECTIONS: usize = 32;
const PAYLOAD: &[u8] = &[b'x'; 1024];

async fn static_bytes() -> ([(&'static str, &'static str); 1], Bytes) {
    (
        [("cache-control", "max-age=300")],
        Bytes::from_static(PAYLOAD),
    )
}

async fn slow_bytes() -> ([(&'static str, &'static str); 1], Bytes) {
    tokio::time::sleep(Duration::from_millis(20)).await;
    (
        [("cache-control", "max-age=300")],
        Bytes::from_static(PAYLOAD),
    )
}

const ROUNDS: usize = 7;
const MISSES_PER_ROUND: usize = 20_000;
const HITS_PER_ROUND: usize = 50_000;

/// Requests per second of `count` sequential `oneshot` calls on `app`, for the URIs
/// `uri(i)`; `drained` is awaited before the clock stops.
async fn inproc(
    app: &Router,
    count: usize,
    uri: impl Fn(usize) -> String,
    drained: impl AsyncFn(),
) -> f64 {
    let start = Instant::now();
    for i in 0..count {
        let request = Request::get(uri(i))
            .header("host", "bench")
            .body(axum::body::Body::empty())
            .expect("request");
        let response = app.clone().oneshot(request).await.expect("response");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(body.len(), PAYLOAD.len());
    }
    drained().await;
    count as f64 / start.elapsed().as_secs_f64()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// `http_miss` and `http_hit_inproc`: alternating rounds, bare router against the
/// same router behind the cache, median of the per-round ratios.
async fn in_process(manager: &CacheManager, only: Option<&str>) {
    let bare = Router::new().route("/{*path}", get(static_bytes));
    let mut miss_ratios = Vec::new();
    let mut hit_ratios = Vec::new();
    let mut figures = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let rounds = std::env::var("HTTP_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(ROUNDS);
    for round in 0..rounds {
        // A fresh cache per round: every round starts from the same state.
        let cache = ResponseCache::builder(manager, format!("inproc-{round}"))
            .max_entries(10_000)
            .build()
            .await
            .expect("cache");
        let cached = Router::new()
            .route("/{*path}", get(static_bytes))
            .layer(cache.layer());
        let drained = async || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while cache.stats().backlog.pending_stores > 0 {
                assert!(Instant::now() < deadline, "background work never drained");
                tokio::task::yield_now().await;
            }
        };
        let miss_uri = |i: usize| format!("/m/{round}/{i}");
        let misses = if only != Some("hit") {
            MISSES_PER_ROUND
        } else {
            1
        };
        let bare_miss = inproc(&bare, misses, miss_uri, async || {}).await;
        let cached_miss = inproc(&cached, misses, miss_uri, drained).await;
        let hit_uri = |_| "/hit".to_string();
        let hits = if only != Some("miss") {
            HITS_PER_ROUND
        } else {
            1
        };
        let cached_hit = inproc(&cached, hits, hit_uri, drained).await;
        let bare_hit = inproc(&bare, hits, hit_uri, async || {}).await;
        let stats = cache.stats();
        assert!(stats.cache.hits >= hits as u64 - 1, "{stats:?}");
        miss_ratios.push(cached_miss / bare_miss);
        hit_ratios.push(cached_hit / bare_hit);
        figures.0.push(cached_miss);
        figures.1.push(bare_miss);
        figures.2.push(cached_hit);
        figures.3.push(bare_hit);
    }
    println!(
        "BENCH http_miss ratio={:.3} cached={:.0} bare={:.0} rounds={rounds}",
        median(miss_ratios),
        median(figures.0),
        median(figures.1)
    );
    println!(
        "BENCH http_hit_inproc ratio={:.3} cached={:.0} bare={:.0} rounds={rounds}",
        median(hit_ratios),
        median(figures.2),
        median(figures.3)
    );
}

/// Resident memory of this process in MiB (Linux; 0 elsewhere).
fn rss_mib() -> f64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

/// `http_flood`: unique-URL misses, `FLOOD_CONCURRENCY` at a time.
async fn flood(manager: &CacheManager) {
    use futures::StreamExt;
    const FLOOD: usize = 200_000;
    const FLOOD_CONCURRENCY: usize = 256;
    let cache = ResponseCache::builder(manager, "flood")
        .max_entries(10_000)
        .max_pending_stores(
            std::env::var("HTTP_FLOOD_MAX_PENDING")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(partcache_tower::backlog::DEFAULT_MAX_PENDING),
        )
        .build()
        .await
        .expect("cache");
    let app = Router::new()
        .route("/{*path}", get(static_bytes))
        .layer(cache.layer());
    let (mut most, mut most_bytes, mut rss_at_50k) = (0, 0, 0.0);
    let mut replies = futures::stream::iter(0..FLOOD)
        .map(|i| {
            let request = Request::get(format!("/flood/{i}"))
                .header("host", "bench")
                .body(axum::body::Body::empty())
                .expect("request");
            app.clone().oneshot(request)
        })
        .buffer_unordered(FLOOD_CONCURRENCY);
    let mut answered = 0;
    while let Some(response) = replies.next().await {
        let body = response
            .expect("response")
            .into_body()
            .collect()
            .await
            .expect("body");
        assert_eq!(body.to_bytes().len(), PAYLOAD.len());
        answered += 1;
        let stats = cache.stats();
        most = most.max(stats.backlog.pending_stores);
        most_bytes = most_bytes.max(stats.backlog.pending_store_bytes);
        if answered == 50_000 {
            rss_at_50k = rss_mib();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while cache.stats().backlog.pending_stores > 0 {
        assert!(Instant::now() < deadline, "background work never drained");
        tokio::task::yield_now().await;
    }
    let stats = cache.stats();
    println!(
        "BENCH http_flood requests={FLOOD} pending_max={most} pending_bytes_max={most_bytes} \
         stored={} dropped={} rss_mib_50k={rss_at_50k:.0} rss_mib_end={:.0}",
        stats.cache.stored,
        stats.backlog.stores_dropped,
        rss_mib()
    );
}

/// Requests per second over `duration` on `CONNECTIONS` keep-alive connections.
async fn load(addr: std::net::SocketAddr, path: &'static str, duration: Duration) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..CONNECTIONS {
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .expect("handshake");
            tokio::spawn(connection);
            while Instant::now() < deadline {
                let request = Request::get(path)
                    .header("host", "bench")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let response = sender.send_request(request).await.expect("response");
                let body = response
                    .into_body()
                    .collect()
                    .await
                    .expect("body")
                    .to_bytes();
                assert_eq!(body.len(), PAYLOAD.len());
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    for task in tasks {
        task.await.expect("load task");
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        partcache_redis::install();
        let manager = CacheManager::from_env().expect("PARTCACHE_URL");
        // `HTTP_BENCH_INPROC_ONLY=hit` or `=miss` times that one path alone (for a
        // profiler), without the flood and the socket runs.
        let only = std::env::var("HTTP_BENCH_INPROC_ONLY").ok();
        let only = only.as_deref().filter(|o| matches!(*o, "hit" | "miss"));
        if std::env::var_os("HTTP_BENCH_FLOOD_ONLY").is_none() {
            in_process(&manager, only).await;
        }
        if only.is_some() {
            return;
        }
        flood(&manager).await;
        if std::env::var_os("HTTP_BENCH_INPROC_ONLY").is_some() {
            return;
        }
        let cache = ResponseCache::builder(&manager, "http")
            .max_entries(10_000)
            .build()
            .await
            .expect("cache");
        let app = Router::new()
            .route("/static", get(static_bytes))
            .route("/slow", get(slow_bytes))
            .merge(
                Router::new()
                    .route("/cached", get(slow_bytes))
                    .layer(cache.layer()),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });

        let seconds = |s: f64| Duration::from_secs_f64(s);
        // Warm-up: connections, allocator, and the one miss that fills the cache.
        load(addr, "/cached", seconds(0.5)).await;
        load(addr, "/static", seconds(0.5)).await;
        let statik = load(addr, "/static", seconds(3.0)).await;
        let cached = load(addr, "/cached", seconds(3.0)).await;
        let uncached = load(addr, "/slow", seconds(2.0)).await;
        let stats = cache.stats();
        // The first 32 requests miss together and share one origin call.
        assert_eq!(
            stats.cache.misses - stats.cache.coalesced,
            1,
            "/cached must call its origin once: {stats:?}"
        );
        println!(
            "BENCH http_hit ratio={:.3} cached={:.0} static={:.0}",
            cached / statik,
            cached,
            statik
        );
        println!("BENCH http_speedup speedup={:.1}", cached / uncached);
    });
}
