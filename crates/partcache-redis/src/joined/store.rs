//! [`JoinedStore`]: one cache on a joined store. Routes each key, by its partition, to
//! the member that holds the partition; splits many-key operations per member and runs
//! them concurrently; fans cache-wide operations out to every member; merges the
//! members' events into one stream.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::future::join_all;
use futures::stream::{self, BoxStream, StreamExt};
use parking_lot::Mutex;
use partcache::balance::{BalanceReport, MasterBalance};
use partcache::partition::PartitionMap;
use partcache::store::LeasedPut;
use partcache::store::raw::{
    InvalidationSink, RawCacheSpec, RawEvent, RawFound, RawKey, RawLease, RawStore, RawWrite,
    RawWriteOutcome, RemoteBackend,
};
use partcache::{Error, Result};
use tokio::sync::broadcast;

use super::rendezvous::Rendezvous;
use crate::backend::RedisBackend;
use crate::deployment::Deployment;

/// Events buffered per receiver of [`RawStore::subscribe`] (as on one deployment).
const EVENT_CAPACITY: usize = 4096;

/// One cache on a joined store. See the [module docs](crate::joined).
pub struct JoinedStore {
    name: String,
    partitions: PartitionMap,
    /// `owners[p]` is the index (into `members`) of the member that holds partition `p`.
    owners: Box<[usize]>,
    shared: Arc<Shared>,
}

/// What the event forwarders share with the store.
struct Shared {
    members: Vec<MemberStore>,
    events: broadcast::Sender<RawEvent>,
}

/// The cache on one member.
struct MemberStore {
    id: String,
    store: Arc<dyn RawStore>,
    deployment: Arc<Deployment>,
    /// The member's events not forwarded yet. Drained after every operation (so an
    /// operation's own events, which the member store has received by the time it
    /// returns, are in the merged stream before the joined operation returns) and by
    /// a background task for the events of other processes; one receiver, so each
    /// event is forwarded once and in order.
    received: Mutex<broadcast::Receiver<RawEvent>>,
}

impl MemberStore {
    /// Adds the member's id to a member error, so that a user can tell which
    /// deployment failed.
    fn context(&self, error: Error) -> Error {
        in_member(&self.id, error)
    }
}

pub(super) fn in_member(id: &str, error: Error) -> Error {
    match error {
        Error::Unavailable(m) => Error::Unavailable(format!("member `{id}`: {m}")),
        Error::Config(m) => Error::Config(format!("member `{id}`: {m}")),
        Error::Store(m) => Error::Store(format!("member `{id}`: {m}")),
        other => other,
    }
}

impl Shared {
    /// Forwards the events member `member` has received so far.
    fn forward(&self, member: usize) {
        let Some(m) = self.members.get(member) else {
            return;
        };
        let mut received = m.received.lock();
        loop {
            match received.try_recv() {
                Ok(event) => {
                    // No receiver: nobody listens.
                    let _ = self.events.send(event);
                }
                Err(broadcast::error::TryRecvError::Lagged(lost)) => {
                    tracing::warn!(member = %m.id, lost, "joined store's event forwarder lagged behind");
                }
                Err(_) => return,
            }
        }
    }

    fn forward_all(&self) {
        for member in 0..self.members.len() {
            self.forward(member);
        }
    }
}

/// Forwards member `member`'s events as they arrive (events of other processes), until
/// the store or the member's channel is gone.
async fn forward_events(
    shared: Weak<Shared>,
    member: usize,
    mut wake: broadcast::Receiver<RawEvent>,
) {
    loop {
        match wake.recv().await {
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
            Err(broadcast::error::RecvError::Closed) => return,
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.forward(member);
    }
}

/// Which members a many-key operation needs.
enum Route {
    /// Every key is on this member: the caller's slice goes there as is.
    One(usize),
    /// Per member, the indexes of its keys in the caller's order (no empty groups).
    Split(Vec<(usize, Vec<usize>)>),
}

impl JoinedStore {
    /// Opens the cache described by `spec` on every member, concurrently. `members`
    /// and `rendezvous` list the same members in the same order.
    pub(super) async fn open(
        members: &[(String, RedisBackend)],
        rendezvous: &Rendezvous,
        spec: RawCacheSpec,
    ) -> Result<JoinedStore> {
        if rendezvous.ids().len() != members.len() {
            return Err(Error::Config(format!(
                "joined store: {} member ids for {} members",
                rendezvous.ids().len(),
                members.len()
            )));
        }
        let owners = rendezvous.assignment(&spec.name, spec.partitions.partitions());
        let opened = join_all(members.iter().map(|(id, backend)| {
            let spec = spec.clone();
            async move { backend.open(spec).await.map_err(|e| in_member(id, e)) }
        }))
        .await;
        let mut stores = Vec::with_capacity(members.len());
        for ((id, backend), store) in members.iter().zip(opened) {
            let store = store?;
            stores.push(MemberStore {
                id: id.clone(),
                received: Mutex::new(store.subscribe()),
                store,
                deployment: backend.deployment().clone(),
            });
        }
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let shared = Arc::new(Shared {
            members: stores,
            events,
        });
        for (i, member) in shared.members.iter().enumerate() {
            tokio::spawn(forward_events(
                Arc::downgrade(&shared),
                i,
                member.store.subscribe(),
            ));
        }
        Ok(JoinedStore {
            name: spec.name,
            partitions: spec.partitions,
            owners: owners.into_boxed_slice(),
            shared,
        })
    }

    /// The member ids, in the URL's order.
    pub fn member_ids(&self) -> Vec<&str> {
        self.shared.members.iter().map(|m| m.id.as_str()).collect()
    }

    /// The id of the member that holds `partition` (`None` past the partition count).
    pub fn member_of(&self, partition: u16) -> Option<&str> {
        let owner = *self.owners.get(usize::from(partition))?;
        self.shared.members.get(owner).map(|m| m.id.as_str())
    }

    /// The index of the member that holds `key`'s partition.
    fn owner(&self, key: &RawKey) -> Result<usize> {
        self.owners
            .get(usize::from(key.partition))
            .copied()
            .filter(|&m| m < self.shared.members.len())
            .ok_or_else(|| {
                Error::Store(format!(
                    "key `{}` names partition {} of cache `{}`, which has {}",
                    key.text,
                    key.partition,
                    self.name,
                    self.owners.len()
                ))
            })
    }

    fn route<'k>(&self, keys: impl Iterator<Item = &'k RawKey>) -> Result<Route> {
        let owners = keys.map(|k| self.owner(k)).collect::<Result<Vec<_>>>()?;
        if let Some(&first) = owners.first()
            && owners.iter().all(|&o| o == first)
        {
            return Ok(Route::One(first));
        }
        let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, owner) in owners.into_iter().enumerate() {
            groups.entry(owner).or_default().push(i);
        }
        Ok(Route::Split(groups.into_iter().collect()))
    }

    fn member(&self, index: usize) -> &MemberStore {
        // `index` comes from `owner`, which checked it.
        &self.shared.members[index]
    }

    /// Forwards the events the operation caused, then passes its result on.
    fn after<T>(&self, result: Result<T>) -> Result<T> {
        self.shared.forward_all();
        result
    }

    /// Runs `op` on every member concurrently; every member's result, in member order.
    async fn on_every_member<'s, T, F, Fut>(&'s self, op: F) -> Vec<Result<T>>
    where
        F: Fn(&'s MemberStore) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.on_every_member_indexed(|_, m| op(m)).await
    }

    /// [`on_every_member`](Self::on_every_member), with each member's index.
    async fn on_every_member_indexed<'s, T, F, Fut>(&'s self, op: F) -> Vec<Result<T>>
    where
        F: Fn(usize, &'s MemberStore) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let results = join_all(self.shared.members.iter().enumerate().map(|(i, m)| {
            let call = op(i, m);
            async move { call.await.map_err(|e| m.context(e)) }
        }))
        .await;
        self.shared.forward_all();
        results
    }

    /// Runs a many-key read on the members that hold `keys`, concurrently, and puts the
    /// answers back in the caller's order. `call` gets each member's keys (the caller's
    /// slice itself when one member holds them all). Every member finishes its share
    /// even if another fails; the first error (in member order) is returned.
    async fn per_member<'a, T, F, Fut>(&'a self, keys: &'a [RawKey], call: F) -> Result<Vec<T>>
    where
        T: Default,
        F: Fn(&'a MemberStore, Cow<'a, [RawKey]>) -> Fut,
        Fut: Future<Output = Result<Vec<T>>>,
    {
        let result = match self.route(keys.iter())? {
            Route::One(m) => {
                let member = self.member(m);
                call(member, Cow::Borrowed(keys))
                    .await
                    .map_err(|e| member.context(e))
            }
            Route::Split(groups) => {
                let replies = join_all(groups.iter().map(|(m, indexes)| {
                    let member = self.member(*m);
                    let answer = call(member, Cow::Owned(pick(keys, indexes)));
                    async move { answer.await.map_err(|e| member.context(e)) }
                }))
                .await;
                let mut out: Vec<T> = std::iter::repeat_with(T::default)
                    .take(keys.len())
                    .collect();
                let mut failed = None;
                for ((_, indexes), reply) in groups.iter().zip(replies) {
                    match reply {
                        Ok(values) => {
                            for (&i, value) in indexes.iter().zip(values) {
                                out[i] = value;
                            }
                        }
                        Err(e) => failed = failed.or(Some(e)),
                    }
                }
                failed.map_or(Ok(out), Err)
            }
        };
        self.after(result)
    }
}

/// The keys at `indexes`, in that order.
fn pick(keys: &[RawKey], indexes: &[usize]) -> Vec<RawKey> {
    indexes.iter().map(|&i| keys[i].clone()).collect()
}

#[async_trait]
impl RawStore for JoinedStore {
    fn describe(&self) -> String {
        describe(self.shared.members.iter().map(|m| m.id.as_str()))
    }

    async fn get_all(&self, keys: &[RawKey]) -> Result<Vec<Option<Vec<u8>>>> {
        self.per_member(keys, |m, keys| async move { m.store.get_all(&keys).await })
            .await
    }

    async fn close(&self) -> Result<()> {
        for member in &self.shared.members {
            member.store.close().await?;
        }
        Ok(())
    }

    async fn destroy(&self) -> Result<()> {
        for member in &self.shared.members {
            member
                .store
                .destroy()
                .await
                .map_err(|e| member.context(e))?;
        }
        Ok(())
    }

    async fn touch(&self, key: &RawKey) -> Result<()> {
        let member = self.member(self.owner(key)?);
        let result = member.store.touch(key).await;
        self.after(result.map_err(|e| member.context(e)))
    }

    async fn peek(&self, key: &RawKey) -> Result<Option<Vec<u8>>> {
        let member = self.member(self.owner(key)?);
        let result = member.store.peek(key).await;
        self.after(result.map_err(|e| member.context(e)))
    }

    async fn contains_all(&self, keys: &[RawKey]) -> Result<Vec<bool>> {
        self.per_member(
            keys,
            |m, keys| async move { m.store.contains_all(&keys).await },
        )
        .await
    }

    async fn get_all_with_deadlines(&self, keys: &[RawKey]) -> Result<Vec<Option<RawFound>>> {
        self.per_member(keys, |m, keys| async move {
            m.store.get_all_with_deadlines(&keys).await
        })
        .await
    }

    async fn write(&self, key: &RawKey, write: RawWrite) -> Result<RawWriteOutcome> {
        let member = self.member(self.owner(key)?);
        let result = member.store.write(key, write).await;
        self.after(result.map_err(|e| member.context(e)))
    }

    fn plain_reads(&self) -> bool {
        // Every member opened the cache from one spec.
        self.shared.members.iter().all(|m| m.store.plain_reads())
    }

    async fn lease(
        &self,
        key: &RawKey,
        token: &str,
        ttl: Duration,
        waited: bool,
    ) -> Result<RawLease> {
        let member = self.member(self.owner(key)?);
        let result = member.store.lease(key, token, ttl, waited).await;
        self.after(result.map_err(|e| member.context(e)))
    }

    async fn put_leased(
        &self,
        key: &RawKey,
        token: &str,
        blob: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<LeasedPut> {
        let member = self.member(self.owner(key)?);
        let result = member.store.put_leased(key, token, blob, ttl).await;
        self.after(result.map_err(|e| member.context(e)))
    }

    async fn release_lease(&self, key: &RawKey, token: &str) -> Result<()> {
        let member = self.member(self.owner(key)?);
        let result = member.store.release_lease(key, token).await;
        result.map_err(|e| member.context(e))
    }

    async fn put_all(&self, entries: Vec<(RawKey, Vec<u8>)>, ttl: Option<Duration>) -> Result<u64> {
        let mut per_member: Vec<Vec<(RawKey, Vec<u8>)>> =
            (0..self.shared.members.len()).map(|_| Vec::new()).collect();
        for entry in entries {
            let owner = self.owner(&entry.0)?;
            per_member[owner].push(entry);
        }
        let calls = per_member
            .into_iter()
            .enumerate()
            .filter(|(_, entries)| !entries.is_empty())
            .map(|(m, entries)| {
                let member = self.member(m);
                async move {
                    member
                        .store
                        .put_all(entries, ttl)
                        .await
                        .map_err(|e| member.context(e))
                }
            });
        let results = join_all(calls).await;
        self.after(
            results
                .into_iter()
                .collect::<Result<Vec<u64>>>()
                .map(|stored| stored.into_iter().sum()),
        )
    }

    async fn remove_all(&self, keys: &[RawKey]) -> Result<u64> {
        let result = match self.route(keys.iter())? {
            Route::One(m) => {
                let member = self.member(m);
                member
                    .store
                    .remove_all(keys)
                    .await
                    .map_err(|e| member.context(e))
            }
            Route::Split(groups) => {
                let replies = join_all(groups.iter().map(|(m, indexes)| {
                    let member = self.member(*m);
                    let keys = pick(keys, indexes);
                    async move {
                        member
                            .store
                            .remove_all(&keys)
                            .await
                            .map_err(|e| member.context(e))
                    }
                }))
                .await;
                replies.into_iter().sum()
            }
        };
        self.after(result)
    }

    async fn remove_everything(&self) -> Result<u64> {
        self.on_every_member(|m| m.store.remove_everything())
            .await
            .into_iter()
            .sum()
    }

    async fn clear(&self) -> Result<()> {
        self.on_every_member(|m| m.store.clear())
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    }

    fn scan(&self) -> BoxStream<'_, Result<Vec<u8>>> {
        stream::iter(self.shared.members.iter())
            .flat_map(|m| {
                m.store
                    .scan()
                    .map(move |blob| blob.map_err(|e| m.context(e)))
            })
            .boxed()
    }

    async fn len(&self) -> Result<u64> {
        self.on_every_member(|m| m.store.len())
            .await
            .into_iter()
            .sum()
    }

    fn subscribe(&self) -> broadcast::Receiver<RawEvent> {
        self.shared.events.subscribe()
    }

    async fn run_pending_tasks(&self) -> Result<()> {
        self.on_every_member(|m| m.store.run_pending_tasks())
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    /// Attaches `sink` to every member, each through a filter that passes on only the
    /// partitions that member holds: every partition's feed (sequence numbers, losses,
    /// vouches) then comes from exactly the member that serves its reads. Fails if any
    /// member refuses (e.g. `publish_events(false)`).
    async fn listen(&self) -> Result<()> {
        self.on_every_member(|m| m.store.listen())
            .await
            .into_iter()
            .collect::<Result<Vec<()>>>()
            .map(|_| ())
    }

    async fn attach_invalidation_sink(
        &self,
        sink: Arc<dyn InvalidationSink>,
        heartbeat: Duration,
    ) -> Result<()> {
        self.on_every_member_indexed(|index, m| {
            let owned: Arc<[bool]> = self.owners.iter().map(|&o| o == index).collect();
            let filtered = Arc::new(MemberSink {
                inner: sink.clone(),
                owned,
            });
            m.store.attach_invalidation_sink(filtered, heartbeat)
        })
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .map(|_| ())
    }

    /// One row per master of every member, named `<member id> <master address>`: the
    /// partitions of this cache that master holds (the member's own partitions, by its
    /// current slot map), and the entries and bytes its member reports for it
    /// (including entries left over from partitions that moved away, which still use
    /// that master's memory; see the module docs). Needs every member.
    async fn balance_report(&self) -> Result<BalanceReport> {
        let reports = self
            .on_every_member(|m| async move {
                let report = m.store.balance_report().await?;
                let map = m.deployment.slot_map().await?;
                Ok((report, map))
            })
            .await;
        let mut masters = Vec::new();
        for (index, report) in reports.into_iter().enumerate() {
            let (report, map) = report?;
            let member = self.member(index);
            let mut rows: BTreeMap<String, MasterBalance> = report
                .masters
                .into_iter()
                .map(|row| {
                    (
                        row.master.clone(),
                        MasterBalance {
                            partitions: 0,
                            ..row
                        },
                    )
                })
                .collect();
            for (p, _) in (0..self.partitions.partitions())
                .zip(self.owners.iter())
                .filter(|(_, owner)| **owner == index)
            {
                let master = map
                    .master(self.partitions.slot(p))
                    .unwrap_or("(unserved)")
                    .to_string();
                rows.entry(master.clone())
                    .or_insert_with(|| MasterBalance {
                        master,
                        partitions: 0,
                        entries: 0,
                        bytes: 0,
                    })
                    .partitions += 1;
            }
            masters.extend(rows.into_values().map(|row| MasterBalance {
                master: format!("{} {}", member.id, row.master),
                ..row
            }));
        }
        masters.sort_by(|a, b| a.master.cmp(&b.master));
        Ok(BalanceReport {
            cache: self.name.clone(),
            partitions: self.partitions.partitions(),
            masters,
        })
    }

    /// Every member's breakers, each node named as in the balance report
    /// (`<member id> <host:port>`).
    fn breakers(&self) -> Vec<partcache::stats::BreakerStats> {
        self.shared
            .members
            .iter()
            .flat_map(|member| {
                member
                    .deployment
                    .breakers()
                    .into_iter()
                    .map(|b| partcache::stats::BreakerStats {
                        node: format!("{} {}", member.id, b.node),
                        ..b
                    })
            })
            .collect()
    }
}

/// A near cache's sink as one member sees it: only the partitions the member holds.
/// Other members' partitions have their own feeds (their owners'); a member's messages,
/// losses or vouches about partitions it does not serve (it subscribes to all of them,
/// and may still reap entries left there by an earlier member list) say nothing about
/// the values a near cache reads, and its sequence numbers for them would look like
/// gaps in the owner's.
struct MemberSink {
    inner: Arc<dyn InvalidationSink>,
    /// `owned[p]`: the member holds partition `p`.
    owned: Arc<[bool]>,
}

impl MemberSink {
    fn holds(&self, partition: u16) -> bool {
        self.owned
            .get(usize::from(partition))
            .copied()
            .unwrap_or(false)
    }

    fn held(&self, partitions: &[u16]) -> Vec<u16> {
        partitions
            .iter()
            .copied()
            .filter(|&p| self.holds(p))
            .collect()
    }
}

impl InvalidationSink for MemberSink {
    fn entry_changed(&self, partition: u16, seq: u64, blob: &[u8]) {
        if self.holds(partition) {
            self.inner.entry_changed(partition, seq, blob);
        }
    }

    fn partition_cleared(&self, partition: u16, seq: u64) {
        if self.holds(partition) {
            self.inner.partition_cleared(partition, seq);
        }
    }

    fn lost(&self, partitions: &[u16]) {
        let held = self.held(partitions);
        if !held.is_empty() {
            self.inner.lost(&held);
        }
    }

    fn resumed(&self, partitions: &[u16], seqs: &[u64], at: std::time::Instant) {
        let (held, seqs): (Vec<u16>, Vec<u64>) = partitions
            .iter()
            .zip(seqs)
            .filter(|(p, _)| self.holds(**p))
            .map(|(&p, &seq)| (p, seq))
            .unzip();
        if !held.is_empty() {
            self.inner.resumed(&held, &seqs, at);
        }
    }

    fn vouched(&self, partitions: &[u16], at: std::time::Instant) {
        let held = self.held(partitions);
        if !held.is_empty() {
            self.inner.vouched(&held, at);
        }
    }
}

/// `redis-joined [<id> | <id> | …]`, for logs and error messages.
pub(super) fn describe<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    format!(
        "redis-joined [{}]",
        ids.into_iter().collect::<Vec<_>>().join(" | ")
    )
}

impl std::fmt::Debug for JoinedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinedStore")
            .field("name", &self.name)
            .field("owners", &self.owners)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Records every call it gets.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl InvalidationSink for Recorder {
        fn entry_changed(&self, partition: u16, seq: u64, _blob: &[u8]) {
            self.0.lock().push(format!("changed {partition}#{seq}"));
        }
        fn partition_cleared(&self, partition: u16, seq: u64) {
            self.0.lock().push(format!("cleared {partition}#{seq}"));
        }
        fn lost(&self, partitions: &[u16]) {
            self.0.lock().push(format!("lost {partitions:?}"));
        }
        fn resumed(&self, partitions: &[u16], seqs: &[u64], _at: Instant) {
            self.0
                .lock()
                .push(format!("resumed {partitions:?} {seqs:?}"));
        }
        fn vouched(&self, partitions: &[u16], _at: Instant) {
            self.0.lock().push(format!("vouched {partitions:?}"));
        }
    }

    #[test]
    fn a_member_reports_to_the_near_cache_only_about_the_partitions_it_holds() {
        let recorder = Arc::new(Recorder::default());
        let sink = MemberSink {
            inner: recorder.clone(),
            owned: vec![true, false, true, false].into(),
        };
        let now = Instant::now();
        sink.entry_changed(0, 5, b"k");
        sink.entry_changed(1, 9, b"k");
        sink.partition_cleared(1, 10);
        sink.partition_cleared(2, 3);
        sink.lost(&[1, 3]);
        sink.lost(&[0, 1, 2]);
        sink.resumed(&[0, 1, 2, 3], &[6, 0, 3, 0], now);
        sink.vouched(&[1, 3], now);
        sink.vouched(&[3, 2, 7], now);
        assert_eq!(
            *recorder.0.lock(),
            [
                "changed 0#5",
                "cleared 2#3",
                "lost [0, 2]",
                "resumed [0, 2] [6, 3]",
                "vouched [2]",
            ]
        );
    }
}
