//! partcache beside the crates a user would pick instead, on the same work in one
//! process: tower-http-cache, hitbox and axum-response-cache for HTTP responses,
//! `cached` for memoized functions and for Redis.
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml
//! ```
//!
//! Prints one line per path, each figure the median of alternating rounds in which the
//! contenders take turns (the order rotates every round):
//!
//! ```text
//! BENCH peer_<path> ratio=<partcache / best peer> best=<peer> <contender>=<ops/s> …
//!       cpu_us_<contender>=<µs> … rounds=<n>
//! ```
//!
//! Above 1, partcache is ahead of every peer. `cpu_us_*` is the CPU time one
//! operation cost this process (plus, after a `+`, the Redis server): on a machine
//! shared with other work it moves much less than throughput does. Contenders that are not peers (the bare
//! route, raw moka, raw redis-rs) are printed on the same line for scale and never
//! count as the best peer. The paths:
//!
//! * `peer_http_miss`, `peer_http_hit`: see [`responses`];
//! * `peer_fn_hit`: see [`functions`];
//! * `peer_redis_get`: see [`redis_store`] (starts a `redis-server` of its own).
//!
//! `PARTCACHE_BENCH_ONLY=http_miss,fn_hit` runs only those paths (`http_miss` and
//! `http_hit` run together), `PARTCACHE_BENCH_ROUNDS` sets the rounds (default 7,
//! 5 for Redis) and `PARTCACHE_BENCH_SECS` the seconds per Redis measurement (default
//! 1).

mod functions;
mod redis_store;
mod report;
mod responses;

use partcache_integration_tests::{Flavor, RedisServer, ServerOptions};

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "# {} worker threads; medians of alternating rounds (ops/s)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if report::wanted("http_miss") || report::wanted("http_hit") {
        runtime.block_on(responses::run());
    }
    if report::wanted("fn_hit") {
        runtime.block_on(functions::run());
    }
    if report::wanted("redis_get") {
        // Stopped (killed and its directory removed) when dropped at the end.
        let server =
            RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("redis-server");
        println!("# {}", server.binaries().version_line());
        let _ = report::SERVER_PIDS.set(server.pid().into_iter().collect());
        runtime.block_on(async {
            partcache_redis::install();
            redis_store::run(&server.url()).await;
        });
    }
}
