//! The server-side code: one Lua function per per-partition operation, all in one
//! function library (`FUNCTION LOAD`), which shares `lua/common.lua` (key layout,
//! expiry rules, events, eviction) among them.
//!
//! A library rather than `EVALSHA` scripts: a script runs its whole prelude on every
//! call (defining some twenty closures), a library once when it is loaded; measured on
//! Redis 7.0.15, a write on an evicting cache took 10.5 µs of server time as a script
//! and about 9 µs as a function (docs/ARCHITECTURE.md, "Measured"). Functions also
//! travel to replicas and survive restarts with persistence, which scripts do not.
//!
//! The library's name and its functions' names carry a hash of its source, so that
//! clients of different partcache versions never call each other's code; the router
//! loads the library on a node that answers "Function not found" (a fresh node, a
//! restart without persistence, a `FUNCTION FLUSH`) and retries.

use std::sync::LazyLock;

/// One function of the library.
#[derive(Debug)]
pub(crate) struct Script {
    /// The function's name in the library (for `FCALL`).
    pub function: String,
}

/// The function library.
#[derive(Debug)]
pub(crate) struct Library {
    /// The library's name (`FUNCTION LOAD` refuses a second library of one name).
    pub name: String,
    /// The source `FUNCTION LOAD` takes (with its `#!lua name=` header).
    pub source: String,
}

/// Every function partcache runs, and their library.
pub(crate) struct Scripts {
    pub library: Library,
    pub write: Script,
    /// An unconditional put that wants no previous value (see `lua/upsert.lua`).
    pub upsert: Script,
    /// The common unconditional put (see `lua/put.lua`): no per-call setup.
    pub put: Script,
    /// That put for several entries of one node's partitions (see `lua/put_batch.lua`).
    pub put_batch: Script,
    /// Upserts of several entries of one node's partitions (`lua/upsert_batch.lua`).
    pub upsert_batch: Script,
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
    /// A read that, on a miss, may take the key's lease (see `lua/lease.lua`).
    pub lease: Script,
    /// A put under a lease (see `lua/lease_put.lua`).
    pub lease_put: Script,
    /// Ends a lease without a value (see `lua/lease_release.lua`).
    pub lease_release: Script,
    /// The claim on a cache's reaping (`lua/reaper_claim.lua`).
    pub reaper_claim: Script,
}

/// The operations: name, body, and whether the body runs after `setup` (the
/// cache's settings and the server time, see `lua/common.lua`).
const OPERATIONS: [(&str, &str, bool); 19] = [
    ("write", include_str!("lua/write.lua"), true),
    ("upsert", include_str!("lua/upsert.lua"), true),
    ("upsert_batch", include_str!("lua/upsert_batch.lua"), false),
    ("put", include_str!("lua/put.lua"), false),
    ("put_batch", include_str!("lua/put_batch.lua"), false),
    ("get", include_str!("lua/get.lua"), true),
    ("near_get", include_str!("lua/near_get.lua"), true),
    ("contains", include_str!("lua/contains.lua"), true),
    ("put_many", include_str!("lua/put_many.lua"), true),
    ("remove_many", include_str!("lua/remove_many.lua"), true),
    ("reap", include_str!("lua/reap.lua"), true),
    ("clear", include_str!("lua/clear.lua"), true),
    ("scan", include_str!("lua/scan.lua"), true),
    ("stats", include_str!("lua/stats.lua"), true),
    ("open", include_str!("lua/open.lua"), true),
    ("lease", include_str!("lua/lease.lua"), true),
    ("lease_put", include_str!("lua/lease_put.lua"), true),
    ("lease_release", include_str!("lua/lease_release.lua"), true),
    ("reaper_claim", include_str!("lua/reaper_claim.lua"), false),
];

/// Builds the library: `lua/common.lua`, then every operation's body as a registered
/// function of `(KEYS, ARGV)` (so that the bodies read as scripts do), which first
/// binds the library's upvalues (`bind` in `lua/common.lua`).
fn build() -> Scripts {
    let mut body = String::from(include_str!("lua/common.lua"));
    for (name, source, setup) in OPERATIONS {
        // The batches declare no keys and touch several slots' (see their headers).
        let flags = if name.ends_with("_batch") {
            "flags = {'allow-cross-slot-keys'}, "
        } else {
            ""
        };
        body.push_str(&format!(
            "\nredis.register_function{{function_name = '@@_{name}', {flags}callback = function(KEYS, ARGV)\nbind()\n{}{source}\nend}}\n",
            if setup { "setup(KEYS, ARGV)\n" } else { "" }
        ));
    }
    let hash = redis::Script::new(&body).get_hash().to_string();
    let name = format!("partcache_{}", &hash[..16]);
    let source = format!("#!lua name={name}\n{}", body.replace("@@", &name));
    let function = |op: &str| Script {
        function: format!("{name}_{op}"),
    };
    Scripts {
        write: function("write"),
        upsert: function("upsert"),
        put: function("put"),
        put_batch: function("put_batch"),
        upsert_batch: function("upsert_batch"),
        get: function("get"),
        near_get: function("near_get"),
        contains: function("contains"),
        put_many: function("put_many"),
        remove_many: function("remove_many"),
        reap: function("reap"),
        clear: function("clear"),
        scan: function("scan"),
        stats: function("stats"),
        open: function("open"),
        lease: function("lease"),
        lease_put: function("lease_put"),
        lease_release: function("lease_release"),
        reaper_claim: function("reaper_claim"),
        library: Library { name, source },
    }
}

/// The library and its functions, built once per process.
pub(crate) fn scripts() -> &'static Scripts {
    static SCRIPTS: LazyLock<Scripts> = LazyLock::new(build);
    &SCRIPTS
}
