//! partcache over TLS, on real TLS-only servers (`--port 0 --tls-port …`) whose CA and
//! certificates the harness makes with `openssl`: the conformance suite on a standalone
//! server, mutual TLS with and without a client certificate, a CA that did not sign the
//! server's certificate (standalone and cluster: `build()` fails with the reason), and a
//! 3-master cluster with `tls-cluster yes`.

use crate::common;

use common::unique;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use partcache::event::{EventFilter, EventKind};
use partcache::{Cache, Error};
use partcache_integration_tests::{
    ClusterOptions, Flavor, RedisCluster, RedisServer, ServerOptions, TlsFiles, TlsMode,
};

/// One TLS server (server certificate only) per test binary (see `common` on statics).
fn tls_server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        RedisServer::start(
            Flavor::Redis,
            ServerOptions::default().tls(TlsMode::ServerAuth),
        )
        .expect("start a TLS redis-server")
    })
}

/// One server that requires client certificates (`tls-auth-clients yes`).
fn mutual_tls_server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default().tls(TlsMode::Mutual))
            .expect("start a mutual-TLS redis-server")
    })
}

async fn manager() -> partcache::CacheManager {
    let url = tokio::task::block_in_place(|| tls_server().url());
    assert!(
        url.starts_with("rediss://") && url.contains("tls_ca="),
        "{url}"
    );
    common::manager(&url)
}

/// The backend conformance suite, unchanged, over TLS.
mod conformance {
    use super::manager;

    partcache::conformance_suite!(manager);
}

/// The `connect_timeout` of the URLs that must be refused.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Checks that a cache on `url` is refused as a configuration mistake: `build()` fails
/// with [`Error::Config`] naming `cause` (the TLS reason) at once (within the connect
/// timeout, plus slack), rather than building a cache that answers `Unavailable`
/// forever.
async fn expect_refused(url: &str, cause: &str) {
    let started = Instant::now();
    let built = tokio::time::timeout(
        Duration::from_secs(10),
        common::manager(url)
            .cache::<String, String>(&unique("refused"))
            .build(),
    )
    .await
    .expect("building the cache hung");
    let elapsed = started.elapsed();
    match built {
        Err(Error::Config(m)) => assert!(m.contains(cause), "`{cause}` not in: {m}"),
        Err(e) => panic!("expected a configuration error naming `{cause}`, got {e:?}"),
        Ok(_) => panic!("build() succeeded"),
    }
    // The handshake fails at once; slack for a loaded 2-core machine.
    assert!(
        elapsed < CONNECT_TIMEOUT + Duration::from_secs(1),
        "took {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_the_client_certificate_serves_the_cache() {
    let url = tokio::task::block_in_place(|| mutual_tls_server().url());
    assert!(
        url.contains("tls_cert=") && url.contains("tls_key="),
        "{url}"
    );
    let cache: Cache<String, String> = common::manager(&url)
        .cache(&unique("mtls"))
        .build()
        .await
        .expect("build over mutual TLS");
    cache.put("a".to_string(), "1".to_string()).await.unwrap();
    assert_eq!(
        cache.get(&"a".to_string()).await.unwrap().as_deref(),
        Some(&"1".to_string())
    );
    assert!(cache.remove(&"a".to_string()).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_without_a_client_certificate_fails_build_within_the_connect_timeout() {
    let (port, ca) = tokio::task::block_in_place(|| {
        let server = mutual_tls_server();
        let tls = server.tls().expect("a TLS server");
        (server.port(), tls.ca_cert())
    });
    let url = format!(
        "rediss://127.0.0.1:{port}?tls_ca={}&connect_timeout={}ms",
        ca.display(),
        CONNECT_TIMEOUT.as_millis()
    );
    expect_refused(&url, "CertificateRequired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_that_did_not_sign_the_server_certificate_fails_build_not_a_hang() {
    let unrelated = tokio::task::block_in_place(|| {
        TlsFiles::generate(TlsMode::ServerAuth).expect("make an unrelated CA")
    });
    let port = tokio::task::block_in_place(|| tls_server().port());
    let url = format!(
        "rediss://127.0.0.1:{port}?tls_ca={}&connect_timeout={}ms",
        unrelated.ca_cert().display(),
        CONNECT_TIMEOUT.as_millis()
    );
    expect_refused(&url, "UnknownIssuer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_certificates_a_ca_not_trusted_signed_fails_build() {
    let (cluster, unrelated) = tokio::task::block_in_place(|| {
        let cluster = RedisCluster::start_with_options(
            Flavor::Redis,
            3,
            0,
            ClusterOptions {
                tls: Some(TlsMode::ServerAuth),
                ..ClusterOptions::default()
            },
        )
        .expect("start a TLS cluster");
        let unrelated = TlsFiles::generate(TlsMode::ServerAuth).expect("make an unrelated CA");
        (cluster, unrelated)
    });
    let url = cluster.seed_url();
    let (seeds, _) = url.split_once('?').expect("a query");
    let url = format!(
        "{seeds}?tls=true&tls_ca={}&connect_timeout={}ms",
        unrelated.ca_cert().display(),
        CONNECT_TIMEOUT.as_millis()
    );
    expect_refused(&url, "UnknownIssuer").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_insecure_accepts_a_certificate_no_trusted_ca_signed() {
    let port = tokio::task::block_in_place(|| tls_server().port());
    // No `tls_ca`: the system roots do not know the harness's CA either.
    let url = format!("rediss://127.0.0.1:{port}?tls_insecure=true");
    let cache: Cache<String, String> = common::manager(&url)
        .cache(&unique("insecure"))
        .build()
        .await
        .expect("build without verification");
    cache.put("a".to_string(), "1".to_string()).await.unwrap();
    assert!(cache.contains_key(&"a".to_string()).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tls_cluster_serves_every_master_and_delivers_events() {
    let cluster = tokio::task::block_in_place(|| {
        RedisCluster::start_with_options(
            Flavor::Redis,
            3,
            0,
            ClusterOptions {
                tls: Some(TlsMode::ServerAuth),
                ..ClusterOptions::default()
            },
        )
        .expect("start a TLS cluster")
    });
    let url = cluster.seed_url();
    assert!(url.contains("tls=true&tls_ca="), "{url}");
    let name = unique("tls-cluster");
    let cache: Cache<String, String> = common::manager(&url)
        .cache(&name)
        .build()
        .await
        .expect("build on the TLS cluster");
    // Another process's view: its events come over its own (sharded) subscription
    // connections, which must use TLS as well.
    let other: Cache<String, String> = common::manager(&url)
        .cache(&name)
        .build()
        .await
        .expect("build a second client");
    let mut events = other.listen(EventFilter::all()).await.expect("listen");

    let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
    for key in &keys {
        cache.put(key.clone(), format!("v-{key}")).await.unwrap();
    }
    for key in &keys {
        assert_eq!(
            cache.get(key).await.unwrap().as_deref(),
            Some(&format!("v-{key}"))
        );
    }
    let values = other.get_all(&keys).await.unwrap();
    assert!(values.iter().all(Option::is_some));
    let first = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event from the other client within 5 s")
        .expect("event channel");
    assert_eq!(first.kind, EventKind::Created);

    let report = cache.balance_report().await.unwrap();
    eprintln!("{report}");
    let masters: Vec<String> =
        tokio::task::block_in_place(|| cluster.masters().into_iter().map(|m| m.addr).collect());
    assert_eq!(report.masters.len(), 3, "{report}");
    for row in &report.masters {
        // The TLS ports (CLUSTER SLOTS reports them with `tls-cluster yes`).
        assert!(
            masters.contains(&row.master),
            "{} not in {masters:?}",
            row.master
        );
        assert!(row.partitions > 0, "{report}");
        assert!(row.entries > 0, "{report}");
    }
    assert_eq!(report.entries(), 300, "{report}");
}
