//! A custom expiry policy on Redis: asked only for the durations an operation applies
//! (JSR-107 §6.4, as the embedded store asks it), though only the server knows which
//! one that is (whether the key exists, whether a value is equal).
//!
//! So a call first carries no duration. A function that needs one it was not given
//! replies `need <kind>` having changed nothing (`lua/common.lua`, need), and the call
//! goes again with the policy's answer added; should the entry have changed meanwhile,
//! the next reply names what is needed now. A second round trip, only for caches with
//! a custom policy, and only for calls that apply a duration. Each call is of one
//! entry, so that each entry has the policy's own answer (a `get_all` asks once per
//! hit, as the embedded store does).
//!
//! Bounded: every reply either ends its call or adds a duration the call did not carry
//! yet, of three; a function that names one it was given is an error.

use std::collections::HashSet;
use std::time::Duration;

use partcache::expiry::Custom;
use partcache::store::raw::{RawAction, RawCondition, RawKey, RawWrite, RawWriteOutcome};
use partcache::{Error, Result};
use redis::Value;

use super::cache::StoreInner;
use super::replies;
use crate::arguments::{Asked, Needed};
use crate::routing::Request;
use crate::scripts::scripts;

impl StoreInner {
    /// Sends the calls `build` makes for the entries of `texts` (one call each, given
    /// the durations asked for it so far) until none replies `need`, asking `policy`
    /// for what each one needs. Returns each call's last reply, in the order of
    /// `texts`.
    ///
    /// A round sends at most one call per text, the earliest still to end, so that the
    /// writes of a key keep their order when one of them must go again.
    pub(super) async fn execute_asking(
        &self,
        policy: &Custom,
        texts: &[&str],
        build: impl Fn(usize, &Asked) -> Request,
    ) -> Result<Vec<Value>> {
        let mut asked = vec![Asked::default(); texts.len()];
        let mut replies: Vec<Option<Value>> = texts.iter().map(|_| None).collect();
        let mut pending: Vec<usize> = (0..texts.len()).collect();
        while !pending.is_empty() {
            let mut keys = HashSet::new();
            let round: Vec<usize> = pending
                .iter()
                .copied()
                .filter(|&i| keys.insert(texts[i]))
                .collect();
            let requests = round.iter().map(|&i| build(i, &asked[i])).collect();
            let answers = self.execute(requests).await?;
            // Every call of the round answered, or the loop would send one again with
            // nothing asked: not bounded.
            if answers.len() != round.len() {
                return Err(Error::Store(format!(
                    "cache `{}`: {} replies to {} calls",
                    self.name,
                    answers.len(),
                    round.len()
                )));
            }
            for (&i, reply) in round.iter().zip(answers) {
                match needed(&reply) {
                    None => replies[i] = Some(reply),
                    Some(kind) => {
                        // Counts what cleaning up an expired entry found.
                        self.outcome(reply)?;
                        if !asked[i].ask(kind, policy) {
                            return Err(Error::Store(format!(
                                "cache `{}`: a function asked again for the {kind:?} duration it was given",
                                self.name
                            )));
                        }
                    }
                }
            }
            pending.retain(|&i| replies[i].is_none());
        }
        Ok(replies.into_iter().flatten().collect())
    }

    /// The reply of the one call on `key` that `build` makes: as it is without a
    /// custom policy, else asking the policy what the call needs.
    pub(super) async fn execute_maybe_asking(
        &self,
        key: &RawKey,
        build: impl Fn(Option<&Asked>) -> Request,
    ) -> Result<Value> {
        let replies = match &self.custom {
            Some(policy) => {
                self.execute_asking(policy, &[key.text.as_str()], |_, asked| build(Some(asked)))
                    .await?
            }
            None => self.execute(vec![build(None)]).await?,
        };
        Ok(replies.into_iter().next().unwrap_or(Value::Nil))
    }

    /// Reads `keys` as accesses, one `get` call each (see the module docs).
    pub(super) async fn get_all_asking(
        &self,
        policy: &Custom,
        keys: &[RawKey],
    ) -> Result<Vec<Option<Vec<u8>>>> {
        for key in keys {
            self.check_partition(key)?;
        }
        let texts: Vec<&str> = keys.iter().map(|k| k.text.as_str()).collect();
        let replies = self
            .execute_asking(policy, &texts, |i, asked| {
                let key = &keys[i];
                let mut r = self.script_asked(
                    &scripts().get,
                    key.partition,
                    std::iter::once(key.text.as_str()),
                    Some(asked),
                );
                r.cmd.arg(&key.text);
                r
            })
            .await?;
        replies
            .into_iter()
            .map(|reply| match self.read_result(reply)? {
                Value::Array(values) => Ok(values.into_iter().next().and_then(replies::blob)),
                other => Err(Error::Store(format!("unexpected read reply: {other:?}"))),
            })
            .collect()
    }

    /// The entries an iteration step found in `partition` (`lua/scan.lua`, which reads
    /// them without an access under a custom policy), read as accesses: the blobs of
    /// those still there.
    pub(super) async fn access_scanned(
        &self,
        policy: &Custom,
        partition: u16,
        found: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<Vec<u8>>> {
        let keys: Vec<RawKey> = found
            .into_iter()
            .map(|(text, _)| RawKey { text, partition })
            .collect();
        Ok(self
            .get_all_asking(policy, &keys)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    /// One write (`lua/write.lua`), asking `policy` for the duration it applies.
    pub(super) async fn write_asking(
        &self,
        policy: &Custom,
        key: &RawKey,
        write: &RawWrite,
    ) -> Result<RawWriteOutcome> {
        let reply = self
            .execute_asking(policy, &[key.text.as_str()], |_, asked| {
                self.write_request(key, write, Some(asked))
            })
            .await?
            .pop()
            .unwrap_or(Value::Nil);
        self.write_outcome(reply)
    }

    /// Unconditional puts of `entries`, one write call each, asking `policy` for each
    /// one's duration: how many were stored.
    pub(super) async fn put_all_asking(
        &self,
        policy: &Custom,
        entries: Vec<(RawKey, Vec<u8>)>,
        ttl: Option<Duration>,
    ) -> Result<u64> {
        let writes: Vec<(RawKey, RawWrite)> = entries
            .into_iter()
            .map(|(key, blob)| {
                let write = RawWrite {
                    condition: RawCondition::Always,
                    action: RawAction::Put { blob, ttl },
                    want_previous: false,
                };
                (key, write)
            })
            .collect();
        let texts: Vec<&str> = writes.iter().map(|(k, _)| k.text.as_str()).collect();
        let replies = self
            .execute_asking(policy, &texts, |i, asked| {
                let (key, write) = &writes[i];
                self.write_request(key, write, Some(asked))
            })
            .await?;
        let mut stored = 0;
        for reply in replies {
            stored += u64::from(self.write_outcome(reply)?.applied);
        }
        Ok(stored)
    }
}

/// The duration a function's reply says its call needs (`{"need <kind>", evicted,
/// expired, events}`), or `None` for any other reply.
fn needed(reply: &Value) -> Option<Needed> {
    let Value::Array(parts) = reply else {
        return None;
    };
    match parts.first()? {
        Value::BulkString(result) => Needed::parse(result),
        Value::SimpleString(result) => Needed::parse(result.as_bytes()),
        _ => None,
    }
}
