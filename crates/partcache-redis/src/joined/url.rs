//! Parsing of `redis-joined://` URLs into a [`JoinedUrl`]: the members, each a
//! standalone or cluster [`DeploymentUrl`] with a stable id (see the module docs of
//! [`crate::joined`] for the shape and the identity rule).
//!
//! Parsing never connects (its only I/O is reading the members' TLS files): every
//! error is an [`Error::Config`] that names the offending member or parameter.

use partcache::{Error, Result};

use crate::url::{
    DeploymentKind, DeploymentUrl, decode, lease_ttl, mask, parameter_value, partitions,
    refuse_misplaced_at,
};

/// The schemes [`JoinedBackendFactory`](super::JoinedBackendFactory) serves.
pub const SCHEMES: &[&str] = &["redis-joined", "valkey-joined"];

/// Every query parameter of a joined URL (members take their own, see the crate docs).
const PARAMETERS: &[&str] = &["member", "partitions", "lease_ttl"];

/// A parsed `redis-joined://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedUrl {
    /// The URL with every member's password masked (for logs).
    pub display: String,
    /// The members, in the order given (the order does not affect routing).
    pub members: Vec<Member>,
    /// Partition count for caches that do not set one (`partitions=` on the joined URL).
    pub partitions: Option<u16>,
    /// Lease time to live for caches that do not set one (`lease_ttl=` on the joined
    /// URL; see `partcache::CacheBuilder::lease_ttl`).
    pub lease_ttl: Option<std::time::Duration>,
}

/// One member of a joined store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The id that rendezvous hashing scores: the member URL's `id` parameter, else
    /// [`deployment_id`] of its URL.
    pub id: String,
    /// The member's deployment.
    pub url: DeploymentUrl,
}

/// Parses a joined URL:
/// `redis-joined://?member=<url>&member=<url>[&partitions=N][&lease_ttl=D]`
/// (`valkey-joined://` is the same). Each member is a standalone or cluster URL,
/// percent-encoded (at least its `&` and `%`; [`build_url`] encodes them all).
pub fn parse(url: &str) -> Result<JoinedUrl> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::Config(format!("`{}` is not a URL (no `://`)", mask(url))))?;
    if !SCHEMES.contains(&scheme) {
        return Err(Error::Config(format!(
            "`{scheme}://` is not a joined URL scheme (expected {})",
            SCHEMES.join(" or ")
        )));
    }
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !authority.trim_matches('/').is_empty() {
        return Err(Error::Config(format!(
            "`{scheme}://` takes no host (got `{}`): list the members as parameters, \
             e.g. `{scheme}://?member=redis://10.0.0.1:6379&member=redis-cluster://10.0.1.1:7000`",
            // Through the whole URL's mask: the text before `?` may hold credentials.
            mask(&format!("{scheme}://{authority}"))
        )));
    }
    let mut members = Vec::new();
    let mut partition_count = None;
    let mut lease = None;
    // `member` is the one parameter given more than once.
    let mut seen = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "member" => {
                if value.is_empty() {
                    return Err(Error::Config(format!(
                        "`member` needs a standalone or cluster URL (member {} is empty)",
                        members.len() + 1
                    )));
                }
                let value = decode(value, &format!("member {}", members.len() + 1))?;
                members.push(member(&value, members.len() + 1)?);
            }
            "partitions" => {
                partition_count = Some(partitions(&parameter_value(name, value, &mut seen)?)?);
            }
            "lease_ttl" => lease = Some(lease_ttl(&parameter_value(name, value, &mut seen)?)?),
            other => {
                return Err(Error::Config(format!(
                    "unknown parameter `{}` in a `{scheme}://` URL (known: {}); \
                     if it belongs to a member, percent-encode that member's URL (`&` as `%26`)",
                    // A member's unescaped `&` may cut its password: mask as a URL.
                    mask(other),
                    PARAMETERS.join(", ")
                )));
            }
        }
    }
    let (partitions, lease_ttl) = (partition_count, lease);
    if members.is_empty() {
        return Err(Error::Config(format!(
            "`{scheme}://` needs at least one `member=<Redis URL>` parameter, \
             e.g. `{scheme}://?member=redis://10.0.0.1:6379&member=redis://10.0.0.2:6379`"
        )));
    }
    for (i, m) in members.iter().enumerate() {
        let deployment = deployment_id(&m.url);
        if let Some(earlier) = members[..i]
            .iter()
            .position(|e| deployment_id(&e.url) == deployment)
        {
            return Err(Error::Config(format!(
                "members {} and {} are the same deployment `{deployment}`: a joined store \
                 lists each deployment once",
                earlier + 1,
                i + 1
            )));
        }
        if let Some(earlier) = members[..i].iter().position(|e| e.id == m.id) {
            return Err(Error::Config(format!(
                "members {} and {} both have the id `{}`: every member needs its own id",
                earlier + 1,
                i + 1,
                m.id
            )));
        }
    }
    let mut display = format!("{scheme}://?");
    let mut parts: Vec<String> = members
        .iter()
        .map(|m| format!("member={}", m.url.display))
        .collect();
    if let Some(p) = partitions {
        parts.push(format!("partitions={p}"));
    }
    if let Some(ttl) = lease_ttl {
        parts.push(format!("lease_ttl={}ms", ttl.as_millis()));
    }
    display.push_str(&parts.join("&"));
    Ok(JoinedUrl {
        display,
        members,
        partitions,
        lease_ttl,
    })
}

/// Parses the `n`-th member URL (1-based, for messages), taking out its `id`.
fn member(text: &str, n: usize) -> Result<Member> {
    let in_member =
        |message: String| Error::Config(format!("member {n} of a joined URL: {message}"));
    // The same for an error of the deployment's parser.
    let named = |e: Error| match e {
        Error::Config(m) => in_member(m),
        other => other,
    };
    // Before `id` is taken out: a password with an unescaped `?` must not be split
    // into a base URL and parameters that are quoted in errors.
    refuse_misplaced_at(text).map_err(named)?;
    let (base, query) = text.split_once('?').unwrap_or((text, ""));
    let scheme = base.split_once("://").map_or("", |(s, _)| s);
    if SCHEMES.contains(&scheme) {
        return Err(in_member(format!(
            "`{}` is itself a joined URL; members must be standalone or cluster URLs \
             (`redis://`, `rediss://`, `redis-cluster://`, their `valkey` forms)",
            mask(text)
        )));
    }
    // `id`, `partitions` and `lease_ttl` belong to the joined store, not to the
    // deployment: take them out before the deployment's own parser (which would
    // reject `id`, and read the others where nothing uses them).
    let mut id = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "id" => {
                let value = decode(value, "`id`").map_err(named)?;
                if value.trim().is_empty() {
                    return Err(in_member(format!("empty `id` in `{}`", mask(text))));
                }
                if id.replace(value).is_some() {
                    return Err(in_member(format!("`id` given twice in `{}`", mask(text))));
                }
            }
            "partitions" => {
                return Err(in_member(format!(
                    "`{}` sets `partitions`; set it on the joined URL instead: every member \
                     holds partitions of the same caches, so all use one partition count",
                    mask(text)
                )));
            }
            "lease_ttl" => {
                return Err(in_member(format!(
                    "`{}` sets `lease_ttl`; set it on the joined URL instead: it is the \
                     default of caches, and every cache spans all members",
                    mask(text)
                )));
            }
            _ => kept.push(pair),
        }
    }
    let deployment = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let url = crate::url::parse(&deployment).map_err(named)?;
    Ok(Member {
        id: id.unwrap_or_else(|| deployment_id(&url)),
        url,
    })
}

/// The id of a member that has no `id` parameter: its deployment, normalised so that
/// only what names the servers counts.
///
/// * standalone: `redis://<host:port>/<db>` (`redis://10.0.0.1:6379/0`);
/// * cluster: `redis-cluster://<seed>,<seed>,…` with the seeds sorted and deduplicated
///   (`redis-cluster://10.0.1.1:7000,10.0.1.2:7000`).
///
/// Hosts are lower-cased and the port is always written. The scheme's flavour
/// (`valkey`), TLS, credentials and the other parameters do not count, so changing a
/// password or a timeout never moves partitions; changing a host name, a port, a
/// database or a cluster's seed list does (give the member an `id` to keep its
/// partitions across such a change).
pub fn deployment_id(url: &DeploymentUrl) -> String {
    let mut nodes: Vec<String> = url.nodes.iter().map(|n| n.to_lowercase()).collect();
    match url.kind {
        DeploymentKind::Standalone => format!("redis://{}/{}", nodes.join(","), url.db),
        DeploymentKind::Cluster => {
            nodes.sort();
            nodes.dedup();
            format!("redis-cluster://{}", nodes.join(","))
        }
    }
}

/// A `redis-joined://` URL with these members, each percent-encoded (everything but
/// letters, digits and `-._~:/,` is escaped), so member URLs may carry their own
/// parameters: `build_url(["redis://a:6379?id=eu1", "redis-cluster://b:7000,c:7000"])`.
pub fn build_url<I, S>(members: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let parts: Vec<String> = members
        .into_iter()
        .map(|m| format!("member={}", encode(m.as_ref())))
        .collect();
    format!("redis-joined://?{}", parts.join("&"))
}

fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:/,".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_error(url: &str) -> String {
        match parse(url) {
            Err(Error::Config(m)) => m,
            other => panic!("{url}: expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn two_standalone_servers_and_a_cluster() {
        let u = parse(
            "redis-joined://?member=redis://10.0.0.1:6379&member=valkey://10.0.0.2/3\
             &member=redis-cluster://10.0.1.2:7000,10.0.1.1:7000&partitions=64",
        )
        .unwrap();
        let ids: Vec<&str> = u.members.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "redis://10.0.0.1:6379/0",
                "redis://10.0.0.2:6379/3",
                "redis-cluster://10.0.1.1:7000,10.0.1.2:7000"
            ]
        );
        assert_eq!(u.partitions, Some(64));
        assert_eq!(u.members[2].url.kind, DeploymentKind::Cluster);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn member_tls_files_are_read_with_the_member_and_errors_name_it() {
        let url = build_url([
            "redis://a:1".to_string(),
            "rediss://b:2?tls_ca=/nonexistent/partcache/ca.pem".to_string(),
        ]);
        match parse(&url) {
            Err(Error::Config(m)) => assert!(
                m.contains("member 2") && m.contains("/nonexistent/partcache/ca.pem"),
                "{m}"
            ),
            other => panic!("expected a Config error, got {other:?}"),
        }
    }

    #[test]
    fn the_id_ignores_credentials_tls_flavour_seed_order_and_parameters() {
        let a = parse("redis-joined://?member=redis-cluster://B:7000,a:7000,a:7000").unwrap();
        let b = parse(&build_url([
            "valkey-cluster://u:pw@a:7000,b:7000?response_timeout=250ms&connect_timeout=2s",
        ]))
        .unwrap();
        assert_eq!(a.members[0].id, b.members[0].id);
        assert_eq!(
            b.members[0].url.response_timeout,
            std::time::Duration::from_millis(250)
        );
    }

    #[test]
    fn an_explicit_id_replaces_the_deployment_id_and_is_not_passed_on() {
        let u = parse(&build_url([
            "redis://10.0.0.1:6379?id=eu%201&response_timeout=300ms",
            "redis://10.0.0.2:6379",
        ]))
        .unwrap();
        assert_eq!(u.members[0].id, "eu 1");
        assert_eq!(
            u.members[0].url.response_timeout,
            std::time::Duration::from_millis(300)
        );
        assert_eq!(u.members[1].id, "redis://10.0.0.2:6379/0");
    }

    #[test]
    fn build_url_round_trips_passwords_with_reserved_characters() {
        let member = "redis://app:p%26+ %3Fw@10.0.0.1:6379/2";
        let u = parse(&build_url([member])).unwrap();
        assert_eq!(u.members[0].url.password.as_deref(), Some("p&+ ?w"));
        assert_eq!(u.members[0].url.db, 2);
        assert!(!u.display.contains("p&"), "{}", u.display);
    }

    #[test]
    fn url_errors_are_config_errors_that_say_what_to_fix() {
        assert!(config_error("redis-joined://").contains("at least one `member="));
        assert!(config_error("redis-joined://?partitions=64").contains("at least one"));
        assert!(config_error("redis-joined://h:1?member=redis://a").contains("takes no host"));
        let bad = config_error("redis-joined://?member=redis://a:x");
        assert!(bad.contains("member 1") && bad.contains("a:x"), "{bad}");
        let nested = config_error(&build_url([
            "redis://a",
            "redis-joined://?member=redis://b",
        ]));
        assert!(
            nested.contains("member 2") && nested.contains("itself a joined URL"),
            "{nested}"
        );
        let unknown = config_error("redis-joined://?member=redis://a?id=x&response_timeout=1s");
        assert!(
            unknown.contains("`response_timeout`") && unknown.contains("%26"),
            "{unknown}"
        );
        assert!(
            config_error("redis-joined://?member=redis://a?partitions=3")
                .contains("joined URL instead")
        );
        assert!(
            config_error("redis-joined://?member=redis://a&partitions=2").contains("partitions=2")
        );
        assert!(config_error("redis-joined://?member=memcached://a").contains("member 1"));
        let twice = config_error("redis-joined://?member=redis://a:6379&member=valkey://A");
        assert!(
            twice.contains("members 1 and 2") && twice.contains("same deployment"),
            "{twice}"
        );
        let ids = config_error(&build_url(["redis://a?id=x", "redis://b?id=x"]));
        assert!(ids.contains("both have the id `x`"), "{ids}");
        assert!(config_error(&build_url(["redis://a?id="])).contains("empty `id`"));
        assert!(
            config_error("redis-cluster-joined://?member=redis://a")
                .contains("not a joined URL scheme")
        );
    }

    /// A member's `lease_ttl` would be ignored (caches read the joined URL's): it is
    /// refused, as a member's `partitions` is.
    #[test]
    fn a_member_lease_ttl_is_refused() {
        let m = config_error(
            "redis-joined://?member=redis://a:6379%3Flease_ttl%3D30s&member=redis://b:6379",
        );
        assert!(
            m.contains("member 1") && m.contains("`lease_ttl`") && m.contains("joined URL instead"),
            "{m}"
        );
        let u = parse("redis-joined://?member=redis://a:6379&lease_ttl=30s").unwrap();
        assert_eq!(u.lease_ttl, Some(std::time::Duration::from_secs(30)));
    }

    #[test]
    fn a_repeated_or_empty_joined_parameter_is_refused_naming_it() {
        for (url, needle) in [
            (
                "redis-joined://?member=redis://a&partitions=64&partitions=128",
                "`partitions` is given twice",
            ),
            (
                "redis-joined://?member=redis://a&lease_ttl=1s&lease_ttl=2s",
                "`lease_ttl` is given twice",
            ),
            (
                "redis-joined://?member=redis://a&lease_ttl=",
                "`lease_ttl` needs",
            ),
            (
                "redis-joined://?member=redis://a&partitions",
                "`partitions` needs",
            ),
            ("redis-joined://?member=&member=redis://a", "`member` needs"),
            (
                "redis-joined://?member=redis://a&lease_ttl=10us",
                "at least 1ms",
            ),
            (
                "redis-joined://?member=redis://a&partitions=+64",
                "partitions=+64",
            ),
        ] {
            let m = config_error(url);
            assert!(m.contains(needle), "{url}: {m}");
        }
    }

    #[test]
    fn a_member_password_with_an_unescaped_question_mark_is_never_printed() {
        for url in [
            "redis-joined://?member=redis://app:hunter2%3Fid%3Dx@a:6379",
            "redis-joined://?member=redis://app:hunter2/x@a:6379",
            "redis-joined://app:hunter2/x@h?member=redis://a",
            "redis-joined://?member=redis://u:p&hunter2@a:6379",
        ] {
            let m = config_error(url);
            assert!(!m.contains("hunter2"), "{url}: {m}");
        }
    }
}
