//! A configuration mistake is an error from `build()` that carries the server's reason;
//! an outage is not: `build()` returns the cache, which opens once the store answers.
//! Real servers for the mistakes (a standalone server and a 3+3 cluster; dedicated ones
//! where a test changes the server's settings), and a scripted node for the busy
//! answers a real server gives only in passing (`LOADING`, `CLUSTERDOWN`, `MASTERDOWN`,
//! `TRYAGAIN`).

use crate::common;

use common::unique;

use std::time::{Duration, Instant};

use partcache::{Cache, CacheManager, Error};
use partcache_integration_tests::{
    ClusterOptions, Flavor, RedisCluster, RedisServer, ServerOptions,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// Short timeouts, so that the transient cases (which wait them out) stay quick.
const TIMEOUTS: &str = "connect_timeout=300ms&response_timeout=300ms";

/// How long `build()` may take in any case here: a permanent error comes at once, a
/// transient one within the timeouts above (a TLS attempt probes in plain text once
/// more); far below this.
const BUILD_BOUND: Duration = Duration::from_secs(3);

fn with_timeouts(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{TIMEOUTS}")
}

async fn build(url: &str) -> (partcache::Result<Cache<String, String>>, Duration) {
    let started = Instant::now();
    let manager = common::manager(url);
    let built = tokio::time::timeout(
        Duration::from_secs(10),
        manager
            .cache::<String, String>(&unique("misconfig"))
            .build(),
    )
    .await
    .expect("build() hung");
    (built, started.elapsed())
}

/// `build()` fails with a configuration error whose message holds `reason`.
async fn expect_permanent(url: &str, reason: &str) {
    let (built, took) = build(url).await;
    match built {
        Err(Error::Config(message)) => {
            eprintln!("{url}: {message} ({took:?})");
            assert!(
                message.contains(reason),
                "{url}: `{reason}` not in: {message}"
            );
        }
        Err(other) => panic!("{url}: expected a configuration error, got {other:?}"),
        Ok(_) => panic!("{url}: build() succeeded"),
    }
    assert!(took < BUILD_BOUND, "{url}: build() took {took:?}");
}

/// `build()` returns the cache (it opens lazily), and calls fail with a transient error.
async fn expect_transient(url: &str) {
    let (built, took) = build(url).await;
    let cache = match built {
        Ok(cache) => cache,
        Err(e) => panic!("{url}: expected a lazily opening cache, got {e:?}"),
    };
    assert!(took < BUILD_BOUND, "{url}: build() took {took:?}");
    let got = cache.get(&"k".to_string()).await;
    eprintln!("{url}: built in {took:?}; get: {got:?}");
    assert!(
        matches!(&got, Err(e) if e.is_transient()),
        "{url}: expected a transient error, got {got:?}"
    );
}

fn standalone_addr() -> String {
    tokio::task::block_in_place(|| common::standalone().addr())
}

fn cluster_seeds() -> String {
    let url = tokio::task::block_in_place(|| common::cluster().seed_url());
    url.split_once("://")
        .map(|(_, rest)| rest.split(['?', '/']).next().unwrap_or(rest).to_string())
        .expect("a seed URL")
}

/// A user that may connect and ping but run nothing partcache needs, on every node
/// `query` reaches.
fn limited_user(query: impl Fn(&[&str])) {
    query(&[
        "ACL",
        "SETUSER",
        "pc-limited",
        "on",
        ">pc-secret",
        "~*",
        "&*",
        "-@all",
        "+hello",
        "+ping",
        "+client",
        "+select",
        "+cluster|slots",
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_build_with_wrongpass() {
    let addr = standalone_addr();
    expect_permanent(
        &with_timeouts(&format!("redis://nobody:wrong@{addr}")),
        "WRONGPASS",
    )
    .await;
    let seeds = cluster_seeds();
    expect_permanent(
        &with_timeouts(&format!("redis-cluster://nobody:wrong@{seeds}")),
        "WRONGPASS",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_permission_fails_build_with_noperm() {
    tokio::task::block_in_place(|| {
        let server = common::standalone();
        limited_user(|args| {
            server.query::<()>(args).expect("ACL SETUSER");
        });
        let cluster = common::cluster();
        for i in 0..cluster.len() {
            limited_user(|args| {
                cluster.query_node::<()>(i, args).expect("ACL SETUSER");
            });
        }
    });
    let addr = standalone_addr();
    expect_permanent(
        &with_timeouts(&format!("redis://pc-limited:pc-secret@{addr}")),
        "NOPERM",
    )
    .await;
    let seeds = cluster_seeds();
    expect_permanent(
        &with_timeouts(&format!("redis-cluster://pc-limited:pc-secret@{seeds}")),
        "NOPERM",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_a_password_fails_build_without_one_with_noauth() {
    let server = tokio::task::block_in_place(|| {
        let server = RedisServer::start(Flavor::Redis, ServerOptions::default())
            .expect("start redis-server");
        server
            .query::<()>(&["CONFIG", "SET", "requirepass", "s3cret"])
            .expect("CONFIG SET requirepass");
        server
    });
    let addr = server.addr();
    expect_permanent(&with_timeouts(&format!("redis://{addr}")), "NOAUTH").await;
    // The right password opens it: the error was the password, nothing else.
    let (built, _) = build(&with_timeouts(&format!("redis://:s3cret@{addr}"))).await;
    let cache = built.expect("build with the password");
    cache
        .put("k".to_string(), "v".to_string())
        .await
        .expect("put");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_index_the_server_refuses_fails_build() {
    let addr = standalone_addr();
    expect_permanent(&with_timeouts(&format!("redis://{addr}/99999")), "DB index").await;
    // A cluster has no databases: refused when the URL is parsed.
    partcache_redis::install();
    let seeds = cluster_seeds();
    match CacheManager::from_url(&format!("redis-cluster://{seeds}/1")) {
        Err(Error::Config(message)) => assert!(message.contains("no databases"), "{message}"),
        other => panic!(
            "expected a configuration error, got {:?}",
            other.map(|_| ())
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_host_fails_from_url() {
    partcache_redis::install();
    for url in ["redis://[::1", "redis-cluster://127.0.0.1:7000,[::1"] {
        match CacheManager::from_url(url) {
            Err(Error::Config(message)) => assert!(message.contains("`[::1`"), "{message}"),
            other => panic!(
                "{url}: expected a configuration error, got {:?}",
                other.map(|_| ())
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_spoken_to_a_plain_text_server_fails_build() {
    let addr = standalone_addr();
    expect_permanent(&with_timeouts(&format!("rediss://{addr}")), "plain text").await;
    let seeds = cluster_seeds();
    expect_permanent(
        &with_timeouts(&format!("redis-cluster://{seeds}?tls=true")),
        "plain text",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mistyped_scheme_lists_the_registered_ones_without_asking_for_install() {
    partcache_redis::install();
    match CacheManager::from_url("redis-clustr://127.0.0.1:7000") {
        Err(Error::Config(message)) => {
            assert!(
                message.contains("did you mean `redis-cluster`?"),
                "{message}"
            );
            for scheme in partcache_redis::SCHEMES {
                assert!(
                    message.contains(&format!("`{scheme}`")),
                    "{scheme}: {message}"
                );
            }
            assert!(!message.contains("install()"), "{message}");
        }
        other => panic!(
            "expected a configuration error, got {:?}",
            other.map(|_| ())
        ),
    }
}

/// Redis before 7.0 has no `FCALL` or `FUNCTION`; a Redis 7 whose configuration
/// renames them away answers exactly as such a server does ("unknown command").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_functions_fails_build_and_so_does_a_cluster_with_a_password() {
    let no_functions = [
        "--rename-command",
        "FCALL",
        "",
        "--rename-command",
        "FUNCTION",
        "",
    ];
    let (server, cluster) = tokio::task::block_in_place(|| {
        let server = RedisServer::start(Flavor::Redis, ServerOptions::default().args(no_functions))
            .expect("start redis-server");
        let cluster = RedisCluster::start_with_options(
            Flavor::Redis,
            3,
            0,
            ClusterOptions {
                extra_args: no_functions.iter().map(|s| s.to_string()).collect(),
                ..ClusterOptions::default()
            },
        )
        .expect("start a cluster");
        (server, cluster)
    });
    expect_permanent(&with_timeouts(&server.url()), "Redis 7.0 or later").await;
    let seed = cluster.node_addr(0);
    expect_permanent(
        &with_timeouts(&format!("redis-cluster://{seed}")),
        "Redis 7.0 or later",
    )
    .await;
    // The same cluster with a password on every master, asked without one.
    tokio::task::block_in_place(|| {
        for i in 0..cluster.len() {
            cluster
                .query_node::<()>(i, &["CONFIG", "SET", "requirepass", "s3cret"])
                .expect("CONFIG SET requirepass");
        }
    });
    expect_permanent(&with_timeouts(&format!("redis-cluster://{seed}")), "NOAUTH").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_or_a_silent_server_opens_lazily() {
    let closed = partcache_integration_tests::ports::free_port().expect("a free port");
    expect_transient(&with_timeouts(&format!("redis://127.0.0.1:{closed}"))).await;
    expect_transient(&with_timeouts(&format!(
        "redis-cluster://127.0.0.1:{closed}"
    )))
    .await;
    // Accepts connections and never answers: a timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("address").port();
    let _accepting = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    expect_transient(&with_timeouts(&format!("redis://127.0.0.1:{port}"))).await;
    expect_transient(&with_timeouts(&format!("rediss://127.0.0.1:{port}"))).await;
    expect_transient(&with_timeouts(&format!("redis-cluster://127.0.0.1:{port}"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_server_opens_lazily() {
    for error in [
        "LOADING Redis is loading the dataset in memory",
        "CLUSTERDOWN The cluster is down",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
        "TRYAGAIN Multiple keys request during rehashing of slot",
    ] {
        let port = busy_node(error).await;
        expect_transient(&with_timeouts(&format!("redis://127.0.0.1:{port}"))).await;
        expect_transient(&with_timeouts(&format!("redis-cluster://127.0.0.1:{port}"))).await;
    }
}

/// A scripted node: completes redis-rs's connection handshake (`HELLO`, `CLIENT`,
/// `SELECT`, `PING`) like a server would, and answers every other command with `error`.
async fn busy_node(error: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("address").port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut read = BufReader::new(read);
                while let Some(command) = read_command(&mut read).await {
                    let reply = match command.first().map(|c| c.to_ascii_uppercase()).as_deref() {
                        Some("HELLO") => "%1\r\n+server\r\n+redis\r\n".to_string(),
                        Some("CLIENT" | "SELECT") => "+OK\r\n".to_string(),
                        Some("PING") => "+PONG\r\n".to_string(),
                        _ => format!("-{error}\r\n"),
                    };
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

/// One RESP command (an array of bulk strings), or `None` at the end of the stream.
async fn read_command(read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<Vec<String>> {
    let mut line = String::new();
    read.read_line(&mut line).await.ok()?;
    let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        read.read_line(&mut line).await.ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut bytes = vec![0; len + 2];
        read.read_exact(&mut bytes).await.ok()?;
        bytes.truncate(len);
        parts.push(String::from_utf8_lossy(&bytes).into_owned());
    }
    Some(parts)
}

/// `max_weight` (a weigher's budget: the embedded store's only) in a configuration
/// file is refused on a Redis store, which has no weight bound, before it connects (it
/// used to be ignored: the build checked only a weigher set in code).
#[tokio::test]
async fn max_weight_in_a_configuration_file_is_refused_on_redis() {
    partcache_redis::install();
    let manager = CacheManager::from_config_str(
        "url = \"redis://127.0.0.1:1?connect_timeout=100ms\"\n[caches.w]\nmax_weight = 100\n",
    )
    .expect("the file parses");
    match manager.cache::<u32, u32>("w").build().await {
        Err(Error::Config(message)) => assert!(message.contains("max_weight"), "{message}"),
        Ok(_) => panic!("built: `max_weight = 100` silently ignored"),
        Err(other) => panic!("{other}"),
    }
}
