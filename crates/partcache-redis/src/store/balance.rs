//! The balance report of a cache: per master, its partitions, entries and estimated
//! bytes (the `stats` function's counts and samples, or a key scan without an index).

use std::collections::HashMap;

use partcache::balance::{BalanceReport, MasterBalance};
use partcache::{Error, Result};
use redis::{Cmd, Value};

use super::cache::StoreInner;
use super::replies;
use super::scan::BYTES_SAMPLE;
use crate::routing::Request;
use crate::scripts::scripts;

impl StoreInner {
    /// Per partition, entries and estimated blob bytes (the `stats` function's reply
    /// for an indexed cache, a key scan without an index).
    pub(super) async fn partition_stats(&self) -> Result<Vec<(u64, u64)>> {
        if !self.indexed {
            let (_, partitions) = self.count_scanned(true).await?;
            let mut requests = Vec::new();
            let mut sampled = Vec::new();
            for (p, (_, texts)) in partitions.iter().enumerate() {
                if texts.is_empty() {
                    continue;
                }
                let p = u16::try_from(p).unwrap_or(u16::MAX);
                let mut cmd = Cmd::new();
                cmd.arg("MGET");
                for text in texts {
                    cmd.arg(self.layout.entry_key_arg(p, text));
                }
                requests.push(Request::new(self.layout.slot(p), cmd));
                sampled.push(usize::from(p));
            }
            let mut out: Vec<(u64, u64)> = partitions.iter().map(|(n, _)| (*n, 0)).collect();
            for (p, reply) in sampled.into_iter().zip(self.execute(requests).await?) {
                let Value::Array(values) = reply else {
                    return Err(Error::Store("unexpected sample reply".into()));
                };
                let lengths: Vec<u64> = values
                    .into_iter()
                    .filter_map(replies::blob)
                    .map(|b| b.len() as u64)
                    .collect();
                if !lengths.is_empty() {
                    let mean = lengths.iter().sum::<u64>() as f64 / lengths.len() as f64;
                    out[p].1 = (mean * out[p].0 as f64) as u64;
                }
            }
            return Ok(out);
        }
        let requests = (0..self.partitions())
            .map(|p| {
                let mut r = self.script(&scripts().stats, p, std::iter::empty());
                r.cmd.arg(BYTES_SAMPLE);
                r
            })
            .collect();
        let mut out = Vec::new();
        for reply in self.execute(requests).await? {
            let Value::Array(pair) = self.outcome(reply)? else {
                return Err(Error::Store("unexpected stats reply".into()));
            };
            out.push((replies::int(pair.first()), replies::int(pair.get(1))));
        }
        Ok(out)
    }

    /// Partitions, entries and bytes per master (see the crate docs, Balance).
    pub(super) async fn balance_report(&self) -> Result<BalanceReport> {
        let s = self;
        let map = s.deployment.slot_map().await?;
        let stats = s.partition_stats().await?;
        let mut rows: HashMap<String, MasterBalance> = map
            .masters()
            .iter()
            .map(|m| {
                (
                    m.clone(),
                    MasterBalance {
                        master: m.clone(),
                        partitions: 0,
                        entries: 0,
                        bytes: 0,
                    },
                )
            })
            .collect();
        for (p, (entries, bytes)) in (0..s.partitions()).zip(stats) {
            let master = map
                .master(s.layout.slot(p))
                .unwrap_or("(unserved)")
                .to_string();
            let row = rows.entry(master.clone()).or_insert_with(|| MasterBalance {
                master,
                partitions: 0,
                entries: 0,
                bytes: 0,
            });
            row.partitions += 1;
            row.entries += entries;
            row.bytes += bytes;
        }
        let mut masters: Vec<MasterBalance> = rows.into_values().collect();
        masters.sort_by(|a, b| a.master.cmp(&b.master));
        Ok(BalanceReport {
            cache: s.name.clone(),
            partitions: s.partitions(),
            masters,
        })
    }
}
