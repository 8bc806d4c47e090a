//! Soak check: the storefront under a steady mixed load (reads, writes, tag purges,
//! refused writes) for a while, on the embedded store or a Redis cluster.
//!
//! ```text
//! cargo run --release -p storefront --example soak                       # memory://, 10 minutes
//! cargo run --release -p storefront --example soak -- --cluster         # a 3+3 Redis cluster it starts
//! cargo run --release -p storefront --example soak -- --minutes 1 --rate 500
//! PARTCACHE_URL=redis://127.0.0.1:6379 cargo run --release -p storefront --example soak
//! ```
//!
//! It starts the storefront in this process on a free port and sends it `--rate`
//! requests a second over real sockets from `--tasks` tasks. Every `--every` seconds it
//! prints the window's request rate, the product pages' hit ratio, p50/p99 latency,
//! errors and the process's resident memory; at the end, the totals and whether memory
//! levelled off (it grew by less than 10% over the second half of the run, once the
//! caches are full). It exits non-zero on any error or on memory that keeps growing.
//!
//! Not part of the test command: it runs for minutes by design.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use partcache_integration_tests::{Flavor, RedisCluster};
use storefront::{Config, Seq, Storefront};
use tokio::sync::Mutex;

/// What the command line asked for.
struct Options {
    minutes: f64,
    rate: u64,
    tasks: u64,
    every: u64,
    cluster: bool,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        minutes: 10.0,
        rate: 1_000,
        tasks: 16,
        every: 30,
        cluster: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--minutes" => options.minutes = number(&value("--minutes")?)?,
            "--rate" => options.rate = number(&value("--rate")?)?,
            "--tasks" => options.tasks = number(&value("--tasks")?)?,
            "--every" => options.every = number(&value("--every")?)?,
            "--cluster" => options.cluster = true,
            other => {
                return Err(format!(
                    "unknown argument `{other}`; known: --minutes M --rate R --tasks T --every S --cluster"
                ));
            }
        }
    }
    if options.rate == 0 || options.tasks == 0 || options.every == 0 || options.minutes <= 0.0 {
        return Err("--minutes, --rate, --tasks and --every must be above zero".into());
    }
    Ok(options)
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e| format!("`{text}`: {e}"))
}

/// The kinds of request in the mix, with their shares in percent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `GET /products/{id}`: the response cache's route (70%).
    Page,
    /// `GET /`: best sellers and product cards (8%).
    Home,
    /// `GET /api/products?…`: the query cache (7%).
    Search,
    /// `GET /api/products/{id}`: the entity cache (5%).
    Entity,
    /// `PUT /products/{id}` with a new price: a write, a page invalidation and a tag
    /// purge (5%).
    Write,
    /// `PUT /products/{id}` with a negative price: refused with 422 (3%).
    RefusedWrite,
    /// `GET /admin/caches.json` (2%).
    Dashboard,
}

impl Kind {
    fn pick(r: u64) -> Kind {
        match r % 100 {
            0..70 => Kind::Page,
            70..78 => Kind::Home,
            78..85 => Kind::Search,
            85..90 => Kind::Entity,
            90..95 => Kind::Write,
            95..98 => Kind::RefusedWrite,
            _ => Kind::Dashboard,
        }
    }

    fn expected(self) -> StatusCode {
        match self {
            Kind::RefusedWrite => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::OK,
        }
    }
}

/// What one window (or the whole run) saw.
#[derive(Default)]
struct Window {
    latencies_us: Vec<u32>,
    pages: u64,
    page_hits: u64,
    errors: u64,
}

impl Window {
    fn percentile(sorted: &[u32], p: f64) -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        f64::from(sorted[i]) / 1000.0
    }
}

/// The storefront's dashboard, read over HTTP as an operator would.
async fn dashboard(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: std::net::SocketAddr,
) -> Option<storefront::Dashboard> {
    let uri = format!("http://{addr}/admin/caches.json").parse().ok()?;
    let response = client.get(uri).await.ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// Entries held by every cache the storefront opened.
fn entries(dashboard: &storefront::Dashboard) -> u64 {
    dashboard.caches.iter().filter_map(|c| c.entries).sum()
}

/// Resident memory of this process, in MiB (Linux `/proc`); `None` elsewhere.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = options()?;
    // The cluster, when asked for, lives until the run ends.
    let mut cluster = None;
    let mut config = Config::from_env();
    if options.cluster {
        let started = RedisCluster::start(Flavor::Redis, 3, 1)?;
        config.cache_url = started.seed_url();
        cluster = Some(started);
    }
    let storefront = Storefront::start(&config).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(storefront.serve(listener, async move {
        let _ = stopped.await;
    }));
    println!(
        "soak: storefront on http://{addr}, caches {}, {} requests/s from {} tasks for {} min",
        storefront::redact_url(&config.cache_url),
        options.rate,
        options.tasks,
        options.minutes
    );

    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let window = Arc::new(Mutex::new(Window::default()));
    let total = Arc::new(Mutex::new(Window::default()));
    let requests = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let run = Duration::from_secs_f64(options.minutes * 60.0);
    let per_task = Duration::from_secs_f64(options.tasks as f64 / options.rate as f64);

    let mut tasks = Vec::new();
    for task in 0..options.tasks {
        let client = client.clone();
        let (window, done, requests) = (window.clone(), done.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            let mut seq = Seq(0x9E37_79B9_7F4A_7C15 ^ (task + 1).wrapping_mul(0x2545_F491));
            let mut tick = tokio::time::interval(per_task);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                let kind = Kind::pick(seq.next_u64());
                let id = seq.popular_product();
                let (method, path, body) = match kind {
                    Kind::Page => (Method::GET, format!("/products/{id}"), None),
                    Kind::Home => (Method::GET, "/".to_string(), None),
                    Kind::Search => {
                        let words = ["pen", "paper", "ink", "bag", "lamp", "note"];
                        let word = words[(seq.next_u64() % words.len() as u64) as usize];
                        // A few common searches, as real traffic has: the query cache
                        // fills up early and the run then measures steady state.
                        let max = 500 + 250 * (seq.next_u64() % 20);
                        let path = format!("/api/products?q={word}&max_price_cents={max}");
                        (Method::GET, path, None)
                    }
                    Kind::Entity => (Method::GET, format!("/api/products/{id}"), None),
                    Kind::Write => {
                        let price = 199 + seq.next_u64() % 5000;
                        let body = format!(r#"{{"price_cents": {price}}}"#);
                        (Method::PUT, format!("/products/{id}"), Some(body))
                    }
                    Kind::RefusedWrite => (
                        Method::PUT,
                        format!("/products/{id}"),
                        Some(r#"{"price_cents": -1}"#.to_string()),
                    ),
                    Kind::Dashboard => (Method::GET, "/admin/caches.json".to_string(), None),
                };
                let mut request = Request::builder()
                    .method(method)
                    .uri(format!("http://{addr}{path}"));
                if body.is_some() {
                    request = request.header("content-type", "application/json");
                }
                let Ok(request) = request.body(Full::new(Bytes::from(body.unwrap_or_default())))
                else {
                    continue;
                };
                let started = Instant::now();
                let answer = tokio::time::timeout(Duration::from_secs(10), async {
                    let response = client.request(request).await.map_err(|e| e.to_string())?;
                    let (parts, body) = response.into_parts();
                    body.collect().await.map_err(|e| e.to_string())?;
                    Ok::<_, String>(parts)
                })
                .await;
                let elapsed = started.elapsed();
                requests.fetch_add(1, Ordering::Relaxed);
                let mut w = window.lock().await;
                w.latencies_us
                    .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
                match answer {
                    Ok(Ok(parts)) if parts.status == kind.expected() => {
                        if kind == Kind::Page {
                            w.pages += 1;
                            let hit = parts
                                .headers
                                .get("x-cache")
                                .is_some_and(|v| v.as_bytes() == b"HIT");
                            w.page_hits += u64::from(hit);
                        }
                    }
                    Ok(Ok(parts)) => {
                        w.errors += 1;
                        eprintln!(
                            "soak: {path} answered {} (expected {})",
                            parts.status,
                            kind.expected()
                        );
                    }
                    Ok(Err(error)) => {
                        w.errors += 1;
                        eprintln!("soak: {path}: {error}");
                    }
                    Err(_) => {
                        w.errors += 1;
                        eprintln!("soak: {path}: no answer within 10 s");
                    }
                }
            }
        }));
    }

    println!(
        "{:>7} {:>8} {:>9} {:>8} {:>8} {:>7} {:>8} {:>8}",
        "t(s)", "req/s", "page hit", "p50 ms", "p99 ms", "errors", "rss MiB", "entries"
    );
    let started = Instant::now();
    let mut rss_half = None;
    let mut rss_samples = Vec::new();
    let mut last = Instant::now();
    while started.elapsed() < run {
        let left = run.saturating_sub(started.elapsed());
        tokio::time::sleep(Duration::from_secs(options.every).min(left)).await;
        let mut w = std::mem::take(&mut *window.lock().await);
        let seconds = last.elapsed().as_secs_f64();
        last = Instant::now();
        w.latencies_us.sort_unstable();
        let rss = rss_mib().unwrap_or(0.0);
        rss_samples.push(rss);
        if rss_half.is_none() && started.elapsed() >= run / 2 {
            rss_half = Some(rss);
        }
        let board = dashboard(&client, addr).await;
        println!(
            "{:>7.0} {:>8.0} {:>8.1}% {:>8.2} {:>8.2} {:>7} {:>8.1} {:>8}",
            started.elapsed().as_secs_f64(),
            w.latencies_us.len() as f64 / seconds,
            100.0 * w.page_hits as f64 / w.pages.max(1) as f64,
            Window::percentile(&w.latencies_us, 0.50),
            Window::percentile(&w.latencies_us, 0.99),
            w.errors,
            rss,
            board.as_ref().map_or(0, entries)
        );
        let mut t = total.lock().await;
        t.latencies_us.extend_from_slice(&w.latencies_us);
        t.pages += w.pages;
        t.page_hits += w.page_hits;
        t.errors += w.errors;
    }
    if let Some(board) = dashboard(&client, addr).await {
        let held: Vec<String> = board
            .caches
            .iter()
            .map(|c| {
                format!(
                    "{} {}",
                    c.name,
                    c.entries.map_or("?".into(), |n| n.to_string())
                )
            })
            .collect();
        println!("soak: entries per cache at the end: {}", held.join(", "));
    }
    done.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    let _ = stop_server.send(());
    server.await??;
    drop(cluster);

    let mut t = std::mem::take(&mut *total.lock().await);
    t.latencies_us.sort_unstable();
    let rss_end = rss_samples.last().copied().unwrap_or(0.0);
    let rss_half = rss_half.unwrap_or(rss_end);
    let growth = if rss_half > 0.0 {
        100.0 * (rss_end - rss_half) / rss_half
    } else {
        0.0
    };
    let levelled = growth < 10.0;
    println!(
        "soak: {} requests in {:.0} s, page hit ratio {:.1}%, p50 {:.2} ms, p99 {:.2} ms, errors {}, \
         rss {:.1} MiB at half time, {:.1} MiB at the end ({:+.1}%: {})",
        requests.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64(),
        100.0 * t.page_hits as f64 / t.pages.max(1) as f64,
        Window::percentile(&t.latencies_us, 0.50),
        Window::percentile(&t.latencies_us, 0.99),
        t.errors,
        rss_half,
        rss_end,
        growth,
        if levelled {
            "levelled off"
        } else {
            "still growing"
        }
    );
    if t.errors > 0 || !levelled {
        return Err("soak failed: errors, or memory still growing".into());
    }
    Ok(())
}
