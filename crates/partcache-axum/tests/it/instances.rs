//! Several instances of one service, each with its own response cache over one Redis
//! cluster (their own managers, connections and flights: nothing shared but the
//! store), as several processes would be: a miss is sent to the origin by one instance
//! for all of them, and an unsafe request on one instance while another one's origin
//! call is in flight keeps that call's (by then old) response out of the cache.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use http::Method;
use parking_lot::Mutex;
use partcache_axum::ResponseCache;
use tokio::sync::Notify;

use crate::support::{self, respond};

/// The same Host on every instance: one resource, one key.
const HOST: (&str, &str) = ("host", "shop.test");

async fn instance(name: &str) -> ResponseCache {
    let manager = support::redis::cluster_manager().await;
    ResponseCache::builder(&manager, name)
        .store_timeout(Duration::from_secs(2))
        .build()
        .await
        .expect("response cache")
}

fn unique(label: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{label}-{}-{nanos:x}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_missing_one_page_call_the_origin_once() {
    let name = unique("instances-collapse");
    let mut servers = Vec::new();
    for _ in 0..4 {
        let cache = instance(&name).await;
        servers.push(Arc::new(
            support::serve(cache, Duration::from_millis(200), |_, n| {
                respond(200, &[("cache-control", "max-age=60")], format!("page {n}"))
            })
            .await,
        ));
    }
    let requests: Vec<_> = servers
        .iter()
        .flat_map(|server| (0..8).map(move |_| server.clone()))
        .map(|server| tokio::spawn(async move { server.get_with("/hot", &[HOST]).await }))
        .collect();
    for request in requests {
        let reply = request.await.expect("request");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body, "page 1");
    }
    let calls: Vec<usize> = servers.iter().map(|s| s.calls()).collect();
    assert_eq!(
        calls.iter().sum::<usize>(),
        1,
        "origin calls per instance: {calls:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsafe_request_on_another_instance_during_an_origin_call_keeps_its_response_out() {
    let name = unique("instances-stale");
    let db = Arc::new(Mutex::new("old".to_string()));
    let (loading, changed) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    // Instance A: its GET reads the record, then answers only after B's write.
    let a = {
        let (db, loading, changed) = (db.clone(), loading.clone(), changed.clone());
        let calls = Arc::new(AtomicUsize::new(0));
        let cache = instance(&name).await;
        support::serve_routed(
            cache,
            Duration::ZERO,
            |_, _| respond(500, &[], ""),
            move |_, cache| {
                Router::new()
                    .route(
                        "/item",
                        get(move || {
                            let (db, loading, changed) =
                                (db.clone(), loading.clone(), changed.clone());
                            let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
                            async move {
                                let read = db.lock().clone();
                                if first {
                                    loading.notify_one();
                                    changed.notified().await;
                                }
                                respond(200, &[("cache-control", "max-age=60")], read)
                            }
                        }),
                    )
                    .layer(cache.layer())
            },
        )
        .await
    };
    // Instance B: its POST changes the record; its GET reads it.
    let b = {
        let db = db.clone();
        let cache = instance(&name).await;
        support::serve(cache, Duration::ZERO, move |seen, _| {
            if seen.method == Method::POST {
                *db.lock() = "new".to_string();
                respond(204, &[], "")
            } else {
                respond(200, &[("cache-control", "max-age=60")], db.lock().clone())
            }
        })
        .await
    };
    let a = Arc::new(a);
    let first = {
        let a = a.clone();
        tokio::spawn(async move { a.get_with("/item", &[HOST]).await })
    };
    tokio::time::timeout(Duration::from_secs(10), loading.notified())
        .await
        .expect("A's origin call started");
    let write = b.send(Method::POST, "/item", &[HOST]).await;
    assert_eq!(write.status, 204);
    changed.notify_one();
    // A's client gets what A's origin answered, as without a cache.
    assert_eq!(first.await.expect("request").body, "old");
    // A's write runs beside its reply (admitted before the reply was sent): let it end.
    support::eventually("A's pending write ended", || {
        let a = a.clone();
        async move { a.cache.stats().backlog.pending_stores == 0 }
    })
    .await;
    for (instance, server) in [("A", &*a), ("B", &b)] {
        let reply = server.get_with("/item", &[HOST]).await;
        assert_eq!(
            reply.body,
            "new",
            "instance {instance} served {}",
            reply.x_cache()
        );
    }
    // The store refused A's write (B's invalidation voided the lease), counted by A.
    assert_eq!(a.cache.responses().stats().stale_sets_prevented, 1);
}

/// A page the origin marks `no-store`, missed by four instances at once: one instance
/// asks the origin first (it holds the key's lease), and when its response may not be
/// stored the other three ask side by side, not one after another (4 × the origin's
/// time for the last of them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_store_page_missed_by_four_instances_is_not_fetched_one_instance_after_another() {
    let name = unique("instances-no-store");
    let delay = Duration::from_millis(400);
    let mut servers = Vec::new();
    for _ in 0..4 {
        let cache = instance(&name).await;
        servers.push(Arc::new(
            support::serve(cache, delay, |_, n| {
                respond(200, &[("cache-control", "no-store")], format!("page {n}"))
            })
            .await,
        ));
    }
    let started = std::time::Instant::now();
    let requests: Vec<_> = servers
        .iter()
        .cloned()
        .map(|server| tokio::spawn(async move { server.get_with("/private", &[HOST]).await }))
        .collect();
    for request in requests {
        let reply = request.await.expect("request");
        assert_eq!(reply.status, 200);
    }
    let took = started.elapsed();
    let calls: Vec<usize> = servers.iter().map(|s| s.calls()).collect();
    assert_eq!(calls, vec![1; 4], "origin calls per instance");
    // The first origin call, then the other three together: about 2 × 400 ms; one
    // instance after another, at least 4 × 400 ms.
    assert!(
        took < Duration::from_millis(1200),
        "the instances asked the origin one after another: {took:?}"
    );
}
