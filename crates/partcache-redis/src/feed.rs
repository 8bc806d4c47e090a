//! Where the messages of one cache's channels go: the cache's [`Feed`] (its
//! listeners, through the [`Delivery`], and its near cache once one is attached), and
//! the format of the messages the scripts publish and return.
//!
//! A published message is one byte of kind (`C`reated, `U`pdated, `R`emoved,
//! e`X`pired, e`V`icted, or `Z` for "partition cleared", which only near caches hear),
//! the message's number in its partition (decimal; `<P>sq`, taken by the script in the
//! same atomic step as the change), `:`, the writing client's origin, `:`, and the
//! blob. While a cache has listeners, its scripts also return their events in the reply
//! (kind, number and blob): a call's own events reach its listeners before it returns,
//! in the order the server made them (`delivery.rs`), and the published copies with
//! this client's origin are not forwarded again (`push.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;
use partcache::EventKind;
use partcache::store::raw::{InvalidationSink, ListenerProbe, RawEvent};
use tokio::sync::broadcast;

use crate::delivery::Delivery;

/// The kind byte of a published event.
pub(crate) fn kind_of(byte: u8) -> Option<EventKind> {
    Some(match byte {
        b'C' => EventKind::Created,
        b'U' => EventKind::Updated,
        b'R' => EventKind::Removed,
        b'X' => EventKind::Expired,
        b'V' => EventKind::Evicted,
        _ => return None,
    })
}

/// Parses one event returned in a script's reply (`<kind><number>:<blob>`): its number
/// in its partition and the event.
pub(crate) fn parse_event(payload: &[u8]) -> Option<(u64, RawEvent)> {
    let (&kind, rest) = payload.split_first()?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let seq = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    Some((
        seq,
        RawEvent {
            kind: kind_of(kind)?,
            blob: rest[colon + 1..].to_vec(),
        },
    ))
}

/// What a published message says happened, from its kind byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageKind {
    /// An entry's event (`C`, `U`, `R`, `X`, `V`).
    Entry(EventKind),
    /// `Z`: the partition was cleared; only near caches act on it.
    PartitionCleared,
    /// A byte this version does not know (a newer writer's): ignored, with a warning.
    Unknown(u8),
}

impl MessageKind {
    fn from_byte(byte: u8) -> Self {
        match (byte, kind_of(byte)) {
            (_, Some(kind)) => MessageKind::Entry(kind),
            (b'Z', None) => MessageKind::PartitionCleared,
            (other, None) => MessageKind::Unknown(other),
        }
    }
}

/// One published message: kind, number, origin, blob.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Message<'a> {
    pub kind: MessageKind,
    pub seq: u64,
    pub origin: &'a [u8],
    pub blob: &'a [u8],
}

/// Parses one published message (`<kind><number>:<origin>:<blob>`).
pub(crate) fn parse_message(payload: &[u8]) -> Option<Message<'_>> {
    let (&kind, rest) = payload.split_first()?;
    let colon = rest.iter().position(|&b| b == b':')?;
    let seq = std::str::from_utf8(&rest[..colon]).ok()?.parse().ok()?;
    let rest = &rest[colon + 1..];
    let colon = rest.iter().position(|&b| b == b':')?;
    Some(Message {
        kind: MessageKind::from_byte(kind),
        seq,
        origin: &rest[..colon],
        blob: &rest[colon + 1..],
    })
}

/// Where the messages of one cache's channels go: its listeners, and its near cache
/// once one is attached.
pub(crate) struct Feed {
    /// The cache's event channel (listeners).
    pub events: broadcast::Sender<RawEvent>,
    /// Puts the events of each partition on `events` in the order they were made.
    pub delivery: Delivery,
    /// Whether the cache has listeners in this process.
    pub listened: ListenerProbe,
    /// The attached near cache.
    pub sink: OnceLock<Arc<dyn InvalidationSink>>,
    /// The near cache was given the current numbers since the last loss.
    pub resumed: AtomicBool,
    /// Every partition of the cache, `0..P`.
    pub partitions: Vec<u16>,
    /// Each partition's sequence key and slot.
    pub sequences: Vec<(String, u16)>,
    /// Where each partition's subscription lives, and which partitions wait for their
    /// numbers.
    pub links: FeedLinks,
}

/// Per partition of a [`Feed`]: the node whose connection holds its subscription, and
/// whether it waits for a reseed (see [`Feed::lose`], [`reseed`]).
#[derive(Default)]
pub(crate) struct FeedLinks {
    /// Partition → the node that confirmed its subscription (empty: not known).
    pub(crate) nodes: Mutex<Vec<String>>,
    /// Partition → the loss that made it wait for a reseed; `None`: every partition
    /// waits (the start).
    pub(crate) waiting: Mutex<Option<HashMap<u16, u64>>>,
    /// Numbers the losses, so that a reseed does not end a loss that came during it.
    pub(crate) losses: AtomicU64,
    /// One reseed at a time (see [`reseed`]).
    pub(crate) reseeding: tokio::sync::Mutex<()>,
}

impl Feed {
    /// Every partition's messages may be lost.
    pub(crate) fn lost(&self) {
        self.lose(&self.partitions);
    }

    /// The messages of `partitions` may be lost: the near cache drops them until they
    /// are reseeded.
    pub(crate) fn lose(&self, partitions: &[u16]) {
        let Some(sink) = self.sink.get() else {
            return;
        };
        if partitions.is_empty() {
            return;
        }
        let loss = self.links.losses.fetch_add(1, Ordering::SeqCst) + 1;
        {
            let mut waiting = self.links.waiting.lock();
            let waiting = waiting.get_or_insert_with(|| self.all_waiting());
            for &partition in partitions {
                waiting.insert(partition, loss);
            }
            // Under the lock: a reseed ending now either sees these partitions
            // waiting, or stores its `resumed` before this.
            self.resumed.store(false, Ordering::SeqCst);
        }
        sink.lost(partitions);
    }

    pub(crate) fn all_waiting(&self) -> HashMap<u16, u64> {
        self.partitions.iter().map(|&p| (p, 0)).collect()
    }

    /// `partition`'s subscription was confirmed by `node` (empty: it has none now).
    pub(crate) fn subscribed_on(&self, partition: u16, node: String) {
        let mut nodes = self.links.nodes.lock();
        let index = usize::from(partition);
        if nodes.len() <= index {
            nodes.resize(self.partitions.len().max(index + 1), String::new());
        }
        nodes[index] = node;
    }

    /// The partitions whose subscription may live on `addr`'s connection: those it
    /// confirmed, and those whose node is not known.
    pub(crate) fn partitions_on(&self, addr: &str) -> Vec<u16> {
        let nodes = self.links.nodes.lock();
        self.partitions
            .iter()
            .copied()
            .filter(|&p| {
                nodes
                    .get(usize::from(p))
                    .is_none_or(|node| node.is_empty() || node == addr)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_events_parse_into_numbered_events() {
        let (seq, event) = parse_event(b"U12:a:bc").unwrap();
        assert_eq!(seq, 12);
        assert_eq!(event.kind, EventKind::Updated);
        assert_eq!(event.blob, b"a:bc");
        assert!(parse_event(b"").is_none());
        assert!(parse_event(b"Uabc").is_none());
        assert!(parse_event(b"?1:x").is_none());
    }

    #[test]
    fn published_messages_carry_their_number() {
        assert_eq!(
            parse_message(b"U42:0af3:a:b"),
            Some(Message {
                kind: MessageKind::Entry(EventKind::Updated),
                seq: 42,
                origin: b"0af3",
                blob: b"a:b"
            })
        );
        assert_eq!(
            parse_message(b"Z7:0af3:"),
            Some(Message {
                kind: MessageKind::PartitionCleared,
                seq: 7,
                origin: b"0af3",
                blob: b""
            })
        );
        assert!(parse_message(b"Uabc").is_none());
        assert!(parse_message(b"U42:abc").is_none());
        assert!(parse_message(b"U:x:abc").is_none());
        assert!(parse_message(b"").is_none());
    }
}
