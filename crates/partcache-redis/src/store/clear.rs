//! Clearing a cache: every partition emptied by the `clear` function, a bounded
//! number of entries per call, or (without an index) the entries a key scan finds.

use std::collections::BTreeMap;

use partcache::{Error, Result};
use redis::Value;

use super::cache::{BATCH, StoreInner};
use super::replies;
use super::scan::KeyScan;
use crate::arguments::flag;
use crate::routing::Request;
use crate::scripts::scripts;

impl StoreInner {
    /// Removes every entry, at most [`BATCH`] per function call, partition by
    /// partition (or by key scan, without an index); with `announce`, each removal is
    /// an event. Returns how many there were.
    pub(super) async fn clear_all(&self, announce: bool) -> Result<u64> {
        if !self.indexed {
            return self.clear_scanned(announce).await;
        }
        let mut partitions: Vec<u16> = (0..self.layout.partitions()).collect();
        let mut removed = 0;
        while !partitions.is_empty() {
            let requests = partitions
                .iter()
                .map(|&p| {
                    let mut r = self.script(&scripts().clear, p, std::iter::empty());
                    r.cmd.arg(BATCH).arg(flag(announce));
                    r
                })
                .collect();
            let replies = self.execute(requests).await?;
            let mut left_over = Vec::new();
            for (p, reply) in partitions.iter().zip(replies) {
                let Value::Array(pair) = self.outcome(reply)? else {
                    return Err(Error::Store("unexpected clear reply".into()));
                };
                removed += replies::int(pair.first());
                if replies::int(pair.get(1)) > 0 {
                    left_over.push(*p);
                }
            }
            partitions = left_over;
        }
        Ok(removed)
    }

    /// [`StoreInner::clear_all`] of a cache without an index: the entries a key scan
    /// finds, then one call per partition, which tells near caches to drop it.
    pub(super) async fn clear_scanned(&self, announce: bool) -> Result<u64> {
        let clear = |p: u16, texts: &[String]| {
            let mut r = self.script(&scripts().clear, p, texts.iter().map(String::as_str));
            r.cmd.arg(BATCH).arg(flag(announce));
            for text in texts {
                r.cmd.arg(text);
            }
            r
        };
        let mut scan = KeyScan::new();
        let mut removed = 0;
        let mut last = false;
        loop {
            let requests: Vec<Request> = match scan.step(&self.deployment, &self.layout).await? {
                Some(found) => {
                    let mut groups: BTreeMap<u16, Vec<String>> = BTreeMap::new();
                    for (p, text) in found {
                        groups.entry(p).or_default().push(text);
                    }
                    groups
                        .iter()
                        .flat_map(|(&p, texts)| texts.chunks(BATCH).map(move |c| clear(p, c)))
                        .collect()
                }
                None => {
                    last = true;
                    (0..self.partitions()).map(|p| clear(p, &[])).collect()
                }
            };
            for reply in self.execute(requests).await? {
                let Value::Array(pair) = self.outcome(reply)? else {
                    return Err(Error::Store("unexpected clear reply".into()));
                };
                removed += replies::int(pair.first());
            }
            if last {
                return Ok(removed);
            }
        }
    }
}
