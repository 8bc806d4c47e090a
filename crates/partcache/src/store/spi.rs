//! The types and traits of the store SPI, apart from the stores that implement it (so
//! that the stores import them and nothing imports back).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::error::Result;
use crate::event::EventSender;

/// When a conditional write applies.
#[derive(Debug)]
pub enum Condition<V> {
    /// Always.
    Always,
    /// Only when the key has no entry (`put_if_absent`).
    IfAbsent,
    /// Only when the key has an entry (`replace`).
    IfPresent,
    /// Only when the entry's value equals this one. Local stores compare with the
    /// function (the value type's `PartialEq`); remote stores compare encoded bytes,
    /// which is the same for the deterministic codecs partcache uses.
    IfEquals(Arc<V>, fn(&V, &V) -> bool),
}

/// What a write does when its condition holds.
#[derive(Debug)]
pub enum Action<V> {
    /// Store the value; `ttl` is a per-entry time to live on top of the expiry policy.
    Put {
        /// The new value.
        value: Arc<V>,
        /// Per-entry time to live.
        ttl: Option<Duration>,
    },
    /// Remove the entry.
    Remove,
}

/// One conditional write on one key.
#[derive(Debug)]
pub struct Write<V> {
    /// When it applies.
    pub condition: Condition<V>,
    /// What it does.
    pub action: Action<V>,
    /// Whether the caller needs the previous value back (remote stores skip sending it
    /// otherwise).
    pub want_previous: bool,
}

/// What a write found and did.
#[derive(Debug)]
pub struct WriteOutcome<V> {
    /// The key had a (live) entry before the write.
    pub existed: bool,
    /// The condition held and the action was applied.
    pub applied: bool,
    /// The previous value, when asked for and present.
    pub previous: Option<Arc<V>>,
}

/// What an entry processor decided, given the current value.
#[derive(Debug)]
pub enum Decision<V> {
    /// Leave the entry as it is (the processor did not read it, or it was absent).
    Keep,
    /// Leave the entry as it is; the processor read its value, which makes this an
    /// access for expiry (JSR-107 §6.4: `invoke` calls `getExpiryForAccess` when the
    /// processor only read a present entry).
    Access,
    /// Store this value, with an optional per-entry time to live.
    Put(Arc<V>, Option<Duration>),
    /// Remove the entry.
    Remove,
}

/// The net effect of a [`Store::compute`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Computed {
    /// Nothing changed.
    Unchanged,
    /// An entry was created.
    Created,
    /// An entry was updated.
    Updated,
    /// An entry was removed.
    Removed,
}

/// What [`Store::lease`] found for a key.
#[derive(Debug)]
pub enum Lease<V> {
    /// The key has a value, read as [`Store::get_one`] reads it (an access for expiry).
    Hit(Arc<V>),
    /// The key has no value and the caller now holds its lease: it loads the value and
    /// stores it with [`Store::put_leased`] (or gives the lease up with
    /// [`Store::release_lease`]).
    Granted,
    /// The key has no value and another caller (of any process) holds its lease, for
    /// at most `remaining` more: the value is on its way.
    Held {
        /// The time the lease has left; after it the next caller leads.
        remaining: Duration,
    },
    /// The key has no value and its lease's holder just ended it without one (its
    /// load failed, found nothing, or gave a value that may not be stored): the
    /// caller loads at once, beside the others that waited, and stores nothing (no
    /// lease covers its load). A miss that is never stored is then not loaded by one
    /// process after another.
    Released,
    /// The store keeps no leases (one process only: the local flight is enough).
    Unsupported,
}

/// What [`Store::put_leased`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasedPut {
    /// The lease was still valid: the value is stored (if the expiry policy keeps it)
    /// and the lease is over.
    Stored,
    /// A write or removal of the key invalidated the lease while the value was loaded:
    /// the value, read before that change, is not stored (a stale set prevented).
    Stale,
    /// The lease ran out (its time to live passed) before the put; the value is not
    /// stored, since another caller may lead by now.
    Lost,
    /// The store keeps no leases.
    Unsupported,
}

/// An entry processor as stores see it. `FnMut` because a remote store may run it again
/// when another process changed the entry meanwhile (optimistic concurrency).
pub type Processor<'a, V> = dyn FnMut(Option<&Arc<V>>) -> Decision<V> + Send + 'a;

/// What holds a cache's entries. See the module docs for the contract.
#[async_trait]
#[allow(clippy::len_without_is_empty)] // `len` is an approximate count, not a collection's size
pub trait Store<K, V>: Send + Sync + 'static
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    /// A short description for logs and errors (`memory`, `redis-cluster 127.0.0.1:7000`).
    fn describe(&self) -> String;

    /// The store's event channel.
    fn events(&self) -> &EventSender<K, V>;

    /// Answers a get without awaiting when the store can (local and near-cache hits):
    /// `Some(result)`, else `None` and the caller awaits [`Store::get_all`]. Lets a
    /// local hit skip the boxed future of a trait-object call.
    fn get_now(&self, _key: &K) -> Option<Result<Option<Arc<V>>>> {
        None
    }

    /// Performs a write without awaiting when the store can (the local store).
    fn write_now(&self, _key: &K, write: Write<V>) -> Result<WriteOutcome<V>, Write<V>> {
        Err(write)
    }

    /// Reads many keys (each read counts as an access for expiry). Results come back in
    /// the order of `keys`.
    async fn get_all(&self, keys: &[K]) -> Result<Vec<Option<Arc<V>>>>;

    /// Reads one key (an access for expiry), as [`Store::get_all`] does for one key.
    async fn get_one(&self, key: &K) -> Result<Option<Arc<V>>> {
        Ok(self
            .get_all(std::slice::from_ref(key))
            .await?
            .pop()
            .flatten())
    }

    /// Whether each key has a live entry, without counting as an access.
    async fn contains_all(&self, keys: &[K]) -> Result<Vec<bool>>;

    /// A conditional write on one key, atomic with respect to every other operation on
    /// that key. A write is not an access for expiry, except one whose condition is
    /// [`Condition::IfEquals`] and finds another value (JSR-107 §6.4: `remove(k, v)` and
    /// `replace(k, v, new)` that do not match call `getExpiryForAccess`).
    async fn write(&self, key: &K, write: Write<V>) -> Result<WriteOutcome<V>>;

    /// Stores many entries (atomic per key only), emitting `Created`/`Updated` events.
    /// Returns how many were stored: an entry whose creation expiry is zero is not
    /// (JSR-107 §6.4), and is neither announced nor counted.
    async fn put_all(&self, entries: Vec<(K, Arc<V>)>, ttl: Option<Duration>) -> Result<u64>;

    /// Removes many keys; returns how many entries were removed. Emits `Removed` per
    /// entry.
    async fn remove_all(&self, keys: &[K]) -> Result<u64>;

    /// Removes every entry, emitting `Removed` per entry; returns how many.
    async fn remove_everything(&self) -> Result<u64>;

    /// Drops every entry without events (JCache `clear`).
    async fn clear(&self) -> Result<()>;

    /// Runs `processor` on the key's current value and applies its decision, atomically
    /// for that key. Reading the value for the processor is not an access for expiry;
    /// [`Decision::Access`] is, and a put or a removal is a write as for
    /// [`Store::write`].
    async fn compute(&self, key: &K, processor: &mut Processor<'_, V>) -> Result<Computed>;

    /// Every live entry, as a stream. Weakly consistent: entries written during the
    /// iteration may or may not appear; none appears twice. Each entry returned is an
    /// access for expiry (JSR-107 §6.4: the iterator calls `getExpiryForAccess`).
    fn entries(&self) -> BoxStream<'_, Result<(K, Arc<V>)>>;

    /// Number of entries; approximate on remote stores and under concurrent writes.
    async fn len(&self) -> Result<u64>;

    /// Whether a read is a plain key read with no bookkeeping, cheaper than
    /// [`Store::lease`] (which runs a script): `get_or_load` then reads first and takes
    /// a lease only on a miss, so that its hits cost what a [`Store::get_one`] does.
    /// Otherwise (reads that are scripts anyway) one lease call is the read. The
    /// default: no.
    fn plain_reads(&self) -> bool {
        false
    }

    /// Reads `key` and, when it has no value and nobody holds its lease, grants the
    /// lease to `token` for `ttl`, atomically. Every write or removal of the key, by
    /// any process, invalidates the lease (see [`Store::put_leased`]). Stores shared by
    /// several processes implement it; the default keeps none ([`Lease::Unsupported`]),
    /// which is right for a store only one process sees. `waited`: whether this caller
    /// asked before and was told the lease is held; only such a caller is told
    /// [`Lease::Released`], while a first ask over a released lease takes it (a
    /// newcomer leads, and stores, as after any lease).
    async fn lease(
        &self,
        _key: &K,
        _token: &str,
        _ttl: Duration,
        _waited: bool,
    ) -> Result<Lease<V>> {
        Ok(Lease::Unsupported)
    }

    /// Stores a loaded `value` under the lease `token`, if the lease is still valid
    /// (no write or removal of the key since it was granted, and not expired), and
    /// ends the lease; a load, so it emits a `Created` event as a put does. `ttl` is a
    /// per-entry time to live, as in [`Action::Put`].
    async fn put_leased(
        &self,
        _key: &K,
        _token: &str,
        _value: Arc<V>,
        _ttl: Option<Duration>,
    ) -> Result<LeasedPut> {
        Ok(LeasedPut::Unsupported)
    }

    /// Gives up the lease `token` on `key` (the load failed or found nothing), so that
    /// the next caller leads at once rather than after the lease's time to live.
    async fn release_lease(&self, _key: &K, _token: &str) -> Result<()> {
        Ok(())
    }

    /// Runs pending housekeeping now (the local store applies evictions and expiry
    /// notifications lazily); remote stores may do nothing.
    async fn run_pending_tasks(&self) -> Result<()> {
        Ok(())
    }

    /// Stops what the store runs in this process for the cache (event subscriptions,
    /// reaper, near-cache copies) and keeps the data. Called once, by
    /// [`crate::Cache::close`]; no other call follows.
    async fn close(&self) -> Result<()> {
        Ok(())
    }

    /// Removes the cache's data and every record the store keeps for it (its layout
    /// record), for every process; then closes it as [`Store::close`] does. The default
    /// drops every entry ([`Store::clear`]) and closes.
    async fn destroy(&self) -> Result<()> {
        self.clear().await?;
        self.close().await
    }
}
