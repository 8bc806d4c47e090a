//! Per-cache configuration, from code (the builder) or from a TOML file.
//!
//! ```toml
//! url = "memory://"                 # or redis-cluster://..., or $PARTCACHE_URL
//!
//! [defaults]                        # applies to every cache
//! max_entries = 10000
//!
//! [caches.users]
//! expiry = { policy = "accessed", duration = "5m" }
//! max_idle = "30m"
//! max_entries = 100000
//! codec = "json"                    # or "postcard" (default)
//! partitions = 231                  # Redis cluster stores only
//! hashing_rules = ['^user:(?<tag>\d+)']
//! max_value_bytes = 1048576
//!
//! [caches.products]                 # remote stores only: a local copy of decoded values
//! near_cache = { max_entries = 10000, ttl = "60s", max_staleness = "1s" }
//! lease_ttl = "5s"                  # remote stores: how long a load's lease lasts (0s: none)
//! ```
//!
//! Unknown keys are errors that name the key, so a typo never silently does nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::expiry::{ExpiryPolicy, ExpirySettings};
use crate::partition::{DEFAULT_PARTITIONS, HashingPolicy, MIN_PARTITIONS};

/// Default limit of an encoded entry: 16 MiB, well under Redis's 512 MiB string limit
/// and large enough for any sane cached value.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;

/// Default time to live of a load's lease on a remote store: five seconds, longer than
/// a typical load (a database query, an HTTP call), short enough that callers waiting
/// for a process that died mid-load are not held long.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);

/// Default capacity of a cache's event channel per subscriber.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// The largest `event_capacity` a cache accepts (2^20 events): the channel's buffer
/// is allocated in full when the cache is built, so a larger one is a configuration
/// mistake that would take its memory (or abort the process) at start.
pub const MAX_EVENT_CAPACITY: usize = 1 << 20;

/// One cache's settings. Every field is optional; unset fields take the manager's
/// `[defaults]`, then the built-in defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// The JCache expiry policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<ExpiryPolicy>,
    /// Expire entries not read or written for this long.
    #[serde(
        default,
        with = "crate::duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_idle: Option<Duration>,
    /// Evict beyond this many entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_entries: Option<u64>,
    /// Total weight budget, with a weigher set in code (local store only: `build()`
    /// refuses it on a remote store, which bounds entries by count only, and on
    /// `memory://` without a weigher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<u64>,
    /// The value codec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub codec: Option<Codec>,
    /// Number of partitions on a partitioned store (default 231, at least 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<u16>,
    /// Custom hashing rules (regexes with a named group `tag`); standard hash tags if unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hashing_rules: Option<Vec<String>>,
    /// Largest encoded entry accepted, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_value_bytes: Option<usize>,
    /// Events buffered per subscriber before a slow one starts losing them (1 to
    /// [`MAX_EVENT_CAPACITY`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_capacity: Option<usize>,
    /// Publish events to other processes (remote stores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_events: Option<bool>,
    /// A near cache in front of a remote store (see [`NearCache`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub near_cache: Option<NearCache>,
    /// How long a load's lease lasts on a remote store (default 5 s; `"0s"`: no
    /// leases): the longest that other processes wait for a loader that does not
    /// finish, and the longest a load may take and still store its value (see
    /// [`crate::CacheBuilder::lease_ttl`]).
    #[serde(
        default,
        with = "crate::duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease_ttl: Option<Duration>,
}

/// The default of [`NearCache::max_staleness`]: one second.
pub const DEFAULT_MAX_STALENESS: Duration = Duration::from_secs(1);

/// The smallest accepted [`NearCache::max_staleness`]: the store vouches for its
/// invalidation feed every third of it, so a smaller bound would mostly measure the
/// heartbeat's own round trip.
pub const MIN_MAX_STALENESS: Duration = Duration::from_millis(10);

/// A near cache: a local copy of decoded values in front of a remote store, so that a
/// repeated read of a hot key costs a moka lookup instead of a round trip. Set with
/// [`crate::CacheBuilder::near_cache`] or, in a configuration file, as
/// `near_cache = { max_entries = 10000, ttl = "60s", max_staleness = "1s" }` in a
/// cache's table or in `[defaults]`.
///
/// ```
/// use partcache::NearCache;
/// use std::time::Duration;
///
/// let near = NearCache::max_entries(10_000)
///     .ttl(Duration::from_secs(60))
///     .max_staleness(Duration::from_millis(500));
/// assert_eq!(near.max_entries, 10_000);
/// ```
///
/// **Consistency.** Every write, by any process, invalidates the local copies of every
/// process through the store's invalidation feed, usually within milliseconds. A local
/// copy is served only while the store has *vouched* for the feed of its partition
/// (every message published before some instant has been delivered) within
/// `max_staleness`; so a value overwritten (and acknowledged to its writer) more than
/// `max_staleness` ago is never served, however the network misbehaves. A detected loss
/// (a gap in the feed's sequence numbers, a broken connection, a failover, a
/// resubscription) drops the partition's local copies at once. A process's own writes
/// invalidate its local copies before they return. Only the local monotonic clock is
/// involved: no clock synchronisation between machines is assumed.
///
/// **Where it applies.** Only on remote stores that have an invalidation feed (the
/// Redis/Valkey stores). On `memory://` it is pointless (the local store already keeps
/// decoded values): in a cache's own settings that is a configuration error, from
/// `[defaults]` it is ignored. A cache whose reads extend the store's expiry
/// ([`ExpiryPolicy::Accessed`], [`ExpiryPolicy::Touched`], or any `max_idle`) cannot
/// have one, since a local hit could not slide the store's deadline without the round
/// trip the near cache exists to avoid: in the cache's own settings that is a
/// configuration error, from `[defaults]` the near cache is skipped for that cache
/// (likewise for a cache with `publish_events = false`, whose event channel is the
/// feed).
///
/// Cost: one moka lookup, a few atomic loads and one clock reading per local hit; a
/// local miss costs the remote read plus one insertion. Memory: up to `max_entries`
/// decoded values per process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NearCache {
    /// The most entries kept locally (at least 1); beyond it moka evicts by its
    /// default TinyLFU policy (a rarely read newcomer may be refused a place, which
    /// only costs a remote read).
    pub max_entries: u64,
    /// A local copy older than this is read again from the store (`None`: only
    /// invalidations, the store's own deadlines and eviction remove it).
    #[serde(
        default,
        with = "crate::duration::serde_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    /// How old the store's latest vouch for a partition's feed may be for that
    /// partition's local copies to be served (default 1 s, at least 10 ms). See the
    /// type docs.
    #[serde(default = "default_max_staleness", with = "crate::duration::serde")]
    pub max_staleness: Duration,
}

fn default_max_staleness() -> Duration {
    DEFAULT_MAX_STALENESS
}

impl NearCache {
    /// A near cache of at most `max_entries` local copies, no TTL, and the default
    /// `max_staleness` (1 s).
    pub fn max_entries(max_entries: u64) -> Self {
        NearCache {
            max_entries,
            ttl: None,
            max_staleness: DEFAULT_MAX_STALENESS,
        }
    }

    /// Local copies older than `ttl` are read again from the store.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// How old the store's latest vouch for the feed may be for local copies to be
    /// served (at least 10 ms). Smaller values bound staleness more tightly and make the
    /// store vouch more often (every third of it).
    pub fn max_staleness(mut self, max_staleness: Duration) -> Self {
        self.max_staleness = max_staleness;
        self
    }

    /// Checks the settings, naming the bad one.
    fn validate(&self, cache: &str) -> Result<()> {
        if self.max_entries == 0 {
            return Err(Error::Config(format!(
                "cache `{cache}`: `near_cache.max_entries` must be at least 1"
            )));
        }
        if self.ttl == Some(Duration::ZERO) {
            return Err(Error::Config(format!(
                "cache `{cache}`: `near_cache.ttl` must be more than zero (leave it out for no local TTL)"
            )));
        }
        if self.max_staleness < MIN_MAX_STALENESS {
            return Err(Error::Config(format!(
                "cache `{cache}`: `near_cache.max_staleness` is {:?}, must be at least {MIN_MAX_STALENESS:?}",
                self.max_staleness
            )));
        }
        Ok(())
    }
}

impl CacheConfig {
    /// `self`, with every unset field taken from `defaults`.
    pub fn or(&self, defaults: &CacheConfig) -> CacheConfig {
        CacheConfig {
            expiry: self.expiry.or(defaults.expiry),
            max_idle: self.max_idle.or(defaults.max_idle),
            max_entries: self.max_entries.or(defaults.max_entries),
            max_weight: self.max_weight.or(defaults.max_weight),
            codec: self.codec.or(defaults.codec),
            partitions: self.partitions.or(defaults.partitions),
            hashing_rules: self
                .hashing_rules
                .clone()
                .or_else(|| defaults.hashing_rules.clone()),
            max_value_bytes: self.max_value_bytes.or(defaults.max_value_bytes),
            event_capacity: self.event_capacity.or(defaults.event_capacity),
            publish_events: self.publish_events.or(defaults.publish_events),
            near_cache: self.near_cache.or(defaults.near_cache),
            lease_ttl: self.lease_ttl.or(defaults.lease_ttl),
        }
    }

    /// The expiry settings this config describes, as stores apply them: a duration
    /// longer than [`crate::expiry::LONGEST_DEADLINE`] sets no deadline (a policy of
    /// one is eternal, a max-idle of one is none).
    pub fn expiry_settings(&self) -> ExpirySettings {
        ExpirySettings {
            policy: self.expiry.unwrap_or_default(),
            max_idle: self.max_idle,
            custom: None,
        }
        .effective()
    }

    /// The hashing policy this config describes.
    pub fn hashing_policy(&self) -> Result<HashingPolicy> {
        match &self.hashing_rules {
            None => Ok(HashingPolicy::Standard),
            Some(rules) => Ok(HashingPolicy::custom(rules)?),
        }
    }

    /// Checks values that are wrong whatever the store, naming the bad one.
    pub fn validate(&self, cache: &str) -> Result<()> {
        if let Some(p) = self.partitions
            && p < MIN_PARTITIONS
        {
            return Err(Error::Config(format!(
                "cache `{cache}`: `partitions` is {p}, must be at least {MIN_PARTITIONS} (default {DEFAULT_PARTITIONS})"
            )));
        }
        if self.max_entries == Some(0) {
            return Err(Error::Config(format!(
                "cache `{cache}`: `max_entries` must be at least 1"
            )));
        }
        if self.max_value_bytes == Some(0) {
            return Err(Error::Config(format!(
                "cache `{cache}`: `max_value_bytes` must be at least 1"
            )));
        }
        if let Some(capacity) = self.event_capacity
            && !(1..=MAX_EVENT_CAPACITY).contains(&capacity)
        {
            return Err(Error::Config(format!(
                "cache `{cache}`: `event_capacity` is {capacity}, must be between 1 and {MAX_EVENT_CAPACITY}"
            )));
        }
        if let Some(near) = &self.near_cache {
            near.validate(cache)?;
        }
        if let Some(ttl) = self.lease_ttl
            && !ttl.is_zero()
            && ttl < Duration::from_millis(1)
        {
            return Err(Error::Config(format!(
                "cache `{cache}`: `lease_ttl` is {ttl:?}, must be at least 1ms (or 0 for no leases)"
            )));
        }
        self.hashing_policy()
            .map_err(|e| Error::Config(format!("cache `{cache}`: {e}")))?;
        Ok(())
    }
}

/// A manager's configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagerConfig {
    /// The backend URL; `PARTCACHE_URL` overrides it when set, `memory://` when neither.
    #[serde(default)]
    pub url: Option<String>,
    /// Settings every cache starts from.
    #[serde(default)]
    pub defaults: CacheConfig,
    /// Settings per cache name.
    #[serde(default)]
    pub caches: BTreeMap<String, CacheConfig>,
}

impl ManagerConfig {
    /// Parses TOML; errors name the line and the bad key.
    pub fn from_toml(text: &str) -> Result<Self> {
        let config: ManagerConfig =
            toml::from_str(text).map_err(|e| Error::Config(format!("cache configuration: {e}")))?;
        config.defaults.validate("[defaults]")?;
        for (name, cache) in &config.caches {
            cache.validate(name)?;
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_file_parses() {
        let config = ManagerConfig::from_toml(
            r#"
            url = "memory://"
            [defaults]
            max_entries = 10
            [caches.users]
            expiry = { policy = "accessed", duration = "5m" }
            max_idle = "30m"
            codec = "json"
            partitions = 64
            hashing_rules = ['^user:(?<tag>\d+)']
            "#,
        )
        .unwrap();
        let users = config.caches["users"].or(&config.defaults);
        assert_eq!(
            users.expiry,
            Some(ExpiryPolicy::Accessed(Duration::from_secs(300)))
        );
        assert_eq!(users.max_idle, Some(Duration::from_secs(1800)));
        assert_eq!(users.max_entries, Some(10));
        assert_eq!(users.codec, Some(Codec::Json));
        assert!(matches!(
            users.hashing_policy().unwrap(),
            HashingPolicy::Custom(_)
        ));
    }

    #[test]
    fn near_cache_settings_parse_in_a_cache_and_in_defaults() {
        let config = ManagerConfig::from_toml(
            r#"
            [defaults]
            near_cache = { max_entries = 10000, ttl = "60s", max_staleness = "1s" }
            [caches.products]
            near_cache = { max_entries = 5 }
            [caches.users]
            max_entries = 7
            "#,
        )
        .unwrap();
        let defaults = NearCache::max_entries(10_000)
            .ttl(Duration::from_secs(60))
            .max_staleness(Duration::from_secs(1));
        assert_eq!(config.defaults.near_cache, Some(defaults));
        let products = config.caches["products"].or(&config.defaults);
        assert_eq!(products.near_cache, Some(NearCache::max_entries(5)));
        assert_eq!(
            products.near_cache.unwrap().max_staleness,
            DEFAULT_MAX_STALENESS
        );
        let users = config.caches["users"].or(&config.defaults);
        assert_eq!(users.near_cache, Some(defaults));

        for (bad, expected) in [
            ("{ max_entries = 5, max_entires = 5 }", "max_entires"),
            ("{ ttl = \"1s\" }", "max_entries"),
            ("{ max_entries = 0 }", "near_cache.max_entries"),
            (
                "{ max_entries = 5, max_staleness = \"5ms\" }",
                "max_staleness",
            ),
            ("{ max_entries = 5, ttl = \"0s\" }", "near_cache.ttl"),
        ] {
            let err =
                ManagerConfig::from_toml(&format!("[caches.p]\nnear_cache = {bad}")).unwrap_err();
            assert!(err.to_string().contains(expected), "{bad}: {err}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_name_them() {
        let err = ManagerConfig::from_toml("[caches.users]\nmax_entires = 5").unwrap_err();
        assert!(err.to_string().contains("max_entires"), "{err}");
        let err = ManagerConfig::from_toml("[caches.users]\npartitions = 2").unwrap_err();
        assert!(
            err.to_string().contains("partitions") && err.to_string().contains("users"),
            "{err}"
        );
        let err =
            ManagerConfig::from_toml("[caches.users]\nmax_idle = \"5 fortnights\"").unwrap_err();
        assert!(err.to_string().contains("fortnights"), "{err}");
        let err =
            ManagerConfig::from_toml("[caches.users]\nhashing_rules = ['^(\\d+)']").unwrap_err();
        assert!(err.to_string().contains("tag"), "{err}");
    }
}
