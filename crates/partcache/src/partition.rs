//! How a cache's keys spread over a Redis / Valkey Cluster: Redis-Cluster-style
//! partitioning with precomputed hash tags.
//!
//! A cache is split into `P` partitions (default [`DEFAULT_PARTITIONS`], at least
//! [`MIN_PARTITIONS`], at most [`SLOT_COUNT`]). Every entry of partition `i` is stored
//! under Redis keys that contain the hash tag `{tag(i)}`, so Redis Cluster puts the whole
//! partition in one slot, and multi-key operations on a partition (batches, scripts,
//! per-partition eviction bookkeeping) stay on one node. The tags are chosen so that the
//! partitions spread evenly over the cluster's masters.
//!
//! # From a key to a slot
//!
//! 1. The key's canonical text goes through the cache's [`HashingPolicy`], which yields
//!    its *tag*: the Redis hash-tag rule ([`hash_tag`]) or the whole key by default, or
//!    the named group `tag` of the first matching custom regex rule.
//! 2. `partition = xxh3_64(tag) % P` ([`PartitionMap::partition_of_tag`]), with XXH3
//!    64-bit, seed 0, over the tag's UTF-8 bytes. Keys with equal tags share a partition.
//! 3. The partition's Redis hash tag ([`PartitionMap::tag`]) decides the slot
//!    ([`PartitionMap::slot`]), and so the node.
//!
//! Note that the slot is *not* [`key_slot`] of the key itself: entries are routed by
//! partition, and the key's own braces only matter through the hashing policy.
//!
//! # Deriving the partition tags
//!
//! Every client of a cache (in any language) must derive the same tags with no
//! coordination, so the algorithm is fixed and exact:
//!
//! 1. `prefix` = the low 32 bits of `xxh3_64(cache_name as UTF-8, seed 0)`, written as 8
//!    lowercase hex digits, zero-padded (`format!("{:08x}", h as u32)`). It contains no
//!    `{` or `}` whatever the cache name is, and different caches get different tags and
//!    so different slots within the same ranges.
//! 2. The slot range of partition `i` is `[i*16384/P, (i+1)*16384/P)` in integer
//!    arithmetic ([`PartitionMap::slot_range`]): contiguous, disjoint, covering all
//!    16384 slots, each `floor(16384/P)` or `ceil(16384/P)` slots long.
//! 3. The *anchor* slot of partition `i` is the middle of its range:
//!    `start + (end - start - 1) / 2` (integer division, so the lower middle when the
//!    length is even).
//! 4. `tag(i)` is the first of the candidates `format!("{prefix}.{i}.{j}")` for
//!    `j = 0, 1, 2, …` (`i` and `j` in decimal, no padding) whose
//!    `crc16(candidate) % 16384` equals the anchor slot, with [`crc16`] being
//!    CRC16-XMODEM. A suffix is always found with `j < 1_000_000`: the six-digit
//!    suffixes `100000..=999999` alone reach every slot whatever the text before them.
//!
//! Why the middle slot and not any slot of the range: a partition whose range straddles
//! the boundary between two masters would otherwise land on either master depending on
//! the cache name, and a master could end up with two more partitions than another.
//! Anchoring every partition in the middle of its range makes the partition count per
//! master differ by at most one for every `P` in `3..=300` over 1 to 10 masters split as
//! `redis-cli --cluster create` splits slots (see [`SlotOwners::balanced`] and
//! [`partitions_per_master`]; the tests check all of these).
//!
//! A direct search tries about 16384 candidates per partition (one slot out of 16384
//! has to match), so `P × 16384` CRCs: milliseconds for 231 partitions, a few seconds
//! for 16384. This module gets the same answer in constant time per partition: CRC16
//! with zero initial value and no final XOR is linear, so for a suffix `d` of `L` digits
//! `crc(x ‖ d) = crc(x ‖ 0ᴸ) ⊕ crc(d)`, and a table (built once per process) of the
//! smallest `L`-digit number reaching each slot answers the search for any prefix.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::{Range, RangeInclusive};
use std::sync::{Arc, OnceLock};

use crc::{CRC_16_XMODEM, Crc};
use regex::Regex;
use xxhash_rust::xxh3::xxh3_64;

/// Number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: u16 = 16384;

/// Partitions per cache when neither the cache config nor the store says otherwise.
///
/// 231 = 3 × 7 × 11 divides exactly over 3, 7 or 11 masters; over other small clusters
/// (up to 10 masters, checked by the tests) the partition counts differ by at most one.
pub const DEFAULT_PARTITIONS: u16 = 231;

/// The fewest partitions a cache may have: fewer could not spread over the three
/// masters a Redis Cluster has at least.
pub const MIN_PARTITIONS: u16 = 3;

/// The most custom hashing rules a policy may have: every key is matched against them
/// in order, so a long list costs on every operation.
pub const MAX_CUSTOM_RULES: usize = 32;

/// Longest key text (in chars) quoted in a [`PartitionError::NoRuleMatches`].
const MAX_QUOTED_KEY_CHARS: usize = 200;

/// Redis keeps the slot in the low 14 bits of the CRC (`% 16384`).
const SLOT_MASK: u16 = SLOT_COUNT - 1;

/// CRC16-XMODEM (polynomial 0x1021, initial value 0, no reflection, no final XOR): the
/// CRC Redis Cluster uses for key slots.
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_XMODEM);

/// CRC16-XMODEM of `bytes`, as Redis Cluster computes it for key slots
/// (`crc16(b"123456789") == 0x31C3`).
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC16.checksum(bytes)
}

/// The Redis Cluster hash slot of `key`: `crc16(hash tag or whole key) % 16384`, with
/// the hash-tag rule of [`hash_tag`] applied on the key's bytes.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key).unwrap_or(key)) % SLOT_COUNT
}

/// The Redis Cluster hash tag of `key`: the bytes between the first `{` and the first
/// `}` after it, if there are any; `None` when there is no such pair or it is empty
/// (`{}`), in which case Redis hashes the whole key.
pub fn hash_tag(key: &[u8]) -> Option<&[u8]> {
    hash_tag_span(key).map(|span| &key[span])
}

/// Byte span of the hash tag in `key`, shared by [`hash_tag`] and the standard policy
/// (which needs it on a `&str`; the braces are ASCII, so the span is on char boundaries).
fn hash_tag_span(key: &[u8]) -> Option<Range<usize>> {
    let open = key.iter().position(|&b| b == b'{')?;
    let len = key[open + 1..].iter().position(|&b| b == b'}')?;
    (len > 0).then(|| open + 1..open + 1 + len)
}

/// A partitioning or hashing configuration that cannot work, or a key that no custom
/// hashing rule accepts. Each message says what to change.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PartitionError {
    /// Fewer than [`MIN_PARTITIONS`] partitions were asked for.
    #[error(
        "a cache needs at least {MIN_PARTITIONS} partitions, {requested} were requested; \
         use {MIN_PARTITIONS}..={SLOT_COUNT} (default {DEFAULT_PARTITIONS})"
    )]
    TooFewPartitions {
        /// The partition count asked for.
        requested: u16,
    },
    /// More partitions than Redis Cluster has slots were asked for.
    #[error(
        "a cache can have at most {SLOT_COUNT} partitions (one per Redis Cluster slot), \
         {requested} were requested; use {MIN_PARTITIONS}..={SLOT_COUNT} (default {DEFAULT_PARTITIONS})"
    )]
    TooManyPartitions {
        /// The partition count asked for.
        requested: u16,
    },
    /// More than [`MAX_CUSTOM_RULES`] custom hashing rules were given.
    #[error(
        "{count} custom hashing rules were given, at most {MAX_CUSTOM_RULES} are allowed; \
         merge rules with alternation, e.g. ^(?:user|account):(?<tag>\\d+)"
    )]
    TooManyRules {
        /// How many rules were given.
        count: usize,
    },
    /// Custom hashing was asked for with an empty rule list, which would reject every key.
    #[error(
        "custom hashing needs at least one rule, e.g. ^user:(?<tag>\\d+); \
         leave the rules unset to use standard Redis hash tags"
    )]
    NoRules,
    /// A custom hashing rule is not a valid regular expression.
    #[error(
        "custom hashing rule at index {index} (`{pattern}`) is not a valid regular expression: {reason}"
    )]
    BadRulePattern {
        /// Position of the rule in the list, from 0.
        index: usize,
        /// The rule as written.
        pattern: String,
        /// What the regex parser or compiler said.
        reason: String,
    },
    /// A custom hashing rule has no named group `tag` to take the tag from.
    #[error(
        "custom hashing rule at index {index} (`{pattern}`) has no named group `tag`; \
         capture the part of the key that picks the partition as (?<tag>...), e.g. ^user:(?<tag>\\d+)"
    )]
    RuleWithoutTagGroup {
        /// Position of the rule in the list, from 0.
        index: usize,
        /// The rule as written.
        pattern: String,
    },
    /// No custom hashing rule matches a key, so it has no partition.
    #[error(
        "key `{key}` matches none of the custom hashing rules [{}] \
         (rules are anchored at the start of the key); add a rule for it or change the key",
        .patterns.join(", ")
    )]
    NoRuleMatches {
        /// The key's canonical text, cut to 200 chars (ending in `…` when cut).
        key: String,
        /// The rules, in order, as written.
        patterns: Vec<String>,
    },
}

/// How a key's tag (the part of it that picks its partition) is extracted.
#[derive(Clone, Debug, Default)]
pub enum HashingPolicy {
    /// The Redis hash-tag rule on the key's text ([`hash_tag`]), else the whole key:
    /// keys `{user1}.name` and `{user1}.email` share a partition.
    #[default]
    Standard,
    /// Regex rules tried in order; see [`CustomRules`].
    Custom(CustomRules),
}

impl HashingPolicy {
    /// The tag of `key`, a slice of it.
    ///
    /// Standard: the [`hash_tag`] of the key's UTF-8 bytes, else the whole key. Custom:
    /// the named group `tag` of the first rule (in order) that matches at the key's
    /// start, or [`PartitionError::NoRuleMatches`] when none does.
    pub fn tag<'k>(&self, key: &'k str) -> Result<&'k str, PartitionError> {
        match self {
            HashingPolicy::Standard => Ok(hash_tag_span(key.as_bytes())
                .and_then(|span| key.get(span))
                .unwrap_or(key)),
            HashingPolicy::Custom(rules) => rules.tag(key),
        }
    }

    /// A custom policy from regex patterns; see [`CustomRules::new`] for the rules and
    /// errors.
    pub fn custom<I, S>(patterns: I) -> Result<Self, PartitionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        CustomRules::new(patterns).map(HashingPolicy::Custom)
    }

    /// The policy in words, the same in every process that has it: `standard`, or
    /// `rules ["…", …]` with the custom patterns in order. Stores that several
    /// processes share record it beside the cache's data, so that a process whose
    /// rules differ (and would look for keys in other partitions) is refused.
    pub fn describe(&self) -> String {
        match self {
            HashingPolicy::Standard => "standard".to_string(),
            HashingPolicy::Custom(rules) => format!("rules {:?}", rules.patterns()),
        }
    }

    /// A fingerprint of [`HashingPolicy::describe`]: XXH3 64-bit, seed 0, over its
    /// UTF-8 bytes. Two policies with one fingerprint put every key in the same
    /// partition.
    pub fn fingerprint(&self) -> u64 {
        xxh3_64(self.describe().as_bytes())
    }
}

/// Up to [`MAX_CUSTOM_RULES`] compiled regex rules, tried in order.
///
/// Each pattern must contain a named group `tag`. A rule only matches at the start of
/// the key, whether or not the pattern starts with `^` (it is compiled as
/// `^(?:PATTERN)`), but need not reach the end of it: `user:(?<tag>\d+)` gives the tag
/// `42` for `user:42:profile` and does not match `xuser:42`. A rule that matches but
/// whose `tag` group takes no part in the match (e.g. the other branch of an
/// alternation) counts as not matching, so the next rule is tried. An empty tag is
/// accepted as it is.
#[derive(Clone, Debug)]
pub struct CustomRules {
    /// Anchored forms of `patterns`, same order.
    rules: Vec<Regex>,
    /// The rules as the user wrote them, for error messages.
    patterns: Vec<String>,
}

impl CustomRules {
    /// Compiles `patterns`, in order.
    ///
    /// Errors: [`PartitionError::NoRules`] for an empty list,
    /// [`PartitionError::TooManyRules`] beyond [`MAX_CUSTOM_RULES`],
    /// [`PartitionError::BadRulePattern`] for an invalid regex and
    /// [`PartitionError::RuleWithoutTagGroup`] for a rule without a `tag` group, each
    /// naming the rule's index.
    pub fn new<I, S>(patterns: I) -> Result<Self, PartitionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns: Vec<String> = patterns
            .into_iter()
            .map(|p| p.as_ref().to_owned())
            .collect();
        if patterns.is_empty() {
            return Err(PartitionError::NoRules);
        }
        if patterns.len() > MAX_CUSTOM_RULES {
            return Err(PartitionError::TooManyRules {
                count: patterns.len(),
            });
        }
        let rules = patterns
            .iter()
            .enumerate()
            .map(|(index, pattern)| compile_rule(index, pattern))
            .collect::<Result<_, _>>()?;
        Ok(CustomRules { rules, patterns })
    }

    /// The rules as written, in order.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The tag of `key` under these rules (see [`HashingPolicy::tag`]).
    pub fn tag<'k>(&self, key: &'k str) -> Result<&'k str, PartitionError> {
        self.rules
            .iter()
            .find_map(|rule| rule.captures(key).and_then(|caps| caps.name("tag")))
            .map(|tag| tag.as_str())
            .ok_or_else(|| PartitionError::NoRuleMatches {
                key: quote_key(key),
                patterns: self.patterns.clone(),
            })
    }
}

/// Compiles one rule anchored at the key's start.
fn compile_rule(index: usize, pattern: &str) -> Result<Regex, PartitionError> {
    let bad = |e: regex::Error| PartitionError::BadRulePattern {
        index,
        pattern: pattern.to_owned(),
        reason: e.to_string(),
    };
    // Compile the pattern alone first: if it is valid its parentheses balance, so the
    // wrapper below cannot be escaped (`a)|(b` would otherwise unanchor `b`), and the
    // error message is about what the user wrote rather than about our wrapper.
    let plain = Regex::new(pattern).map_err(bad)?;
    if !plain.capture_names().any(|name| name == Some("tag")) {
        return Err(PartitionError::RuleWithoutTagGroup {
            index,
            pattern: pattern.to_owned(),
        });
    }
    // A valid pattern can only break the wrapper by ending in a verbose-mode (`(?x)`)
    // comment, which would swallow the closing parenthesis; verbose mode is then on at
    // the end, so a newline ends the comment and is itself ignored.
    Regex::new(&format!("^(?:{pattern})"))
        .or_else(|_| Regex::new(&format!("^(?:{pattern}\n)")))
        .map_err(bad)
}

/// `key` cut to [`MAX_QUOTED_KEY_CHARS`] chars for an error message, so a huge key
/// cannot flood logs.
fn quote_key(key: &str) -> String {
    if key.chars().count() <= MAX_QUOTED_KEY_CHARS {
        key.to_owned()
    } else {
        let mut quoted: String = key.chars().take(MAX_QUOTED_KEY_CHARS - 1).collect();
        quoted.push('…');
        quoted
    }
}

/// The partition layout of one cache: its name, partition count and the precomputed
/// hash tag and slot of every partition. Cheap to clone (shared behind `Arc`s).
#[derive(Clone, Debug)]
pub struct PartitionMap {
    cache_name: Arc<str>,
    partitions: u16,
    /// `tags[i]` is partition `i`'s hash tag.
    tags: Arc<[String]>,
    /// `slots[i] == key_slot` of `{tags[i]}`, the anchor slot of partition `i`.
    slots: Arc<[u16]>,
}

impl PartitionMap {
    /// The layout of cache `cache_name` with `partitions` partitions, deriving every
    /// partition's tag as the module docs describe.
    ///
    /// Errors: [`PartitionError::TooFewPartitions`] below [`MIN_PARTITIONS`],
    /// [`PartitionError::TooManyPartitions`] above [`SLOT_COUNT`].
    pub fn new(cache_name: &str, partitions: u16) -> Result<Self, PartitionError> {
        if partitions < MIN_PARTITIONS {
            return Err(PartitionError::TooFewPartitions {
                requested: partitions,
            });
        }
        if partitions > SLOT_COUNT {
            return Err(PartitionError::TooManyPartitions {
                requested: partitions,
            });
        }
        let prefix = tag_prefix(cache_name);
        let (tags, slots): (Vec<String>, Vec<u16>) = (0..partitions)
            .map(|i| {
                let anchor = anchor_slot(range_of(i, partitions));
                let tag = find_tag(&prefix, i, anchor);
                debug_assert_eq!(crc16(tag.as_bytes()) & SLOT_MASK, anchor, "tag {tag}");
                (tag, anchor)
            })
            .unzip();
        Ok(PartitionMap {
            cache_name: cache_name.into(),
            partitions,
            tags: tags.into(),
            slots: slots.into(),
        })
    }

    /// Number of partitions, `P`.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The cache this layout is for.
    pub fn cache_name(&self) -> &str {
        &self.cache_name
    }

    /// The partition of a tag: `xxh3_64(tag) % P`, XXH3 64-bit with seed 0 over the
    /// tag's UTF-8 bytes.
    ///
    /// Identical on every platform, process and release (never Rust's randomly seeded
    /// hasher): every client must put a key in the same partition, and entries written
    /// before an upgrade must be found after it.
    pub fn partition_of_tag(&self, tag: &str) -> u16 {
        // The remainder is below P <= 16384, so it fits in u16.
        (xxh3_64(tag.as_bytes()) % u64::from(self.partitions)) as u16
    }

    /// The partition of `key` (its canonical text): the partition of its tag under
    /// `policy`.
    pub fn partition_of(&self, policy: &HashingPolicy, key: &str) -> Result<u16, PartitionError> {
        policy.tag(key).map(|tag| self.partition_of_tag(tag))
    }

    /// The slot range of `partition`: `[i*16384/P, (i+1)*16384/P)` in integer
    /// arithmetic, so the ranges of all partitions are contiguous, disjoint and cover
    /// all 16384 slots.
    ///
    /// # Panics
    /// If `partition >= P`.
    pub fn slot_range(&self, partition: u16) -> Range<u16> {
        assert!(
            partition < self.partitions,
            "partition {partition} out of range for cache `{}` with {} partitions",
            self.cache_name,
            self.partitions
        );
        range_of(partition, self.partitions)
    }

    /// The hash tag of `partition`: the text to put between `{` and `}` in every Redis
    /// key of that partition. It contains no braces.
    ///
    /// # Panics
    /// If `partition >= P`.
    pub fn tag(&self, partition: u16) -> &str {
        &self.tags[usize::from(partition)]
    }

    /// The slot of `partition`'s tag (so of every Redis key of that partition): the
    /// middle slot of its [`slot_range`](Self::slot_range).
    ///
    /// # Panics
    /// If `partition >= P`.
    pub fn slot(&self, partition: u16) -> u16 {
        self.slots[usize::from(partition)]
    }
}

/// `[i*16384/P, (i+1)*16384/P)`, in u32 so the products cannot overflow.
fn range_of(partition: u16, partitions: u16) -> Range<u16> {
    let bound = |i: u32| (i * u32::from(SLOT_COUNT) / u32::from(partitions)) as u16;
    bound(u32::from(partition))..bound(u32::from(partition) + 1)
}

/// The middle slot of a (non-empty) range, the lower one for even lengths.
fn anchor_slot(range: Range<u16>) -> u16 {
    range.start + (range.end - range.start - 1) / 2
}

/// Lowercase, zero-padded hex of the low 32 bits of `xxh3_64(cache_name)`.
fn tag_prefix(cache_name: &str) -> String {
    format!("{:08x}", xxh3_64(cache_name.as_bytes()) as u32)
}

/// Longest decimal suffix the tag search needs: the 900,000 six-digit suffixes alone
/// reach every slot whatever precedes them (checked by a test).
const MAX_SUFFIX_DIGITS: usize = 6;

/// Marks a slot no suffix of a given length reaches.
const NO_SUFFIX: u32 = u32::MAX;

/// For each suffix length `L` in `1..=6`, the smallest `L`-digit decimal number `j`
/// (`0..=9` for `L = 1`) with `crc16(j as text) % 16384 == slot`, per slot.
struct SuffixTable {
    /// `first[L - 1][slot]`, or [`NO_SUFFIX`].
    first: Vec<Box<[u32]>>,
    /// `crc16` of each single byte: the table-driven CRC step, from the `crc` crate.
    byte_crc: [u16; 256],
}

impl SuffixTable {
    /// Shared by every cache: the table depends on nothing but the CRC.
    fn get() -> &'static SuffixTable {
        static TABLE: OnceLock<SuffixTable> = OnceLock::new();
        TABLE.get_or_init(SuffixTable::build)
    }

    fn build() -> SuffixTable {
        let mut byte_crc = [0u16; 256];
        for (byte, crc) in (0..=u8::MAX).zip(byte_crc.iter_mut()) {
            *crc = crc16(&[byte]);
        }
        // CRCs of all numbers with the current digit count, in increasing order: the
        // numbers with one more digit are `n*10 + d` for each such `n` (but 0) in order.
        let mut level: Vec<u16> = (b'0'..=b'9').map(|d| crc16(&[d])).collect();
        let mut smallest = 0u32;
        let mut first = Vec::with_capacity(MAX_SUFFIX_DIGITS);
        for digits in 1..=MAX_SUFFIX_DIGITS {
            let mut table = vec![NO_SUFFIX; usize::from(SLOT_COUNT)].into_boxed_slice();
            for (offset, crc) in (0u32..).zip(&level) {
                let entry = &mut table[usize::from(crc & SLOT_MASK)];
                if *entry == NO_SUFFIX {
                    *entry = smallest + offset;
                }
            }
            first.push(table);
            if digits < MAX_SUFFIX_DIGITS {
                let parents = if digits == 1 { &level[1..] } else { &level[..] };
                level = parents
                    .iter()
                    .flat_map(|&crc| (b'0'..=b'9').map(move |d| crc_step(&byte_crc, crc, d)))
                    .collect();
                smallest = if digits == 1 { 10 } else { smallest * 10 };
            }
        }
        SuffixTable { first, byte_crc }
    }
}

/// The CRC16-XMODEM of `m ‖ byte` from the CRC `crc` of `m` (the classic table step; by
/// linearity `crc([a ⊕ b]) = crc([a]) ⊕ crc([b])`).
fn crc_step(byte_crc: &[u16; 256], crc: u16, byte: u8) -> u16 {
    (crc << 8) ^ byte_crc[usize::from((crc >> 8) as u8 ^ byte)]
}

/// The first `format!("{prefix}.{partition}.{j}")`, `j = 0, 1, …`, whose slot is `slot`.
fn find_tag(prefix: &str, partition: u16, slot: u16) -> String {
    let table = SuffixTable::get();
    let head = format!("{prefix}.{partition}.");
    // CRC of `head ‖ 0ᴸ`; by linearity crc(head ‖ d) = crc(head ‖ 0ᴸ) ⊕ crc(d) for any
    // L-digit d, so the suffix must reach `slot ⊕ (crc(head ‖ 0ᴸ) % 16384)`. Shorter
    // suffixes are smaller numbers, so the first length that works holds the answer.
    let mut padded = crc16(head.as_bytes());
    for first in &table.first {
        padded = crc_step(&table.byte_crc, padded, 0);
        let j = first[usize::from((slot ^ padded) & SLOT_MASK)];
        if j != NO_SUFFIX {
            return format!("{head}{j}");
        }
    }
    unreachable!("six-digit suffixes reach every slot (test `six_digit_suffixes_reach_every_slot`)")
}

/// Which master owns which slots, built from `(start..=end, master_id)` ranges as
/// `CLUSTER SLOTS` reports them.
#[derive(Clone, Debug, Default)]
pub struct SlotOwners {
    /// Sorted, distinct master ids.
    masters: Vec<String>,
    /// Per slot, an index into `masters` or [`UNOWNED`]; empty for no ranges at all.
    owner: Vec<u32>,
}

/// Marks a slot no range covers.
const UNOWNED: u32 = u32::MAX;

impl SlotOwners {
    /// Owners from `(start..=end, master_id)` ranges. Later ranges win where ranges
    /// overlap; slots past 16383 are ignored; a master named only with empty ranges is
    /// still listed, owning nothing.
    pub fn from_ranges<I>(ranges: I) -> Self
    where
        I: IntoIterator<Item = (RangeInclusive<u16>, String)>,
    {
        let ranges: Vec<(RangeInclusive<u16>, String)> = ranges.into_iter().collect();
        let masters: Vec<String> = ranges
            .iter()
            .map(|(_, master)| master.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut owner = vec![UNOWNED; usize::from(SLOT_COUNT)];
        for (range, master) in &ranges {
            // Always found (masters was built from these ranges).
            let Some(index) = masters
                .binary_search(master)
                .ok()
                .and_then(|i| u32::try_from(i).ok())
            else {
                continue;
            };
            let start = usize::from(*range.start());
            let end = usize::from((*range.end()).min(SLOT_COUNT - 1));
            if start <= end {
                owner[start..=end].fill(index);
            }
        }
        SlotOwners { masters, owner }
    }

    /// The 16384 slots split over `n` masters named `m0`..`m{n-1}` exactly as
    /// `redis-cli --cluster create` splits them (contiguous, in order, sizes differing
    /// by at most one): for tests and balance reports. `n = 0` gives no owners; masters
    /// past the 16384th own nothing.
    pub fn balanced(n: usize) -> Self {
        // redis-cli's clusterManagerCommandCreate, including its single-precision float
        // arithmetic and lround (round half away from zero, as f32::round):
        //   slots_per_node = 16384 / (float) masters; first = 0; cursor = 0.0f;
        //   last = lround(cursor + slots_per_node - 1), forced to 16383 for the last
        //   master; if (last < first) last = first; first = last + 1;
        //   cursor += slots_per_node.
        let last_slot = i64::from(SLOT_COUNT - 1);
        let per_master = f32::from(SLOT_COUNT) / n as f32;
        let mut cursor = 0.0f32;
        let mut first = 0i64;
        let mut ranges = Vec::with_capacity(n);
        for i in 0..n {
            let mut last = (cursor + per_master - 1.0).round() as i64;
            if last > i64::from(SLOT_COUNT) || i + 1 == n {
                last = last_slot;
            }
            last = last.max(first);
            let range = if first > last_slot {
                // redis-cli refuses that many masters; here they simply own nothing.
                RangeInclusive::new(SLOT_COUNT, SLOT_COUNT - 1)
            } else {
                RangeInclusive::new(first as u16, last.min(last_slot) as u16)
            };
            ranges.push((range, format!("m{i}")));
            first = last + 1;
            cursor += per_master;
        }
        SlotOwners::from_ranges(ranges)
    }

    /// The master owning `slot`, if any.
    pub fn owner(&self, slot: u16) -> Option<&str> {
        let index = *self.owner.get(usize::from(slot))?;
        if index == UNOWNED {
            return None;
        }
        self.masters
            .get(usize::try_from(index).ok()?)
            .map(String::as_str)
    }

    /// Every master, sorted and distinct, including those owning no slot.
    pub fn masters(&self) -> Vec<&str> {
        self.masters.iter().map(String::as_str).collect()
    }
}

/// How many of `map`'s partitions each master of `owners` holds (by the slot of each
/// partition's tag). Masters owning no partition are included with 0; partitions whose
/// slot has no owner are not counted.
pub fn partitions_per_master(map: &PartitionMap, owners: &SlotOwners) -> BTreeMap<String, u16> {
    let mut counts: BTreeMap<String, u16> = owners
        .masters()
        .into_iter()
        .map(|master| (master.to_owned(), 0))
        .collect();
    for partition in 0..map.partitions() {
        if let Some(count) = owners
            .owner(map.slot(partition))
            .and_then(|m| counts.get_mut(m))
        {
            *count += 1;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEST_PARTITION_COUNTS: [u16; 5] = [3, 7, 231, 1000, 16384];

    /// The tag algorithm as documented, searched one candidate at a time.
    fn tag_by_direct_search(cache_name: &str, partitions: u16, partition: u16) -> String {
        let prefix = format!("{:08x}", xxh3_64(cache_name.as_bytes()) as u32);
        let range = range_of(partition, partitions);
        let anchor = range.start + (range.end - range.start - 1) / 2;
        (0u32..)
            .map(|j| format!("{prefix}.{partition}.{j}"))
            .find(|candidate| crc16(candidate.as_bytes()) % 16384 == anchor)
            .unwrap()
    }

    #[test]
    fn crc16_is_xmodem_with_the_standard_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn key_slot_matches_published_redis_values() {
        // `CLUSTER KEYSLOT somekey` = 11058 and `CLUSTER KEYSLOT foo{hash_tag}` = 2515
        // in the Redis command docs.
        assert_eq!(key_slot(b"somekey"), 11058);
        assert_eq!(key_slot(b"foo{hash_tag}"), 2515);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b"hello"), 866);
    }

    #[test]
    fn key_slot_applies_the_redis_cluster_spec_hash_tag_examples() {
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(key_slot(b"foo{{bar}}zap"), crc16(b"{bar") % 16384);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
    }

    #[test]
    fn hash_tag_needs_a_non_empty_brace_pair() {
        assert_eq!(hash_tag(b"foo"), None);
        assert_eq!(hash_tag(b"foo{bar"), None);
        assert_eq!(hash_tag(b"{}bar"), None);
        assert_eq!(hash_tag(b"foo}{bar}"), Some(&b"bar"[..]));
        assert_eq!(hash_tag(b"{{bar}}"), Some(&b"{bar"[..]));
        assert_eq!(hash_tag(b"{\xff}"), Some(&b"\xff"[..]));
    }

    #[test]
    fn standard_policy_uses_the_hash_tag_else_the_whole_key() {
        let policy = HashingPolicy::default();
        assert!(matches!(policy, HashingPolicy::Standard));
        assert_eq!(policy.tag("{user1}.name").unwrap(), "user1");
        assert_eq!(policy.tag("é{ü}ö").unwrap(), "ü");
        assert_eq!(policy.tag("foo{}{bar}").unwrap(), "foo{}{bar}");
        assert_eq!(policy.tag("plain").unwrap(), "plain");
    }

    #[test]
    fn custom_policy_takes_the_tag_of_the_first_matching_rule() {
        let policy =
            HashingPolicy::custom([r"user:(?<tag>\d+)", r"user:(?<tag>\w+)", r"(?<tag>order):"])
                .unwrap();
        assert_eq!(policy.tag("user:42:profile").unwrap(), "42");
        assert_eq!(policy.tag("user:bob").unwrap(), "bob");
        assert_eq!(policy.tag("order:7").unwrap(), "order");
        let HashingPolicy::Custom(rules) = &policy else {
            panic!("custom policy expected")
        };
        assert_eq!(
            rules.patterns(),
            [r"user:(?<tag>\d+)", r"user:(?<tag>\w+)", r"(?<tag>order):"]
        );
    }

    #[test]
    fn custom_rules_match_only_at_the_start_of_the_key() {
        let policy = HashingPolicy::custom([r"user:(?<tag>\d+)"]).unwrap();
        assert_eq!(policy.tag("user:1").unwrap(), "1");
        assert!(policy.tag("xuser:1").is_err());
        // An alternation cannot escape the anchor either.
        let policy = HashingPolicy::custom([r"x|user:(?<tag>\d+)"]).unwrap();
        assert!(policy.tag("zzuser:1").is_err());
        assert_eq!(policy.tag("user:1").unwrap(), "1");
    }

    #[test]
    fn custom_rules_ending_in_a_verbose_comment_still_work_anchored() {
        let policy =
            HashingPolicy::custom(["(?x) user: (?<tag> [0-9]+ ) # numeric user id"]).unwrap();
        assert_eq!(policy.tag("user:12x").unwrap(), "12");
        assert!(policy.tag("auser:12").is_err());
    }

    #[test]
    fn a_rule_whose_tag_group_takes_no_part_falls_through_to_the_next_rule() {
        let policy = HashingPolicy::custom([r"a:|b:(?<tag>\d+)", r"(?<tag>a):"]).unwrap();
        assert_eq!(policy.tag("a:1").unwrap(), "a");
        assert_eq!(policy.tag("b:1").unwrap(), "1");
    }

    #[test]
    fn a_rule_without_a_tag_group_is_an_error_naming_its_index() {
        let err = HashingPolicy::custom([r"user:(?<tag>\d+)", r"^(\d+)"]).unwrap_err();
        assert_eq!(
            err,
            PartitionError::RuleWithoutTagGroup {
                index: 1,
                pattern: r"^(\d+)".into()
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("index 1") && message.contains("`tag`"),
            "{message}"
        );
    }

    #[test]
    fn an_invalid_regex_is_an_error_naming_its_index_and_the_reason() {
        let err = HashingPolicy::custom([r"(?<tag>a)", r"(?<tag>b", r"(?<tag>c)"]).unwrap_err();
        let PartitionError::BadRulePattern {
            index,
            pattern,
            reason,
        } = &err
        else {
            panic!("unexpected {err:?}")
        };
        assert_eq!((*index, pattern.as_str()), (1, r"(?<tag>b"));
        assert!(!reason.is_empty());
        assert!(err.to_string().contains("index 1"), "{err}");
        // A pattern that only compiles inside the wrapper is still rejected.
        let err = HashingPolicy::custom([r"a)|(?<tag>b"]).unwrap_err();
        assert!(
            matches!(err, PartitionError::BadRulePattern { index: 0, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn more_than_32_rules_or_none_are_errors() {
        let rules: Vec<String> = (0..33).map(|i| format!("r{i}:(?<tag>.+)")).collect();
        assert_eq!(
            HashingPolicy::custom(&rules).unwrap_err(),
            PartitionError::TooManyRules { count: 33 }
        );
        assert!(HashingPolicy::custom(&rules[..32]).is_ok());
        assert_eq!(
            HashingPolicy::custom(Vec::<String>::new()).unwrap_err(),
            PartitionError::NoRules
        );
    }

    #[test]
    fn an_unmatched_key_is_an_error_naming_the_key_and_the_rules() {
        let policy = HashingPolicy::custom([r"^user:(?<tag>\d+)"]).unwrap();
        let err = policy.tag("abc").unwrap_err();
        assert_eq!(
            err,
            PartitionError::NoRuleMatches {
                key: "abc".into(),
                patterns: vec![r"^user:(?<tag>\d+)".into()]
            }
        );
        assert!(
            err.to_string().starts_with(
                r"key `abc` matches none of the custom hashing rules [^user:(?<tag>\d+)]"
            ),
            "{err}"
        );
        let long = "é".repeat(1000);
        let PartitionError::NoRuleMatches { key, .. } = policy.tag(&long).unwrap_err() else {
            panic!()
        };
        assert_eq!(key.chars().count(), 200);
        assert!(key.ends_with('…'));
    }

    #[test]
    fn fewer_than_3_or_more_than_16384_partitions_are_errors() {
        for requested in [0, 1, 2] {
            assert_eq!(
                PartitionMap::new("c", requested).unwrap_err(),
                PartitionError::TooFewPartitions { requested }
            );
        }
        for requested in [16385, u16::MAX] {
            assert_eq!(
                PartitionMap::new("c", requested).unwrap_err(),
                PartitionError::TooManyPartitions { requested }
            );
        }
        let err = PartitionMap::new("c", 2).unwrap_err().to_string();
        assert!(err.contains("at least 3") && err.contains('2'), "{err}");
    }

    #[test]
    fn slot_ranges_are_contiguous_and_cover_all_slots() {
        for p in TEST_PARTITION_COUNTS {
            let map = PartitionMap::new("users", p).unwrap();
            assert_eq!((map.partitions(), map.cache_name()), (p, "users"));
            let mut next = 0;
            for i in 0..p {
                let range = map.slot_range(i);
                assert_eq!(range.start, next, "P={p} partition {i}");
                let len = range.end - range.start;
                assert!(
                    len == SLOT_COUNT / p || len == SLOT_COUNT.div_ceil(p),
                    "P={p} partition {i}: {len}"
                );
                next = range.end;
            }
            assert_eq!(next, SLOT_COUNT, "P={p}");
        }
    }

    #[test]
    fn every_tag_hashes_to_the_middle_slot_of_its_range() {
        for p in TEST_PARTITION_COUNTS {
            let map = PartitionMap::new("users", p).unwrap();
            for i in 0..p {
                let (tag, range) = (map.tag(i), map.slot_range(i));
                let slot = key_slot(format!("{{{tag}}}").as_bytes());
                assert_eq!(slot, map.slot(i), "P={p} partition {i}");
                assert!(
                    range.contains(&slot),
                    "P={p} partition {i}: {slot} not in {range:?}"
                );
                assert_eq!(slot, range.start + (range.end - range.start - 1) / 2);
            }
        }
    }

    #[test]
    fn tags_follow_the_documented_direct_search() {
        for (name, p) in [("users", 7), ("sessions", 231), ("x", 16384)] {
            let map = PartitionMap::new(name, p).unwrap();
            for i in (0..p).step_by(usize::from(p / 7)).take(8) {
                assert_eq!(
                    map.tag(i),
                    tag_by_direct_search(name, p, i),
                    "{name} P={p} partition {i}"
                );
            }
        }
        // Frozen values: other clients re-deriving tags must get exactly these, and a
        // change here would move every existing entry.
        let map = PartitionMap::new("users", 231).unwrap();
        assert_eq!(format!("{:08x}", xxh3_64(b"users") as u32), "f7c83669");
        assert_eq!((map.tag(0), map.slot(0)), ("f7c83669.0.49036", 34));
        assert_eq!((map.tag(1), map.slot(1)), ("f7c83669.1.65978", 105));
        assert_eq!((map.tag(230), map.slot(230)), ("f7c83669.230.54", 16348));
        assert_eq!(map.partition_of_tag("user1"), 154);
    }

    #[test]
    fn six_digit_suffixes_reach_every_slot() {
        let table = SuffixTable::get();
        assert_eq!(table.first.len(), MAX_SUFFIX_DIGITS);
        assert!(
            table.first[MAX_SUFFIX_DIGITS - 1]
                .iter()
                .all(|&j| j != NO_SUFFIX)
        );
        for (digits, first) in (1u32..).zip(&table.first) {
            for (slot, &j) in (0u16..).zip(first.iter()) {
                if j != NO_SUFFIX {
                    assert_eq!(j.to_string().len() as u32, digits);
                    assert_eq!(crc16(j.to_string().as_bytes()) & SLOT_MASK, slot);
                }
            }
        }
        // Spot-check minimality against a direct scan for the one- to four-digit suffixes.
        for slot in (0..SLOT_COUNT).step_by(97) {
            let direct =
                (0u32..10_000).find(|j| crc16(j.to_string().as_bytes()) & SLOT_MASK == slot);
            let fast = table.first[..4]
                .iter()
                .map(|f| f[usize::from(slot)])
                .find(|&j| j != NO_SUFFIX);
            assert_eq!(direct, fast, "slot {slot}");
        }
    }

    #[test]
    fn tags_are_deterministic_and_differ_across_cache_names() {
        let a = PartitionMap::new("users", 231).unwrap();
        let b = PartitionMap::new("users", 231).unwrap();
        let c = PartitionMap::new("orders", 231).unwrap();
        assert!((0..231).all(|i| a.tag(i) == b.tag(i) && a.slot(i) == b.slot(i)));
        assert!((0..231).all(|i| a.tag(i) != c.tag(i)));
        // Same ranges, same anchors: caches differ by tag text, not by slot.
        assert!((0..231).all(|i| a.slot(i) == c.slot(i)));
        let clone = a.clone();
        assert!(Arc::ptr_eq(&clone.tags, &a.tags));
    }

    #[test]
    fn tags_never_contain_braces_whatever_the_cache_name() {
        for name in ["{users}", "}{", "", "名前", "a{b}c"] {
            let map = PartitionMap::new(name, 31).unwrap();
            for i in 0..31 {
                let tag = map.tag(i);
                assert!(!tag.contains('{') && !tag.contains('}'), "{name:?}: {tag}");
                assert_eq!(
                    hash_tag(format!("k{{{tag}}}").as_bytes()),
                    Some(tag.as_bytes())
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "partition 231 out of range")]
    fn slot_range_of_a_partition_past_the_count_panics() {
        let _ = PartitionMap::new("users", 231).unwrap().slot_range(231);
    }

    #[test]
    fn sixteen_thousand_partitions_take_one_slot_each() {
        let map = PartitionMap::new("big", 16384).unwrap();
        assert!((0..16384).all(|i| map.slot(i) == i));
    }

    #[test]
    fn partition_of_tag_is_stable_xxh3_modulo_the_partition_count() {
        // XXH3-64 of the empty input with seed 0, as published by xxHash.
        assert_eq!(xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        let map = PartitionMap::new("users", 231).unwrap();
        for tag in ["", "user1", "名前"] {
            assert_eq!(
                u64::from(map.partition_of_tag(tag)),
                xxh3_64(tag.as_bytes()) % 231
            );
        }
    }

    #[test]
    fn keys_with_the_same_tag_share_a_partition() {
        let map = PartitionMap::new("users", 231).unwrap();
        let standard = HashingPolicy::Standard;
        assert_eq!(
            map.partition_of(&standard, "{user1}.name").unwrap(),
            map.partition_of(&standard, "{user1}.email").unwrap()
        );
        assert_eq!(
            map.partition_of(&standard, "{user1}.name").unwrap(),
            map.partition_of_tag("user1")
        );
        let custom = HashingPolicy::custom([r"user:(?<tag>\d+)"]).unwrap();
        assert_eq!(
            map.partition_of(&custom, "user:7:a").unwrap(),
            map.partition_of(&custom, "user:7:b").unwrap()
        );
        assert!(map.partition_of(&custom, "order:7").is_err());
    }

    #[test]
    fn keys_spread_evenly_over_231_partitions() {
        // 1,000,000 keys, not 100,000: with ~433 keys per partition one standard
        // deviation is ~4.8%, so even a perfect hash puts ~9 of 231 partitions beyond
        // ±10%. With ~4329 per partition ±10% is 6.6 standard deviations.
        const KEYS: u32 = 1_000_000;
        let map = PartitionMap::new("users", DEFAULT_PARTITIONS).unwrap();
        let mut counts = [0u32; DEFAULT_PARTITIONS as usize];
        for n in 0..KEYS {
            let partition = map
                .partition_of(&HashingPolicy::Standard, &format!("key:{n}"))
                .unwrap();
            counts[usize::from(partition)] += 1;
        }
        let expected = f64::from(KEYS) / f64::from(DEFAULT_PARTITIONS);
        for (partition, &count) in counts.iter().enumerate() {
            let deviation = (f64::from(count) - expected).abs() / expected;
            assert!(
                deviation <= 0.10,
                "partition {partition}: {count} keys, expected {expected:.1}"
            );
        }
        // Chi-square with 230 degrees of freedom: mean 230, standard deviation ~21.4.
        let chi_square: f64 = counts
            .iter()
            .map(|&c| (f64::from(c) - expected).powi(2) / expected)
            .sum();
        assert!(
            chi_square < 230.0 + 6.0 * 21.4,
            "chi-square {chi_square:.1}"
        );
    }

    #[test]
    fn balanced_owners_split_slots_like_redis_cli() {
        let ranges = |n: usize| {
            let owners = SlotOwners::balanced(n);
            let mut ranges: Vec<(u16, u16, String)> = Vec::new();
            for slot in 0..SLOT_COUNT {
                let owner = owners.owner(slot).unwrap().to_owned();
                match ranges.last_mut() {
                    Some(last) if last.2 == owner => last.1 = slot,
                    _ => ranges.push((slot, slot, owner)),
                }
            }
            ranges
        };
        // What `redis-cli --cluster create` prints for 3 masters.
        assert_eq!(
            ranges(3),
            [
                (0, 5460, "m0".into()),
                (5461, 10922, "m1".into()),
                (10923, 16383, "m2".into())
            ]
        );
        assert_eq!(
            ranges(5).iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
            [
                (0, 3276),
                (3277, 6553),
                (6554, 9829),
                (9830, 13106),
                (13107, 16383)
            ]
        );
        for n in 1..=100 {
            let ranges = ranges(n);
            assert_eq!(ranges.len(), n, "n={n}");
            let sizes: Vec<u16> = ranges.iter().map(|r| r.1 - r.0 + 1).collect();
            let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
            assert!(max - min <= 1, "n={n}: {sizes:?}");
            assert!(
                ranges
                    .iter()
                    .enumerate()
                    .all(|(i, r)| r.2 == format!("m{i}"))
            );
        }
        assert_eq!(SlotOwners::balanced(0).masters(), Vec::<&str>::new());
        let many = SlotOwners::balanced(16390);
        assert_eq!(many.masters().len(), 16390);
        assert_eq!(many.owner(16383), Some("m16383"));
    }

    #[test]
    fn slot_owners_from_ranges_list_sorted_masters_and_owners() {
        let owners = SlotOwners::from_ranges([
            (0..=99, "b".to_string()),
            (100..=16000, "a".to_string()),
            (50..=60, "c".to_string()),
            (RangeInclusive::new(5, 4), "d".to_string()),
        ]);
        assert_eq!(owners.masters(), ["a", "b", "c", "d"]);
        assert_eq!(owners.owner(0), Some("b"));
        assert_eq!(owners.owner(55), Some("c"));
        assert_eq!(owners.owner(16000), Some("a"));
        assert_eq!(owners.owner(16001), None);
        assert_eq!(owners.owner(u16::MAX), None);
        assert_eq!(SlotOwners::default().owner(0), None);
    }

    #[test]
    fn default_partitions_split_evenly_over_three_four_and_five_masters() {
        let map = PartitionMap::new("users", DEFAULT_PARTITIONS).unwrap();
        let sorted_counts = |n| {
            let mut counts: Vec<u16> = partitions_per_master(&map, &SlotOwners::balanced(n))
                .into_values()
                .collect();
            counts.sort_unstable_by(|a, b| b.cmp(a));
            counts
        };
        assert_eq!(sorted_counts(3), [77, 77, 77]);
        assert_eq!(sorted_counts(4), [58, 58, 58, 57]);
        assert_eq!(sorted_counts(5), [47, 46, 46, 46, 46]);
    }

    #[test]
    fn partitions_per_master_differ_by_at_most_one() {
        let owners: Vec<SlotOwners> = (1..=10).map(SlotOwners::balanced).collect();
        for p in 3..=300u16 {
            let map = PartitionMap::new("users", p).unwrap();
            for (n, owners) in (1u16..).zip(&owners) {
                if p < n {
                    continue;
                }
                let counts = partitions_per_master(&map, owners);
                assert_eq!(counts.len(), usize::from(n));
                assert_eq!(counts.values().sum::<u16>(), p);
                let (min, max) = (
                    counts.values().min().unwrap(),
                    counts.values().max().unwrap(),
                );
                assert!(max - min <= 1, "P={p} over {n} masters: {counts:?}");
            }
        }
    }

    #[test]
    fn masters_owning_no_partition_are_listed_with_zero() {
        let map = PartitionMap::new("users", 3).unwrap();
        let counts = partitions_per_master(&map, &SlotOwners::balanced(10));
        assert_eq!(counts.len(), 10);
        assert_eq!(counts.values().filter(|&&c| c == 0).count(), 7);
        assert_eq!(counts.values().sum::<u16>(), 3);
    }
}
