//! One unconditional put that wants no previous value: it joins the batch of its node
//! (`batching/puts.rs`) when it may, else goes alone with its partition's keys
//! declared.

use std::time::Duration;

use partcache::Result;
use partcache::store::raw::{RawKey, RawWriteOutcome};
use redis::{Cmd, Value};

use super::cache::StoreInner;
use crate::arguments::ttl_arg;
use crate::batching::puts::{self, BatchEntry, BatchFunction, BatchedPut, PutTurn};
use crate::routing::Request;
use crate::scripts::scripts;

impl StoreInner {
    /// An unconditional put that wants no previous value: the common put
    /// (`lua/put.lua`, `kind` [`BatchFunction::PutBatch`]) or an upsert (`lua/upsert.lua`). Batched
    /// per node (`batching/puts.rs`) unless its events must come back in the reply
    /// (listeners in this process).
    pub(super) async fn put_batched(
        &self,
        key: &RawKey,
        blob: Vec<u8>,
        ttl: Option<Duration>,
        kind: &BatchFunction,
    ) -> Result<RawWriteOutcome> {
        // The put that goes alone is boxed on every path: most puts wait in a batch,
        // and its future in place would make every put's (which the store boxes) much
        // larger.
        if self.listened.is_listened() {
            return Box::pin(self.put_alone(key, &blob, ttl, kind)).await;
        }
        let entry = self.batch_entry(key, blob, ttl, kind);
        let blob = match puts::enter(&self.batcher.puts, entry, kind) {
            PutTurn::Queued(receiver) => match puts::wait(&self.batcher.puts, receiver).await? {
                BatchedPut::Replied(reply) => return self.write_outcome(reply),
                BatchedPut::SendAlone(blob) => blob,
            },
            PutTurn::Lead(mut lead, blob) => {
                let result = Box::pin(self.put_alone(key, &blob, ttl, kind)).await;
                lead.finished(&result);
                return result;
            }
            PutTurn::Alone(blob) => blob,
            PutTurn::Lost => {
                return Err(partcache::Error::Store(
                    "a batched put lost its entry".into(),
                ));
            }
        };
        Box::pin(self.put_alone(key, &blob, ttl, kind)).await
    }

    /// `key`'s put of `blob` as a batch of `kind` takes it.
    fn batch_entry(
        &self,
        key: &RawKey,
        blob: Vec<u8>,
        ttl: Option<Duration>,
        kind: &BatchFunction,
    ) -> BatchEntry {
        let p = key.partition;
        let upsert = matches!(kind, BatchFunction::UpsertBatch(_));
        let (head, name) = if upsert {
            (self.layout.shared_prefix(p), key.text.clone())
        } else if self.event_mode.publishes() {
            (
                self.layout.shared_channel(p),
                self.layout.entry_key(p, &key.text),
            )
        } else {
            (
                self.layout.shared_prefix(p),
                self.layout.entry_key(p, &key.text),
            )
        };
        BatchEntry {
            slot: self.layout.slot(p),
            head,
            key: name,
            ttl: if upsert { ttl_arg(ttl) } else { String::new() },
            key_only: if upsert {
                self.key_only(&blob)
            } else {
                Vec::new()
            },
            blob,
        }
    }

    /// One put by itself, with the partition's keys declared.
    pub(super) async fn put_alone(
        &self,
        key: &RawKey,
        blob: &[u8],
        ttl: Option<Duration>,
        kind: &BatchFunction,
    ) -> Result<RawWriteOutcome> {
        if let BatchFunction::UpsertBatch(_) = kind {
            let mut r = self.script(
                &scripts().upsert,
                key.partition,
                std::iter::once(key.text.as_str()),
            );
            r.cmd
                .arg(&key.text)
                .arg(blob)
                .arg(ttl_arg(ttl))
                .arg(self.key_only(blob));
            let reply = self.execute(vec![r]).await?.pop().unwrap_or(Value::Nil);
            return self.write_outcome(reply);
        }
        self.fast_put_alone(key, blob).await
    }

    /// One common put by itself: `lua/put.lua` with the partition's keys declared.
    pub(super) async fn fast_put_alone(
        &self,
        key: &RawKey,
        blob: &[u8],
    ) -> Result<RawWriteOutcome> {
        let p = key.partition;
        let mut cmd = Cmd::with_capacity(13, 256 + 2 * key.text.len() + blob.len());
        cmd.arg("FCALL").arg(&scripts().put.function).arg(5);
        for partition_key in self.layout.partition_keys(p) {
            cmd.arg(partition_key);
        }
        cmd.arg(self.layout.entry_key_arg(p, &key.text));
        let events = self.event_args(&mut cmd, p);
        cmd.arg(&key.text).arg(blob);
        let request = Request {
            events: events.then_some(p),
            ..Request::new(self.layout.slot(p), cmd)
        };
        let reply = self
            .execute(vec![request])
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        self.write_outcome(reply)
    }
}
