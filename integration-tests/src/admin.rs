//! Synchronous admin connections and parsers for `INFO`, `CLUSTER NODES`, `CLUSTER SLOTS`.

use std::collections::HashMap;
use std::time::Duration;

use redis::{FromRedisValue, IntoConnectionInfo, Value};

use crate::error::{HarnessError, Result};
use crate::tls::{self, TlsFiles};

/// Where admin commands go: a node's client port, over TLS with `tls` when the node
/// serves TLS only.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Endpoint<'a> {
    pub port: u16,
    pub tls: Option<&'a TlsFiles>,
}

/// Connect timeout for admin connections. They go to servers the harness knows are
/// running, so this is a deadline for a loaded machine (a TLS handshake on 2 busy cores
/// took more than half a second), not a way to detect a dead node: paused or dead
/// nodes are polled with [`probe`]'s short timeouts.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Read/write timeout for admin commands (long enough for MIGRATE batches).
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens a RESP2 connection to `127.0.0.1:port` that does not send `CLIENT SETINFO`
/// (so the harness pollutes `INFO commandstats` as little as possible).
pub(crate) fn connect(at: Endpoint<'_>) -> Result<redis::Connection> {
    connect_with(at, CONNECT_TIMEOUT, IO_TIMEOUT)
}

pub(crate) fn connect_with(
    at: Endpoint<'_>,
    connect_timeout: Duration,
    io_timeout: Duration,
) -> Result<redis::Connection> {
    let port = at.port;
    let ctx = || format!("connecting to 127.0.0.1:{port}");
    let addr = match at.tls {
        None => redis::ConnectionAddr::Tcp("127.0.0.1".into(), port),
        Some(_) => redis::ConnectionAddr::TcpTls {
            host: "127.0.0.1".into(),
            port,
            insecure: false,
            tls_params: None,
        },
    };
    let info = addr
        .into_connection_info()
        .map_err(|e| HarnessError::redis(ctx(), e))?;
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    let info = info.set_redis_settings(settings);
    let client = match at.tls {
        None => redis::Client::open(info),
        Some(files) => {
            tls::install_crypto_provider();
            redis::Client::build_with_tls(info, files.certificates())
        }
    }
    .map_err(|e| HarnessError::redis(ctx(), e))?;
    let con = client
        .get_connection_with_timeout(connect_timeout)
        .map_err(|e| HarnessError::redis(ctx(), e))?;
    con.set_read_timeout(Some(io_timeout))
        .map_err(|e| HarnessError::redis(ctx(), e))?;
    con.set_write_timeout(Some(io_timeout))
        .map_err(|e| HarnessError::redis(ctx(), e))?;
    Ok(con)
}

/// Builds a command from string arguments.
pub(crate) fn cmd_of<S: AsRef<[u8]>>(args: &[S]) -> redis::Cmd {
    let mut it = args.iter();
    let first = it.next().map(|a| a.as_ref()).unwrap_or(b"PING");
    let mut c = redis::cmd(&String::from_utf8_lossy(first));
    for a in it {
        c.arg(a.as_ref());
    }
    c
}

/// Runs one command on an existing connection.
pub(crate) fn query_on<T: FromRedisValue, S: AsRef<[u8]>>(
    con: &mut redis::Connection,
    port: u16,
    args: &[S],
) -> Result<T> {
    cmd_of(args)
        .query(con)
        .map_err(|e| HarnessError::redis(describe(port, args), e))
}

/// Connects, runs one command, disconnects.
pub(crate) fn query<T: FromRedisValue, S: AsRef<[u8]>>(at: Endpoint<'_>, args: &[S]) -> Result<T> {
    let mut con = connect(at)?;
    query_on(&mut con, at.port, args)
}

/// Connects with short timeouts (for polling possibly paused/dead nodes) and runs one command.
pub(crate) fn probe<T: FromRedisValue, S: AsRef<[u8]>>(at: Endpoint<'_>, args: &[S]) -> Result<T> {
    let mut con = connect_with(at, Duration::from_millis(300), Duration::from_secs(2))?;
    query_on(&mut con, at.port, args)
}

pub(crate) fn describe<S: AsRef<[u8]>>(port: u16, args: &[S]) -> String {
    let words: Vec<String> = args
        .iter()
        .take(6)
        .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
        .collect();
    format!("running `{}` on 127.0.0.1:{port}", words.join(" "))
}

/// Parses `INFO` output into `field -> value` (section headers and blanks skipped).
pub(crate) fn parse_info(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Parses `INFO commandstats` into `command -> calls`. Command names are lower-case, with
/// subcommands as `cluster|slots`.
pub(crate) fn parse_commandstats(text: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for (k, v) in parse_info(text) {
        let Some(name) = k.strip_prefix("cmdstat_") else {
            continue;
        };
        let calls = v
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|c| c.parse::<u64>().ok());
        if let Some(calls) = calls {
            out.insert(name.to_ascii_lowercase(), calls);
        }
    }
    out
}

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug)]
pub(crate) struct NodeLine {
    pub id: String,
    pub flags: Vec<String>,
    /// `None` for masters.
    pub master_id: Option<String>,
}

impl NodeLine {
    pub(crate) fn has_flag(&self, f: &str) -> bool {
        self.flags.iter().any(|x| x == f)
    }
    pub(crate) fn is_master(&self) -> bool {
        self.has_flag("master")
    }
}

/// Parses `CLUSTER NODES`.
pub(crate) fn parse_cluster_nodes(text: &str) -> Vec<NodeLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        out.push(NodeLine {
            id: f[0].to_string(),
            flags: f[2].split(',').map(str::to_string).collect(),
            master_id: (f[3] != "-").then(|| f[3].to_string()),
        });
    }
    out
}

/// One range of `CLUSTER SLOTS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SlotRange {
    pub start: u16,
    pub end: u16,
    pub master_port: u16,
    pub master_id: String,
    /// Ports of the replicas listed for this range.
    pub replica_ports: Vec<u16>,
}

fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => as_string(other)?.parse().ok(),
    }
}

/// Parses `CLUSTER SLOTS`, sorted by start slot.
pub(crate) fn parse_cluster_slots(v: &Value) -> Result<Vec<SlotRange>> {
    let bad = |what: &str| HarnessError::Unexpected(format!("CLUSTER SLOTS reply: {what}: {v:?}"));
    let Value::Array(ranges) = v else {
        return Err(bad("not an array"));
    };
    let mut out = Vec::new();
    for r in ranges {
        let Value::Array(items) = r else {
            return Err(bad("range is not an array"));
        };
        if items.len() < 3 {
            return Err(bad("range too short"));
        }
        let start = as_int(&items[0]).ok_or_else(|| bad("start"))? as u16;
        let end = as_int(&items[1]).ok_or_else(|| bad("end"))? as u16;
        let node = |n: &Value| -> Option<(u16, String)> {
            let Value::Array(f) = n else { return None };
            let port = as_int(f.get(1)?)? as u16;
            let id = f.get(2).and_then(as_string).unwrap_or_default();
            Some((port, id))
        };
        let (master_port, master_id) = node(&items[2]).ok_or_else(|| bad("master node"))?;
        let mut replica_ports: Vec<u16> = items[3..].iter().filter_map(node).map(|n| n.0).collect();
        replica_ports.sort_unstable();
        out.push(SlotRange {
            start,
            end,
            master_port,
            master_id,
            replica_ports,
        });
    }
    out.sort_by_key(|r| r.start);
    Ok(out)
}

/// Merges adjacent ranges owned by the same master (and with the same replicas).
pub(crate) fn merge_ranges(ranges: Vec<SlotRange>) -> Vec<SlotRange> {
    let mut out: Vec<SlotRange> = Vec::new();
    for r in ranges {
        if let Some(last) = out.last_mut()
            && last.end.checked_add(1) == Some(r.start)
            && last.master_id == r.master_id
            && last.replica_ports == r.replica_ports
        {
            last.end = r.end;
            continue;
        }
        out.push(r);
    }
    out
}

/// Checks that sorted `ranges` cover `0..=16383` exactly once; returns a description of the
/// first gap/overlap otherwise.
pub(crate) fn coverage_problem(ranges: &[SlotRange]) -> Option<String> {
    let mut next: u32 = 0;
    for r in ranges {
        if u32::from(r.start) != next {
            return Some(format!(
                "slots {next}..{} not covered (next range starts at {})",
                r.start, r.start
            ));
        }
        next = u32::from(r.end) + 1;
    }
    (next != 16384).then(|| format!("slots {next}..=16383 not covered"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commandstats() {
        let s = "# Commandstats\r\ncmdstat_get:calls=12,usec=3,usec_per_call=0.25,rejected_calls=0,failed_calls=0\r\ncmdstat_cluster|slots:calls=2,usec=9\r\n";
        let m = parse_commandstats(s);
        assert_eq!(m["get"], 12);
        assert_eq!(m["cluster|slots"], 2);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn parses_cluster_nodes() {
        let s = "07c3 127.0.0.1:30004@40004 slave e7d1 0 1426238317239 4 connected\n\
                 e7d1 127.0.0.1:30001@40001,host myself,master - 0 0 1 connected 0-5460\n";
        let n = parse_cluster_nodes(s);
        assert_eq!(n.len(), 2);
        assert_eq!(n[0].master_id.as_deref(), Some("e7d1"));
        assert!(n[1].has_flag("myself") && n[1].is_master());
        assert_eq!(n[1].master_id, None);
    }

    #[test]
    fn coverage_and_merge() {
        let r = |s, e, id: &str| SlotRange {
            start: s,
            end: e,
            master_port: 1,
            master_id: id.into(),
            replica_ports: vec![],
        };
        let merged = merge_ranges(vec![r(0, 10, "a"), r(11, 16383, "a")]);
        assert_eq!(merged.len(), 1);
        assert!(coverage_problem(&merged).is_none());
        assert!(coverage_problem(&[r(0, 10, "a"), r(12, 16383, "b")]).is_some());
        assert!(coverage_problem(&[r(0, 10, "a")]).is_some());
    }
}
