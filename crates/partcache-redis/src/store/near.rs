//! What a near cache asks of the store: values with the time they have left, and a
//! heartbeat that vouches for the cache's event subscriptions (`events.rs`).

use std::sync::Arc;
use std::time::Duration;

use partcache::store::raw::{RawFound, RawKey};
use partcache::{Error, Result};
use redis::Value;

use super::cache::StoreInner;
use super::replies;
use crate::events;
use crate::routing::Request;
use crate::scripts::scripts;

impl StoreInner {
    /// The values of `keys` with the time each has left (`PTTL`), for a near cache.
    pub(super) async fn get_all_with_deadlines(
        &self,
        keys: &[RawKey],
    ) -> Result<Vec<Option<RawFound>>> {
        let s = self;
        let groups = s.by_partition(keys.iter())?;
        let requests: Vec<Request> = groups
            .iter()
            .map(|(&p, indexes)| s.keyed_script(&scripts().near_get, p, keys, indexes))
            .collect();
        let replies = s.execute(requests).await?;
        let mut out = vec![None; keys.len()];
        for (indexes, reply) in groups.values().zip(replies) {
            let Value::Array(values) = s.outcome(reply)? else {
                return Err(Error::Store("unexpected near read reply".into()));
            };
            for (&i, value) in indexes.iter().zip(values) {
                if let Value::Array(pair) = value {
                    let mut pair = pair.into_iter();
                    if let Some(blob) = pair.next().and_then(replies::blob) {
                        // PTTL: -1 when the entry has no deadline.
                        let remaining = match pair.next() {
                            Some(Value::Int(ms)) => u64::try_from(ms).ok(),
                            _ => None,
                        };
                        out[i] = Some(RawFound {
                            blob,
                            remaining: remaining.map(Duration::from_millis),
                        });
                    }
                }
            }
        }
        Ok(out)
    }

    /// Starts the heartbeat of the near cache attached to this cache's feed, every
    /// `every`; it ends with the store.
    pub(super) fn start_heartbeat(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(events::heartbeat_loop(
            Arc::downgrade(&self.deployment),
            Arc::downgrade(&self.feed),
            every,
        ))
    }
}
