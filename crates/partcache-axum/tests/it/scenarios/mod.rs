//! The RFC 9111 scenarios, one function per rule, each taking the `CacheManager` whose
//! store holds the cache: `rfc9111_suite!(make_manager)` expands to one test per
//! scenario (`rfc9111.rs` runs them on the local store, `rfc9111_redis.rs` on a Redis
//! cluster). Over a real socket against a real axum server, each asserts status, body,
//! `x-cache`, `Age` where it matters, and how many times the origin ran.

#![allow(dead_code)] // Each test binary uses the part of the suite it needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use http::{Method, StatusCode};
use partcache::CacheManager;
use partcache_axum::RoutePolicy;

use crate::support::{Server, cache_on, eventually, respond, serve, serve_routed};

const NO_DELAY: Duration = Duration::ZERO;

pub(crate) async fn a_fresh_response_is_served_from_cache_with_age(manager: CacheManager) {
    let cache = cache_on(&manager, |b| b).await;
    let server = serve(cache, NO_DELAY, |seen, n| {
        let age = if seen.uri.ends_with("/aged") {
            "10"
        } else {
            "0"
        };
        respond(
            200,
            &[("cache-control", "max-age=60"), ("age", age)],
            format!("call {n}"),
        )
    })
    .await;

    let first = server.get("/a").await;
    assert_eq!(
        (first.status, first.x_cache(), first.body.as_str()),
        (StatusCode::OK, "MISS", "call 1")
    );
    let second = server.get("/a").await;
    assert_eq!(
        (second.status, second.x_cache(), second.body.as_str()),
        (StatusCode::OK, "HIT", "call 1")
    );
    assert_eq!(second.age(), Some(0));
    assert_eq!(server.calls(), 1);

    // Age grows with residence time, on top of the Age the origin reported.
    let aged = server.get("/aged").await;
    assert_eq!(aged.x_cache(), "MISS");
    let hit = server.get("/aged").await;
    assert!(hit.age().unwrap() >= 10, "age {:?}", hit.age());
    eventually("Age to reach 1 s of residence", || async {
        server.get("/a").await.age() >= Some(1)
    })
    .await;
    assert_eq!(server.calls(), 2);
}

pub(crate) async fn the_default_ttl_applies_only_when_the_origin_is_silent(manager: CacheManager) {
    let silent = serve(cache_on(&manager, |b| b).await, NO_DELAY, |_, n| {
        respond(200, &[], format!("call {n}"))
    })
    .await;
    assert_eq!(silent.get("/s").await.x_cache(), "MISS");
    assert_eq!(
        silent.get("/s").await.x_cache(),
        "MISS",
        "no default TTL: nothing to reuse"
    );
    assert_eq!(silent.calls(), 2);

    let cache = cache_on(&manager, |b| b.default_ttl(Duration::from_secs(1))).await;
    let server = serve(cache, NO_DELAY, |seen, n| {
        let cc = if seen.uri.ends_with("/explicit") {
            "max-age=60"
        } else {
            ""
        };
        let headers: &[(&str, &str)] = if cc.is_empty() {
            &[]
        } else {
            &[("cache-control", cc)]
        };
        respond(200, headers, format!("call {n}"))
    })
    .await;
    assert_eq!(server.get("/s").await.x_cache(), "MISS");
    let hit = server.get("/s").await;
    assert_eq!((hit.x_cache(), hit.body.as_str()), ("HIT", "call 1"));
    // After the default TTL it is stale with no validator: fetched again.
    eventually("the default TTL to run out", || async {
        server.get("/s").await.x_cache() == "MISS"
    })
    .await;
    // An explicit max-age wins over the default.
    assert_eq!(server.get("/explicit").await.x_cache(), "MISS");
    assert_eq!(server.get("/explicit").await.x_cache(), "HIT");
}

pub(crate) async fn route_overrides_force_a_ttl_or_bypass(manager: CacheManager) {
    let cache = cache_on(&manager, |b| {
        b.route("/forced", RoutePolicy::ttl(Duration::from_secs(60)))
            .route("/account", RoutePolicy::bypass())
            .route("/news", RoutePolicy::default_ttl(Duration::from_secs(60)))
    })
    .await;
    let server = serve(cache, NO_DELAY, |_, n| {
        respond(200, &[("cache-control", "max-age=0")], format!("call {n}"))
    })
    .await;

    assert_eq!(server.get("/forced/1").await.x_cache(), "MISS");
    let hit = server.get("/forced/1").await;
    assert_eq!((hit.x_cache(), hit.body.as_str()), ("HIT", "call 1"));
    let account = server.get("/account/me").await;
    assert_eq!(
        (account.x_cache(), account.body.as_str()),
        ("BYPASS", "call 2")
    );
    assert_eq!(server.get("/account/me").await.x_cache(), "BYPASS");
    // A route default does not override the origin's explicit max-age=0.
    assert_eq!(server.get("/news").await.x_cache(), "MISS");
    assert_eq!(server.get("/news").await.x_cache(), "MISS");
    assert_eq!(server.calls(), 5);
}

pub(crate) async fn no_store_private_and_set_cookie_are_never_stored(manager: CacheManager) {
    let server = serve(
        cache_on(&manager, |b| b.default_ttl(Duration::from_secs(60))).await,
        NO_DELAY,
        |seen, n| {
            let headers: &[(&str, &str)] = match seen.uri.as_str() {
                "/no-store" => &[("cache-control", "no-store")],
                "/private" => &[("cache-control", "private, max-age=60")],
                _ => &[
                    ("cache-control", "max-age=60"),
                    ("set-cookie", "session=abc"),
                ],
            };
            respond(200, headers, format!("call {n}"))
        },
    )
    .await;
    for path in ["/no-store", "/private", "/cookie"] {
        let first = server.get(path).await;
        let second = server.get(path).await;
        assert_eq!(
            (first.x_cache(), second.x_cache()),
            ("MISS", "MISS"),
            "{path}"
        );
        assert_ne!(first.body, second.body, "{path}");
    }
    assert_eq!(server.calls(), 6);
}

pub(crate) async fn allowed_set_cookie_responses_are_stored_without_the_cookie(
    manager: CacheManager,
) {
    let cache = cache_on(&manager, |b| b.store_set_cookie(true)).await;
    let server = serve(cache, NO_DELAY, |_, n| {
        respond(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("set-cookie", "session=abc"),
            ],
            format!("call {n}"),
        )
    })
    .await;
    let first = server.get("/c").await;
    assert_eq!(
        (first.x_cache(), first.header("set-cookie")),
        ("MISS", Some("session=abc"))
    );
    let second = server.get("/c").await;
    assert_eq!(
        (second.x_cache(), second.header("set-cookie")),
        ("HIT", None)
    );
    assert_eq!(server.calls(), 1);
}

pub(crate) async fn authorized_requests_are_stored_only_when_the_response_allows_it(
    manager: CacheManager,
) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let cc = if seen.uri == "/public" {
            "public, max-age=60"
        } else {
            "max-age=60"
        };
        respond(200, &[("cache-control", cc)], format!("call {n}"))
    })
    .await;
    let auth = [("authorization", "Bearer secret")];
    assert_eq!(server.get_with("/plain", &auth).await.x_cache(), "MISS");
    assert_eq!(server.get_with("/plain", &auth).await.x_cache(), "MISS");
    assert_eq!(
        server.get("/plain").await.x_cache(),
        "MISS",
        "nothing stored from an authorized request"
    );
    assert_eq!(server.get_with("/public", &auth).await.x_cache(), "MISS");
    let hit = server.get_with("/public", &auth).await;
    assert_eq!((hit.x_cache(), hit.body.as_str()), ("HIT", "call 4"));
    assert_eq!(server.calls(), 4);
}

pub(crate) async fn vary_keeps_one_response_per_header_value_and_star_is_never_served(
    manager: CacheManager,
) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let language = seen
            .headers
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        let vary = if seen.uri == "/star" {
            "*"
        } else {
            "Accept-Language"
        };
        respond(
            200,
            &[("cache-control", "max-age=60"), ("vary", vary)],
            format!("{language} {n}"),
        )
    })
    .await;
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    assert_eq!(server.get_with("/v", &en).await.body, "en 1");
    assert_eq!(server.get_with("/v", &fr).await.body, "fr 2");
    server.stored(2).await;
    let hit_en = server.get_with("/v", &en).await;
    let hit_fr = server.get_with("/v", &fr).await;
    assert_eq!((hit_en.x_cache(), hit_en.body.as_str()), ("HIT", "en 1"));
    assert_eq!((hit_fr.x_cache(), hit_fr.body.as_str()), ("HIT", "fr 2"));
    assert_eq!(
        server.get("/v").await.x_cache(),
        "MISS",
        "no header is a variant of its own"
    );
    assert_eq!(server.calls(), 3);

    assert_eq!(server.get("/star").await.x_cache(), "MISS");
    assert_eq!(server.get("/star").await.x_cache(), "MISS");
    assert_eq!(server.calls(), 5);

    // Variants first stored at the same moment all stay: each store joins the one
    // Vary index of the resource instead of replacing it with its own.
    let languages = ["en", "fr", "de", "it", "es", "nl", "pt", "pl"];
    let first = languages.iter().map(|l| {
        let server = &server;
        async move { server.get_with("/many", &[("accept-language", l)]).await }
    });
    for (reply, language) in futures::future::join_all(first).await.iter().zip(languages) {
        assert!(reply.body.starts_with(language), "{}", reply.body);
    }
    let calls = server.calls();
    assert_eq!(calls, 5 + languages.len());
    server.stored(2 + languages.len() as u64).await;
    for language in languages {
        let hit = server
            .get_with("/many", &[("accept-language", language)])
            .await;
        assert_eq!(hit.x_cache(), "HIT", "{language}: {}", hit.body);
        assert!(hit.body.starts_with(language), "{}", hit.body);
    }
    assert_eq!(server.calls(), calls);
}

pub(crate) async fn conditional_requests_get_304_from_the_cache(manager: CacheManager) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |_, _| {
        respond(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("last-modified", "Wed, 21 Oct 2015 07:28:00 GMT"),
            ],
            "body",
        )
    })
    .await;
    // Even on a miss the origin is asked for the full response, and the client's
    // condition is answered from it.
    let first = server.get_with("/r", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        (first.status, first.x_cache()),
        (StatusCode::NOT_MODIFIED, "MISS")
    );
    assert!(!server.seen.lock()[0].headers.contains_key("if-none-match"));

    let by_etag = server
        .get_with("/r", &[("if-none-match", "W/\"v1\"")])
        .await;
    assert_eq!(
        (by_etag.status, by_etag.x_cache(), by_etag.body.as_str()),
        (StatusCode::NOT_MODIFIED, "HIT", "")
    );
    assert_eq!(by_etag.header("etag"), Some("\"v1\""));
    assert!(by_etag.age().is_some());
    let by_date = server
        .get_with(
            "/r",
            &[("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")],
        )
        .await;
    assert_eq!(
        (by_date.status, by_date.x_cache()),
        (StatusCode::NOT_MODIFIED, "HIT")
    );
    let changed = server.get_with("/r", &[("if-none-match", "\"v0\"")]).await;
    assert_eq!(
        (changed.status, changed.x_cache(), changed.body.as_str()),
        (StatusCode::OK, "HIT", "body")
    );
    assert_eq!(server.calls(), 1);
}

pub(crate) async fn a_stale_entry_is_revalidated_and_a_304_refreshes_it(manager: CacheManager) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        if seen
            .headers
            .get("if-none-match")
            .is_some_and(|v| v == "\"v1\"")
        {
            // The 304's fields replace the stored ones (RFC 9111 §4.3.4): fresh for a
            // minute, so the check after it holds however slow the machine is.
            let headers = [("cache-control", "max-age=60"), ("etag", "\"v1\"")];
            respond(304, &headers, Body::empty())
        } else {
            let headers = [("cache-control", "max-age=1"), ("etag", "\"v1\"")];
            respond(200, &headers, format!("full {n}"))
        }
    })
    .await;
    assert_eq!(server.get("/r").await.x_cache(), "MISS");
    // Hits until the entry goes stale; the request that finds it stale revalidates.
    eventually("a revalidation", || async {
        let reply = server.get("/r").await;
        assert_eq!(
            (reply.status, reply.x_cache(), reply.body.as_str()),
            (StatusCode::OK, "HIT", "full 1")
        );
        server.calls() == 2
    })
    .await;
    let seen = server.seen.lock().clone();
    assert_eq!(
        seen[1].headers.get("if-none-match").map(|v| v.as_bytes()),
        Some(&b"\"v1\""[..])
    );
    // Refreshed: fresh again with no origin call.
    let after = server.get("/r").await;
    assert_eq!((after.x_cache(), after.body.as_str()), ("HIT", "full 1"));
    assert_eq!(server.calls(), 2);
    assert_eq!(server.cache.stats().not_modified, 1);
}

pub(crate) async fn stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background(
    manager: CacheManager,
) {
    let server = serve(
        cache_on(&manager, |b| b).await,
        Duration::from_millis(50),
        |_, n| {
            // The first answer goes stale within a second; the refreshed one stays
            // fresh for a minute, so the checks after the refresh hold on a slow machine.
            let cc = if n == 1 {
                "max-age=1, stale-while-revalidate=30"
            } else {
                "max-age=60"
            };
            respond(200, &[("cache-control", cc)], format!("v{n}"))
        },
    )
    .await;
    assert_eq!(server.get("/swr").await.body, "v1");
    eventually("the entry to go stale", || async {
        let reply = server.get("/swr").await;
        assert_eq!(reply.body, "v1");
        reply.x_cache() == "STALE"
    })
    .await;
    let burst: Vec<_> = (0..10).map(|_| server.get("/swr")).collect();
    for reply in futures::future::join_all(burst).await {
        assert!(
            ["STALE", "HIT"].contains(&reply.x_cache()),
            "{}",
            reply.x_cache()
        );
        assert_eq!(reply.status, StatusCode::OK);
    }
    eventually("the background refresh", || async {
        server.get("/swr").await.body == "v2"
    })
    .await;
    let fresh = server.get("/swr").await;
    assert_eq!((fresh.x_cache(), fresh.body.as_str()), ("HIT", "v2"));
    assert_eq!(
        server.calls(),
        2,
        "one background refresh for all stale hits"
    );
}

pub(crate) async fn stale_if_error_serves_stale_when_the_origin_fails(manager: CacheManager) {
    let failing = Arc::new(AtomicBool::new(false));
    let fail = failing.clone();
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, move |seen, n| {
        if fail.load(Ordering::SeqCst) {
            return respond(503, &[], "down");
        }
        let cc = if seen.uri == "/sie" {
            "max-age=1, stale-if-error=30"
        } else {
            "max-age=1"
        };
        respond(200, &[("cache-control", cc)], format!("ok {n}"))
    })
    .await;
    assert_eq!(server.get("/sie").await.body, "ok 1");
    assert_eq!(server.get("/plain").await.body, "ok 2");
    server.stored(2).await;
    failing.store(true, Ordering::SeqCst);
    eventually(
        "the entry to go stale and the origin to be asked",
        || async {
            let reply = server.get("/sie").await;
            assert_eq!(
                (reply.status, reply.body.as_str()),
                (StatusCode::OK, "ok 1")
            );
            reply.x_cache() == "STALE"
        },
    )
    .await;
    // Without stale-if-error the failure goes through once the entry is stale.
    eventually("the plain entry to go stale", || async {
        let reply = server.get("/plain").await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.x_cache(), "HIT");
            return false;
        }
        assert_eq!(
            (reply.status, reply.x_cache(), reply.body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "MISS", "down")
        );
        true
    })
    .await;
}

pub(crate) async fn unsafe_methods_invalidate_the_target_and_same_host_locations(
    manager: CacheManager,
) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| match (
        &seen.method,
        seen.uri.as_str(),
    ) {
        (&Method::GET, _) => respond(200, &[("cache-control", "max-age=60")], format!("get {n}")),
        (_, "/items") => respond(201, &[("location", "/items/1")], "created"),
        (_, "/elsewhere") => respond(
            201,
            &[("location", "http://other.example/items/1")],
            "created",
        ),
        (_, "/fails") => respond(500, &[("location", "/items/1")], "error"),
        _ => respond(204, &[], Body::empty()),
    })
    .await;
    let get = || server.get("/items/1");
    assert_eq!(get().await.x_cache(), "MISS");
    assert_eq!(get().await.x_cache(), "HIT");

    let put = server.send(Method::PUT, "/items/1", &[]).await;
    assert_eq!(
        (put.status, put.x_cache()),
        (StatusCode::NO_CONTENT, "BYPASS")
    );
    assert_eq!(get().await.x_cache(), "MISS", "PUT invalidates its target");

    let post = server.send(Method::POST, "/items", &[]).await;
    assert_eq!(
        (post.status, post.x_cache()),
        (StatusCode::CREATED, "BYPASS")
    );
    assert_eq!(
        get().await.x_cache(),
        "MISS",
        "POST invalidates its Location"
    );

    assert_eq!(
        server.send(Method::POST, "/elsewhere", &[]).await.x_cache(),
        "BYPASS"
    );
    assert_eq!(
        server.send(Method::DELETE, "/fails", &[]).await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        get().await.x_cache(),
        "HIT",
        "another host's Location and failed writes invalidate nothing"
    );
}

pub(crate) async fn purge_by_tag_url_and_key_and_tags_never_leave(manager: CacheManager) {
    let cache = cache_on(&manager, |b| {
        b.tag_header(http::HeaderName::from_static("surrogate-key"))
    })
    .await;
    let server = serve(cache, NO_DELAY, |seen, n| {
        let tags = if seen.uri.ends_with('1') {
            "product:1 all"
        } else {
            "product:2 all"
        };
        respond(
            200,
            &[("cache-control", "max-age=60"), ("surrogate-key", tags)],
            format!("call {n}"),
        )
    })
    .await;
    let one = server.get("/p/1").await;
    assert_eq!((one.x_cache(), one.header("surrogate-key")), ("MISS", None));
    server.get("/p/2").await;
    server.stored(2).await;
    let hit = server.get("/p/1").await;
    assert_eq!((hit.x_cache(), hit.header("surrogate-key")), ("HIT", None));

    assert_eq!(server.cache.purge_tag("product:1").await.unwrap(), 1);
    assert_eq!(server.get("/p/1").await.x_cache(), "MISS");
    assert_eq!(server.get("/p/2").await.x_cache(), "HIT");
    server.stored(3).await;

    let url = format!("http://{}/p/2", server.addr);
    assert_eq!(server.cache.purge_url(&url).await.unwrap(), 1);
    assert_eq!(server.get("/p/2").await.x_cache(), "MISS");
    server.stored(4).await;

    let request = http::Request::get("/p/2")
        .header("host", server.addr.to_string())
        .body(())
        .unwrap();
    let key = server.cache.key_for(&request).unwrap();
    assert!(server.cache.purge_key(&key).await.unwrap());
    assert_eq!(server.get("/p/2").await.x_cache(), "MISS");
    server.stored(5).await;

    assert_eq!(server.cache.purge_tag("all").await.unwrap(), 2);
    assert_eq!(server.get("/p/1").await.x_cache(), "MISS");
    assert_eq!(server.get("/p/2").await.x_cache(), "MISS");
}

pub(crate) async fn bodies_over_the_limit_stream_through_uncached(manager: CacheManager) {
    let cache = cache_on(&manager, |b| b.max_body_bytes(1024)).await;
    let server = serve(cache, NO_DELAY, |seen, _| {
        let cc = [("cache-control", "max-age=60")];
        match seen.uri.as_str() {
            "/known" => respond(200, &cc, vec![b'k'; 4096]),
            "/small" => respond(200, &cc, stream_of(2, 100)),
            _ => respond(200, &cc, stream_of(8, 512)),
        }
    })
    .await;
    for path in ["/known", "/unknown"] {
        let first = server.get(path).await;
        let second = server.get(path).await;
        assert_eq!(
            (first.x_cache(), second.x_cache()),
            ("MISS", "MISS"),
            "{path}"
        );
        assert_eq!(
            (first.body.len(), second.body.len()),
            (4096, 4096),
            "{path}"
        );
    }
    assert_eq!(server.get("/small").await.x_cache(), "MISS");
    let small = server.get("/small").await;
    assert_eq!((small.x_cache(), small.body.len()), ("HIT", 200));
    assert_eq!(server.calls(), 5);
    assert_eq!(server.cache.stats().cache.not_stored, 4);
}

pub(crate) async fn a_body_that_fails_half_way_is_never_presented_whole_nor_stored(
    manager: CacheManager,
) {
    let broken = Arc::new(AtomicBool::new(true));
    let fail = broken.clone();
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, move |seen, n| {
        let cc = if seen.uri.starts_with("/sie") {
            "max-age=1, stale-if-error=60"
        } else {
            "max-age=1"
        };
        let headers = [("cache-control", cc), ("etag", "\"v1\"")];
        // The first answer of /reval and /sie is whole; later ones break.
        let whole = !seen.uri.starts_with("/broken") && n <= 3;
        if whole || !fail.load(Ordering::SeqCst) {
            return respond(200, &headers, format!("whole {n}"));
        }
        respond(200, &headers, failing_after(b"hello world"))
    })
    .await;
    let get = || Server::try_send(&server, Method::GET, "/broken", &[]);
    // A miss: the client sees the failure, and nothing is stored.
    let first = get().await;
    assert!(first.is_err(), "a truncated miss was presented whole");
    let second = get().await;
    assert!(second.is_err(), "a truncated miss was stored");
    assert_eq!(server.calls(), 2);

    // A revalidation that gets a full (200) answer whose body fails.
    assert_eq!(server.get("/reval").await.body, "whole 3");
    server.stored(1).await;
    eventually("the entry to go stale and be revalidated", || async {
        match server.try_send(Method::GET, "/reval", &[]).await {
            Ok(reply) => {
                assert_eq!((reply.x_cache(), reply.body.as_str()), ("HIT", "whole 3"));
                false
            }
            Err(_) => true,
        }
    })
    .await;
    let calls = server.calls();
    assert!(
        server.try_send(Method::GET, "/reval", &[]).await.is_err(),
        "the truncated body replaced the stored one"
    );
    assert_eq!(server.calls(), calls + 1, "still stale: revalidated again");

    // Within stale-if-error the stale response answers instead.
    broken.store(false, Ordering::SeqCst);
    assert_eq!(server.get("/sie").await.x_cache(), "MISS");
    server.stored(2).await;
    broken.store(true, Ordering::SeqCst);
    eventually("the sie entry to go stale", || async {
        let reply = server.get("/sie").await;
        assert!(reply.body.starts_with("whole"), "{}", reply.body);
        reply.x_cache() == "STALE"
    })
    .await;
    assert_eq!(server.cache.stats().cache.stored, 2);
}

pub(crate) async fn s_maxage_forbids_serving_stale(manager: CacheManager) {
    let failing = Arc::new(AtomicBool::new(false));
    let fail = failing.clone();
    // Cache-wide stale windows too: s-maxage overrides them as well.
    let cache = cache_on(&manager, |b| {
        b.stale_if_error(Duration::from_secs(60))
            .stale_while_revalidate(Duration::from_secs(60))
    })
    .await;
    let server = serve(cache, NO_DELAY, move |seen, n| {
        if fail.load(Ordering::SeqCst) {
            return respond(503, &[], "down");
        }
        let cc = if seen.uri == "/swr" {
            "s-maxage=1, stale-while-revalidate=60"
        } else {
            "s-maxage=1, stale-if-error=60"
        };
        respond(200, &[("cache-control", cc)], format!("ok {n}"))
    })
    .await;
    assert_eq!(server.get("/sie").await.body, "ok 1");
    assert_eq!(server.get("/swr").await.body, "ok 2");
    server.stored(2).await;
    failing.store(true, Ordering::SeqCst);
    eventually("the entry to go stale", || async {
        let reply = server.get("/sie").await;
        if reply.status == StatusCode::OK {
            assert_eq!((reply.x_cache(), reply.body.as_str()), ("HIT", "ok 1"));
            return false;
        }
        assert_eq!(
            (reply.status, reply.x_cache(), reply.body.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "MISS", "down")
        );
        true
    })
    .await;
    // Nor with the client's consent (max-stale).
    let consent = server
        .get_with("/sie", &[("cache-control", "max-stale=600")])
        .await;
    assert_eq!(consent.status, StatusCode::SERVICE_UNAVAILABLE);

    failing.store(false, Ordering::SeqCst);
    eventually("the swr entry to go stale", || async {
        let reply = server.get("/swr").await;
        if reply.x_cache() == "HIT" {
            assert_eq!(reply.body, "ok 2");
            return false;
        }
        assert_eq!(reply.x_cache(), "MISS", "never STALE under s-maxage");
        assert_ne!(reply.body, "ok 2", "refreshed before answering");
        true
    })
    .await;
}

pub(crate) async fn connection_named_and_hop_by_hop_headers_are_never_stored(
    manager: CacheManager,
) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |_, n| {
        respond(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("connection", "x-internal, x-trace"),
                ("x-internal", "secret"),
                ("x-trace", "abc"),
                ("keep-alive", "timeout=5"),
                ("x-public", "kept"),
            ],
            format!("call {n}"),
        )
    })
    .await;
    assert_eq!(server.get("/h").await.x_cache(), "MISS");
    server.stored(1).await;
    let hit = server.get("/h").await;
    assert_eq!((hit.x_cache(), hit.body.as_str()), ("HIT", "call 1"));
    assert_eq!(hit.header("x-public"), Some("kept"));
    for name in ["x-internal", "x-trace", "keep-alive", "connection"] {
        assert_eq!(hit.header(name), None, "{name} replayed on a hit");
    }
}

pub(crate) async fn vary_matching_normalizes_equivalent_header_values(manager: CacheManager) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |_, n| {
        respond(
            200,
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            format!("call {n}"),
        )
    })
    .await;
    assert_eq!(
        server
            .get_with("/n", &[("accept-language", "en, fr")])
            .await
            .x_cache(),
        "MISS"
    );
    server.stored(1).await;
    for same in [
        &[("accept-language", "en,fr")][..],
        &[("accept-language", "en ,  fr")],
        &[("accept-language", "en"), ("accept-language", "fr")],
        // With directives of its own, judged by the stored policy.
        &[
            ("accept-language", "en,fr"),
            ("cache-control", "max-age=600"),
        ],
    ] {
        let hit = server.get_with("/n", same).await;
        assert_eq!(
            (hit.x_cache(), hit.body.as_str()),
            ("HIT", "call 1"),
            "{same:?}"
        );
    }
    let other = server.get_with("/n", &[("accept-language", "fr,en")]).await;
    assert_eq!(
        other.x_cache(),
        "MISS",
        "another order is another preference"
    );
    assert_eq!(server.calls(), 2);
}

pub(crate) async fn if_modified_since_without_last_modified_is_judged_by_date(
    manager: CacheManager,
) {
    // A Date ten seconds back, well within the response's freshness (its age counts
    // from its Date, RFC 9111 §4.2.3).
    let generated = std::time::SystemTime::now() - Duration::from_secs(10);
    let date = httpdate::fmt_http_date(generated);
    let day_before = httpdate::fmt_http_date(generated - Duration::from_secs(86_400));
    let dated = date.clone();
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, move |seen, n| {
        if seen.uri == "/dated" {
            respond(
                200,
                &[("cache-control", "max-age=60"), ("date", &dated)],
                format!("call {n}"),
            )
        } else {
            respond(200, &[("cache-control", "max-age=60")], format!("call {n}"))
        }
    })
    .await;
    assert_eq!(server.get("/dated").await.x_cache(), "MISS");
    server.stored(1).await;
    let same = server
        .get_with("/dated", &[("if-modified-since", &date)])
        .await;
    assert_eq!(
        (same.status, same.x_cache()),
        (StatusCode::NOT_MODIFIED, "HIT")
    );
    let earlier = server
        .get_with("/dated", &[("if-modified-since", &day_before)])
        .await;
    assert_eq!(
        (earlier.status, earlier.x_cache(), earlier.body.as_str()),
        (StatusCode::OK, "HIT", "call 1")
    );

    // No Date from the origin either: the time it was received stands in, and hits
    // carry that Date.
    assert_eq!(server.get("/undated").await.x_cache(), "MISS");
    server.stored(2).await;
    let later = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
    let hit = server
        .get_with("/undated", &[("if-modified-since", &later)])
        .await;
    assert_eq!(
        (hit.status, hit.x_cache()),
        (StatusCode::NOT_MODIFIED, "HIT")
    );
    assert!(hit.header("date").is_some());
    assert_eq!(server.calls(), 2);
}

pub(crate) async fn only_if_cached_with_nothing_usable_answers_504(manager: CacheManager) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let cc = if seen.uri == "/short" {
            "max-age=1"
        } else {
            "max-age=60"
        };
        respond(200, &[("cache-control", cc)], format!("call {n}"))
    })
    .await;
    let only = [("cache-control", "only-if-cached")];
    let miss = server.get_with("/o", &only).await;
    assert_eq!(
        (miss.status, miss.body.as_str()),
        (StatusCode::GATEWAY_TIMEOUT, "")
    );
    assert_eq!(server.calls(), 0, "the origin is never asked");
    // Nor on a request that would bypass the cache.
    let range = server
        .get_with(
            "/o",
            &[("cache-control", "only-if-cached"), ("range", "bytes=0-1")],
        )
        .await;
    assert_eq!(range.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(server.calls(), 0);

    assert_eq!(server.get("/o").await.x_cache(), "MISS");
    assert_eq!(server.get("/short").await.x_cache(), "MISS");
    server.stored(2).await;
    let hit = server.get_with("/o", &only).await;
    assert_eq!((hit.status, hit.body.as_str()), (StatusCode::OK, "call 1"));
    // A stale entry is not usable either (no max-stale).
    eventually("the short entry to go stale", || async {
        let reply = server.get_with("/short", &only).await;
        if reply.status == StatusCode::OK {
            assert_eq!(reply.body, "call 2");
            return false;
        }
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        true
    })
    .await;
    assert_eq!(server.calls(), 2);
}

/// Hits within one second send the same fields, and each second's hits their own:
/// `Age` and the `ttl` of `Cache-Status` always add up to the freshness lifetime
/// (to the second),
/// a `HEAD` gets the `GET`'s fields without the body, and a conditional request gets
/// its 304.
/// Hits on the local store build their keys in buffers an earlier request left: each
/// URL, longer or shorter than the one before, must still find its own response.
pub(crate) async fn hits_on_urls_of_every_length_get_their_own_responses(manager: CacheManager) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, _| {
        respond(200, &[("cache-control", "max-age=60")], seen.uri.clone())
    })
    .await;
    let long = format!("/{}?b=2&a=1", "long-segment/".repeat(40));
    let paths = ["/a", long.as_str(), "/", "/a/b?q=%7C", "/b", "/a?x=1"];
    for path in paths {
        assert_eq!(server.get(path).await.x_cache(), "MISS", "{path}");
    }
    server.stored(paths.len() as u64).await;
    for _ in 0..3 {
        for path in paths.iter().chain(paths.iter().rev()) {
            let hit = server.get(path).await;
            assert_eq!((hit.x_cache(), hit.body.as_str()), ("HIT", *path));
        }
    }
    assert_eq!(server.calls(), paths.len());
}

pub(crate) async fn every_hit_carries_its_own_age_and_freshness(manager: CacheManager) {
    let cache = cache_on(&manager, |b| b).await;
    let server = serve(cache, NO_DELAY, |_, n| {
        respond(
            200,
            &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
            format!("call {n}"),
        )
    })
    .await;
    let consistent = |reply: &crate::support::Reply| {
        let age = reply.age().expect("Age on a hit");
        let status = reply.header("cache-status").expect("Cache-Status");
        let ttl: u64 = status
            .split("ttl=")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .and_then(|ttl| ttl.trim().parse().ok())
            .expect("a ttl in Cache-Status");
        // Both are whole seconds rounded down from one instant.
        assert!(
            (59..=60).contains(&(age + ttl)),
            "Age {age}, Cache-Status {status}"
        );
        assert_eq!(reply.x_cache(), "HIT");
        age
    };
    assert_eq!(server.get("/p").await.x_cache(), "MISS");
    server.stored(1).await;
    for _ in 0..3 {
        let hit = server.get("/p").await;
        assert_eq!(hit.body, "call 1");
        consistent(&hit);
    }
    let head = server.send(Method::HEAD, "/p", &[]).await;
    assert_eq!(head.body, "");
    consistent(&head);
    let conditional = server.get_with("/p", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(conditional.status, StatusCode::NOT_MODIFIED);
    eventually("a hit one second older", || async {
        let hit = server.get("/p").await;
        consistent(&hit) >= 1
    })
    .await;
    assert_eq!(server.calls(), 1);
}

pub(crate) async fn a_fresh_stored_get_answers_head(manager: CacheManager) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |_, n| {
        respond(
            200,
            &[("cache-control", "max-age=60"), ("x-kind", "page")],
            format!("call {n}"),
        )
    })
    .await;
    let get = server.get("/g").await;
    assert_eq!((get.x_cache(), get.body.as_str()), ("MISS", "call 1"));
    server.stored(1).await;
    let head = server.send(Method::HEAD, "/g", &[]).await;
    assert_eq!(
        (head.status, head.x_cache(), head.body.as_str()),
        (StatusCode::OK, "HIT", "")
    );
    assert_eq!(head.header("x-kind"), Some("page"));
    assert_eq!(head.header("content-length"), Some("6"), "the GET's length");
    assert_eq!(server.calls(), 1);
    // A HEAD of its own keeps the length its origin answer had.
    let own = server.send(Method::HEAD, "/own", &[]).await;
    assert_eq!(
        (own.x_cache(), own.header("content-length")),
        ("MISS", Some("6"))
    );
    server.stored(2).await;
    let own = server.send(Method::HEAD, "/own", &[]).await;
    assert_eq!(
        (own.x_cache(), own.header("content-length")),
        ("HIT", Some("6"))
    );
}

pub(crate) async fn cache_status_says_what_happened_and_why_nothing_was_stored(
    manager: CacheManager,
) {
    // As the README's tour builds it: no default TTL.
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let headers: &[(&str, &str)] = match seen.uri.as_str() {
            "/silent" => &[],
            "/private" => &[("cache-control", "private, max-age=60")],
            "/cookie" => &[("cache-control", "max-age=60"), ("set-cookie", "a=b")],
            _ => &[("cache-control", "max-age=60")],
        };
        respond(200, headers, format!("call {n}"))
    })
    .await;
    let status =
        |reply: &crate::support::Reply| reply.header("cache-status").unwrap_or("").to_string();

    let silent = server.get("/silent").await;
    assert_eq!(
        status(&silent),
        "partcache; fwd=uri-miss; fwd-status=200; detail=no-freshness"
    );
    assert_eq!(
        status(&server.get("/private").await),
        "partcache; fwd=uri-miss; fwd-status=200; detail=private"
    );
    assert_eq!(
        status(&server.get("/cookie").await),
        "partcache; fwd=uri-miss; fwd-status=200; detail=set-cookie"
    );
    let miss = server.get("/page").await;
    assert_eq!(
        status(&miss),
        "partcache; fwd=uri-miss; fwd-status=200; ttl=60; stored"
    );
    server.stored(1).await;
    let hit = server.get("/page").await;
    let hit_status = status(&hit);
    let ttl: i64 = hit_status
        .strip_prefix("partcache; hit; ttl=")
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("{hit_status}"));
    assert!((50..=60).contains(&ttl), "{hit_status}");
    let forced = server
        .get_with("/page", &[("cache-control", "no-cache")])
        .await;
    assert_eq!(
        status(&forced),
        "partcache; fwd=request; fwd-status=200; ttl=60; stored"
    );
    let bypass = server.get_with("/page", &[("range", "bytes=0-1")]).await;
    assert_eq!(
        status(&bypass),
        "partcache; fwd=bypass; fwd-status=200; detail=range"
    );
    let options = server.send(Method::OPTIONS, "/page", &[]).await;
    assert_eq!(status(&options), "partcache; fwd=method; fwd-status=200");

    // Named, or turned off.
    let named = serve(
        cache_on(&manager, |b| b.cache_status_name("edge-1")).await,
        NO_DELAY,
        |_, _| respond(200, &[("cache-control", "max-age=60")], "x"),
    )
    .await;
    assert!(status(&named.get("/").await).starts_with("edge-1; fwd=uri-miss"));
    let off = serve(
        cache_on(&manager, |b| b.without_cache_status()).await,
        NO_DELAY,
        |_, _| respond(200, &[("cache-control", "max-age=60")], "x"),
    )
    .await;
    let reply = off.get("/").await;
    assert_eq!(
        (reply.header("cache-status"), reply.x_cache()),
        (None, "MISS")
    );
    off.stored(1).await;
    let hit = off.get("/").await;
    assert_eq!((hit.header("cache-status"), hit.x_cache()), (None, "HIT"));

    // A cache nearer the origin keeps its member; this cache's goes last, on the
    // stored response's hits too (RFC 9211 §2).
    let behind = serve(cache_on(&manager, |b| b).await, NO_DELAY, |_, _| {
        respond(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("cache-status", "origin-cache; hit"),
            ],
            "x",
        )
    })
    .await;
    assert_eq!(
        status(&behind.get("/").await),
        "origin-cache; hit, partcache; fwd=uri-miss; fwd-status=200; ttl=60; stored"
    );
    behind.stored(1).await;
    let hit = behind.get("/").await;
    let hit_status = status(&hit);
    assert!(
        hit_status.starts_with("origin-cache; hit, partcache; hit; ttl="),
        "{hit_status}"
    );
    assert_eq!(
        hit.headers.get_all("cache-status").iter().count(),
        1,
        "one field, members joined"
    );
}

pub(crate) async fn requests_with_cookies_bypass_unless_the_route_keys_or_ignores_them(
    manager: CacheManager,
) {
    let cache = cache_on(&manager, |b| {
        b.route("/keyed", RoutePolicy::cached().key_cookies(["lang"]))
            .route("/static", RoutePolicy::cached().ignore_cookies())
    })
    .await;
    let server = serve(cache, NO_DELAY, |seen, n| {
        let cookie = seen
            .headers
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        respond(
            200,
            &[("cache-control", "max-age=60")],
            format!("{cookie} {n}"),
        )
    })
    .await;
    // By default a page built for one visitor's cookie is never served to another.
    let one = server.get_with("/page", &[("cookie", "sid=1")]).await;
    assert_eq!((one.x_cache(), one.body.as_str()), ("BYPASS", "sid=1 1"));
    assert!(
        one.header("cache-status")
            .unwrap()
            .ends_with("detail=cookie")
    );
    let two = server.get_with("/page", &[("cookie", "sid=2")]).await;
    assert_eq!((two.x_cache(), two.body.as_str()), ("BYPASS", "sid=2 2"));
    assert_eq!(server.get("/page").await.x_cache(), "MISS");
    server.stored(1).await;
    let again = server.get_with("/page", &[("cookie", "sid=2")]).await;
    assert_eq!(
        (again.x_cache(), again.body.as_str()),
        ("BYPASS", "sid=2 4")
    );

    // Keyed on `lang`: the origin sees only that cookie, and each value is a variant.
    let en = server
        .get_with("/keyed", &[("cookie", "sid=1; lang=en")])
        .await;
    assert_eq!((en.x_cache(), en.body.as_str()), ("MISS", "lang=en 5"));
    server.stored(2).await;
    let en_again = server
        .get_with("/keyed", &[("cookie", "lang=en;sid=2")])
        .await;
    assert_eq!(
        (en_again.x_cache(), en_again.body.as_str()),
        ("HIT", "lang=en 5")
    );
    let fr = server
        .get_with("/keyed", &[("cookie", "sid=1; lang=fr")])
        .await;
    assert_eq!((fr.x_cache(), fr.body.as_str()), ("MISS", "lang=fr 6"));
    let none = server.get("/keyed").await;
    assert_eq!((none.x_cache(), none.body.as_str()), ("MISS", "- 7"));

    // Declared cookie-independent: one entry for all, cookies passed on unchanged.
    let first = server.get_with("/static", &[("cookie", "sid=1")]).await;
    assert_eq!((first.x_cache(), first.body.as_str()), ("MISS", "sid=1 8"));
    server.stored(5).await;
    let other = server.get_with("/static", &[("cookie", "sid=2")]).await;
    assert_eq!((other.x_cache(), other.body.as_str()), ("HIT", "sid=1 8"));
    assert_eq!(server.calls(), 8);
}

pub(crate) async fn a_route_chooses_which_query_parameters_are_keyed(manager: CacheManager) {
    let cache = cache_on(&manager, |b| {
        b.route(
            "/notes",
            RoutePolicy::cached().key_query_params(["tag", "page"]),
        )
        .route(
            "/search",
            RoutePolicy::cached()
                .ignore_query_params(["cb"])
                .forward_unkeyed_params(),
        )
    })
    .await;
    let server = serve(cache, NO_DELAY, |seen, n| {
        respond(
            200,
            &[("cache-control", "max-age=60")],
            format!("{} {n}", seen.uri),
        )
    })
    .await;
    let first = server.get("/notes?tag=a&cb=123&page=2").await;
    assert_eq!(
        (first.x_cache(), first.body.as_str()),
        ("MISS", "/notes?tag=a&page=2 1"),
        "unkeyed parameters never reach the origin"
    );
    server.stored(1).await;
    // A client cannot bust the cache: every other `cb` is the same entry.
    for cb in 0..20 {
        let reply = server.get(&format!("/notes?page=2&cb={cb}&tag=a")).await;
        assert_eq!(
            (reply.x_cache(), reply.body.as_str()),
            ("HIT", "/notes?tag=a&page=2 1")
        );
    }
    assert_eq!(server.get("/notes?tag=b").await.x_cache(), "MISS");
    assert_eq!(server.calls(), 2);

    // A deny-list whose parameters the origin may still see.
    let search = server.get("/search?q=x&cb=1").await;
    assert_eq!(
        (search.x_cache(), search.body.as_str()),
        ("MISS", "/search?q=x&cb=1 3")
    );
    server.stored(3).await;
    let hit = server.get("/search?cb=2&q=x").await;
    assert_eq!(
        (hit.x_cache(), hit.body.as_str()),
        ("HIT", "/search?q=x&cb=1 3")
    );
    assert_eq!(server.get("/search?q=y&cb=1").await.x_cache(), "MISS");

    // Invalidation and purges key the same way.
    assert_eq!(
        server
            .send(Method::PUT, "/notes?tag=a&page=2&cb=7", &[])
            .await
            .x_cache(),
        "BYPASS"
    );
    assert_eq!(server.get("/notes?tag=a&page=2").await.x_cache(), "MISS");
}

pub(crate) async fn writes_invalidate_declared_prefixes_and_paths_purge_without_urls(
    manager: CacheManager,
) {
    let cache = cache_on(&manager, |b| {
        b.host("a.example")
            .route(
                "/notes",
                RoutePolicy::cached()
                    .invalidates_prefix("/notes")
                    .error_ttl(Duration::from_secs(1)),
            )
            .track_prefix("/docs")
    })
    .await;
    let server = serve(cache, NO_DELAY, |seen, n| {
        match (&seen.method, seen.uri.as_str()) {
            (&Method::GET, "/notes/404") => {
                respond(404, &[("cache-control", "max-age=60")], format!("gone {n}"))
            }
            (&Method::GET, _) => {
                respond(200, &[("cache-control", "max-age=60")], format!("call {n}"))
            }
            _ => respond(204, &[], Body::empty()),
        }
    })
    .await;
    let on = |host: &'static str| [("host", host)];
    let a = on("a.example");
    let get = |path: &'static str| server.get_with(path, &a);
    let lists = ["/notes?tag=a", "/notes?tag=b", "/notes/1"];
    for path in lists {
        assert_eq!(get(path).await.x_cache(), "MISS", "{path}");
    }
    server.stored(3).await;
    for path in lists {
        assert_eq!(get(path).await.x_cache(), "HIT", "{path}");
    }
    // A write to one note drops the lists too, with no code in the handler.
    let put = server.send(Method::PUT, "/notes/1", &a).await;
    assert_eq!(put.status, StatusCode::NO_CONTENT);
    for path in lists {
        assert_eq!(get(path).await.x_cache(), "MISS", "{path} after the PUT");
    }
    server.stored(6).await;

    // Purge by a tracked prefix: every host, or one.
    for path in ["/docs/x", "/docs/y", "/docsx"] {
        assert_eq!(get(path).await.x_cache(), "MISS");
    }
    let b = on("b.example");
    assert_eq!(server.get_with("/docs/x", &b).await.x_cache(), "MISS");
    server.stored(10).await;
    assert_eq!(
        server
            .cache
            .purge_prefix("http://b.example/docs")
            .await
            .unwrap(),
        1
    );
    assert_eq!(server.get_with("/docs/x", &b).await.x_cache(), "MISS");
    assert_eq!(get("/docs/x").await.x_cache(), "HIT", "another host's stay");
    server.stored(11).await;
    assert_eq!(server.cache.purge_prefix("/docs").await.unwrap(), 3);
    assert_eq!(get("/docs/y").await.x_cache(), "MISS");
    assert_eq!(get("/docsx").await.x_cache(), "HIT", "not under /docs");
    assert!(server.cache.purge_prefix("/untracked").await.is_err());

    // Purge by path, on the configured host.
    assert_eq!(get("/notes/1").await.x_cache(), "HIT");
    assert_eq!(server.cache.purge_path("/notes/1").await.unwrap(), 1);
    assert_eq!(get("/notes/1").await.x_cache(), "MISS");

    // A 404 is kept for the route's error TTL, not the origin's minute.
    let missing = get("/notes/404").await;
    assert_eq!(
        (missing.status, missing.x_cache()),
        (StatusCode::NOT_FOUND, "MISS")
    );
    assert!(
        missing.header("cache-status").unwrap().contains("ttl=1;"),
        "{:?}",
        missing.header("cache-status")
    );
    eventually("the 404 to expire", || async {
        get("/notes/404").await.x_cache() == "MISS"
    })
    .await;
}

pub(crate) async fn a_full_prefix_list_evicts_rather_than_forgets(manager: CacheManager) {
    let cache = cache_on(&manager, |b| b.track_prefix("/docs").max_keys_per_tag(2)).await;
    let server = serve(cache, NO_DELAY, |_, n| {
        respond(200, &[("cache-control", "max-age=60")], format!("call {n}"))
    })
    .await;
    for (i, path) in ["/docs/1", "/docs/2", "/docs/3"].into_iter().enumerate() {
        assert_eq!(server.get(path).await.x_cache(), "MISS");
        server.stored(i as u64 + 1).await;
    }
    // The list holds two: the oldest response left the cache rather than the list.
    assert_eq!(server.get("/docs/1").await.x_cache(), "MISS");
    server.stored(4).await;
    assert_eq!(server.cache.purge_prefix("/docs").await.unwrap(), 2);
    for path in ["/docs/1", "/docs/2", "/docs/3"] {
        assert_eq!(
            server.get(path).await.x_cache(),
            "MISS",
            "{path} survived the purge"
        );
    }
}

/// A body that sends `prefix`, then fails.
fn failing_after(prefix: &'static [u8]) -> Body {
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(prefix)),
        Err(std::io::Error::other("the origin failed mid-body")),
    ];
    Body::from_stream(futures::stream::iter(chunks))
}

fn stream_of(chunks: usize, size: usize) -> Body {
    let chunks = (0..chunks).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![b's'; size])));
    Body::from_stream(futures::stream::iter(chunks))
}

pub(crate) async fn the_query_is_normalized_and_ignored_parameters_never_reach_the_origin(
    manager: CacheManager,
) {
    let cache = cache_on(&manager, |b| b.ignore_query_params(["utm_source"])).await;
    let server = serve(cache, NO_DELAY, |seen, _| {
        respond(200, &[("cache-control", "max-age=60")], seen.uri.clone())
    })
    .await;
    let first = server.get("/q?b=2&utm_source=mail&a=1").await;
    assert_eq!(
        (first.x_cache(), first.body.as_str()),
        ("MISS", "/q?b=2&a=1")
    );
    let reordered = server.get("/q?a=1&b=2").await;
    assert_eq!(
        (reordered.x_cache(), reordered.body.as_str()),
        ("HIT", "/q?b=2&a=1")
    );
    assert_eq!(server.get("/q?a=1&b=3").await.x_cache(), "MISS");
    assert_eq!(server.calls(), 2);
}

pub(crate) async fn a_hundred_concurrent_misses_call_the_origin_once(manager: CacheManager) {
    let server = serve(
        cache_on(&manager, |b| b).await,
        Duration::from_millis(300),
        |_, n| respond(200, &[("cache-control", "max-age=60")], format!("call {n}")),
    )
    .await;
    let requests: Vec<_> = (0..100).map(|_| server.get("/hot")).collect();
    let replies = futures::future::join_all(requests).await;
    assert_eq!(server.calls(), 1);
    assert!(
        replies
            .iter()
            .all(|r| r.status == StatusCode::OK && r.body == "call 1")
    );
    assert_eq!(replies.iter().filter(|r| r.x_cache() == "MISS").count(), 1);
    assert_eq!(server.cache.stats().cache.coalesced, 99);
}

pub(crate) async fn collapsed_requests_get_only_a_response_reusable_for_them(
    manager: CacheManager,
) {
    let server = serve(
        cache_on(&manager, |b| b).await,
        Duration::from_millis(200),
        |seen, n| {
            let cc = match seen.uri.as_str() {
                "/no-cache" => "no-cache",
                "/max-age-0" => "max-age=0",
                _ => "s-maxage=0, max-age=60",
            };
            // A validator, so each is worth storing for revalidation.
            respond(
                200,
                &[("cache-control", cc), ("etag", "\"v\"")],
                format!("call {n}"),
            )
        },
    )
    .await;
    let mut expected = 0;
    for path in ["/no-cache", "/max-age-0", "/s-maxage-0"] {
        let burst: Vec<_> = (0..20).map(|_| server.get(path)).collect();
        let replies = futures::future::join_all(burst).await;
        expected += 20;
        assert_eq!(
            server.calls(),
            expected,
            "{path}: every request asked the origin"
        );
        for reply in &replies {
            assert_ne!(reply.x_cache(), "HIT", "{path}: {}", reply.body);
        }
    }
    assert_eq!(server.cache.stats().cache.coalesced, 0);
}

pub(crate) async fn unkeyed_forwarding_headers_cannot_poison_what_others_get(
    manager: CacheManager,
) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, _| {
        // An application that builds links from X-Forwarded-Host, as many do.
        let host = seen
            .headers
            .get("x-forwarded-host")
            .or(seen.headers.get("host"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        respond(
            200,
            &[("cache-control", "max-age=60")],
            format!("link to {host}"),
        )
    })
    .await;
    let attack = server
        .get_with("/page", &[("x-forwarded-host", "evil.example")])
        .await;
    assert_eq!(
        (attack.x_cache(), attack.body.as_str()),
        ("BYPASS", "link to evil.example")
    );
    let victim = server.get("/page").await;
    assert_eq!(victim.x_cache(), "MISS");
    assert_eq!(victim.body, format!("link to {}", server.addr));
    assert_eq!(
        server
            .get_with("/page", &[("x-forwarded-host", "evil.example")])
            .await
            .x_cache(),
        "BYPASS"
    );
    let victim = server.get("/page").await;
    assert_eq!(
        (victim.x_cache(), victim.body.clone()),
        ("HIT", format!("link to {}", server.addr))
    );

    // Range requests and GETs with a body are not keyed either.
    assert_eq!(
        server
            .get_with("/page", &[("range", "bytes=0-1")])
            .await
            .x_cache(),
        "BYPASS"
    );
}

pub(crate) async fn the_host_is_part_of_the_key(manager: CacheManager) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let host = seen
            .headers
            .get("host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_string();
        respond(
            200,
            &[("cache-control", "max-age=60")],
            format!("{host} {n}"),
        )
    })
    .await;
    let a = server.get_with("/", &[("host", "a.example")]).await;
    let b = server.get_with("/", &[("host", "b.example")]).await;
    assert_eq!((a.x_cache(), a.body.as_str()), ("MISS", "a.example 1"));
    assert_eq!((b.x_cache(), b.body.as_str()), ("MISS", "b.example 2"));
    let a_again = server.get_with("/", &[("host", "A.EXAMPLE")]).await;
    assert_eq!(
        (a_again.x_cache(), a_again.body.as_str()),
        ("HIT", "a.example 1")
    );
    // The default port and a trailing dot name the same host.
    for same in ["a.example:80", "a.example.", "a.example:443"] {
        let reply = server.get_with("/", &[("host", same)]).await;
        assert_eq!(
            (reply.x_cache(), reply.body.as_str()),
            ("HIT", "a.example 1"),
            "{same}"
        );
    }
    let other_port = server.get_with("/", &[("host", "a.example:8080")]).await;
    assert_eq!(other_port.x_cache(), "MISS");
}

pub(crate) async fn head_requests_are_cached_apart_and_every_response_is_marked(
    manager: CacheManager,
) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |_, n| {
        respond(200, &[("cache-control", "max-age=60")], format!("call {n}"))
    })
    .await;
    let head = server.send(Method::HEAD, "/h", &[]).await;
    assert_eq!(
        (head.status, head.x_cache(), head.body.as_str()),
        (StatusCode::OK, "MISS", "")
    );
    assert_eq!(server.send(Method::HEAD, "/h", &[]).await.x_cache(), "HIT");
    assert_eq!(server.get("/h").await.x_cache(), "MISS");
    assert_eq!(
        server.send(Method::OPTIONS, "/h", &[]).await.x_cache(),
        "BYPASS"
    );
}

/// `ResponseCacheStats` counts requests; the `CacheStats` of the
/// cache holding the responses counts store operations, several per request: a
/// lookup reads the primary key and, under a Vary index, the variant key; a `HEAD`
/// reads the `GET` entry first; a miss that calls the origin reads its key again on a
/// remote store; storing a varying response updates the Vary index (an entry
/// processor, counted as an access). The figures here are the documented relation.
pub(crate) async fn response_statistics_count_requests_and_store_statistics_count_store_reads(
    manager: CacheManager,
) {
    let remote = !manager.is_local();
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let fresh = ("cache-control", "max-age=60");
        if seen.uri.ends_with("/v") {
            respond(
                200,
                &[fresh, ("vary", "accept-language")],
                format!("call {n}"),
            )
        } else {
            respond(200, &[fresh], format!("call {n}"))
        }
    })
    .await;
    let plain = server.get("/a").await; // miss: read /a
    assert_eq!(plain.x_cache(), "MISS");
    server.stored(1).await;
    assert_eq!(server.get("/a").await.x_cache(), "HIT"); // read /a
    assert_eq!(server.send(Method::HEAD, "/a", &[]).await.x_cache(), "HIT"); // read GET /a
    let en = [("accept-language", "en")];
    let fr = [("accept-language", "fr")];
    // Miss: read /v; stored with a new Vary index (an update of an absent entry).
    assert_eq!(server.get_with("/v", &en).await.x_cache(), "MISS");
    server.stored(2).await;
    // Hit: read the index, then the variant.
    assert_eq!(server.get_with("/v", &en).await.x_cache(), "HIT");
    // Vary miss: the index (hit), the variant (miss); stored under the index (a hit).
    assert_eq!(server.get_with("/v", &fr).await.x_cache(), "MISS");
    server.stored(3).await;

    let http = server.cache.stats();
    assert_eq!((http.cache.hits, http.cache.misses), (3, 3), "{http:?}");
    // A leading miss rereads its key on a remote store: one more store miss each.
    let rereads = if remote { 3 } else { 0 };
    let store = server.cache.responses().stats();
    assert_eq!(
        (store.hits, store.misses),
        // Hits: GET /a, HEAD /a, index + variant, index, index update. Misses: /a,
        // /v, the index created, the `fr` variant.
        (1 + 1 + 2 + 1 + 1, 1 + 1 + 1 + 1 + rereads),
        "store {store:?} against requests {http:?}"
    );
    // The documented inequality: never fewer store reads than looked-up requests.
    assert!(store.hits + store.misses >= http.cache.hits + http.cache.misses);
}

/// A per-route layer (`MethodRouter::route_layer`) caches its route with its own
/// freshness; a route without one is cached by the origin's word only.
pub(crate) async fn a_route_layer_gives_its_route_its_own_freshness(manager: CacheManager) {
    let cache = cache_on(&manager, |b| b).await;
    // The origin gives no freshness at all.
    let server = serve_routed(
        cache,
        NO_DELAY,
        |_, n| respond(200, &[], format!("call {n}")),
        |origin, cache| {
            Router::new()
                .route(
                    "/fixed",
                    origin
                        .clone()
                        .route_layer(cache.layer().ttl(Duration::from_secs(60))),
                )
                .route("/silent", origin.route_layer(cache.layer()))
        },
    )
    .await;
    assert_eq!(server.get("/fixed").await.x_cache(), "MISS");
    server.stored(1).await;
    let hit = server.get("/fixed").await;
    assert_eq!((hit.x_cache(), hit.body.as_str()), ("HIT", "call 1"));
    assert_eq!(server.get("/silent").await.x_cache(), "MISS");
    let again = server.get("/silent").await;
    assert_eq!((again.x_cache(), again.body.as_str()), ("MISS", "call 3"));
    assert_eq!(server.calls(), 3);
}

/// Per-route layers under a `Router::layer` of the same cache: the outer layer
/// caches once (no second lookup that would wait on its own flight), and a route's
/// layer hands its freshness and its bypass up with the response.
pub(crate) async fn route_layers_under_the_router_layer_hand_their_settings_up(
    manager: CacheManager,
) {
    let cache = cache_on(&manager, |b| b).await;
    let server = serve_routed(
        cache,
        NO_DELAY,
        |_, n| respond(200, &[], format!("call {n}")),
        |origin, cache| {
            Router::new()
                .route(
                    "/fixed",
                    origin
                        .clone()
                        .route_layer(cache.layer().ttl(Duration::from_secs(60))),
                )
                .route(
                    "/never",
                    origin
                        .clone()
                        .route_layer(cache.layer().ttl(Duration::from_secs(60)).bypass()),
                )
                .fallback_service(origin)
                .layer(cache.layer())
        },
    )
    .await;
    let first = server.get("/fixed").await;
    assert_eq!(first.x_cache(), "MISS");
    assert_eq!(first.headers.get_all("x-cache").iter().count(), 1);
    server.stored(1).await;
    let hit = server.get("/fixed").await;
    assert_eq!((hit.x_cache(), hit.body.as_str()), ("HIT", "call 1"));
    assert_eq!(server.get("/never").await.x_cache(), "MISS");
    assert_eq!(server.get("/never").await.body, "call 3", "never stored");
    assert_eq!(server.get("/other").await.x_cache(), "MISS");
    assert_eq!(server.calls(), 4);
    assert_eq!(server.cache.stats().cache.stored, 1);
}

/// The purge endpoints answer `POST`s only, with clear statuses, and purge what
/// they say; the statistics endpoint answers the counters as one flat JSON object.
pub(crate) async fn the_purge_router_and_the_stats_route_work_over_http(manager: CacheManager) {
    let cache = cache_on(&manager, |b| b.host("shop.test")).await;
    let server = serve_routed(
        cache,
        NO_DELAY,
        |_, n| {
            respond(
                200,
                &[("cache-control", "max-age=60"), ("cache-tag", "product:1")],
                format!("call {n}"),
            )
        },
        |origin, cache| {
            Router::new()
                .fallback_service(origin)
                .layer(cache.layer())
                .nest("/admin/cache", cache.purge_router())
                .route("/admin/stats", cache.stats_route())
        },
    )
    .await;
    let host = [("host", "shop.test")];
    assert_eq!(server.get_with("/p", &host).await.x_cache(), "MISS");
    server.stored(1).await;
    assert_eq!(server.get_with("/p", &host).await.x_cache(), "HIT");

    let purged = server.post("/admin/cache/tag", "product:1").await;
    assert_eq!(
        (purged.status, purged.body.as_str()),
        (StatusCode::OK, r#"{"purged":1}"#)
    );
    assert_eq!(purged.header("cache-control"), Some("no-store"));
    assert_eq!(server.get_with("/p", &host).await.x_cache(), "MISS");
    server.stored(2).await;
    let by_path = server.post("/admin/cache/path", "/p").await;
    assert_eq!(by_path.body, r#"{"purged":1}"#);
    let by_url = server.post("/admin/cache/url", "http://shop.test/p").await;
    assert_eq!(by_url.body, r#"{"purged":0}"#, "already gone");

    let wrong_method = server.get("/admin/cache/tag").await;
    assert_eq!(wrong_method.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(
        server.post("/admin/cache/tag", "  ").await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        server.post("/admin/cache/url", "/no-host").await.status,
        StatusCode::BAD_REQUEST
    );
    let untracked = server.post("/admin/cache/prefix", "/untracked").await;
    assert_eq!(untracked.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(untracked.body.contains("not tracked"), "{}", untracked.body);

    let stats = server.get("/admin/stats").await;
    assert_eq!(stats.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    assert_eq!(
        (json["hits"].as_u64(), json["misses"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(json["invalidated"].as_u64(), Some(2));
}

/// RFC 9111 §4.2.3: a response's age is at least its apparent age, the time since its
/// `Date`, whatever its `Age` says.
pub(crate) async fn a_date_in_the_past_counts_toward_age(manager: CacheManager) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let ago = if seen.uri.ends_with("/old") { 100 } else { 30 };
        let date = httpdate::fmt_http_date(std::time::SystemTime::now() - Duration::from_secs(ago));
        respond(
            200,
            &[("cache-control", "max-age=60"), ("date", &date)],
            format!("call {n}"),
        )
    })
    .await;
    assert_eq!(server.get("/recent").await.x_cache(), "MISS");
    let hit = server.get("/recent").await;
    assert_eq!((hit.x_cache(), hit.body.as_str()), ("HIT", "call 1"));
    let age = hit.age().unwrap();
    assert!((29..=32).contains(&age), "age {age}: 30 s since Date");
    // 100 s since Date, fresh for 60: stale on arrival, never a hit.
    assert_eq!(server.get("/old").await.x_cache(), "MISS");
    assert_eq!(server.get("/old").await.x_cache(), "MISS");
    assert_eq!(server.calls(), 3);
}

/// RFC 9111 §5.2: cache directives are compared case-insensitively.
pub(crate) async fn cache_directives_are_case_insensitive(manager: CacheManager) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let cc = if seen.uri.ends_with("/private") {
            "Private, Max-Age=60"
        } else if seen.uri.ends_with("/no-store") {
            "NO-STORE, max-age=60"
        } else {
            "Max-Age=60"
        };
        respond(200, &[("cache-control", cc)], format!("call {n}"))
    })
    .await;
    assert_eq!(server.get("/upper").await.x_cache(), "MISS");
    let hit = server.get("/upper").await;
    assert_eq!((hit.x_cache(), hit.body.as_str()), ("HIT", "call 1"));
    for path in ["/private", "/no-store"] {
        assert_eq!(server.get(path).await.x_cache(), "MISS", "{path}");
        assert_eq!(
            server.get(path).await.x_cache(),
            "MISS",
            "{path} never stored"
        );
    }
    // A request's `No-Cache` sends it to the origin.
    let forced = server
        .get_with("/upper", &[("cache-control", "No-Cache")])
        .await;
    assert_ne!(forced.x_cache(), "HIT");
    assert_eq!(server.calls(), 6);
}

/// RFC 9111 §5.2.2.3: with `must-understand`, a response of a status the cache
/// understands is stored despite `no-store`; one of a status it does not is not.
pub(crate) async fn must_understand_overrides_no_store_for_understood_statuses(
    manager: CacheManager,
) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let status = if seen.uri.ends_with("/unknown") {
            299
        } else {
            200
        };
        respond(
            status,
            &[("cache-control", "must-understand, no-store, max-age=60")],
            format!("call {n}"),
        )
    })
    .await;
    assert_eq!(server.get("/known").await.x_cache(), "MISS");
    let hit = server.get("/known").await;
    assert_eq!((hit.x_cache(), hit.body.as_str()), ("HIT", "call 1"));
    assert_eq!(server.get("/unknown").await.x_cache(), "MISS");
    assert_eq!(server.get("/unknown").await.x_cache(), "MISS");
    assert_eq!(server.calls(), 3);
}

/// RFC 9111 §4.2.1-§4.2.2: `s-maxage` over `max-age` over `Expires` (an invalid one
/// is in the past), then a tenth of the time since `Last-Modified` for heuristically
/// cacheable statuses only; `must-revalidate` and `proxy-revalidate` leave a response
/// fresh for its lifetime (they only forbid serving it stale, §5.2.2.2, §5.2.2.8).
pub(crate) async fn freshness_comes_from_s_maxage_max_age_expires_then_last_modified(
    manager: CacheManager,
) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let now = std::time::SystemTime::now();
        let at = |offset: i64| {
            httpdate::fmt_http_date(if offset >= 0 {
                now + Duration::from_secs(offset as u64)
            } else {
                now - Duration::from_secs(offset.unsigned_abs())
            })
        };
        let ten_days_ago = at(-864_000);
        let path = seen.uri.rsplit('/').next().unwrap_or_default().to_string();
        let (status, headers): (u16, Vec<(&str, String)>) = match path.as_str() {
            "expires" => (200, vec![("expires", at(60))]),
            "max-age-over-expires" => (
                200,
                vec![("cache-control", "max-age=60".into()), ("expires", at(-60))],
            ),
            "max-age-0-over-expires" => (
                200,
                vec![("cache-control", "max-age=0".into()), ("expires", at(60))],
            ),
            "invalid-expires" => (200, vec![("expires", "0".into())]),
            "s-maxage-over-max-age" => (
                200,
                vec![("cache-control", "s-maxage=0, max-age=60".into())],
            ),
            "heuristic" => (200, vec![("last-modified", ten_days_ago)]),
            "heuristic-404" => (404, vec![("last-modified", ten_days_ago)]),
            "heuristic-302" => (302, vec![("last-modified", ten_days_ago)]),
            "heuristic-but-explicit" => (
                200,
                vec![
                    ("cache-control", "max-age=0".into()),
                    ("last-modified", ten_days_ago),
                ],
            ),
            "must-revalidate" => (
                200,
                vec![("cache-control", "max-age=60, must-revalidate".into())],
            ),
            "proxy-revalidate" => (
                200,
                vec![("cache-control", "max-age=60, proxy-revalidate".into())],
            ),
            _ => (500, vec![]),
        };
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        respond(status, &headers, format!("call {n}"))
    })
    .await;
    let reused = [
        "expires",
        "max-age-over-expires",
        "heuristic",
        "heuristic-404",
        "must-revalidate",
        "proxy-revalidate",
    ];
    let not_reused = [
        "max-age-0-over-expires",
        "invalid-expires",
        "s-maxage-over-max-age",
        "heuristic-302",
        "heuristic-but-explicit",
    ];
    let mut failures = Vec::new();
    for path in reused.iter().chain(&not_reused) {
        let url = format!("/f/{path}");
        let first = server.get(&url).await;
        assert_ne!(first.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        let second = server.get(&url).await;
        let hit = second.x_cache() == "HIT";
        if hit != reused.contains(path) {
            failures.push(format!("{path}: {}", second.x_cache()));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

/// RFC 9111 §5.2.1: a request's `max-age=0` and `no-cache` revalidate a fresh stored
/// response, `min-fresh` asks for more freshness than it has left; and a stored
/// `no-cache` response is revalidated on every use (§5.2.2.4), a 304 answering with
/// the stored body.
pub(crate) async fn request_directives_and_no_cache_responses_revalidate(manager: CacheManager) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let cc = if seen.uri.ends_with("/no-cache") {
            "no-cache"
        } else {
            "max-age=60"
        };
        if seen.headers.get("if-none-match").map(|v| v.as_bytes()) == Some(b"\"v1\"") {
            return respond(304, &[("cache-control", cc), ("etag", "\"v1\"")], "");
        }
        respond(
            200,
            &[("cache-control", cc), ("etag", "\"v1\"")],
            format!("call {n}"),
        )
    })
    .await;
    assert_eq!(server.get("/r").await.x_cache(), "MISS");
    assert_eq!(server.get("/r").await.x_cache(), "HIT");
    assert_eq!(server.calls(), 1);
    for directive in ["max-age=0", "no-cache", "min-fresh=120"] {
        let before = server.calls();
        let reply = server.get_with("/r", &[("cache-control", directive)]).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "call 1"),
            "{directive}"
        );
        assert_eq!(server.calls(), before + 1, "{directive} reaches the origin");
        let seen = server.seen.lock().last().cloned().unwrap();
        assert_eq!(
            seen.headers.get("if-none-match").map(|v| v.as_bytes()),
            Some(&b"\"v1\""[..]),
            "{directive}: a conditional request"
        );
    }
    // `max-stale` does not make a fresh response go to the origin.
    let reply = server
        .get_with("/r", &[("cache-control", "max-stale=10")])
        .await;
    assert_eq!(reply.x_cache(), "HIT");

    let first = server.get("/no-cache").await;
    assert_eq!(first.x_cache(), "MISS");
    for _ in 0..2 {
        let before = server.calls();
        let reply = server.get("/no-cache").await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, first.body.as_str())
        );
        assert_eq!(server.calls(), before + 1, "revalidated on every use");
        let seen = server.seen.lock().last().cloned().unwrap();
        assert!(seen.headers.contains_key("if-none-match"));
    }
}

/// RFC 9111 §4.3.3-§4.3.4: a 304 to the cache's conditional request updates the
/// stored header fields (but `Content-Length`) and makes the response fresh again; a
/// client's own condition is answered from the refreshed response, a 304 when it holds.
pub(crate) async fn a_304_updates_the_stored_fields_and_answers_the_clients_condition(
    manager: CacheManager,
) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        if seen.headers.contains_key("if-none-match") {
            let version = n.to_string();
            return respond(
                304,
                &[
                    ("cache-control", "max-age=60"),
                    ("etag", "\"v1\""),
                    ("x-version", &version),
                    ("content-length", "0"),
                ],
                Body::empty(),
            );
        }
        // Stale on arrival (its Age is past its max-age), kept for its validator.
        respond(
            200,
            &[
                ("cache-control", "max-age=60"),
                ("age", "100"),
                ("etag", "\"v1\""),
                ("x-version", "1"),
            ],
            "full body",
        )
    })
    .await;
    assert_eq!(server.get("/r").await.x_cache(), "MISS");
    server.stored(1).await;
    // The client's condition holds: the refreshed response answers it with a 304.
    let revalidated = server.get_with("/r", &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(revalidated.status, StatusCode::NOT_MODIFIED);
    assert_eq!(server.calls(), 2);
    let seen = server.seen.lock()[1].clone();
    assert_eq!(
        seen.headers.get("if-none-match").map(|v| v.as_bytes()),
        Some(&b"\"v1\""[..])
    );
    let hit = server.get("/r").await;
    assert_eq!(
        (hit.status, hit.x_cache(), hit.body.as_str()),
        (StatusCode::OK, "HIT", "full body")
    );
    assert_eq!(
        hit.header("x-version"),
        Some("2"),
        "the 304's fields stored"
    );
    assert_eq!(hit.header("content-length"), Some("9"));
    assert!(hit.age().unwrap() < 60, "fresh again: age {:?}", hit.age());
    assert_eq!(server.calls(), 2);
}

/// RFC 9111 §4.4: a successful unsafe request invalidates every stored response of
/// its target (each Vary variant, and HEAD's) and of a same-host `Content-Location`.
pub(crate) async fn invalidation_reaches_every_variant_and_the_content_location(
    manager: CacheManager,
) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| match (
        &seen.method,
        seen.uri.as_str(),
    ) {
        (&Method::GET | &Method::HEAD, _) => respond(
            200,
            &[("cache-control", "max-age=60"), ("vary", "accept-language")],
            format!("get {n}"),
        ),
        (_, "/docs") => respond(200, &[("content-location", "/docs/7")], "updated"),
        // A relative reference, resolved against the target (RFC 9110 §10.2.2).
        (_, "/docs/") => respond(201, &[("location", "./8#new")], "created"),
        _ => respond(204, &[], Body::empty()),
    })
    .await;
    let en = [("accept-language", "en")];
    let de = [("accept-language", "de")];
    let mut stored = 0;
    for path in ["/page", "/docs/7"] {
        for lang in [&en, &de] {
            assert_eq!(server.get_with(path, lang).await.x_cache(), "MISS");
            stored += 1;
            // On a remote store a write runs beside the reply.
            server.stored(stored).await;
            assert_eq!(server.get_with(path, lang).await.x_cache(), "HIT");
        }
    }
    let head = server.send(Method::HEAD, "/page", &en).await;
    assert_eq!(head.x_cache(), "HIT", "a fresh stored GET answers HEAD");

    server.send(Method::DELETE, "/page", &[]).await;
    for lang in [&en, &de] {
        assert_eq!(server.get_with("/page", lang).await.x_cache(), "MISS");
    }
    server.send(Method::PATCH, "/docs", &[]).await;
    for lang in [&en, &de] {
        assert_eq!(
            server.get_with("/docs/7", lang).await.x_cache(),
            "MISS",
            "Content-Location invalidated"
        );
    }
    assert_eq!(server.get_with("/docs/8", &en).await.x_cache(), "MISS");
    server.stored(stored + 5).await;
    assert_eq!(server.get_with("/docs/8", &en).await.x_cache(), "HIT");
    server.send(Method::POST, "/docs/", &[]).await;
    assert_eq!(
        server.get_with("/docs/8", &en).await.x_cache(),
        "MISS",
        "a relative Location invalidated"
    );
}

/// RFC 9111 §1.2.2: a delta-seconds value too large to represent counts as 2^31
/// seconds; huge `max-age`, `Age` or `stale-while-revalidate` values neither make a
/// response stale nor break the cache.
pub(crate) async fn delta_seconds_too_large_count_as_two_to_the_31(manager: CacheManager) {
    let server = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let path = seen.uri.rsplit('/').next().unwrap_or_default().to_string();
        let headers: &[(&str, &str)] = match path.as_str() {
            "max-age" => &[("cache-control", "max-age=99999999999999999999")],
            "u64-max" => &[
                ("cache-control", "max-age=18446744073709551615"),
                ("etag", "\"v1\""),
            ],
            "swr" => &[(
                "cache-control",
                "max-age=60, stale-while-revalidate=18446744073709551615",
            )],
            "age" => &[
                ("cache-control", "max-age=60"),
                ("age", "18446744073709551615"),
                ("etag", "\"v1\""),
            ],
            _ => &[],
        };
        respond(200, headers, format!("call {n}"))
    })
    .await;
    for path in ["u64-max", "swr", "max-age"] {
        let url = format!("/d/{path}");
        let first = server.get(&url).await;
        assert_eq!(first.x_cache(), "MISS", "{path}");
        let hit = server.get(&url).await;
        assert_eq!((hit.x_cache(), &hit.body), ("HIT", &first.body), "{path}");
    }
    let aged = server.get("/d/age").await;
    assert_eq!((aged.status, aged.x_cache()), (StatusCode::OK, "MISS"));
    let again = server.get("/d/age").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_ne!(again.x_cache(), "HIT", "older than its max-age");
}

/// The freshness left that a response's `Cache-Status` gives (`ttl=`), in seconds.
fn cache_status_ttl(reply: &crate::support::Reply) -> Option<i64> {
    reply
        .header("cache-status")?
        .split("ttl=")
        .nth(1)?
        .split(';')
        .next()?
        .trim()
        .parse()
        .ok()
}

/// RFC 9111 §4.2.3: the time the origin took to answer (`response_delay`) adds to the
/// `Age` it sent, for a response stored from a miss and for one a 304 refreshes. The
/// origin here takes 2 s and says `Age: 5`: with `max-age=6` the response is stale on
/// arrival (not stored: the next request goes to the origin), with `max-age=60` its
/// hits say an `Age` of 7 or more.
pub(crate) async fn the_response_delay_adds_to_the_age(manager: CacheManager) {
    const SLOW: Duration = Duration::from_secs(2);
    let server = serve(cache_on(&manager, |b| b).await, SLOW, |seen, n| {
        let body = format!("call {n}");
        match seen.uri.as_str() {
            "/stale" => respond(200, &[("cache-control", "max-age=6"), ("age", "5")], body),
            "/revalidated" if seen.headers.contains_key("if-none-match") => respond(
                304,
                &[
                    ("cache-control", "max-age=60"),
                    ("age", "5"),
                    ("etag", "\"v1\""),
                ],
                Body::empty(),
            ),
            // Stale at once, kept for its validator.
            "/revalidated" => respond(
                200,
                &[("cache-control", "max-age=0"), ("etag", "\"v1\"")],
                body,
            ),
            _ => respond(200, &[("cache-control", "max-age=60"), ("age", "5")], body),
        }
    })
    .await;
    // The three first requests side by side: one slow origin round, not three.
    let (stale, aged, revalidated) = tokio::join!(
        server.get("/stale"),
        server.get("/aged"),
        server.get("/revalidated")
    );
    assert_eq!(
        (stale.x_cache(), aged.x_cache(), revalidated.x_cache()),
        ("MISS", "MISS", "MISS")
    );
    let status = stale.header("cache-status").unwrap_or_default();
    assert!(status.contains("detail=stale-on-arrival"), "{status}");
    // 60 s of freshness less an age of 5 s plus at least 2 s of delay.
    assert!(cache_status_ttl(&aged) <= Some(53), "{:?}", aged.headers);
    server.stored(2).await;

    let (stale_again, refreshed) = tokio::join!(server.get("/stale"), server.get("/revalidated"));
    assert_eq!(
        stale_again.x_cache(),
        "MISS",
        "stale on arrival: asked again"
    );
    assert_ne!(stale_again.body, stale.body);
    assert_eq!(
        (refreshed.x_cache(), refreshed.body.as_str()),
        ("HIT", revalidated.body.as_str()),
        "a 304 refreshed it"
    );
    let age = refreshed.age().unwrap_or_default();
    assert!((7..60).contains(&age), "the 304's Age and delay: {age}");

    let hit = server.get("/aged").await;
    assert_eq!((hit.x_cache(), &hit.body), ("HIT", &aged.body));
    let age = hit.age().unwrap_or_default();
    assert!((7..60).contains(&age), "the origin's Age and delay: {age}");
    assert_eq!(server.calls(), 5);
}

/// RFC 9111 §4.3.5: a `HEAD` that reaches the origin and gets a 200 freshens the stored
/// `GET` it could have been answered by: the same validators and length update its
/// fields and start its freshness over (the next `GET` is a hit with the stored body),
/// another `ETag` invalidates it (the next `GET` is a miss, not the stale response).
pub(crate) async fn a_head_from_the_origin_updates_or_invalidates_the_stored_get(
    manager: CacheManager,
) {
    // Stale at once, but usable while it is refreshed: without the HEAD's word the
    // next GET would be answered with it.
    const STALE: &str = "max-age=0, stale-while-revalidate=60";
    // The representation changes after the first GET.
    let changed = serve(cache_on(&manager, |b| b).await, NO_DELAY, |_, n| {
        let etag = if n == 1 { "\"v1\"" } else { "\"v2\"" };
        respond(
            200,
            &[("cache-control", STALE), ("etag", etag)],
            format!("call {n}"),
        )
    })
    .await;
    assert_eq!(changed.get("/p").await.x_cache(), "MISS");
    changed.stored(1).await;
    let head = changed.send(Method::HEAD, "/p", &[]).await;
    assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "MISS"));
    let fetched = changed.get("/p").await;
    assert_eq!(
        (fetched.x_cache(), fetched.body.as_str()),
        ("MISS", "call 3"),
        "{:?}",
        fetched.headers
    );
    assert!(
        !changed.seen.lock()[2].headers.contains_key("if-none-match"),
        "a miss, not a revalidation of the invalidated response"
    );
    assert_eq!(changed.calls(), 3);

    // The same representation, with new freshness.
    let same = serve(cache_on(&manager, |b| b).await, NO_DELAY, |seen, n| {
        let cc = if seen.method == Method::HEAD {
            "max-age=60"
        } else {
            STALE
        };
        respond(
            200,
            &[
                ("cache-control", cc),
                ("etag", "\"v1\""),
                ("x-seen", &n.to_string()),
            ],
            format!("call {n}"),
        )
    })
    .await;
    assert_eq!(same.get("/p").await.x_cache(), "MISS");
    same.stored(1).await;
    let head = same.send(Method::HEAD, "/p", &[]).await;
    assert_eq!((head.status, head.x_cache()), (StatusCode::OK, "MISS"));
    assert_eq!(head.header("content-length"), Some("6"));
    // The HEAD's own response, and the GET it updated.
    same.stored(3).await;
    let hit = same.get("/p").await;
    assert_eq!(
        (hit.x_cache(), hit.body.as_str()),
        ("HIT", "call 1"),
        "{:?}",
        hit.headers
    );
    assert_eq!(hit.header("x-seen"), Some("2"), "the HEAD's fields");
    assert_eq!(hit.header("content-length"), Some("6"));
    assert!(cache_status_ttl(&hit) >= Some(59), "{:?}", hit.headers);
    assert_eq!(same.calls(), 2);
}

/// One test per scenario, each on a manager from `$make().await` (called once per test,
/// inside the test's runtime: a remote store's connections live on that runtime).
#[macro_export]
macro_rules! rfc9111_suite {
    ($make:path) => {
        $crate::rfc9111_suite!(@tests $make;
            a_fresh_response_is_served_from_cache_with_age,
            the_default_ttl_applies_only_when_the_origin_is_silent,
            route_overrides_force_a_ttl_or_bypass,
            no_store_private_and_set_cookie_are_never_stored,
            allowed_set_cookie_responses_are_stored_without_the_cookie,
            authorized_requests_are_stored_only_when_the_response_allows_it,
            vary_keeps_one_response_per_header_value_and_star_is_never_served,
            conditional_requests_get_304_from_the_cache,
            a_stale_entry_is_revalidated_and_a_304_refreshes_it,
            stale_while_revalidate_serves_stale_and_refreshes_once_in_the_background,
            stale_if_error_serves_stale_when_the_origin_fails,
            unsafe_methods_invalidate_the_target_and_same_host_locations,
            purge_by_tag_url_and_key_and_tags_never_leave,
            bodies_over_the_limit_stream_through_uncached,
            the_query_is_normalized_and_ignored_parameters_never_reach_the_origin,
            a_hundred_concurrent_misses_call_the_origin_once,
            unkeyed_forwarding_headers_cannot_poison_what_others_get,
            the_host_is_part_of_the_key,
            head_requests_are_cached_apart_and_every_response_is_marked,
            a_body_that_fails_half_way_is_never_presented_whole_nor_stored,
            s_maxage_forbids_serving_stale,
            collapsed_requests_get_only_a_response_reusable_for_them,
            connection_named_and_hop_by_hop_headers_are_never_stored,
            vary_matching_normalizes_equivalent_header_values,
            if_modified_since_without_last_modified_is_judged_by_date,
            only_if_cached_with_nothing_usable_answers_504,
            a_fresh_stored_get_answers_head,
            every_hit_carries_its_own_age_and_freshness,
            hits_on_urls_of_every_length_get_their_own_responses,
            cache_status_says_what_happened_and_why_nothing_was_stored,
            requests_with_cookies_bypass_unless_the_route_keys_or_ignores_them,
            a_route_chooses_which_query_parameters_are_keyed,
            writes_invalidate_declared_prefixes_and_paths_purge_without_urls,
            a_full_prefix_list_evicts_rather_than_forgets,
            response_statistics_count_requests_and_store_statistics_count_store_reads,
            a_route_layer_gives_its_route_its_own_freshness,
            route_layers_under_the_router_layer_hand_their_settings_up,
            the_purge_router_and_the_stats_route_work_over_http,
            a_date_in_the_past_counts_toward_age,
            cache_directives_are_case_insensitive,
            must_understand_overrides_no_store_for_understood_statuses,
            freshness_comes_from_s_maxage_max_age_expires_then_last_modified,
            request_directives_and_no_cache_responses_revalidate,
            a_304_updates_the_stored_fields_and_answers_the_clients_condition,
            invalidation_reaches_every_variant_and_the_content_location,
            delta_seconds_too_large_count_as_two_to_the_31,
            the_response_delay_adds_to_the_age,
            a_head_from_the_origin_updates_or_invalidates_the_stored_get,
        );
    };
    (@tests $make:path; $($name:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::scenarios::$name($make().await).await;
            }
        )*
    };
}
