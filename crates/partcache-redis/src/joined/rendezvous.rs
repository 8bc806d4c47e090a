//! Which member of a joined store holds each partition: rendezvous (highest random
//! weight) hashing on `(member id, cache name, partition)`.
//!
//! Pure and synchronous, like `partcache::partition`: the store calls it once per cache
//! when it opens; it calls nothing. Every process that lists the same member ids computes
//! the same owners, with no coordination.
//!
//! Why rendezvous hashing: when a member is added, a partition
//! moves only if the new member outscores its current owner, which happens for about
//! `1/(D+1)` of the partitions, and only *to* the new member; when a member is removed,
//! only its own partitions move. A ring or `mod D` would move more, or move partitions
//! between members that did not change.

use partcache::{Error, Result};
use xxhash_rust::xxh3::xxh3_64;

/// The score of member `member_id` for partition `partition` of cache `cache`: XXH3
/// 64-bit (seed 0) over the member id's UTF-8 bytes, one `0x00` byte, the cache name's
/// UTF-8 bytes, one `0x00` byte, and the partition number as 2 little-endian bytes.
///
/// Identical on every platform, process and release: a change would move partitions
/// between members, so entries written before an upgrade would no longer be found.
pub fn score(member_id: &str, cache: &str, partition: u16) -> u64 {
    let mut input = Vec::with_capacity(member_id.len() + cache.len() + 4);
    write_input(&mut input, member_id, cache, partition);
    xxh3_64(&input)
}

fn write_input(buf: &mut Vec<u8>, member_id: &str, cache: &str, partition: u16) {
    buf.clear();
    buf.extend_from_slice(member_id.as_bytes());
    buf.push(0);
    buf.extend_from_slice(cache.as_bytes());
    buf.push(0);
    buf.extend_from_slice(&partition.to_le_bytes());
}

/// The members of a joined store, by id, and which of them owns each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendezvous {
    ids: Vec<String>,
}

impl Rendezvous {
    /// Members with these ids (in any order: the owner of a partition does not depend
    /// on it). An [`Error::Config`] when there is none or an id repeats.
    pub fn new<I, S>(ids: I) -> Result<Rendezvous>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let ids: Vec<String> = ids.into_iter().map(Into::into).collect();
        if ids.is_empty() {
            return Err(Error::Config(
                "a joined store needs at least one member".to_string(),
            ));
        }
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(Error::Config(format!(
                    "member id `{id}` is given twice: every member of a joined store needs its own id"
                )));
            }
        }
        Ok(Rendezvous { ids })
    }

    /// The member ids, in the order given.
    pub fn ids(&self) -> &[String] {
        &self.ids
    }

    /// The index (into [`ids`](Self::ids)) of the member that holds `partition` of
    /// `cache`: the one with the highest [`score`]; on a tie (two ids whose scores are
    /// equal, about one chance in 2^64) the smaller id.
    pub fn owner(&self, cache: &str, partition: u16) -> usize {
        let mut input = Vec::new();
        self.owner_with(&mut input, cache, partition)
    }

    fn owner_with(&self, input: &mut Vec<u8>, cache: &str, partition: u16) -> usize {
        let mut best = 0;
        let mut best_score = 0;
        for (i, id) in self.ids.iter().enumerate() {
            write_input(input, id, cache, partition);
            let s = xxh3_64(input);
            if i == 0 || s > best_score || (s == best_score && *id < self.ids[best]) {
                best = i;
                best_score = s;
            }
        }
        best
    }

    /// The owner of every partition `0..partitions` of `cache` (indexes into
    /// [`ids`](Self::ids)).
    pub fn assignment(&self, cache: &str, partitions: u16) -> Vec<usize> {
        let mut input = Vec::new();
        (0..partitions)
            .map(|p| self.owner_with(&mut input, cache, p))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u16 = partcache::partition::DEFAULT_PARTITIONS;

    fn ids(n: usize) -> Vec<String> {
        ["redis://10.0.0.1:6379/0", "redis://10.0.0.2:6379/0"]
            .into_iter()
            .map(String::from)
            .chain([
                "redis-cluster://10.0.1.1:7000,10.0.1.2:7000,10.0.1.3:7000".to_string(),
                "redis://10.0.0.4:6379/0".to_string(),
                "redis://10.0.0.5:6379/0".to_string(),
            ])
            .take(n)
            .collect()
    }

    fn ids_of(assignment: &[usize], r: &Rendezvous) -> Vec<String> {
        assignment.iter().map(|&i| r.ids()[i].clone()).collect()
    }

    #[test]
    fn the_score_is_xxh3_of_id_cache_and_partition() {
        // Pinned: a change here moves partitions between members (see `score`).
        let mut input = b"m1\0users\0".to_vec();
        input.extend_from_slice(&7u16.to_le_bytes());
        assert_eq!(score("m1", "users", 7), xxh3_64(&input));
        assert_eq!(score("m1", "users", 7), 0x93bf_9da2_e3ac_c962);
    }

    #[test]
    fn the_owner_does_not_depend_on_the_order_of_members() {
        let forward = Rendezvous::new(ids(3)).unwrap();
        let mut reversed_ids = ids(3);
        reversed_ids.reverse();
        let reversed = Rendezvous::new(reversed_ids).unwrap();
        assert_eq!(
            ids_of(&forward.assignment("users", P), &forward),
            ids_of(&reversed.assignment("users", P), &reversed)
        );
        for p in 0..P {
            assert_eq!(
                forward.ids()[forward.owner("users", p)],
                reversed.ids()[reversed.owner("users", p)]
            );
        }
    }

    #[test]
    fn partitions_spread_over_every_member() {
        let r = Rendezvous::new(ids(3)).unwrap();
        for cache in ["users", "sessions", "http"] {
            let mut counts = [0u32; 3];
            for owner in r.assignment(cache, P) {
                counts[owner] += 1;
            }
            // 77 expected each; binomial spread (σ ≈ 7.2) within 4σ.
            assert!(
                counts.iter().all(|&c| (48..=106).contains(&c)),
                "{cache}: {counts:?}"
            );
        }
    }

    #[test]
    fn adding_a_fourth_member_moves_a_quarter_of_the_partitions_and_only_to_it() {
        let three = Rendezvous::new(ids(3)).unwrap();
        let four = Rendezvous::new(ids(4)).unwrap();
        let mut total_moved = 0;
        for c in 0..50 {
            let cache = format!("cache-{c}");
            let before = ids_of(&three.assignment(&cache, P), &three);
            let after = ids_of(&four.assignment(&cache, P), &four);
            let moved: Vec<usize> = (0..before.len())
                .filter(|&p| before[p] != after[p])
                .collect();
            for &p in &moved {
                assert_eq!(
                    after[p],
                    four.ids()[3],
                    "partition {p} moved between old members"
                );
            }
            total_moved += moved.len();
        }
        // About 1/4 over many caches (the per-cache check on the bounds is in
        // tests/it/joined.rs).
        let share = total_moved as f64 / (50.0 * f64::from(P));
        assert!((0.22..0.28).contains(&share), "{share}");
    }

    #[test]
    fn removing_a_member_moves_only_its_partitions() {
        let four = Rendezvous::new(ids(4)).unwrap();
        let three = Rendezvous::new(ids(3)).unwrap();
        let before = ids_of(&four.assignment("users", P), &four);
        let after = ids_of(&three.assignment("users", P), &three);
        for p in 0..before.len() {
            if before[p] != four.ids()[3] {
                assert_eq!(before[p], after[p], "partition {p}");
            }
        }
    }

    #[test]
    fn no_member_or_a_repeated_id_is_a_config_error() {
        assert!(matches!(
            Rendezvous::new(Vec::<String>::new()),
            Err(Error::Config(_))
        ));
        let e = Rendezvous::new(["a", "b", "a"]).unwrap_err();
        assert!(
            matches!(e, Error::Config(ref m) if m.contains("`a`")),
            "{e}"
        );
    }

    #[test]
    fn one_member_owns_everything() {
        let r = Rendezvous::new(["only"]).unwrap();
        assert!(r.assignment("users", P).iter().all(|&o| o == 0));
    }
}
