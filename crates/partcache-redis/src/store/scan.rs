//! The entries of a cache without an index (no `max_entries`, no max-idle: see
//! `lua/common.lua`): found by `SCAN … MATCH` of each master that serves one of its
//! partitions, for iteration, `len`, `clear` and the balance report.
//!
//! One pass over each master's keys, not one per partition: a node's `SCAN` walks all
//! its keys whatever the pattern, so a pass per partition would walk them once per
//! partition the node serves. `SCAN` may return a key twice (while its table
//! rehashes): each node's keys are kept to once by a set of their hashes, dropped when
//! the node is done. Should the node serving a slot change under a pass (resharding),
//! the pass restarts on the new map at that node (its set kept); entries that moved
//! meanwhile between two nodes may then be returned twice or not at all, as they may
//! be written or removed meanwhile.

use std::collections::HashSet;
use std::sync::Arc;

use partcache::{Error, Result};
use redis::Value;

use super::cache::{BATCH, StoreInner};
use super::replies;
use crate::deployment::Deployment;
use crate::layout::Layout;
use crate::routing::Request;
use crate::scripts::scripts;

/// Entries sampled per partition for the byte estimate of a balance report.
pub(super) const BYTES_SAMPLE: usize = 16;

/// Keys asked for per `SCAN` step (Redis' `COUNT`: buckets visited, about as many keys).
const STEP: usize = 1000;

/// A pass over the entry keys of one cache.
pub(crate) struct KeyScan {
    /// Nodes still to do: address and a slot of the cache that it serves (to route by).
    nodes: Vec<(String, u16)>,
    /// Nodes done (not visited again after a topology change).
    done: HashSet<String>,
    /// The node in progress: its cursor and the hashes of the keys it returned.
    cursor: u64,
    seen: HashSet<u128>,
    planned: bool,
}

impl KeyScan {
    pub(super) fn new() -> KeyScan {
        KeyScan {
            nodes: Vec::new(),
            done: HashSet::new(),
            cursor: 0,
            seen: HashSet::new(),
            planned: false,
        }
    }

    /// Reads the slot map and lists the masters that serve a partition of the cache.
    async fn plan(&mut self, deployment: &Arc<Deployment>, layout: &Layout) -> Result<()> {
        let map = deployment.slot_map().await?;
        let mut nodes: Vec<(String, u16)> = Vec::new();
        for p in 0..layout.partitions() {
            let slot = layout.slot(p);
            let Some(master) = map.master(slot) else {
                return Err(Error::Unavailable(format!(
                    "no node serves slot {slot} of partition {p}"
                )));
            };
            if !self.done.contains(master) && !nodes.iter().any(|(a, _)| a == master) {
                nodes.push((master.to_string(), slot));
            }
        }
        // The node in progress (if still a master) first: its cursor restarts, its
        // set of seen keys stays.
        let current = self.nodes.first().map(|(a, _)| a.clone());
        if let Some(current) = current
            && let Some(i) = nodes.iter().position(|(a, _)| *a == current)
        {
            nodes.swap(0, i);
        } else {
            self.seen.clear();
        }
        self.nodes = nodes;
        self.cursor = 0;
        self.planned = true;
        Ok(())
    }

    /// One `SCAN` step: the (partition, text) of the entry keys it found, not seen
    /// before on this node; `None` once every node is done.
    pub(super) async fn step(
        &mut self,
        deployment: &Arc<Deployment>,
        layout: &Layout,
    ) -> Result<Option<Vec<(u16, String)>>> {
        if !self.planned {
            self.plan(deployment, layout).await?;
        }
        let Some((addr, slot)) = self.nodes.first().cloned() else {
            return Ok(None);
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(self.cursor)
            .arg("MATCH")
            .arg(layout.entry_pattern())
            .arg("COUNT")
            .arg(STEP);
        let (mut replies, nodes) = deployment.execute_on(vec![Request::new(slot, cmd)]).await?;
        if deployment.router.is_cluster() && nodes.first() != Some(&addr) {
            // The slot moved to another node: its cursor means nothing there.
            deployment.mark_slots_stale();
            self.plan(deployment, layout).await?;
            return Ok(Some(Vec::new()));
        }
        let (next, keys) = match replies.pop() {
            Some(Value::Array(mut parts)) if parts.len() == 2 => {
                let keys = parts.pop();
                let next = parts
                    .pop()
                    .and_then(|c| match c {
                        Value::BulkString(b) => std::str::from_utf8(&b).ok()?.parse().ok(),
                        Value::Int(i) => u64::try_from(i).ok(),
                        _ => None,
                    })
                    .ok_or_else(|| Error::Store("unexpected SCAN cursor".into()))?;
                (next, keys)
            }
            Some(Value::ServerError(e)) => {
                return Err(Error::Store(format!(
                    "SCAN on {addr} failed: {} {}",
                    e.code(),
                    e.details().unwrap_or("")
                )));
            }
            other => return Err(Error::Store(format!("unexpected SCAN reply: {other:?}"))),
        };
        let mut found = Vec::new();
        if let Some(Value::Array(keys)) = keys {
            for key in keys {
                let Value::BulkString(key) = key else {
                    continue;
                };
                if let Some((p, text)) = layout.parse_entry_key(&key)
                    && self.seen.insert(xxhash_rust::xxh3::xxh3_128(&key))
                {
                    found.push((p, text.to_string()));
                }
            }
        }
        if next == 0 {
            self.done.insert(addr);
            self.nodes.remove(0);
            self.seen.clear();
        }
        self.cursor = next;
        Ok(Some(found))
    }
}

impl StoreInner {
    /// One step of an iteration over `partition` from `cursor`.
    pub(super) async fn scan_step(
        &self,
        partition: u16,
        cursor: &str,
    ) -> Result<(String, Vec<(String, Vec<u8>)>)> {
        let mut request = self.script(&scripts().scan, partition, std::iter::empty());
        request.cmd.arg(cursor).arg(BATCH);
        let reply = self
            .execute(vec![request])
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        let Value::Array(parts) = self.outcome(reply)? else {
            return Err(Error::Store("unexpected scan reply".into()));
        };
        let next = parts
            .first()
            .and_then(replies::text)
            .unwrap_or_else(|| "0".to_string());
        let mut found = Vec::new();
        if let Some(Value::Array(items)) = parts.get(1) {
            for pair in items.chunks(2) {
                if let [t, Value::BulkString(blob)] = pair
                    && let Some(t) = replies::text(t)
                {
                    found.push((t, blob.clone()));
                }
            }
        }
        Ok((next, found))
    }

    /// The number of entries of a cache without an index, and per partition its
    /// entries and up to [`BYTES_SAMPLE`] of their texts, by key scan.
    pub(super) async fn count_scanned(
        &self,
        sample: bool,
    ) -> Result<(u64, Vec<(u64, Vec<String>)>)> {
        let mut scan = KeyScan::new();
        let mut total = 0;
        let mut partitions = vec![(0u64, Vec::new()); usize::from(self.partitions())];
        while let Some(found) = scan.step(&self.deployment, &self.layout).await? {
            total += found.len() as u64;
            if sample {
                for (p, text) in found {
                    let (n, texts) = &mut partitions[usize::from(p)];
                    *n += 1;
                    if texts.len() < BYTES_SAMPLE {
                        texts.push(text);
                    }
                }
            }
        }
        Ok((total, partitions))
    }
}
