//! How a partitioned cache spreads over a cluster's masters: the balance report.
//!
//! A remote store that partitions caches over several masters (the Redis Cluster store)
//! answers [`crate::Cache::balance_report`] with one row per master. Other stores answer
//! with [`crate::Error::Config`] ("not partitioned").

use std::fmt;

/// One master's share of a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterBalance {
    /// The master (its address, `127.0.0.1:7000`, or a member name on joined stores).
    pub master: String,
    /// How many of the cache's partitions it holds.
    pub partitions: u16,
    /// Entries in those partitions (approximate: the stores' per-partition counts).
    pub entries: u64,
    /// Bytes in those partitions, as the store estimates them (its docs say how).
    pub bytes: u64,
}

/// Partitions, entries and bytes per master of one cache. `Display` prints a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceReport {
    /// The cache's name.
    pub cache: String,
    /// The cache's partition count `P`.
    pub partitions: u16,
    /// One row per master, sorted by master.
    pub masters: Vec<MasterBalance>,
}

impl BalanceReport {
    /// Total entries over all masters.
    pub fn entries(&self) -> u64 {
        self.masters.iter().map(|m| m.entries).sum()
    }

    /// Total bytes over all masters.
    pub fn bytes(&self) -> u64 {
        self.masters.iter().map(|m| m.bytes).sum()
    }
}

impl fmt::Display for BalanceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "cache `{}`: {} partitions over {} masters",
            self.cache,
            self.partitions,
            self.masters.len()
        )?;
        let width = self
            .masters
            .iter()
            .map(|m| m.master.len())
            .max()
            .unwrap_or(0)
            .max("master".len());
        writeln!(
            f,
            "{:<width$}  {:>10}  {:>12}  {:>14}",
            "master", "partitions", "entries", "bytes"
        )?;
        for m in &self.masters {
            writeln!(
                f,
                "{:<width$}  {:>10}  {:>12}  {:>14}",
                m.master, m.partitions, m.entries, m.bytes
            )?;
        }
        write!(
            f,
            "{:<width$}  {:>10}  {:>12}  {:>14}",
            "total",
            self.partitions,
            self.entries(),
            self.bytes()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balance_report_prints_one_row_per_master_and_a_total() {
        let report = BalanceReport {
            cache: "users".into(),
            partitions: 5,
            masters: vec![
                MasterBalance {
                    master: "127.0.0.1:7000".into(),
                    partitions: 3,
                    entries: 30,
                    bytes: 3000,
                },
                MasterBalance {
                    master: "127.0.0.1:7001".into(),
                    partitions: 2,
                    entries: 20,
                    bytes: 2000,
                },
            ],
        };
        let text = report.to_string();
        assert!(
            text.contains("cache `users`: 5 partitions over 2 masters"),
            "{text}"
        );
        assert!(text.lines().nth(2).unwrap().contains("127.0.0.1:7000"));
        assert!(text.lines().last().unwrap().contains("50"), "{text}");
        assert_eq!(report.bytes(), 5000);
    }
}
