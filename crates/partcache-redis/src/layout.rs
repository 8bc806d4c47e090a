//! Redis key names of a cache: every key of partition `i` holds `{tag(i)}`, the
//! partition's hash tag from [`PartitionMap::tag`], so a partition lives in one slot.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `pc:{tag}:<cache>:e:<key text>` | string | the entry's blob; Redis' own expiry holds its deadline |
//! | `pc:{tag}:<cache>:ix` | zset | key text → last use (µs): the partition's index and LRU order; only on a cache with `max_entries` or a max-idle |
//! | `pc:{tag}:<cache>:dl` | zset | key text → deadline (ms): what the reaper visits |
//! | `pc:{tag}:<cache>:fx` | hash | key text → fixed deadlines and key-only blob (entries with a deadline that a later call needs) |
//! | `pc:{tag}:<cache>:sq` | string | number of the last message published on the partition's channel |
//! | `pc:{<h>.meta}:<cache>:meta` | hash | partition count, codec id, layout version, whether the cache has the index, whether its processes publish events, the hashing rules' fingerprint and description (the last two added without a new version: see `lua/open.lua`) |
//! | `pc:{<h>.meta}:<cache>:reaper` | string | id of the process that reaps the cache, expiring with its claim |
//! | `pc:{<h>.meta}:<cache>:deputy` | string | id of the process that takes the reaping over when that claim lapses, expiring with its own |
//!
//! A cache without the index finds its entries by `SCAN` of each master with
//! [`Layout::entry_pattern`], and tells its own keys by [`Layout::parse_entry_key`].
//!
//! The meta key's tag must not depend on the partition count (it is how a reopen with
//! another count is caught): `<h>` is the low 32 bits of `xxh3_64(cache name)` in 8
//! lowercase hex digits, as in the partition tags' prefix.
//!
//! Events of partition `i` go to channel `pc:{tag}:<cache>:ev`.
//!
//! The tag comes first, so braces in a cache name or a key text never change the slot
//! (Redis hashes the first `{…}`). The cache name is kept in every key so that two
//! caches whose tags happen to coincide never share keys.

use std::sync::Arc;

use partcache::partition::PartitionMap;

/// Version of this layout, recorded in the meta key.
pub(crate) const LAYOUT_VERSION: u32 = 3;

/// Key and channel names of one cache.
pub(crate) struct Layout {
    map: PartitionMap,
    /// Reference-counted, like the channels: a batched put carries its partition's
    /// (`batching/puts.rs`) without a copy.
    prefixes: Vec<Arc<str>>,
    indexes: Vec<String>,
    deadlines: Vec<String>,
    fixed: Vec<String>,
    sequences: Vec<String>,
    channels: Vec<Arc<str>>,
    /// `KEYS[1]` of the `open` script: `pc:{<h>.meta}:<cache>:ix` (the script reads
    /// the `meta` key beside it).
    meta_index: String,
    /// The `SCAN` pattern of the cache's entry keys (see [`Layout::entry_pattern`]).
    entry_pattern: String,
    /// Partition of each tag.
    tags: std::collections::HashMap<String, u16>,
    /// What follows a partition's `}` in its entry keys: `:<cache>:e:`.
    entry_infix: String,
}

impl Layout {
    /// `database` is the standalone server's database number (0 on a cluster): pub/sub
    /// ignores databases, so it is part of every channel name except database 0's, or
    /// caches of one name in two databases would hear each other's events.
    pub(crate) fn new(map: PartitionMap, database: i64) -> Layout {
        let name = map.cache_name().to_string();
        let prefixes: Vec<Arc<str>> = (0..map.partitions())
            .map(|p| Arc::from(format!("pc:{{{}}}:{name}:", map.tag(p))))
            .collect();
        let indexes = prefixes.iter().map(|p| format!("{p}ix")).collect();
        let deadlines = prefixes.iter().map(|p| format!("{p}dl")).collect();
        let fixed = prefixes.iter().map(|p| format!("{p}fx")).collect();
        let sequences = prefixes.iter().map(|p| format!("{p}sq")).collect();
        let suffix = channel_suffix(database);
        let channels = prefixes
            .iter()
            .map(|p| Arc::from(format!("{p}{suffix}")))
            .collect();
        let hash = xxhash_rust::xxh3::xxh3_64(name.as_bytes()) as u32;
        let meta_index = format!("pc:{{{hash:08x}.meta}}:{name}:ix");
        // Every tag starts with the name's hash and a dot (partition.rs).
        let entry_pattern = format!("pc:{{{hash:08x}.*}}:{}:e:*", glob_escape(&name));
        let tags = (0..map.partitions())
            .map(|p| (map.tag(p).to_string(), p))
            .collect();
        let entry_infix = format!(":{name}:e:");
        Layout {
            entry_pattern,
            tags,
            entry_infix,
            map,
            prefixes,
            indexes,
            deadlines,
            fixed,
            sequences,
            channels,
            meta_index,
        }
    }

    /// Number of partitions.
    pub(crate) fn partitions(&self) -> u16 {
        self.map.partitions()
    }

    /// The slot of every key of `partition`.
    pub(crate) fn slot(&self, partition: u16) -> u16 {
        self.map.slot(partition)
    }

    /// The partition whose keys live in `slot` (`None` for the meta key's slot). A
    /// linear search: for logs and spans only.
    pub(crate) fn partition_of_slot(&self, slot: u16) -> Option<u16> {
        (0..self.partitions()).find(|&p| self.slot(p) == slot)
    }

    /// The entry key of `text` in `partition`.
    pub(crate) fn entry_key(&self, partition: u16, text: &str) -> String {
        let prefix = &self.prefixes[usize::from(partition)];
        let mut key = String::with_capacity(prefix.len() + 2 + text.len());
        key.push_str(prefix);
        key.push_str("e:");
        key.push_str(text);
        key
    }

    /// The entry key of `text` in `partition` as a command argument, written straight
    /// into the command (no `String` of its own: this is on every call's path).
    pub(crate) fn entry_key_arg<'a>(&'a self, partition: u16, text: &'a str) -> EntryKeyArg<'a> {
        EntryKeyArg {
            prefix: &self.prefixes[usize::from(partition)],
            text,
        }
    }

    /// The index key of `partition` (the scripts' `KEYS[1]`).
    pub(crate) fn index_key(&self, partition: u16) -> &str {
        &self.indexes[usize::from(partition)]
    }

    /// The keys every per-partition script declares first (`KEYS[1..4]`): the index,
    /// the deadlines, the fixed-deadline records and the event sequence. Declaring every key a script
    /// touches is what keeps a script atomic while its slot migrates: Redis answers
    /// `TRYAGAIN` while those keys are split between two nodes, instead of letting the
    /// script write a key on the node that no longer holds it (a `MIGRATE` would then
    /// overwrite the newer value with the older one).
    pub(crate) fn partition_keys(&self, partition: u16) -> [&str; 4] {
        let p = usize::from(partition);
        [
            &self.indexes[p],
            &self.deadlines[p],
            &self.fixed[p],
            &self.sequences[p],
        ]
    }

    /// The key holding the number of the last message published on `partition`'s
    /// channel (see `events.rs`).
    pub(crate) fn sequence_key(&self, partition: u16) -> &str {
        &self.sequences[usize::from(partition)]
    }

    /// `KEYS[1]` of the `open` script, and its slot.
    pub(crate) fn meta_index_key(&self) -> (&str, u16) {
        (
            &self.meta_index,
            partcache::partition::key_slot(self.meta_index.as_bytes()),
        )
    }

    /// The keys of the cache's reaping claim and its deputy's (`store/reaper.rs`), and
    /// their slot: beside the meta record, `pc:{<h>.meta}:<cache>:reaper` and
    /// `…:deputy`.
    pub(crate) fn reaper_claim_keys(&self) -> (String, String, u16) {
        let (index, slot) = self.meta_index_key();
        let prefix = index.trim_end_matches("ix");
        (format!("{prefix}reaper"), format!("{prefix}deputy"), slot)
    }

    /// The event channel of `partition`.
    pub(crate) fn channel(&self, partition: u16) -> &str {
        &self.channels[usize::from(partition)]
    }

    /// The key prefix of `partition`: every key of the partition, and its channel,
    /// starts with it.
    pub(crate) fn prefix(&self, partition: u16) -> &str {
        &self.prefixes[usize::from(partition)]
    }

    /// [`Layout::prefix`], shared.
    pub(crate) fn shared_prefix(&self, partition: u16) -> Arc<str> {
        self.prefixes[usize::from(partition)].clone()
    }

    /// [`Layout::channel`], shared.
    pub(crate) fn shared_channel(&self, partition: u16) -> Arc<str> {
        self.channels[usize::from(partition)].clone()
    }

    /// A `SCAN … MATCH` pattern that every entry key of the cache matches (and few
    /// other keys: those of another cache whose name hash and name the pattern's `*`s
    /// happen to fit; [`Layout::parse_entry_key`] tells them apart).
    pub(crate) fn entry_pattern(&self) -> &str {
        &self.entry_pattern
    }

    /// The partition and key text of `key` if it is an entry key of this cache.
    pub(crate) fn parse_entry_key<'k>(&self, key: &'k [u8]) -> Option<(u16, &'k str)> {
        let rest = key.strip_prefix(b"pc:{")?;
        let close = rest.iter().position(|&b| b == b'}')?;
        let tag = std::str::from_utf8(&rest[..close]).ok()?;
        let partition = *self.tags.get(tag)?;
        let text = rest[close + 1..].strip_prefix(self.entry_infix.as_bytes())?;
        Some((partition, std::str::from_utf8(text).ok()?))
    }
}

/// `text` with the characters `SCAN … MATCH` treats specially escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What follows a partition's key prefix in its channel name: `ev`, or `ev:<db>` on a
/// database other than 0 (see [`Layout::new`]).
pub(crate) fn channel_suffix(database: i64) -> String {
    match database {
        0 => "ev".to_string(),
        db => format!("ev:{db}"),
    }
}

/// An entry key as a command argument (see [`Layout::entry_key_arg`]).
pub(crate) struct EntryKeyArg<'a> {
    prefix: &'a str,
    text: &'a str,
}

impl redis::ToRedisArgs for EntryKeyArg<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        use std::io::Write;
        let mut arg = out.writer_for_next_arg();
        // Writing into the command's own buffer cannot fail.
        let _ = arg.write_all(self.prefix.as_bytes());
        let _ = arg.write_all(b"e:");
        let _ = arg.write_all(self.text.as_bytes());
    }
}

impl redis::ToSingleRedisArg for EntryKeyArg<'_> {}

#[cfg(test)]
mod tests {
    use super::*;
    use partcache::partition::key_slot;

    #[test]
    fn every_key_and_channel_of_a_partition_hashes_to_its_slot() {
        let layout = Layout::new(PartitionMap::new("we{ir}d:name", 7).unwrap(), 0);
        for p in 0..7 {
            let slot = layout.slot(p);
            assert_eq!(key_slot(layout.entry_key(p, "user:{42}").as_bytes()), slot);
            assert_eq!(key_slot(layout.index_key(p).as_bytes()), slot);
            for key in layout.partition_keys(p) {
                assert_eq!(key_slot(key.as_bytes()), slot);
            }
            assert_eq!(key_slot(layout.channel(p).as_bytes()), slot);
        }
    }

    #[test]
    fn entry_keys_parse_back_and_other_keys_do_not() {
        let layout = Layout::new(PartitionMap::new("we*ir[d]:name", 7).unwrap(), 0);
        let other = Layout::new(PartitionMap::new("ir[d]:name", 7).unwrap(), 0);
        for p in 0..7 {
            let key = layout.entry_key(p, "user:{42}:e:x");
            assert_eq!(
                layout.parse_entry_key(key.as_bytes()),
                Some((p, "user:{42}:e:x"))
            );
            assert_eq!(other.parse_entry_key(key.as_bytes()), None);
            assert_eq!(layout.parse_entry_key(layout.index_key(p).as_bytes()), None);
        }
        assert!(layout.entry_pattern().contains(r"we\*ir\[d\]:name:e:*"));
    }
}
