//! A cluster's slot map (which master, and which replicas, serve each slot), read from
//! `CLUSTER SLOTS`.
//!
//! partcache routes by node address itself instead of through redis-rs's cluster
//! client ("Why our own router" in `docs/ARCHITECTURE.md`): that client keeps its slot
//! map to itself, so sending to an explicit address (`SingleNodeRoutingInfo::ByAddress`)
//! would still need this one.

use partcache::partition::SLOT_COUNT;
use partcache::{Error, Result};
use redis::Value;

/// Marks a slot no master serves.
const UNSERVED: u16 = u16::MAX;

/// Which node serves each slot.
#[derive(Debug, Clone)]
pub(crate) struct SlotMap {
    /// `host:port` of every master, sorted.
    masters: Vec<String>,
    /// Replicas of each master (same index).
    replicas: Vec<Vec<String>>,
    /// Per slot, an index into `masters`, or [`UNSERVED`].
    owner: Vec<u16>,
}

impl SlotMap {
    /// A single server serving every slot (standalone deployments).
    pub(crate) fn single(addr: &str) -> SlotMap {
        SlotMap {
            masters: vec![addr.to_string()],
            replicas: vec![Vec::new()],
            owner: vec![0; usize::from(SLOT_COUNT)],
        }
    }

    /// Parses a `CLUSTER SLOTS` reply received from `queried` (whose host replaces the
    /// empty or `?` host Redis reports when it does not know its own address).
    pub(crate) fn from_cluster_slots(reply: &Value, queried: &str) -> Result<SlotMap> {
        let queried_host = queried.rsplit_once(':').map(|(h, _)| h).unwrap_or(queried);
        let Value::Array(ranges) = reply else {
            return Err(Error::Store(format!(
                "unexpected CLUSTER SLOTS reply: {reply:?}"
            )));
        };
        let mut parsed: Vec<(u16, u16, String, Vec<String>)> = Vec::new();
        for range in ranges {
            let Value::Array(fields) = range else {
                continue;
            };
            let (Some(start), Some(end)) =
                (fields.first().and_then(int), fields.get(1).and_then(int))
            else {
                continue;
            };
            let mut nodes = fields[2..]
                .iter()
                .filter_map(|node| node_addr(node, queried_host));
            let Some(master) = nodes.next() else { continue };
            let replicas: Vec<String> = nodes.collect();
            let (Ok(start), Ok(end)) = (u16::try_from(start), u16::try_from(end)) else {
                continue;
            };
            parsed.push((start, end, master, replicas));
        }
        let mut masters: Vec<String> = parsed.iter().map(|(_, _, m, _)| m.clone()).collect();
        masters.sort();
        masters.dedup();
        let mut replicas = vec![Vec::new(); masters.len()];
        let mut owner = vec![UNSERVED; usize::from(SLOT_COUNT)];
        for (start, end, master, reps) in parsed {
            let Ok(index) = masters.binary_search(&master) else {
                continue;
            };
            let Ok(index16) = u16::try_from(index) else {
                continue;
            };
            for slot in start..=end.min(SLOT_COUNT - 1) {
                owner[usize::from(slot)] = index16;
            }
            for r in reps {
                if !replicas[index].contains(&r) {
                    replicas[index].push(r);
                }
            }
        }
        if masters.is_empty() {
            return Err(Error::Unavailable(format!(
                "{queried} reports no slots: the cluster is not set up"
            )));
        }
        Ok(SlotMap {
            masters,
            replicas,
            owner,
        })
    }

    /// The master serving `slot`.
    pub(crate) fn master(&self, slot: u16) -> Option<&str> {
        let index = *self.owner.get(usize::from(slot))?;
        self.masters.get(usize::from(index)).map(String::as_str)
    }

    /// A replica of the master serving `slot`, chosen by `pick` among them, or the
    /// master when it has none.
    pub(crate) fn replica(&self, slot: u16, pick: usize) -> Option<&str> {
        let index = usize::from(*self.owner.get(usize::from(slot))?);
        match self.replicas.get(index) {
            Some(reps) if !reps.is_empty() => Some(reps[pick % reps.len()].as_str()),
            _ => self.masters.get(index).map(String::as_str),
        }
    }

    /// Every master, sorted.
    pub(crate) fn masters(&self) -> &[String] {
        &self.masters
    }

    /// Every node the map knows (masters, then replicas).
    pub(crate) fn nodes(&self) -> impl Iterator<Item = &String> {
        self.masters.iter().chain(self.replicas.iter().flatten())
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn node_addr(node: &Value, queried_host: &str) -> Option<String> {
    let Value::Array(parts) = node else {
        return None;
    };
    let host = match parts.first()? {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => return None,
    };
    let port = int(parts.get(1)?)?;
    let host = if host.is_empty() || host == "?" {
        queried_host.to_string()
    } else {
        host
    };
    Some(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn cluster_slots_replies_map_every_slot_to_its_master() {
        let reply = Value::Array(vec![
            Value::Array(vec![
                Value::Int(0),
                Value::Int(8191),
                node("10.0.0.1", 7000),
                node("10.0.0.2", 7003),
            ]),
            Value::Array(vec![Value::Int(8192), Value::Int(16383), node("", 7001)]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, "10.0.0.9:7001").unwrap();
        assert_eq!(map.master(0), Some("10.0.0.1:7000"));
        assert_eq!(map.master(16383), Some("10.0.0.9:7001"));
        assert_eq!(map.replica(5, 0), Some("10.0.0.2:7003"));
        assert_eq!(map.replica(9000, 3), Some("10.0.0.9:7001"));
        assert_eq!(map.masters().len(), 2);
    }

    #[test]
    fn an_empty_reply_is_an_unavailable_cluster() {
        assert!(matches!(
            SlotMap::from_cluster_slots(&Value::Array(vec![]), "h:1"),
            Err(Error::Unavailable(_))
        ));
    }
}
