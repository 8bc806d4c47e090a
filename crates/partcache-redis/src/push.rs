//! Push routing: which channel's messages go to which cache's [`Feed`], shared with
//! the connections, whose push handlers hand every push to [`Routes::dispatch`] as
//! the connection reads it. A message goes to its cache's near cache and (unless this
//! client published it) to its listeners; a lost connection or a shard channel the
//! server dropped (its slot moved) tells the near caches which partitions may have
//! lost messages, and wakes the resubscription (`events.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use partcache::store::raw::RawEvent;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::Notify;

use crate::feed::{Feed, MessageKind, parse_message};

pub(crate) struct Route {
    pub(crate) slot: u16,
    pub(crate) partition: u16,
    pub(crate) feed: Arc<Feed>,
}

/// Which channel's messages go to which cache, shared with the connections' push
/// handlers. Messages are dispatched synchronously as the subscription connection
/// reads them, so the events of one partition keep their order.
pub(crate) struct Routes {
    pub(crate) table: RwLock<HashMap<Vec<u8>, Route>>,
    /// Wakes the resubscribe loop.
    pub(crate) lost: Notify,
    /// This client's origin (see `Deployment::origin`).
    origin: String,
}

impl Routes {
    pub(crate) fn new(origin: String) -> Arc<Routes> {
        Arc::new(Routes {
            table: RwLock::new(HashMap::new()),
            lost: Notify::new(),
            origin,
        })
    }

    /// Every feed with a near cache attached.
    pub(crate) fn sinks(&self) -> Vec<Arc<Feed>> {
        let mut feeds: Vec<Arc<Feed>> = Vec::new();
        for route in self.table.read().values() {
            if route.feed.sink.get().is_some() && !feeds.iter().any(|f| Arc::ptr_eq(f, &route.feed))
            {
                feeds.push(route.feed.clone());
            }
        }
        feeds
    }

    /// Tells every near cache that messages may be lost, and wakes the resubscribe loop.
    pub(crate) fn subscriptions_lost(&self) {
        for feed in self.sinks() {
            feed.lost();
        }
        self.lost.notify_one();
    }

    /// Tells every near cache that the messages of the partitions subscribed on `addr`
    /// may be lost, and wakes the resubscribe loop.
    pub(crate) fn node_lost(&self, addr: &str) {
        for feed in self.sinks() {
            feed.lose(&feed.partitions_on(addr));
        }
        self.lost.notify_one();
    }

    /// Wakes the resubscribe loop.
    pub(crate) fn wake(&self) {
        self.lost.notify_one();
    }

    /// Handles one push from the connection to `addr`.
    pub(crate) fn dispatch(&self, addr: &str, push: PushInfo) {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload))) =
                    (push.data.first(), push.data.get(1))
                else {
                    return;
                };
                let table = self.table.read();
                let Some(route) = table.get(channel) else {
                    return;
                };
                let Some(message) = parse_message(payload) else {
                    tracing::warn!(%addr, "ignoring a malformed cache event");
                    // Whatever it was, the near cache cannot vouch for the partition.
                    if let Some(sink) = route.feed.sink.get() {
                        sink.partition_cleared(route.partition, 0);
                    }
                    return;
                };
                let sink = route.feed.sink.get();
                if message.kind == MessageKind::PartitionCleared {
                    if let Some(sink) = sink {
                        sink.partition_cleared(route.partition, message.seq);
                    }
                    return;
                }
                if let Some(sink) = sink {
                    sink.entry_changed(route.partition, message.seq, message.blob);
                }
                if message.origin == self.origin.as_bytes() {
                    // This client's own write: its listeners had the event from the
                    // script's reply, before the write returned.
                    return;
                }
                match message.kind {
                    // Nobody listens here right now: nothing to build.
                    MessageKind::Entry(kind) if route.feed.listened.is_listened() => {
                        route.feed.delivery.arrived(
                            route.partition,
                            message.seq,
                            RawEvent {
                                kind,
                                blob: message.blob.to_vec(),
                            },
                        )
                    }
                    MessageKind::Entry(_) | MessageKind::PartitionCleared => {}
                    MessageKind::Unknown(_) => {
                        tracing::warn!(%addr, "ignoring a cache event of unknown kind")
                    }
                }
            }
            PushKind::Disconnection if !self.table.read().is_empty() => {
                tracing::warn!(%addr, "connection lost; subscribing to cache events again");
                self.node_lost(addr);
            }
            PushKind::SUnsubscribe => {
                // The server dropped a shard channel we still want: its slot moved.
                let route = match push.data.first() {
                    Some(Value::BulkString(channel)) => self
                        .table
                        .read()
                        .get(channel)
                        .map(|r| (r.feed.clone(), r.partition)),
                    _ => None,
                };
                if let Some((feed, partition)) = route {
                    feed.subscribed_on(partition, String::new());
                    feed.lose(&[partition]);
                    self.lost.notify_one();
                }
            }
            _ => {}
        }
    }
}
