//! Reading the replies of the cache's functions and commands: a function's
//! `{result, evicted, expired, events}` (counting evictions and expirations), a write's
//! packed or full outcome, and the values inside (integers, texts, blobs, scores).

use partcache::stats::StatsCounters;
use partcache::store::raw::{RawEvent, RawWriteOutcome};
use partcache::{Error, Result};
use redis::Value;

use crate::feed::parse_event;

/// Takes the events out of a script's `{result, evicted, expired, events}` reply,
/// counting its evictions and expirations first (and leaving zeros in their place
/// for [`outcome`]), so that a listener that hears an expiry finds it
/// counted.
pub(super) fn take_events(stats: &StatsCounters, reply: &mut Value) -> Vec<(u64, RawEvent)> {
    let Value::Array(parts) = reply else {
        return Vec::new();
    };
    let [_, evicted, expired, Value::Array(events)] = parts.as_mut_slice() else {
        return Vec::new();
    };
    count(
        stats,
        int(Some(&std::mem::replace(evicted, Value::Int(0)))),
        int(Some(&std::mem::replace(expired, Value::Int(0)))),
    );
    std::mem::take(events)
        .into_iter()
        .filter_map(|event| match event {
            Value::BulkString(payload) => parse_event(&payload),
            _ => None,
        })
        .collect()
}

pub(super) fn count(stats: &StatsCounters, evicted: u64, expired: u64) {
    if evicted > 0 {
        stats.evictions.add(evicted);
    }
    if expired > 0 {
        stats.expirations.add(expired);
    }
}

/// Unpacks a script's `{result, evicted, expired, events}` reply: counts the
/// evictions and expirations and gives back the result (its events went to the
/// delivery in `StoreInner::execute`).
pub(super) fn outcome(cache: &str, stats: &StatsCounters, reply: Value) -> Result<Value> {
    let parts = match reply {
        Value::Array(parts) if parts.len() == 4 => parts,
        Value::ServerError(e) => {
            return Err(Error::Store(format!(
                "script on cache `{}` failed: {} {}",
                cache,
                e.code(),
                e.details().unwrap_or("")
            )));
        }
        other => {
            return Err(Error::Store(format!(
                "unexpected script reply on cache `{}`: {other:?}",
                cache
            )));
        }
    };
    let mut parts = parts.into_iter();
    let result = parts.next().unwrap_or(Value::Nil);
    let evicted = int(parts.next().as_ref());
    let expired = int(parts.next().as_ref());
    count(stats, evicted, expired);
    Ok(result)
}

/// A read's reply (a plain `GET`/`MGET` where reads need no bookkeeping, else the
/// `get` function's) as the value it carries.
pub(super) fn read_result(
    cache: &str,
    plain_reads: bool,
    stats: &StatsCounters,
    reply: Value,
) -> Result<Value> {
    if !plain_reads {
        return outcome(cache, stats, reply);
    }
    if let Value::ServerError(e) = &reply {
        return Err(Error::Store(format!(
            "read on cache `{}` failed: {e:?}",
            cache
        )));
    }
    Ok(reply)
}

/// A `write` (or `put`) script's reply as an outcome.
pub(super) fn write_outcome(
    cache: &str,
    stats: &StatsCounters,
    reply: Value,
) -> Result<RawWriteOutcome> {
    if let Value::Int(code) = reply {
        // The packed form (common.lua, write_reply): existed + 2 * applied +
        // 4 * (evicted + 65536 * expired); no events, no previous value.
        let code = u64::try_from(code)
            .map_err(|_| Error::Store(format!("unexpected write reply {code}")))?;
        let (evicted, expired) = ((code >> 2) & 0xffff, code >> 18);
        if evicted > 0 {
            stats.evictions.add(evicted);
        }
        if expired > 0 {
            stats.expirations.add(expired);
        }
        return Ok(RawWriteOutcome {
            existed: code & 1 != 0,
            applied: code & 2 != 0,
            previous: None,
        });
    }
    let Value::Array(fields) = outcome(cache, stats, reply)? else {
        return Err(Error::Store("unexpected write reply".into()));
    };
    let mut fields = fields.into_iter();
    let existed = int(fields.next().as_ref()) == 1;
    let applied = int(fields.next().as_ref()) == 1;
    let previous = fields.next().and_then(blob);
    Ok(RawWriteOutcome {
        existed,
        applied,
        previous,
    })
}

/// The score of a `ZRANGE … WITHSCORES` reply's first member (RESP2: a flat array;
/// RESP3: an array of pairs), truncated to an integer.
pub(super) fn first_score(reply: &Value) -> Option<u64> {
    let Value::Array(items) = reply else {
        return None;
    };
    let score = match items.first()? {
        Value::Array(pair) => pair.get(1)?,
        _ => items.get(1)?,
    };
    let score = match score {
        Value::Double(d) => *d,
        Value::Int(i) => *i as f64,
        other => text(other)?.parse().ok()?,
    };
    (score >= 0.0).then_some(score as u64)
}

pub(super) fn int(v: Option<&Value>) -> u64 {
    match v {
        Some(Value::Int(i)) => u64::try_from(*i).unwrap_or(0),
        Some(v) => text(v).and_then(|t| t.parse().ok()).unwrap_or(0),
        None => 0,
    }
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub(super) fn blob(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::BulkString(b) => Some(b),
        _ => None,
    }
}
