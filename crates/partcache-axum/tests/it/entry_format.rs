//! Entries a shared store holds in another format (an older release's, during a
//! rolling upgrade, or bytes corrupted in the store): each is a miss and a counted
//! decode error, answered by the origin and stored again in this format; never a
//! failed request or a wrong response.

use std::time::Duration;

use http::{Method, StatusCode};
use partcache_axum::ResponseCache;
use partcache_integration_tests::{Flavor, RedisServer, ServerOptions};

use crate::support::{self, respond};

/// An entry of the previous format (a 200 with `max-age=600` for
/// `GET http://example.test/old`, with its `http-cache-semantics` policy), as that
/// release wrote it to Redis: postcard, the key `http1|GET|example.test|/old|`.
const FORMAT_1_ENTRY: &str = "c701011d1c68747470317c4745547c6578616d706c652e746573747c2f6f6c647c00c801030d63616368652d636f6e74726f6c010b6d61782d6167653d3630300c636f6e74656e742d74797065010a746578742f706c61696e0464617465011d4d6f6e2c203330204e6f7620323032362030303a35333a323020474d54096f6c6420656e7472790104686f7374010c6578616d706c652e74657374030d63616368652d636f6e74726f6c010b6d61782d6167653d3630300c636f6e74656e742d74797065010a746578742f706c61696e0464617465011d4d6f6e2c203330204e6f7620323032362030303a35333a323020474d54042f6f6c64c8010347455401cdcccc3d80a305000001076d61782d6167650103363030008092b3d806008092b3d806000000d8040000000000000000";

/// Sets `key` to the bytes `hex` spells (the admin connection takes text arguments).
fn set_bytes(server: &RedisServer, key: &str, hex: &str) {
    let script = "return redis.call('SET', KEYS[1], \
                  (ARGV[1]:gsub('..', function(h) return string.char(tonumber(h, 16)) end)))";
    let reply: String = server
        .query(&["EVAL", script, "1", key, hex])
        .expect("SET the old entry");
    assert_eq!(reply, "OK");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_of_another_format_is_a_miss_and_a_decode_error() {
    let redis = tokio::task::block_in_place(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    });
    let manager = support::redis::manager(&redis.url());
    let cache = ResponseCache::builder(&manager, "entry-format")
        .store_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("response cache");
    let server = support::serve(cache, Duration::ZERO, |_, n| {
        respond(
            200,
            &[("cache-control", "max-age=600")],
            format!("page {n}"),
        )
    })
    .await;
    let host = [("host", "example.test")];

    let first = server.send(Method::GET, "/old", &host).await;
    assert_eq!((first.x_cache(), first.body.as_str()), ("MISS", "page 1"));
    server.stored(1).await;
    let keys: Vec<String> =
        tokio::task::block_in_place(|| redis.query(&["KEYS", "*|/old|*"])).expect("KEYS");
    assert_eq!(keys.len(), 1, "the stored response's key: {keys:?}");
    tokio::task::block_in_place(|| set_bytes(&redis, &keys[0], FORMAT_1_ENTRY));

    let old = server.send(Method::GET, "/old", &host).await;
    assert_eq!(
        (old.status, old.x_cache(), old.body.as_str()),
        (StatusCode::OK, "MISS", "page 2")
    );
    // Counted at each read of the bytes (the miss reads the key again before and
    // with its lease).
    assert!(server.cache.responses().stats().decode_errors >= 1);
    server.stored(2).await;
    let again = server.send(Method::GET, "/old", &host).await;
    assert_eq!((again.x_cache(), again.body.as_str()), ("HIT", "page 2"));
    assert_eq!(server.calls(), 2);
}
