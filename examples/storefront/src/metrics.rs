//! `/metrics` in Prometheus text format, through the `metrics` facade and
//! `metrics-exporter-prometheus`.
//!
//! What is exported: every cache's statistics (`partcache_hits_total{cache=..}` and the
//! other series listed in `partcache::stats`), pushed from the caches' counters at each
//! scrape; the latency histogram `partcache_operation_duration_seconds{cache,op}`,
//! recorded by the caches as operations happen; and the response cache's and the query
//! cache's own counters (`partcache_http_responses_total{result=..}`,
//! `partcache_orm_reads_total{result=..}`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use partcache::CacheManager;
use partcache::stats::LATENCY_HISTOGRAM;
use partcache_axum::ResponseCacheStats;
use partcache_sea_orm::QueryCacheStats;

/// Histogram buckets for cache operations, in seconds: a local hit is well under a
/// microsecond, a Redis round trip a few hundred microseconds.
const LATENCY_BUCKETS: [f64; 14] = [
    0.000_000_5,
    0.000_001,
    0.000_005,
    0.000_01,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.05,
    0.25,
];

/// Installs the Prometheus recorder as the process's `metrics` recorder, once; later
/// calls return the same handle. `None` (logged) when another recorder was installed
/// first: `/metrics` then answers 503.
///
/// Must run before caches are built: they resolve their latency histograms when built.
pub(crate) fn install() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(LATENCY_HISTOGRAM.into()), &LATENCY_BUCKETS)
                .map_err(|e| tracing::error!(error = %e, "invalid histogram buckets"))
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    // The exporter keeps histogram samples until upkeep folds them in;
                    // without scrapes they would grow, so fold them in periodically.
                    let upkeep = handle.clone();
                    let spawned = std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(Duration::from_secs(5));
                                upkeep.run_upkeep();
                            }
                        });
                    if let Err(error) = spawned {
                        tracing::warn!(%error, "no metrics upkeep thread; histograms are folded in at scrapes only");
                    }
                    Some(handle)
                }
                Err(error) => {
                    tracing::error!(%error, "cannot install the Prometheus recorder; /metrics is off");
                    None
                }
            }
        })
        .clone()
}

/// The text a scrape gets: the caches' statistics are pushed first, so counters are
/// current to the scrape.
pub(crate) fn render(
    handle: &PrometheusHandle,
    manager: &CacheManager,
    http: ResponseCacheStats,
    orm: QueryCacheStats,
) -> String {
    manager.publish_metrics();
    for breaker in crate::admin::breakers(manager) {
        breaker.publish();
    }
    let responses = [
        ("hit", http.cache.hits),
        ("miss", http.cache.misses),
        ("stale", http.stale),
        ("bypass", http.cache.bypasses),
    ];
    for (result, value) in responses {
        metrics::counter!("partcache_http_responses_total", "result" => result).absolute(value);
    }
    let reads = [
        ("hit", orm.cache.hits),
        ("miss", orm.cache.misses),
        ("bypass", orm.cache.bypasses),
    ];
    for (result, value) in reads {
        metrics::counter!("partcache_orm_reads_total", "result" => result).absolute(value);
    }
    handle.render()
}
