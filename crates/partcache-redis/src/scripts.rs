//! The server-side Lua scripts: one per per-partition operation, each prefixed with
//! `lua/common.lua` (key layout, expiry rules, events, eviction).
//!
//! Scripts are sent by SHA1 (`EVALSHA`); the router loads a script on a node that
//! answers `NOSCRIPT` (a fresh node, a promoted replica, a `SCRIPT FLUSH`) and retries.

use std::sync::LazyLock;

/// One script: its source and SHA1.
#[derive(Debug)]
pub(crate) struct Script {
    /// Name, for logs.
    pub name: &'static str,
    /// Full source (prelude included).
    pub source: String,
    /// SHA1 of `source`, for `EVALSHA`.
    pub sha: String,
}

impl Script {
    fn new(name: &'static str, body: &str) -> Script {
        let source = format!("{}\n{}", include_str!("lua/common.lua"), body);
        Script::whole(name, source)
    }

    /// A script without the prelude (a fast path that needs none of it).
    fn whole(name: &'static str, source: String) -> Script {
        let sha = redis::Script::new(&source).get_hash().to_string();
        Script { name, source, sha }
    }
}

/// Every script partcache runs.
pub(crate) struct Scripts {
    pub write: Script,
    /// The common unconditional put (see `lua/put.lua`): no prelude.
    pub put: Script,
    pub get: Script,
    /// Reads for a near cache: blobs with their time left.
    pub near_get: Script,
    pub contains: Script,
    pub put_many: Script,
    pub remove_many: Script,
    pub reap: Script,
    pub clear: Script,
    pub scan: Script,
    pub stats: Script,
    pub open: Script,
}

/// The scripts, built once per process.
pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
        write: Script::new("write", include_str!("lua/write.lua")),
        put: Script::whole("put", include_str!("lua/put.lua").to_string()),
        get: Script::new("get", include_str!("lua/get.lua")),
        near_get: Script::new("near_get", include_str!("lua/near_get.lua")),
        contains: Script::new("contains", include_str!("lua/contains.lua")),
        put_many: Script::new("put_many", include_str!("lua/put_many.lua")),
        remove_many: Script::new("remove_many", include_str!("lua/remove_many.lua")),
        reap: Script::new("reap", include_str!("lua/reap.lua")),
        clear: Script::new("clear", include_str!("lua/clear.lua")),
        scan: Script::new("scan", include_str!("lua/scan.lua")),
        stats: Script::new("stats", include_str!("lua/stats.lua")),
        open: Script::new("open", include_str!("lua/open.lua")),
    });
    &SCRIPTS
}
