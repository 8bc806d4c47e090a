//! `/admin/caches` (HTML, refreshing itself every few seconds) and
//! `/admin/caches.json`: per cache, hit ratio, entries, evictions, latency; on a
//! partitioned store, partitions and entries per master as inline SVG bars; on Redis,
//! each store node's circuit breaker.

use std::fmt::Write;

use futures::future::join_all;
use partcache::{AnyCache, CacheManager};
use partcache_axum::ResponseCacheStats;
use partcache_sea_orm::QueryCacheStats;
use serde::{Deserialize, Serialize};

use crate::pages::{STYLE, escape};

/// Seconds between two refreshes of the HTML page.
pub(crate) const REFRESH_SECONDS: u32 = 5;

/// Everything the dashboard shows; `/admin/caches.json` is this, serialized.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Dashboard {
    /// The backend URL, with any password replaced by `***`.
    pub store: String,
    /// Whether caches are partitioned over several masters (a Redis Cluster).
    pub partitioned: bool,
    /// One entry per cache, by name.
    pub caches: Vec<CacheFigures>,
    /// The HTTP response cache's counters.
    pub http: HttpFigures,
    /// The sea-orm query and entity caches' counters.
    pub orm: OrmFigures,
    /// The circuit breaker of every store node the caches talk to (none on the
    /// embedded store).
    #[serde(default)]
    pub breakers: Vec<BreakerFigures>,
}

/// One store node's circuit breaker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BreakerFigures {
    /// The node's address.
    pub node: String,
    /// `closed` (calls go to the node), `open` (they fail at once) or `probing`.
    pub state: String,
    /// Seconds in that state.
    pub since_seconds: f64,
    /// Times it opened.
    pub opened: u64,
    /// Times it closed again.
    pub closed: u64,
    /// Calls that failed at once while it was open.
    pub rejected: u64,
    /// Probes sent while it was open.
    pub probes: u64,
}

impl From<partcache::stats::BreakerStats> for BreakerFigures {
    fn from(b: partcache::stats::BreakerStats) -> Self {
        BreakerFigures {
            node: b.node,
            state: b.state.as_str().to_string(),
            since_seconds: b.since.as_secs_f64(),
            opened: b.opened,
            closed: b.closed,
            rejected: b.rejected,
            probes: b.probes,
        }
    }
}

/// The breakers of every cache's nodes, once per node (caches of one manager share
/// their deployment's connections, so they report the same nodes).
pub(crate) fn breakers(manager: &CacheManager) -> Vec<partcache::stats::BreakerStats> {
    let mut nodes: Vec<partcache::stats::BreakerStats> = Vec::new();
    for cache in manager.caches() {
        for breaker in cache.breakers() {
            if !nodes.iter().any(|b| b.node == breaker.node) {
                nodes.push(breaker);
            }
        }
    }
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    nodes
}

/// One cache's figures (this process's statistics; entries from the store).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheFigures {
    /// The cache's name.
    pub name: String,
    /// The store behind it.
    pub store: String,
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found nothing.
    pub misses: u64,
    /// `hits / (hits + misses)`, 0 without reads.
    pub hit_ratio: f64,
    /// Reads served from the near cache (a local copy in front of Redis).
    pub near_hits: u64,
    /// Reads the near cache had to send to the store.
    pub near_misses: u64,
    /// Values stored.
    pub puts: u64,
    /// Entries removed by callers.
    pub removals: u64,
    /// Entries evicted for size.
    pub evictions: u64,
    /// Entries that expired.
    pub expirations: u64,
    /// Store errors and undecodable values.
    pub errors: u64,
    /// Entries now (approximate on Redis); `None` when the store could not say.
    pub entries: Option<u64>,
    /// Mean get latency, microseconds.
    pub avg_get_us: f64,
    /// Mean put latency, microseconds.
    pub avg_put_us: f64,
    /// The partition count, on a partitioned store.
    pub partitions: Option<u16>,
    /// Partitions and entries per master, on a partitioned store.
    pub masters: Option<Vec<MasterFigures>>,
    /// Why entries or the balance report are missing, if they are.
    pub error: Option<String>,
}

/// One master's share of a cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MasterFigures {
    /// The master's address.
    pub master: String,
    /// Partitions it holds.
    pub partitions: u16,
    /// Entries in them (approximate).
    pub entries: u64,
    /// Bytes in them (estimated).
    pub bytes: u64,
}

/// The response cache's counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpFigures {
    /// `x-cache: HIT` answers.
    pub hits: u64,
    /// Lookups that found nothing (each answered by the origin, or by a concurrent
    /// miss's response: see `coalesced`).
    pub misses: u64,
    /// Misses answered with a concurrent miss's response (labelled `x-cache: HIT`,
    /// counted here and in `misses`, not in `hits`).
    pub coalesced: u64,
    /// `x-cache: STALE` answers.
    pub stale: u64,
    /// `x-cache: BYPASS` answers.
    pub bypasses: u64,
    /// Responses stored.
    pub stored: u64,
    /// Entries removed by purges and unsafe requests.
    pub invalidated: u64,
    /// Store errors and timeouts the cache failed open on.
    pub store_errors: u64,
}

impl From<ResponseCacheStats> for HttpFigures {
    fn from(s: ResponseCacheStats) -> Self {
        HttpFigures {
            hits: s.cache.hits,
            misses: s.cache.misses,
            coalesced: s.cache.coalesced,
            stale: s.stale,
            bypasses: s.cache.bypasses,
            stored: s.cache.stored,
            invalidated: s.invalidated,
            store_errors: s.cache.store_errors + s.cache.store_timeouts,
        }
    }
}

/// The query cache's counters (results and entity rows together).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrmFigures {
    /// Results and rows served from the cache.
    pub hits: u64,
    /// Results and rows loaded from SQLite.
    pub misses: u64,
    /// Reads that went to SQLite without the cache.
    pub bypasses: u64,
    /// Table and row version bumps (one or more per write).
    pub bumps: u64,
    /// Store errors the cache failed open on.
    pub store_errors: u64,
}

impl From<QueryCacheStats> for OrmFigures {
    fn from(s: QueryCacheStats) -> Self {
        OrmFigures {
            hits: s.cache.hits,
            misses: s.cache.misses,
            bypasses: s.cache.bypasses,
            bumps: s.bumps,
            store_errors: s.cache.store_errors + s.cache.store_timeouts,
        }
    }
}

/// `scheme://user:password@host…` → `scheme://***@host…`: the dashboard is for
/// looking, not for leaking credentials.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => url.to_string(),
    }
}

async fn figures(cache: &dyn AnyCache) -> CacheFigures {
    let stats = cache.stats();
    let partitions = cache.partitions();
    let mut error = None;
    let (entries, masters) = if partitions.is_some() {
        let (len, balance) = futures::join!(cache.len(), cache.balance_report());
        let masters = match balance {
            Ok(report) => Some(
                report
                    .masters
                    .into_iter()
                    .map(|m| MasterFigures {
                        master: m.master,
                        partitions: m.partitions,
                        entries: m.entries,
                        bytes: m.bytes,
                    })
                    .collect(),
            ),
            Err(e) => {
                error = Some(e.to_string());
                None
            }
        };
        (len, masters)
    } else {
        (cache.len().await, None)
    };
    let entries = entries.map_err(|e| error = Some(e.to_string())).ok();
    CacheFigures {
        name: cache.name().to_string(),
        store: cache.store_description(),
        hits: stats.hits,
        misses: stats.misses,
        hit_ratio: stats.hit_ratio(),
        near_hits: stats.near_hits,
        near_misses: stats.near_misses,
        puts: stats.puts,
        removals: stats.removals,
        evictions: stats.evictions,
        expirations: stats.expirations,
        errors: stats.store_errors + stats.decode_errors,
        entries,
        avg_get_us: stats.average_get_time.as_secs_f64() * 1e6,
        avg_put_us: stats.average_put_time.as_secs_f64() * 1e6,
        partitions,
        masters,
        error,
    }
}

/// Collects the figures of every cache of `manager`, concurrently (on Redis: a
/// `len` and a balance report per cache, each bounded by the store's response timeout).
pub(crate) async fn collect(
    manager: &CacheManager,
    http: ResponseCacheStats,
    orm: QueryCacheStats,
) -> Dashboard {
    let caches = manager.caches();
    let caches = join_all(caches.iter().map(|c| figures(c.as_ref()))).await;
    Dashboard {
        store: redact_url(manager.url()),
        partitioned: caches.iter().any(|c| c.partitions.is_some()),
        caches,
        http: http.into(),
        orm: orm.into(),
        breakers: breakers(manager).into_iter().map(Into::into).collect(),
    }
}

fn micros(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// Horizontal bars, two per master (partitions, entries), each scaled to its own maximum.
fn balance_svg(cache: &str, masters: &[MasterFigures]) -> String {
    const LABEL: u32 = 150;
    const BAR: f64 = 260.0;
    const ROW: u32 = 46;
    let max_partitions = masters
        .iter()
        .map(|m| m.partitions)
        .max()
        .unwrap_or(0)
        .max(1);
    let max_entries = masters.iter().map(|m| m.entries).max().unwrap_or(0).max(1);
    let height = 24 + ROW * masters.len() as u32;
    let mut svg = format!(
        "<svg class=\"balance\" data-cache=\"{c}\" role=\"img\" aria-label=\"partitions and entries per master of {c}\" \
         xmlns=\"http://www.w3.org/2000/svg\" width=\"480\" height=\"{height}\" font-size=\"12\">\
         <rect x=\"{LABEL}\" y=\"2\" width=\"10\" height=\"10\" fill=\"#3b6fb6\"/><text x=\"{lx1}\" y=\"11\">partitions</text>\
         <rect x=\"{lx2}\" y=\"2\" width=\"10\" height=\"10\" fill=\"#2a9d4b\"/><text x=\"{lx3}\" y=\"11\">entries</text>",
        c = escape(cache),
        lx1 = LABEL + 14,
        lx2 = LABEL + 90,
        lx3 = LABEL + 104,
    );
    for (i, m) in masters.iter().enumerate() {
        let y = 22 + ROW * i as u32;
        let wp = BAR * f64::from(m.partitions) / f64::from(max_partitions);
        let we = BAR * m.entries as f64 / max_entries as f64;
        let _ = write!(
            svg,
            "<g data-master=\"{master}\" data-partitions=\"{p}\" data-entries=\"{e}\">\
             <text x=\"0\" y=\"{ty}\">{master}</text>\
             <rect x=\"{LABEL}\" y=\"{y}\" width=\"{wp:.1}\" height=\"16\" fill=\"#3b6fb6\"><title>{p} partitions</title></rect>\
             <text x=\"{px:.1}\" y=\"{ty}\">{p}</text>\
             <rect x=\"{LABEL}\" y=\"{y2}\" width=\"{we:.1}\" height=\"16\" fill=\"#2a9d4b\"><title>{e} entries</title></rect>\
             <text x=\"{ex:.1}\" y=\"{ty2}\">{e}</text></g>",
            master = escape(&m.master),
            p = m.partitions,
            e = m.entries,
            ty = y + 13,
            y2 = y + 19,
            ty2 = y + 32,
            px = f64::from(LABEL) + wp + 6.0,
            ex = f64::from(LABEL) + we + 6.0,
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The HTML page. Every figure sits in an element with `data-cache` (its row) and
/// `data-field` (which figure), so tests and scrapers can find them.
pub(crate) fn render(dashboard: &Dashboard) -> String {
    let mut rows = String::new();
    for c in &dashboard.caches {
        let entries = c
            .entries
            .map(|e| e.to_string())
            .unwrap_or_else(|| "?".into());
        let _ = write!(
            rows,
            "<tr data-cache=\"{name}\"><td data-field=\"name\">{name}</td>\
             <td data-field=\"hit_ratio\">{ratio:.1} %<span class=\"bar\"><span style=\"width:{ratio:.0}%\"></span></span></td>\
             <td data-field=\"hits\">{hits}</td><td data-field=\"misses\">{misses}</td>\
             <td data-field=\"near_hits\">{near_hits}</td>\
             <td data-field=\"entries\">{entries}</td><td data-field=\"puts\">{puts}</td>\
             <td data-field=\"evictions\">{evictions}</td><td data-field=\"expirations\">{expirations}</td>\
             <td data-field=\"errors\">{errors}</td><td data-field=\"avg_get\">{get}</td>\
             <td data-field=\"avg_put\">{put}</td></tr>",
            name = escape(&c.name),
            ratio = c.hit_ratio * 100.0,
            hits = c.hits,
            misses = c.misses,
            near_hits = c.near_hits,
            puts = c.puts,
            evictions = c.evictions,
            expirations = c.expirations,
            errors = c.errors,
            get = micros(c.avg_get_us),
            put = micros(c.avg_put_us),
        );
    }
    let mut balance = String::new();
    if dashboard.partitioned {
        balance.push_str("<h2>Partitions and entries per master</h2><div class=\"balances\">");
        for c in &dashboard.caches {
            match (&c.masters, c.partitions) {
                (Some(masters), Some(p)) => {
                    let _ = write!(
                        balance,
                        "<section data-cache=\"{name}\"><h3>{name} <span class=\"muted\">{p} partitions over {m} masters</span></h3>{svg}</section>",
                        name = escape(&c.name),
                        m = masters.len(),
                        svg = balance_svg(&c.name, masters),
                    );
                }
                _ => {
                    let _ = write!(
                        balance,
                        "<section data-cache=\"{}\"><h3>{}</h3><p class=\"muted\">no balance report: {}</p></section>",
                        escape(&c.name),
                        escape(&c.name),
                        escape(c.error.as_deref().unwrap_or("not partitioned"))
                    );
                }
            }
        }
        balance.push_str("</div>");
    }
    let mut nodes = String::new();
    if !dashboard.breakers.is_empty() {
        nodes.push_str(
            "<h2>Store nodes</h2><table id=\"breakers\"><thead><tr><th>node</th><th>circuit breaker</th>\
             <th>for</th><th>opened</th><th>closed</th><th>calls refused</th><th>probes</th></tr></thead><tbody>",
        );
        for b in &dashboard.breakers {
            let _ = write!(
                nodes,
                "<tr data-node=\"{node}\"><td>{node}</td><td data-field=\"state\" class=\"breaker-{state}\">{state}</td>\
                 <td>{since:.0} s</td><td data-field=\"opened\">{opened}</td><td data-field=\"closed\">{closed}</td>\
                 <td data-field=\"rejected\">{rejected}</td><td data-field=\"probes\">{probes}</td></tr>",
                node = escape(&b.node),
                state = escape(&b.state),
                since = b.since_seconds,
                opened = b.opened,
                closed = b.closed,
                rejected = b.rejected,
                probes = b.probes,
            );
        }
        nodes.push_str("</tbody></table>");
    }
    let h = &dashboard.http;
    let o = &dashboard.orm;
    let errors: String = dashboard
        .caches
        .iter()
        .filter_map(|c| {
            c.error
                .as_ref()
                .map(|e| format!("<li>{}: {}</li>", escape(&c.name), escape(e)))
        })
        .collect();
    let errors = if errors.is_empty() {
        String::new()
    } else {
        format!("<h2>Store problems</h2><ul class=\"errors\">{errors}</ul>")
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\"><title>Caches · partcache storefront</title>\
         <style>{STYLE}</style></head><body>\
         <nav><a href=\"/\">storefront</a> · <a href=\"/admin/caches.json\">JSON</a> · <a href=\"/metrics\">metrics</a></nav>\
         <h1>Caches</h1><p class=\"muted\">store <code id=\"store\">{store}</code> · {n} caches · \
         statistics of this process since start · refreshes every {REFRESH_SECONDS} s</p>\
         <table id=\"caches\"><thead><tr><th>cache</th><th>hit ratio</th><th>hits</th><th>misses</th><th>near hits</th><th>entries</th>\
         <th>puts</th><th>evictions</th><th>expirations</th><th>errors</th><th>avg get</th><th>avg put</th></tr></thead>\
         <tbody>{rows}</tbody></table>{balance}{nodes}{errors}\
         <h2>HTTP response cache</h2><table id=\"http\"><tr><th>hits</th><th>misses</th><th>coalesced</th><th>stale</th><th>bypasses</th>\
         <th>stored</th><th>invalidated</th><th>store errors</th></tr><tr><td data-field=\"http_hits\">{hh}</td>\
         <td data-field=\"http_misses\">{hm}</td><td data-field=\"http_coalesced\">{hc}</td><td>{hs}</td><td>{hb}</td>\
         <td data-field=\"http_stored\">{hst}</td><td>{hi}</td><td>{he}</td></tr></table>\
         <h2>sea-orm query &amp; entity cache</h2><table id=\"orm\"><tr><th>hits</th><th>misses</th><th>bypasses</th>\
         <th>version bumps</th><th>store errors</th></tr><tr><td data-field=\"orm_hits\">{oh}</td>\
         <td data-field=\"orm_misses\">{om}</td><td>{ob}</td><td>{obu}</td><td>{oe}</td></tr></table>\
         </body></html>",
        store = escape(&dashboard.store),
        n = dashboard.caches.len(),
        hh = h.hits,
        hm = h.misses,
        hc = h.coalesced,
        hs = h.stale,
        hb = h.bypasses,
        hst = h.stored,
        hi = h.invalidated,
        he = h.store_errors,
        oh = o.hits,
        om = o.misses,
        ob = o.bypasses,
        obu = o.bumps,
        oe = o.store_errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_dashboard() {
        assert_eq!(redact_url("memory://"), "memory://");
        assert_eq!(
            redact_url("redis://user:secret@10.0.0.1:6379/0"),
            "redis://***@10.0.0.1:6379/0"
        );
        assert_eq!(
            redact_url("redis-cluster://:pw@h1:7000,h2:7001?partitions=64"),
            "redis-cluster://***@h1:7000,h2:7001?partitions=64"
        );
        assert_eq!(
            redact_url("redis://h:6379/0?x=a@b"),
            "redis://h:6379/0?x=a@b"
        );
    }

    #[test]
    fn breakers_are_listed_with_their_state() {
        let dashboard = Dashboard {
            store: "redis://h:1".into(),
            partitioned: false,
            caches: Vec::new(),
            http: ResponseCacheStats::default().into(),
            orm: QueryCacheStats::default().into(),
            breakers: vec![BreakerFigures {
                node: "127.0.0.1:7000".into(),
                state: "open".into(),
                since_seconds: 2.0,
                opened: 1,
                closed: 0,
                rejected: 42,
                probes: 3,
            }],
        };
        let html = render(&dashboard);
        assert!(html.contains("<tr data-node=\"127.0.0.1:7000\">"), "{html}");
        assert!(
            html.contains("data-field=\"state\" class=\"breaker-open\">open<"),
            "{html}"
        );
        assert!(html.contains("data-field=\"rejected\">42<"), "{html}");
    }

    #[test]
    fn balance_bars_carry_one_group_per_master() {
        let masters = vec![
            MasterFigures {
                master: "127.0.0.1:7000".into(),
                partitions: 77,
                entries: 10,
                bytes: 100,
            },
            MasterFigures {
                master: "127.0.0.1:7001".into(),
                partitions: 77,
                entries: 0,
                bytes: 0,
            },
        ];
        let svg = balance_svg("http", &masters);
        assert_eq!(svg.matches("<g data-master=").count(), 2);
        assert!(
            svg.contains(
                "data-master=\"127.0.0.1:7000\" data-partitions=\"77\" data-entries=\"10\""
            )
        );
        // The longest bar is the full width; an empty master gets a zero-width bar.
        assert!(svg.contains("width=\"260.0\""));
        assert!(svg.contains("width=\"0.0\""));
    }
}
