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
        let manager = CacheManager::from_env().expect("PARTCACHE_URL");
        let cache = ResponseCache::builder(
            manager
                .cache("http")
                .max_entries(10_000)
                .build()
                .await
                .expect("cache"),
        )
        .build();
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
            stats.misses - stats.coalesced,
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
