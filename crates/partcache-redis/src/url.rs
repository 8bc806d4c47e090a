//! Parsing of `redis://`, `redis-cluster://` and friends into a [`DeploymentUrl`].
//!
//! Parsing never connects (its only I/O is reading the `tls_ca`, `tls_cert` and
//! `tls_key` files): every error is an [`Error::Config`] that names the offending part
//! of the URL.

use std::time::Duration;

use partcache::partition::{MIN_PARTITIONS, SLOT_COUNT};
use partcache::{Error, Result};

pub use crate::breaker::BreakerSettings;
pub use crate::settings::BatchingSettings;
pub use crate::tls::{ClientCertificate, PemFile, TlsOptions};
use crate::tls::{PemKind, read_parameter};

/// Default for `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default for `response_timeout`: every call returns within it.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What kind of deployment a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentKind {
    /// One server (`redis://`, `rediss://`, `valkey://`, `valkeys://`).
    Standalone,
    /// A Redis Cluster, given by seed nodes (`redis-cluster://`, `valkey-cluster://`).
    Cluster,
}

/// A parsed deployment URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentUrl {
    /// The URL as given, with the password masked (for logs and `describe`).
    pub display: String,
    /// Standalone or cluster.
    pub kind: DeploymentKind,
    /// `host:port` of the server, or of every seed node.
    pub nodes: Vec<String>,
    /// TLS (`rediss`, `valkeys`, or `tls=true`).
    pub tls: bool,
    /// How TLS connections are verified and which client certificate they present
    /// (`tls_ca`, `tls_cert` + `tls_key`, `tls_insecure`; the files are read by
    /// [`parse`]). Ignored without [`tls`](Self::tls).
    pub tls_options: TlsOptions,
    /// ACL user name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Database number (standalone only), 0 to [`MAX_DATABASE`].
    pub db: i64,
    /// Partition count for caches that do not set one.
    pub partitions: Option<u16>,
    /// Lease time to live for caches that do not set one (see
    /// `partcache::CacheBuilder::lease_ttl`).
    pub lease_ttl: Option<Duration>,
    /// Deadline for opening a connection.
    pub connect_timeout: Duration,
    /// Deadline for every call's round trips. One longer than a year (such as
    /// `Duration::MAX`, for no timeout) is a year.
    pub response_timeout: Duration,
    /// Serve plain reads (no expiry or LRU bookkeeping) from replicas.
    pub read_from_replicas: bool,
    /// When a node's circuit breaker opens and how often it is probed
    /// (`breaker_failures`, `breaker_probe_interval`).
    pub breaker: BreakerSettings,
    /// The bound on the requests waiting to go in a batch (`max_pending_batched`,
    /// `max_pending_batched_bytes`).
    pub batching: BatchingSettings,
}

/// Every query parameter the URLs accept.
const PARAMETERS: &[&str] = &[
    "partitions",
    "lease_ttl",
    "connect_timeout",
    "response_timeout",
    "read_from_replicas",
    "breaker_failures",
    "breaker_probe_interval",
    "max_pending_batched",
    "max_pending_batched_bytes",
    "tls",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "tls_insecure",
];

/// Parses a deployment URL. See the crate docs for the accepted forms.
pub fn parse(url: &str) -> Result<DeploymentUrl> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::Config(format!("`{}` is not a URL (no `://`)", mask(url))))?;
    let (kind, mut tls) = match scheme {
        "redis" | "valkey" => (DeploymentKind::Standalone, false),
        "rediss" | "valkeys" => (DeploymentKind::Standalone, true),
        "redis-cluster" | "valkey-cluster" => (DeploymentKind::Cluster, false),
        other => {
            return Err(Error::Config(format!(
                "`{other}://` is not a Redis URL scheme (expected redis, rediss, valkey, valkeys, redis-cluster or valkey-cluster)"
            )));
        }
    };
    refuse_misplaced_at(url)?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = match info.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                // `redis://secret@host` is a password, as redis-cli and redis-rs read it.
                None => ("", Some(info)),
            };
            let user = decode(user, "the user name")?;
            let pass = pass.map(|p| decode(p, "the password")).transpose()?;
            ((!user.is_empty()).then_some(user), pass)
        }
    };
    let nodes = hosts
        .split(',')
        .map(|host| node(host, url))
        .collect::<Result<Vec<_>>>()?;
    if kind == DeploymentKind::Standalone && nodes.len() != 1 {
        return Err(Error::Config(format!(
            "`{scheme}://` takes one host, got {} in `{}` (use `redis-cluster://` for a cluster)",
            nodes.len(),
            mask(url)
        )));
    }
    let db = match path.trim_matches('/') {
        "" => 0,
        db if kind == DeploymentKind::Standalone => database(db, url)?,
        db => {
            return Err(Error::Config(format!(
                "a cluster has no databases, but `{}` names database `{db}`",
                mask(url)
            )));
        }
    };
    let mut parsed = DeploymentUrl {
        display: mask(url),
        kind,
        nodes,
        tls,
        tls_options: TlsOptions::default(),
        username,
        password,
        db,
        partitions: None,
        lease_ttl: None,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        read_from_replicas: false,
        breaker: BreakerSettings::default(),
        batching: BatchingSettings::default(),
    };
    // Paths of the TLS files: read once the whole query is known to be valid.
    let (mut tls_ca, mut tls_cert, mut tls_key) = (None, None, None);
    let mut seen = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !PARAMETERS.contains(&name) {
            return Err(unknown_parameter(name, &parsed.display));
        }
        let value = parameter_value(name, value, &mut seen)?;
        match name {
            "partitions" => parsed.partitions = Some(partitions(&value)?),
            "lease_ttl" => parsed.lease_ttl = Some(lease_ttl(&value)?),
            "connect_timeout" => parsed.connect_timeout = duration(name, &value)?,
            "response_timeout" => parsed.response_timeout = duration(name, &value)?,
            "read_from_replicas" => parsed.read_from_replicas = boolean(name, &value)?,
            "breaker_failures" => {
                parsed.breaker.failures = whole(&value).ok_or_else(|| {
                    Error::Config(format!(
                        "`breaker_failures={value}`: expected a count of timeouts (0 turns breakers off)"
                    ))
                })?;
            }
            "breaker_probe_interval" => parsed.breaker.probe_interval = duration(name, &value)?,
            "max_pending_batched" => parsed.batching.max_pending = count(name, &value)?,
            "max_pending_batched_bytes" => {
                parsed.batching.max_pending_bytes = count(name, &value)?;
            }
            "tls" => {
                tls = boolean(name, &value)?;
                parsed.tls = tls;
            }
            "tls_ca" => tls_ca = Some(file_path(name, value)?),
            "tls_cert" => tls_cert = Some(file_path(name, value)?),
            "tls_key" => tls_key = Some(file_path(name, value)?),
            "tls_insecure" => parsed.tls_options.insecure = boolean(name, &value)?,
            other => return Err(unknown_parameter(other, &parsed.display)),
        }
    }
    if parsed.tls && !cfg!(feature = "tls") {
        return Err(Error::Config(format!(
            "`{}` asks for TLS, but partcache-redis was built without its `tls` feature",
            parsed.display
        )));
    }
    let tls_parameter = [
        ("tls_ca", tls_ca.is_some()),
        ("tls_cert", tls_cert.is_some()),
        ("tls_key", tls_key.is_some()),
        ("tls_insecure", parsed.tls_options.insecure),
    ]
    .into_iter()
    .find_map(|(name, set)| set.then_some(name));
    if let Some(name) = tls_parameter
        && !parsed.tls
    {
        return Err(Error::Config(format!(
            "`{name}` in `{}` is a TLS setting, but the URL does not ask for TLS \
             (use `rediss://` or `valkeys://`, or `tls=true`)",
            parsed.display
        )));
    }
    parsed.tls_options.client = match (tls_cert, tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some(ClientCertificate {
            cert: read_parameter("tls_cert", &cert, PemKind::Certificates)?,
            key: read_parameter("tls_key", &key, PemKind::PrivateKey)?,
        }),
        (Some(_), None) => {
            return Err(Error::Config(format!(
                "`tls_cert` without `tls_key` in `{}`: a client certificate needs its private key",
                parsed.display
            )));
        }
        (None, Some(_)) => {
            return Err(Error::Config(format!(
                "`tls_key` without `tls_cert` in `{}`: a private key needs its client certificate",
                parsed.display
            )));
        }
    };
    if let Some(ca) = tls_ca {
        parsed.tls_options.ca = Some(read_parameter("tls_ca", &ca, PemKind::Certificates)?);
    }
    #[cfg(feature = "tls")]
    crate::tls::validate(&parsed.tls_options)?;
    Ok(parsed)
}

/// A count (requests, bytes): a whole number, 0 allowed.
fn count(name: &str, value: &str) -> Result<usize> {
    whole(value).ok_or_else(|| Error::Config(format!("`{name}={value}`: expected a whole number")))
}

/// A number written with decimal digits only: `+64` and `-1` are not whole numbers
/// here, so a sign is never silently dropped.
fn whole<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The highest database index a server can have: Redis and Valkey bound the
/// `databases` setting by the largest 32-bit signed number, and index from 0 (the
/// server's own `databases`, 16 by default, bounds it further when connecting).
pub const MAX_DATABASE: i64 = i32::MAX as i64 - 1;

/// The database number of a standalone URL's path.
fn database(db: &str, url: &str) -> Result<i64> {
    whole(db)
        .filter(|n| (0..=MAX_DATABASE).contains(n))
        .ok_or_else(|| {
            Error::Config(format!(
                "database `{db}` in `{}`: expected a number from 0 to {MAX_DATABASE}",
                mask(url)
            ))
        })
}

/// The value of `partitions` (on a deployment or a joined URL).
pub(crate) fn partitions(value: &str) -> Result<u16> {
    whole(value)
        .filter(|n| (MIN_PARTITIONS..=SLOT_COUNT).contains(n))
        .ok_or_else(|| {
            Error::Config(format!(
                "`partitions={value}`: expected a number from {MIN_PARTITIONS} to {SLOT_COUNT}"
            ))
        })
}

/// The value of `lease_ttl` (on a deployment or a joined URL): zero (no leases) or at
/// least 1ms, as a cache's own setting must be, so the URL fails where it is written
/// rather than every cache build.
pub(crate) fn lease_ttl(value: &str) -> Result<Duration> {
    let ttl = partcache::duration::parse(value)
        .map_err(|e| Error::Config(format!("`lease_ttl={value}`: {e}")))?;
    if !ttl.is_zero() && ttl < Duration::from_millis(1) {
        return Err(Error::Config(format!(
            "`lease_ttl` is {ttl:?}, must be at least 1ms (or 0 for no leases)"
        )));
    }
    Ok(ttl)
}

fn unknown_parameter(name: &str, display: &str) -> Error {
    Error::Config(format!(
        "unknown parameter `{name}` in `{display}` (known: {})",
        PARAMETERS.join(", ")
    ))
}

/// The decoded value of a known parameter, refusing a second occurrence (which one
/// would be meant?) and an empty value (an unset template variable must not read as
/// `true` or as a default).
pub(crate) fn parameter_value<'a>(
    name: &'a str,
    value: &str,
    seen: &mut Vec<&'a str>,
) -> Result<String> {
    if seen.contains(&name) {
        return Err(Error::Config(format!(
            "`{name}` is given twice: give each parameter once"
        )));
    }
    seen.push(name);
    if value.is_empty() {
        return Err(Error::Config(format!(
            "`{name}` needs {} (`{name}=` is empty; no parameter has a flag form)",
            expected_value(name)
        )));
    }
    decode(value, &format!("the value of `{name}`"))
}

/// What a parameter's value looks like, for the message about an empty one.
fn expected_value(name: &str) -> &'static str {
    match name {
        "partitions" => "a number of partitions",
        "lease_ttl" | "connect_timeout" | "response_timeout" | "breaker_probe_interval" => {
            "a duration such as `500ms` or `2s`"
        }
        "read_from_replicas" | "tls" | "tls_insecure" => "`true` or `false`",
        "breaker_failures" | "max_pending_batched" | "max_pending_batched_bytes" => {
            "a whole number"
        }
        "tls_ca" | "tls_cert" | "tls_key" => "the path of a PEM file",
        _ => "a value",
    }
}

/// The value of a file parameter (not empty).
fn file_path(name: &str, value: String) -> Result<String> {
    if value.trim().is_empty() {
        return Err(Error::Config(format!(
            "`{name}` needs the path of a PEM file"
        )));
    }
    Ok(value)
}

fn node(host: &str, url: &str) -> Result<String> {
    let host = host.trim();
    if host.is_empty() {
        return Err(Error::Config(format!("empty host in `{}`", mask(url))));
    }
    let not_host = |why: &str| {
        Error::Config(format!(
            "`{host}` in `{}` is not `host:port`: {why}",
            mask(url)
        ))
    };
    // `[::1]:6379`, `[::1]`, `host:6379`, or `host` (port 6379).
    let (name, port) = if let Some(bracketed) = host.strip_prefix('[') {
        let (address, after) = bracketed
            .split_once(']')
            .ok_or_else(|| not_host("an IPv6 address needs its closing `]`"))?;
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(not_host("not an IPv6 address between `[` and `]`"));
        }
        let port = match after {
            "" => None,
            after => Some(
                after
                    .strip_prefix(':')
                    .ok_or_else(|| not_host("expected `:port` after `]`"))?,
            ),
        };
        (&host[..address.len() + 2], port)
    } else {
        match host.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let valid_name = name.starts_with('[')
        || (!name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')));
    if !valid_name {
        return Err(not_host(
            "a host is a name, an IPv4 address or a bracketed IPv6 address",
        ));
    }
    let port = match port {
        None => 6379,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| not_host("the port is a number from 1 to 65535"))?,
    };
    Ok(format!("{name}:{port}"))
}

fn duration(name: &str, value: &str) -> Result<Duration> {
    let d = partcache::duration::parse(value)
        .map_err(|e| Error::Config(format!("`{name}={value}`: {e}")))?;
    if d.is_zero() {
        return Err(Error::Config(format!("`{name}` must be more than zero")));
    }
    Ok(d)
}

fn boolean(name: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(Error::Config(format!(
            "`{name}={other}`: expected true or false"
        ))),
    }
}

/// Percent-decodes one URL component; `part` names it in the error ("the password"),
/// which never quotes the text (it may be a secret).
///
/// A `%` not followed by two hex digits stays as written, and `+` is a plus sign.
/// Text that is not UTF-8 once decoded (`%FF`) is refused rather than changed.
pub(crate) fn decode(text: &str, part: &str) -> Result<String> {
    String::from_utf8(percent_decode(text)).map_err(|_| {
        Error::Config(format!(
            "{part} is not UTF-8 once percent-decoded (such as `%FF`): it must be UTF-8 text"
        ))
    })
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// Refuses a URL with an `@` after its host part (after the first `/` or `?` that
/// follows `://`). That is almost always a user name or password holding an
/// unescaped `/` or `?`, which would otherwise be read as a host, a database or a
/// parameter, and quoted in an error.
pub(crate) fn refuse_misplaced_at(url: &str) -> Result<()> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    if rest[host_end..].contains('@') {
        return Err(Error::Config(format!(
            "`{}` has an `@` after its host part: percent-encode a user name or password \
             that holds `/`, `?` or `@` (`%2F`, `%3F`, `%40`), and any `@` in a parameter",
            mask(url)
        )));
    }
    Ok(())
}

/// The URL with its credentials replaced by `***` (see [`partcache::mask_url`]).
pub use partcache::mask_url as mask;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ttl_is_a_duration_zero_included_and_unset_by_default() {
        assert_eq!(parse("redis://h:1").unwrap().lease_ttl, None);
        let u = parse("redis://h:1?lease_ttl=3s").unwrap();
        assert_eq!(u.lease_ttl, Some(Duration::from_secs(3)));
        let off = parse("redis-cluster://h:1,h:2?lease_ttl=0s").unwrap();
        assert_eq!(off.lease_ttl, Some(Duration::ZERO));
        let bad = parse("redis://h:1?lease_ttl=soon").unwrap_err().to_string();
        assert!(bad.contains("lease_ttl=soon"), "{bad}");
    }

    #[test]
    fn standalone_url_with_credentials_db_and_parameters() {
        let u = parse("redis://app:s%40cret@10.0.0.1:6380/3?partitions=64&response_timeout=250ms&connect_timeout=2s&read_from_replicas=true").unwrap();
        assert_eq!(u.kind, DeploymentKind::Standalone);
        assert_eq!(u.nodes, ["10.0.0.1:6380"]);
        assert_eq!(u.username.as_deref(), Some("app"));
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(u.db, 3);
        assert_eq!(u.partitions, Some(64));
        assert_eq!(u.response_timeout, Duration::from_millis(250));
        assert_eq!(u.connect_timeout, Duration::from_secs(2));
        assert!(u.read_from_replicas);
        assert!(!u.display.contains("cret"), "{}", u.display);
    }

    #[test]
    fn cluster_url_lists_seed_nodes_and_defaults_the_port() {
        let u = parse("valkey-cluster://a:7000,b:7001,c").unwrap();
        assert_eq!(u.kind, DeploymentKind::Cluster);
        assert_eq!(u.nodes, ["a:7000", "b:7001", "c:6379"]);
        assert_eq!(u.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
    }

    #[test]
    fn unknown_parameters_are_errors_naming_them() {
        let e = parse("redis://h:1?partitons=3").unwrap_err();
        assert!(
            matches!(e, Error::Config(ref m) if m.contains("`partitons`")),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_config_errors() {
        for url in [
            "redis://h:1?partitions=2",
            "redis://h:1?response_timeout=soon",
            "redis://h:1?response_timeout=0ms",
            "redis://h:x",
            "redis://h:1,h:2",
            "redis://h:1/abc",
            "redis-cluster://h:1/2",
            "memcached://h:1",
            "redis://h:1?read_from_replicas=maybe",
            "redis://h:1?breaker_failures=-1",
            "redis://h:1?breaker_probe_interval=0ms",
        ] {
            assert!(matches!(parse(url), Err(Error::Config(_))), "{url}");
        }
    }

    #[test]
    fn breaker_settings_have_defaults_and_parameters() {
        assert_eq!(
            parse("redis://h:1").unwrap().breaker,
            BreakerSettings::default()
        );
        let u = parse("redis-cluster://h:1?breaker_failures=5&breaker_probe_interval=2s").unwrap();
        assert_eq!(
            u.breaker,
            BreakerSettings::default()
                .failures(5)
                .probe_interval(Duration::from_secs(2))
        );
        assert_eq!(
            parse("redis://h:1?breaker_failures=0")
                .unwrap()
                .breaker
                .failures,
            0
        );
    }

    #[test]
    fn batching_bounds_parse_and_default() {
        let u = parse("redis://h:1").unwrap();
        assert_eq!(u.batching, BatchingSettings::default());
        let u =
            parse("redis://h:1?max_pending_batched=32&max_pending_batched_bytes=65536").unwrap();
        assert_eq!(
            u.batching,
            BatchingSettings {
                max_pending: 32,
                max_pending_bytes: 65536
            }
        );
        for url in [
            "redis://h:1?max_pending_batched=-1",
            "redis://h:1?max_pending_batched_bytes=16MiB",
        ] {
            match parse(url) {
                Err(Error::Config(m)) => assert!(m.contains("expected a whole number"), "{m}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn malformed_hosts_are_config_errors_naming_the_host() {
        for (url, host) in [
            ("redis://[::1", "[::1"),
            ("redis://[::1]6379", "[::1]6379"),
            ("redis://[not-ipv6]:6379", "[not-ipv6]:6379"),
            ("redis://::1:6379", "::1:6379"),
            ("redis://h:0", "h:0"),
            ("redis://h:70000", "h:70000"),
            ("redis://h%20o:1", "h%20o:1"),
            ("redis-cluster://a:1,[::1", "[::1"),
        ] {
            match parse(url) {
                Err(Error::Config(m)) => assert!(m.contains(&format!("`{host}`")), "{url}: {m}"),
                other => panic!("{url}: expected a config error, got {other:?}"),
            }
        }
        assert_eq!(parse("redis://[::1]").unwrap().nodes, ["[::1]:6379"]);
        assert_eq!(parse("redis://[::1]:7000").unwrap().nodes, ["[::1]:7000"]);
        assert_eq!(
            parse("redis://cache-1.internal").unwrap().nodes,
            ["cache-1.internal:6379"]
        );
    }

    /// A throwaway self-signed P-256 CA certificate and its key, made for these tests
    /// only (parsing never checks validity dates or signatures).
    #[cfg(feature = "tls")]
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBqTCCAU+gAwIBAgIUE16221RyaIQqhnxA+CTpX2XaEVwwCgYIKoZIzj0EAwIw
ITEfMB0GA1UEAwwWcGFydGNhY2hlIHVuaXQtdGVzdCBDQTAgFw0yNjEyMDQxMzU5
MzVaGA8yMTI2MTExMDEzNTkzNVowITEfMB0GA1UEAwwWcGFydGNhY2hlIHVuaXQt
dGVzdCBDQTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABLjpoFhh3r1faNVubsJs
dIclD00reU0L2P0l3oREPH97PHg6Y0Et0URyIHtp9fjLX2S+9JeiyPCVUHrSqrVi
GwOjYzBhMB0GA1UdDgQWBBSC/MQuE7xvo86nJdhHnFwKpRZcUTAfBgNVHSMEGDAW
gBSC/MQuE7xvo86nJdhHnFwKpRZcUTAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB
/wQEAwIBBjAKBggqhkjOPQQDAgNIADBFAiEA4M10QRsYj6X40EpbTOPVLL60SSHF
OmLGONHpsvET9JgCIA3WWvnN5hx4re+51H71WysQI+Sbz4rGTBW4m9czRzOu
-----END CERTIFICATE-----
";
    #[cfg(feature = "tls")]
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgGuhEhm87/NeVkCT+
G7+Om0oitivsoUL+CWPvcRmyhHOhRANCAAS46aBYYd69X2jVbm7CbHSHJQ9NK3lN
C9j9Jd6ERDx/ezx4OmNBLdFEciB7afX4y19kvvSXosjwlVB60qq1YhsD
-----END PRIVATE KEY-----
";

    /// Files under a fresh directory, removed on drop.
    #[cfg(feature = "tls")]
    struct Files(std::path::PathBuf);

    #[cfg(feature = "tls")]
    impl Files {
        fn new(label: &str) -> Files {
            let dir = std::env::temp_dir().join(format!(
                "partcache-url-{label}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Files(dir)
        }

        fn write(&self, name: &str, text: &str) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_string_lossy().into_owned()
        }
    }

    #[cfg(feature = "tls")]
    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config_error(url: &str) -> String {
        match parse(url) {
            Err(Error::Config(m)) => m,
            other => panic!("{url}: expected a Config error, got {other:?}"),
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_files_are_read_when_the_url_is_parsed() {
        let files = Files::new("read");
        let ca = files.write("ca.pem", TEST_CERT);
        let cert = files.write("client.pem", TEST_CERT);
        let key = files.write("client.key", TEST_KEY);
        let u = parse(&format!(
            "rediss://h:6380?tls_ca={ca}&tls_cert={cert}&tls_key={key}"
        ))
        .unwrap();
        assert!(u.tls);
        assert_eq!(
            u.tls_options.ca.as_ref().unwrap().pem(),
            TEST_CERT.as_bytes()
        );
        let client = u.tls_options.client.as_ref().unwrap();
        assert_eq!(client.cert.path(), std::path::Path::new(&cert));
        assert_eq!(client.key.pem(), TEST_KEY.as_bytes());
        assert!(!u.tls_options.insecure);
        // Debug output names the files but never prints a key.
        let debug = format!("{u:?}");
        assert!(
            debug.contains("client.key") && !debug.contains("MIGHAgEA"),
            "{debug}"
        );

        let u = parse(&format!(
            "redis-cluster://a:7000,b:7000?tls=true&tls_ca={ca}&tls_insecure=true"
        ))
        .unwrap();
        assert!(u.tls && u.tls_options.insecure && u.tls_options.client.is_none());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_client_certificate_needs_both_tls_cert_and_tls_key() {
        let files = Files::new("pair");
        let cert = files.write("client.pem", TEST_CERT);
        let key = files.write("client.key", TEST_KEY);
        let m = config_error(&format!("rediss://h?tls_cert={cert}"));
        assert!(m.contains("`tls_cert` without `tls_key`"), "{m}");
        let m = config_error(&format!("rediss://h?tls_key={key}"));
        assert!(m.contains("`tls_key` without `tls_cert`"), "{m}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn unreadable_or_wrong_tls_files_are_config_errors_naming_them() {
        let m = config_error("rediss://h?tls_ca=/nonexistent/partcache/ca.pem");
        assert!(
            m.contains("`tls_ca`") && m.contains("/nonexistent/partcache/ca.pem"),
            "{m}"
        );
        let files = Files::new("wrong");
        let key = files.write("client.key", TEST_KEY);
        let not_pem = files.write("notes.txt", "not a certificate");
        // A key where a certificate belongs, and text where a key belongs.
        let m = config_error(&format!("rediss://h?tls_ca={key}"));
        assert!(
            m.contains("`tls_ca`") && m.contains("holds no certificate"),
            "{m}"
        );
        let m = config_error(&format!("rediss://h?tls_cert={key}&tls_key={not_pem}"));
        assert!(m.contains("`tls_cert`") && m.contains("client.key"), "{m}");
        let m = config_error(&format!(
            "rediss://h?tls_cert={}&tls_key={not_pem}",
            files.write("client.pem", TEST_CERT)
        ));
        assert!(m.contains("`tls_key`") && m.contains("notes.txt"), "{m}");
        let m = config_error("rediss://h?tls_ca=");
        assert!(m.contains("`tls_ca` needs the path"), "{m}");
        let m = config_error("rediss://h?tls_insecure=maybe");
        assert!(m.contains("`tls_insecure=maybe`"), "{m}");
    }

    #[test]
    fn tls_settings_without_tls_are_config_errors() {
        for (url, name) in [
            ("redis://h?tls_ca=/ca.pem", "tls_ca"),
            ("redis-cluster://a:1,b:2?tls_insecure=true", "tls_insecure"),
            (
                "redis://h?tls=false&tls_cert=/c.pem&tls_key=/k.pem",
                "tls_cert",
            ),
        ] {
            let m = config_error(url);
            assert!(
                m.contains(&format!("`{name}`")) && m.contains("does not ask for TLS"),
                "{m}"
            );
        }
        // `tls_insecure=false` asks for nothing.
        assert!(parse("redis://h?tls_insecure=false").is_ok());
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn tls_urls_without_the_tls_feature_are_config_errors() {
        let m = config_error("rediss://h?tls_ca=/ca.pem");
        assert!(m.contains("without its `tls` feature"), "{m}");
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask("redis://u:p@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(mask("redis://h:1"), "redis://h:1");
        assert_eq!(mask("redis://secret@h"), "redis://:***@h");
        assert_eq!(mask("app:secret@h:1"), "app:***@h:1");
    }

    #[test]
    fn a_malformed_url_masks_everything_before_its_last_at() {
        assert_eq!(
            mask("redis://app:hunter2/x@cache.internal:6379"),
            "redis://***@cache.internal:6379"
        );
        assert_eq!(
            mask("redis-cluster://app:hunter2?x@a:7000,b:7000"),
            "redis-cluster://***@a:7000,b:7000"
        );
    }

    /// An unescaped `/` or `?` in a password cuts the URL before its `@`: the error
    /// says to percent-encode it and never prints the password.
    #[test]
    fn a_password_with_an_unescaped_slash_or_question_mark_is_refused_unprinted() {
        for url in [
            "redis://app:hunter2/x@cache.internal:6379",
            "redis://app:hunter2?x@cache.internal:6379",
            "redis://app:hunter2?partitions=x@cache.internal:6379",
            "redis://app:1234/x@cache.internal:6379",
            "redis-cluster://app:hunter2/x@a:7000,b:7000",
        ] {
            let m = config_error(url);
            assert!(
                !m.contains("hunter2") && !m.contains("1234"),
                "{url}: the error prints the password: {m}"
            );
            assert!(m.contains("percent-encode"), "{url}: {m}");
        }
        // Encoded, the same password parses.
        let u = parse("redis://app:hunter2%2Fx%3Fy@cache.internal:6379").unwrap();
        assert_eq!(u.password.as_deref(), Some("hunter2/x?y"));
        assert_eq!(u.nodes, ["cache.internal:6379"]);
    }

    #[test]
    fn a_repeated_parameter_is_refused_naming_it() {
        for (url, name) in [
            (
                "redis://h:1?response_timeout=5s&response_timeout=50ms",
                "response_timeout",
            ),
            ("redis://h:1?partitions=64&partitions=128", "partitions"),
            ("rediss://h:1?tls=false&tls=true", "tls"),
            ("redis://h:1?lease_ttl=1s&lease_ttl=1s", "lease_ttl"),
        ] {
            let m = config_error(url);
            assert!(
                m.contains(&format!("`{name}` is given twice")),
                "{url}: {m}"
            );
        }
    }

    /// An empty value (an unset template variable) is never read as `true` or as the
    /// default; nor is a bare name.
    #[test]
    fn an_empty_value_is_refused_naming_the_parameter() {
        for (url, name) in [
            ("redis://h:1?read_from_replicas=", "read_from_replicas"),
            ("redis://h:1?read_from_replicas", "read_from_replicas"),
            ("rediss://h:1?tls_insecure=", "tls_insecure"),
            ("redis://h:1?tls=", "tls"),
            ("redis://h:1?partitions=", "partitions"),
            ("redis://h:1?response_timeout=", "response_timeout"),
            ("redis://h:1?max_pending_batched=", "max_pending_batched"),
        ] {
            let m = config_error(url);
            assert!(
                m.contains(&format!("`{name}` needs")) && m.contains("is empty"),
                "{url}: {m}"
            );
        }
    }

    #[test]
    fn a_database_is_a_number_from_0_to_the_servers_maximum() {
        for db in ["-1", "+3", "2147483647", "99999999999", "abc", "1.5"] {
            let m = config_error(&format!("redis://h:1/{db}"));
            assert!(
                m.contains(&format!("database `{db}`")) && m.contains("from 0 to 2147483646"),
                "{db}: {m}"
            );
        }
        assert_eq!(parse("redis://h:1/15").unwrap().db, 15);
        assert_eq!(parse("redis://h:1/2147483646").unwrap().db, MAX_DATABASE);
        assert_eq!(parse("redis://h:1/").unwrap().db, 0);
    }

    #[test]
    fn a_number_with_a_sign_is_refused() {
        for url in [
            "redis://h:1?partitions=+64",
            "redis://h:1?breaker_failures=+3",
            "redis://h:1?max_pending_batched=+32",
        ] {
            assert!(config_error(url).contains("expected"), "{url}");
        }
    }

    #[test]
    fn a_password_that_is_not_utf8_once_decoded_is_refused() {
        let m = config_error("redis://app:p%FF@h:1");
        assert!(
            m.contains("the password is not UTF-8") && !m.contains("p%FF"),
            "{m}"
        );
        let m = config_error("redis://h:1?tls_ca=%FF");
        assert!(m.contains("`tls_ca` is not UTF-8"), "{m}");
        let u = parse("redis://app:caf%C3%A9+1%zz@h:1").unwrap();
        assert_eq!(u.password.as_deref(), Some("café+1%zz"));
    }

    #[test]
    fn a_lease_ttl_below_a_millisecond_is_refused_as_a_cache_would() {
        let m = config_error("redis://h:1?lease_ttl=500us");
        assert!(
            m.contains("must be at least 1ms (or 0 for no leases)"),
            "{m}"
        );
        assert_eq!(
            parse("redis://h:1?lease_ttl=1ms").unwrap().lease_ttl,
            Some(Duration::from_millis(1))
        );
    }
}
