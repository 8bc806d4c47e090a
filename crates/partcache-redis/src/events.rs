//! Cache events across processes: scripts publish every event on the partition's
//! channel (`SPUBLISH` on a cluster: sharded pub/sub keeps a partition's events on the
//! node that owns it; `PUBLISH` on a standalone server), and every process subscribes
//! to the channels of the caches it opened.
//!
//! A message is one byte of kind (`C`reated, `U`pdated, `R`emoved, e`X`pired,
//! e`V`icted) followed by the blob. On a cluster, a RESP3 connection to each node, apart
//! from the data connections, is subscribed to the channels of that node's partitions,
//! so messages arrive in publication order (the events of one partition in order); a
//! PING on it after a script's reply makes the call's events arrive before the call
//! returns. It is apart because the server unsubscribes a shard channel on
//! its own when the channel's slot moves, and redis-rs takes that push as the reply to
//! the oldest request in flight: on a data connection, every later reply would go to
//! the wrong request. When a subscription connection breaks (failover) or the server
//! drops a shard channel (its slot moved), every channel is subscribed again on its
//! current owner.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::RwLock;
use partcache::store::raw::RawEvent;
use partcache::{Error, EventKind, Result};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, broadcast};

use crate::backend::Deployment;
use crate::routing::Request;

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

/// Parses one published message (kind byte and blob).
pub(crate) fn parse_event(payload: &[u8]) -> Option<RawEvent> {
    let (&kind, blob) = payload.split_first()?;
    Some(RawEvent {
        kind: kind_of(kind)?,
        blob: blob.to_vec(),
    })
}

struct Route {
    slot: u16,
    sender: broadcast::Sender<RawEvent>,
}

/// Which channel's messages go to which cache, shared with the connections' push
/// handlers. Messages are dispatched synchronously as the subscription connection
/// reads them, so the events of one partition keep their order.
pub(crate) struct Routes {
    table: RwLock<HashMap<Vec<u8>, Route>>,
    /// Wakes the resubscribe loop.
    lost: Notify,
}

impl Routes {
    pub fn new() -> Arc<Routes> {
        Arc::new(Routes {
            table: RwLock::new(HashMap::new()),
            lost: Notify::new(),
        })
    }

    /// Handles one push from the connection to `addr`.
    pub fn dispatch(&self, addr: &str, push: PushInfo) {
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
                match parse_event(payload) {
                    // No receiver means nobody listens right now: nothing to do.
                    Some(event) => drop(route.sender.send(event)),
                    None => tracing::warn!(%addr, "ignoring a malformed cache event"),
                }
            }
            PushKind::Disconnection if !self.table.read().is_empty() => {
                tracing::warn!(%addr, "connection lost; subscribing to cache events again");
                self.lost.notify_one();
            }
            PushKind::SUnsubscribe => {
                // The server dropped a shard channel we still want: its slot moved.
                if let Some(Value::BulkString(channel)) = push.data.first()
                    && self.table.read().contains_key(channel)
                {
                    self.lost.notify_one();
                }
            }
            _ => {}
        }
    }
}

/// The subscriptions of one deployment. See the module docs.
pub(crate) struct Subscriber {
    routes: Arc<Routes>,
    sharded: bool,
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // Wakes the resubscribe loop so that it sees the deployment is gone and ends.
        self.routes.lost.notify_one();
    }
}

impl Subscriber {
    pub fn new(routes: Arc<Routes>, sharded: bool) -> Subscriber {
        Subscriber { routes, sharded }
    }

    /// Registers `sender` for `channels` (each with its partition's slot) and returns
    /// the subscription commands to send; the caller sends them and awaits the
    /// confirmations.
    pub fn register(
        &self,
        channels: &[(String, u16)],
        sender: &broadcast::Sender<RawEvent>,
    ) -> Vec<Request> {
        let mut table = self.routes.table.write();
        for (channel, slot) in channels {
            table.insert(
                channel.as_bytes().to_vec(),
                Route {
                    slot: *slot,
                    sender: sender.clone(),
                },
            );
        }
        channels
            .iter()
            .map(|(channel, slot)| self.request(channel.as_bytes(), *slot))
            .collect()
    }

    fn request(&self, channel: &[u8], slot: u16) -> Request {
        let mut cmd = redis::cmd(if self.sharded {
            "SSUBSCRIBE"
        } else {
            "SUBSCRIBE"
        });
        cmd.arg(channel);
        Request::new(slot, cmd)
    }

    /// Whether any channel is subscribed.
    pub fn is_active(&self) -> bool {
        !self.routes.table.read().is_empty()
    }

    /// Stops routing `channels` (the store is gone). The server-side subscriptions
    /// stay until the connection closes; messages for them are dropped here.
    pub fn forget(&self, channels: &[(String, u16)]) {
        let mut table = self.routes.table.write();
        for (channel, _) in channels {
            table.remove(channel.as_bytes());
        }
    }

    /// Every registered channel's subscription command.
    pub fn all_requests(&self) -> Vec<Request> {
        self.routes
            .table
            .read()
            .iter()
            .map(|(channel, route)| self.request(channel, route.slot))
            .collect()
    }

    /// Waits until a subscription may have been lost.
    pub fn lost(&self) -> Arc<Routes> {
        self.routes.clone()
    }
}

/// Checks that every subscription reply is a confirmation.
pub(crate) fn confirmed(replies: Vec<Value>) -> Result<()> {
    for reply in replies {
        if let Value::ServerError(e) = reply {
            return Err(Error::Store(format!(
                "cannot subscribe to cache events: {e:?}"
            )));
        }
    }
    Ok(())
}

/// Subscribes again, on their current owners, to every channel of `deployment`
/// whenever a subscription may have been lost; ends with the deployment.
pub(crate) async fn resubscribe_loop(deployment: Weak<Deployment>, routes: Arc<Routes>) {
    loop {
        // Waits without keeping the deployment alive.
        routes.lost.notified().await;
        let mut pause = Duration::from_millis(20);
        loop {
            let Some(deployment) = deployment.upgrade() else {
                return;
            };
            let requests = deployment.subscriber().all_requests();
            if requests.is_empty() {
                break;
            }
            deployment.router.mark_stale();
            match deployment
                .execute_subscriptions(requests)
                .await
                .and_then(confirmed)
            {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "subscribing to cache events again failed; retrying");
                    drop(deployment);
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_messages_parse_into_events() {
        let event = parse_event(b"Uabc").unwrap();
        assert_eq!(event.kind, EventKind::Updated);
        assert_eq!(event.blob, b"abc");
        assert!(parse_event(b"").is_none());
        assert!(parse_event(b"?x").is_none());
    }
}
