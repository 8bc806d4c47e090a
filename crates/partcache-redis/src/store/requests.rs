//! The cache's function calls: an `FCALL` on a partition declares the partition's
//! keys and the entry keys it touches, then passes the cache's settings and event
//! arguments (`arguments.rs`), to which each operation appends its own.

use partcache::store::raw::RawKey;
use redis::Cmd;

use super::cache::StoreInner;
use crate::routing::Request;
use crate::scripts::Script;

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
        let mut cmd = redis::cmd("FCALL");
        cmd.arg(&script.function).arg(4 + texts.len());
        for key in self.layout.partition_keys(partition) {
            cmd.arg(key);
        }
        for text in texts {
            cmd.arg(self.layout.entry_key_arg(partition, text));
        }
        self.settings.write(&mut cmd, self.custom.as_ref());
        let events = self.event_args(&mut cmd, partition);
        Request {
            events: events.then_some(partition),
            ..Request::new(self.layout.slot(partition), cmd)
        }
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
