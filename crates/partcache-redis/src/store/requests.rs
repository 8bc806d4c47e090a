//! The cache's function calls: an `FCALL` on a partition declares the partition's
//! keys and the entry keys it touches, then passes the cache's settings and event
//! arguments (`arguments.rs`), to which each operation appends its own.

use partcache::store::raw::{RawAction, RawCondition, RawKey, RawWrite};
use redis::Cmd;

use super::cache::StoreInner;
use crate::arguments::{ActionCode, Asked, ConditionCode, flag, ttl_arg};
use crate::routing::Request;
use crate::scripts::{Script, scripts};

impl StoreInner {
    /// An `FCALL` of `script` on `partition` with the cache's settings; the caller
    /// appends the operation's arguments. The script declares the partition's keys
    /// and the entry key of every text in `texts` (see [`Layout::partition_keys`]).
    pub(super) fn script<'t>(
        &self,
        script: &'static Script,
        partition: u16,
        texts: impl ExactSizeIterator<Item = &'t str>,
    ) -> Request {
        self.script_asked(script, partition, texts, None)
    }

    /// [`Self::script`] carrying the durations `asked` of the cache's custom policy
    /// (none without: see `asking.rs`).
    pub(super) fn script_asked<'t>(
        &self,
        script: &'static Script,
        partition: u16,
        texts: impl ExactSizeIterator<Item = &'t str>,
        asked: Option<&Asked>,
    ) -> Request {
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&script.function).arg(4 + texts.len());
        for key in self.layout.partition_keys(partition) {
            cmd.arg(key);
        }
        for text in texts {
            cmd.arg(self.layout.entry_key_arg(partition, text));
        }
        self.settings.write(&mut cmd, asked);
        let events = self.event_args(&mut cmd, partition);
        Request {
            events: events.then_some(partition),
            ..Request::new(self.layout.slot(partition), cmd)
        }
    }

    /// The `write` function's call (`lua/write.lua`) of `write` on `key`, with the
    /// durations `asked` of a custom policy.
    pub(super) fn write_request(
        &self,
        key: &RawKey,
        write: &RawWrite,
        asked: Option<&Asked>,
    ) -> Request {
        let mut r = self.script_asked(
            &scripts().write,
            key.partition,
            std::iter::once(key.text.as_str()),
            asked,
        );
        let (condition, expected) = match &write.condition {
            RawCondition::Always => (ConditionCode::Always, &[][..]),
            RawCondition::IfAbsent => (ConditionCode::IfAbsent, &[][..]),
            RawCondition::IfPresent => (ConditionCode::IfPresent, &[][..]),
            RawCondition::IfEquals(bytes) => (ConditionCode::IfEquals, bytes.as_slice()),
        };
        r.cmd.arg(&key.text).arg(condition as u8).arg(expected);
        match &write.action {
            RawAction::Put { blob, ttl } => {
                r.cmd
                    .arg(ActionCode::Put as u8)
                    .arg(blob.as_slice())
                    .arg(ttl_arg(*ttl))
                    .arg(flag(write.want_previous))
                    .arg(self.key_only(blob));
            }
            RawAction::Remove => {
                r.cmd
                    .arg(ActionCode::Remove as u8)
                    .arg("")
                    .arg("-1")
                    .arg(flag(write.want_previous))
                    .arg("");
            }
        }
        r
    }

    /// An `FCALL` of `script` on `partition` whose arguments are the texts of the keys
    /// at `indexes` (the shape of every many-key script: get, contains, remove).
    pub(super) fn keyed_script(
        &self,
        script: &'static Script,
        partition: u16,
        keys: &[RawKey],
        indexes: &[usize],
    ) -> Request {
        let mut r = self.script(
            script,
            partition,
            indexes.iter().map(|&i| keys[i].text.as_str()),
        );
        for &i in indexes {
            r.cmd.arg(&keys[i].text);
        }
        r
    }

    /// Appends a script's event arguments: the event mode, this client's origin and
    /// the partition's channel. The mode adds 3 ("and return them in the reply") while
    /// the cache has listeners in this process: a call's own events then reach them
    /// from its reply, before it returns, and the published copies, which carry this
    /// client's origin, are not forwarded a second time (`push.rs`). Without local
    /// listeners the reply carries no events at all. Returns whether it does.
    pub(super) fn event_args(&self, cmd: &mut Cmd, partition: u16) -> bool {
        let listened = self.listened.is_listened();
        cmd.arg(self.event_mode.arg(listened))
            .arg(self.deployment.origin())
            .arg(self.layout.channel(partition));
        listened
    }
}
