//! The event subscriptions of one deployment: which channels are subscribed (in the
//! [`Routes`] the connections dispatch pushes with), and the `SUBSCRIBE` /
//! `SSUBSCRIBE` commands that subscribe them.

use std::sync::Arc;

use partcache::{Error, Result};
use redis::Value;

use crate::feed::Feed;
use crate::push::{Route, Routes};
use crate::routing::Request;

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
    pub(crate) fn new(routes: Arc<Routes>, sharded: bool) -> Subscriber {
        Subscriber { routes, sharded }
    }

    /// Registers `feed` for `channels` (partition `i`'s channel and slot at index `i`)
    /// and returns the subscription commands to send; the caller sends them and
    /// awaits the confirmations.
    pub(crate) fn register(&self, channels: &[(String, u16)], feed: &Arc<Feed>) -> Vec<Request> {
        let mut table = self.routes.table.write();
        for (partition, (channel, slot)) in (0u16..).zip(channels) {
            table.insert(
                channel.as_bytes().to_vec(),
                Route {
                    slot: *slot,
                    partition,
                    feed: feed.clone(),
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

    /// Stops routing `channels` (the store is gone). The server-side subscriptions
    /// stay until the connection closes; messages for them are dropped here.
    pub(crate) fn forget(&self, channels: &[(String, u16)]) {
        let mut table = self.routes.table.write();
        for (channel, _) in channels {
            table.remove(channel.as_bytes());
        }
    }

    /// Every registered channel's subscription command, with its feed and partition.
    pub(crate) fn all_requests(&self) -> Vec<(Arc<Feed>, u16, Request)> {
        self.routes
            .table
            .read()
            .iter()
            .map(|(channel, route)| {
                (
                    route.feed.clone(),
                    route.partition,
                    self.request(channel, route.slot),
                )
            })
            .collect()
    }

    /// Waits until a subscription may have been lost.
    pub(crate) fn lost(&self) -> Arc<Routes> {
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
