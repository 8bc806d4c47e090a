//! Leases of loads (`lua/lease.lua`, `lua/lease_put.lua`, `lua/lease_release.lua`):
//! one process in the deployment loads a missing key, and a load whose lease a write
//! voided is not stored. Each is one function call on the key's partition, atomic with
//! the entry.

use std::time::Duration;

use partcache::store::LeasedPut;
use partcache::store::raw::{RawKey, RawLease};
use partcache::{Error, Result};
use redis::Value;

use super::cache::StoreInner;
use super::replies;
use crate::arguments::{Asked, ttl_arg};
use crate::scripts::scripts;

/// How long a lease ended without a value reads as *released* (`lua/lease_release.lua`):
/// the callers that waited for it load then, side by side, instead of one process
/// after another. Waiters ask again at least every 20 ms, so this covers their next
/// ask with room for a busy machine; a caller in this window loads without storing,
/// so it stays short.
const RELEASED_FOR: Duration = Duration::from_millis(200);

impl StoreInner {
    /// Reads `key`, taking its lease for `token` when it is absent and free (or, on a
    /// first ask, released).
    pub(super) async fn lease(
        &self,
        key: &RawKey,
        token: &str,
        ttl: Duration,
        waited: bool,
    ) -> Result<RawLease> {
        self.check_partition(key)?;
        let ms = ttl.as_millis().clamp(1, u128::from(u64::MAX)).to_string();
        let request = |asked: Option<&Asked>| {
            let mut r = self.script_asked(
                &scripts().lease,
                key.partition,
                std::iter::once(key.text.as_str()),
                asked,
            );
            r.cmd
                .arg(&key.text)
                .arg(token)
                .arg(&ms)
                .arg(if waited { "1" } else { "0" });
            r
        };
        // A hit is an access: a custom policy's access duration is asked once the
        // function found one.
        let reply = self.execute_maybe_asking(key, request).await?;
        let Value::Array(parts) = self.outcome(reply)? else {
            return Err(Error::Store("unexpected lease reply".into()));
        };
        let mut parts = parts.into_iter();
        // Read the code strictly: a reply that is not one must not grant a lease.
        let code = match parts.next() {
            Some(Value::Int(code)) => code,
            other => return Err(Error::Store(format!("unexpected lease reply {other:?}"))),
        };
        match code {
            0 => Ok(RawLease::Granted),
            1 => match parts.next().and_then(replies::blob) {
                Some(blob) => Ok(RawLease::Hit(blob)),
                None => Err(Error::Store("lease reply without the value".into())),
            },
            // PTTL: -1 (no deadline) cannot happen for a lease, which is always set
            // with one; read anything else as the whole lease left.
            2 => Ok(RawLease::Held {
                remaining: match parts.next() {
                    Some(Value::Int(ms)) if ms >= 0 => Duration::from_millis(ms.unsigned_abs()),
                    _ => ttl,
                },
            }),
            3 => Ok(RawLease::Released),
            other => Err(Error::Store(format!("unexpected lease reply code {other}"))),
        }
    }

    /// Stores `blob` under the lease `token` if it is still valid.
    pub(super) async fn put_leased(
        &self,
        key: &RawKey,
        token: &str,
        blob: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<LeasedPut> {
        self.check_partition(key)?;
        let key_only = self.key_only(&blob);
        let ttl = ttl_arg(ttl);
        let request = |asked: Option<&Asked>| {
            let mut r = self.script_asked(
                &scripts().lease_put,
                key.partition,
                std::iter::once(key.text.as_str()),
                asked,
            );
            r.cmd
                .arg(&key.text)
                .arg(token)
                .arg(blob.as_slice())
                .arg(&ttl)
                .arg(key_only.as_slice());
            r
        };
        // A custom policy's creation duration is asked once the function found the put
        // applies.
        let reply = self.execute_maybe_asking(key, request).await?;
        match self.outcome(reply)? {
            Value::Int(0 | 1) => Ok(LeasedPut::Stored),
            Value::Int(-1) => Ok(LeasedPut::Stale),
            Value::Int(-2) => Ok(LeasedPut::Lost),
            other => Err(Error::Store(format!(
                "unexpected leased put reply: {other:?}"
            ))),
        }
    }

    /// Ends the lease `token` on `key`, if it still holds it.
    pub(super) async fn release_lease(&self, key: &RawKey, token: &str) -> Result<()> {
        self.check_partition(key)?;
        let mut r = self.script(
            &scripts().lease_release,
            key.partition,
            std::iter::once(key.text.as_str()),
        );
        r.cmd
            .arg(&key.text)
            .arg(token)
            .arg(RELEASED_FOR.as_millis().to_string());
        let reply = self.execute(vec![r]).await?.pop().unwrap_or(Value::Nil);
        self.outcome(reply).map(drop)
    }
}
