//! Joined deployments (`redis-joined://`) beyond the conformance suite: where
//! partitions go, URL errors, the balance report, merged events, and a member that is
//! down. Real servers: two standalone servers and a 3-master cluster (the binary's own).

use crate::common;

use common::unique;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use partcache::partition::{DEFAULT_PARTITIONS, HashingPolicy};
use partcache::{Cache, CacheManager, Error, EventFilter, EventKind, NearCache};
use partcache_integration_tests::{Flavor, RedisCluster, RedisServer, ServerOptions};
use partcache_redis::joined::{self, JoinedStore, Rendezvous};

const DEADLINE: Duration = Duration::from_secs(10);

/// One 3-master cluster without replicas for this binary (the conformance modules run
/// the 3 + 3 one).
fn cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| RedisCluster::start(Flavor::Redis, 3, 0).expect("start redis cluster"))
}

/// The member URLs: two standalone servers, then the cluster.
fn member_urls() -> Vec<String> {
    tokio::task::block_in_place(|| {
        vec![
            common::standalone().url(),
            common::second_standalone().url(),
            cluster().seed_url(),
        ]
    })
}

/// The merged stream keeps each key's events in the order the member's server made
/// them, though the reaper's expirations and the replacing puts race
/// ([`common::assert_each_keys_events_in_server_order`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_key_arrive_in_the_order_the_server_made_them() {
    let members = member_urls()
        .into_iter()
        .map(|m| format!("{m}?response_timeout=10s"));
    common::assert_each_keys_events_in_server_order(&joined::build_url(members)).await;
}

/// Polls `condition` until it holds, failing after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < DEADLINE,
            "not within {DEADLINE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn adding_a_fourth_member_moves_between_15_and_35_percent_of_231_partitions() {
    let three = joined::parse(&joined::build_url([
        "redis://10.0.0.1:6379",
        "redis://10.0.0.2:6379",
        "redis-cluster://10.0.1.1:7000,10.0.1.2:7000,10.0.1.3:7000",
    ]))
    .unwrap();
    let four = joined::parse(&joined::build_url([
        "redis://10.0.0.1:6379",
        "redis://10.0.0.2:6379",
        "redis-cluster://10.0.1.1:7000,10.0.1.2:7000,10.0.1.3:7000",
        "redis://10.0.0.4:6379",
    ]))
    .unwrap();
    let ids = |u: &joined::JoinedUrl| u.members.iter().map(|m| m.id.clone()).collect::<Vec<_>>();
    let before = Rendezvous::new(ids(&three)).unwrap();
    let after = Rendezvous::new(ids(&four)).unwrap();
    for cache in ["users", "sessions", "http", "orm:queries", "conf-evict-1"] {
        let old = before.assignment(cache, DEFAULT_PARTITIONS);
        let new = after.assignment(cache, DEFAULT_PARTITIONS);
        let moved: Vec<u16> = (0..DEFAULT_PARTITIONS)
            .filter(|&p| before.ids()[old[usize::from(p)]] != after.ids()[new[usize::from(p)]])
            .collect();
        let share = moved.len() as f64 / f64::from(DEFAULT_PARTITIONS);
        eprintln!(
            "cache `{cache}`: {} of 231 partitions moved ({share:.3})",
            moved.len()
        );
        assert!(
            (0.15..=0.35).contains(&share),
            "cache `{cache}`: {} of 231 partitions moved ({share:.3})",
            moved.len()
        );
        // Rendezvous hashing moves partitions only to the new member.
        for p in moved {
            assert_eq!(
                new[usize::from(p)],
                3,
                "cache `{cache}`: partition {p} moved between old members"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_land_on_the_member_the_rendezvous_function_names() {
    let urls = member_urls();
    let joined_url = joined::build_url(&urls);
    let name = unique("placement");
    let cache: Cache<String, String> = common::manager(&joined_url)
        .cache(&name)
        .build()
        .await
        .unwrap();
    let keys: Vec<String> = (0..300).map(|i| format!("key-{i}")).collect();
    cache
        .put_all(keys.iter().map(|k| (k.clone(), format!("v-{k}"))))
        .await
        .unwrap();

    let parsed = joined::parse(&joined_url).unwrap();
    let rendezvous = Rendezvous::new(parsed.members.iter().map(|m| m.id.clone())).unwrap();
    let map = cache
        .partition_map()
        .expect("a remote cache has a partition map");
    let owner_of = |key: &String| {
        let partition = map.partition_of(&HashingPolicy::Standard, key).unwrap();
        (partition, rendezvous.owner(&name, partition))
    };
    // The store routes by the same function.
    let store = cache
        .raw_store()
        .unwrap()
        .as_any()
        .downcast_ref::<JoinedStore>()
        .unwrap();
    for key in &keys {
        let (partition, owner) = owner_of(key);
        assert_eq!(
            store.member_of(partition),
            Some(rendezvous.ids()[owner].as_str())
        );
    }
    // Each member, opened on its own, holds exactly the keys the function gives it.
    let mut held = Vec::new();
    for (m, url) in urls.iter().enumerate() {
        let direct: Cache<String, String> =
            common::manager(url).cache(&name).build().await.unwrap();
        let values = direct.get_all(&keys).await.unwrap();
        for (key, value) in keys.iter().zip(&values) {
            let (_, owner) = owner_of(key);
            assert_eq!(
                value.is_some(),
                owner == m,
                "`{key}` (owner {}) on member {}",
                rendezvous.ids()[owner],
                rendezvous.ids()[m]
            );
        }
        held.push(values.iter().flatten().count());
    }
    assert_eq!(held.iter().sum::<usize>(), keys.len());
    assert!(held.iter().all(|&n| n > 0), "{held:?}");
    assert_eq!(cache.len().await.unwrap(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_errors_are_config_errors_naming_the_problem() {
    partcache_redis::install();
    let config_error = |url: &str| match CacheManager::from_url(url) {
        Err(Error::Config(message)) => message,
        Err(other) => panic!("{url}: expected a config error, got {other}"),
        Ok(_) => panic!("{url}: expected a config error, got a manager"),
    };
    let none = config_error("redis-joined://");
    assert!(none.contains("needs at least one `member="), "{none}");
    let bad = config_error(&joined::build_url([
        "redis://127.0.0.1:6379",
        "redis://127.0.0.1:port",
    ]));
    assert!(
        bad.contains("member 2") && bad.contains("127.0.0.1:port"),
        "{bad}"
    );
    let nested = config_error(&joined::build_url([
        "redis://127.0.0.1:6379",
        &joined::build_url(["redis://127.0.0.1:6380"]),
    ]));
    assert!(
        nested.contains("member 2") && nested.contains("itself a joined URL"),
        "{nested}"
    );
    let scheme = config_error("redis-joined://?member=memcached://127.0.0.1:11211");
    assert!(
        scheme.contains("member 1") && scheme.contains("memcached"),
        "{scheme}"
    );
    // Parsing does not connect: a valid URL of servers that do not exist is fine, and
    // `valkey-joined` is the same scheme.
    let manager = CacheManager::from_url(
        "valkey-joined://?member=redis://127.0.0.1:1&member=redis://127.0.0.1:2",
    )
    .unwrap();
    assert!(!manager.is_local());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn balance_report_lists_every_members_masters() {
    let urls = member_urls();
    let joined_url = joined::build_url(&urls);
    let name = unique("balance");
    let cache: Cache<String, String> = common::manager(&joined_url)
        .cache(&name)
        .build()
        .await
        .unwrap();
    cache
        .put_all((0..500).map(|i| (format!("k{i}"), "x".repeat(100))))
        .await
        .unwrap();
    let report = cache.balance_report().await.unwrap();
    let ids: Vec<String> = joined::parse(&joined_url)
        .unwrap()
        .members
        .into_iter()
        .map(|m| m.id)
        .collect();
    let standalone = |i: usize| {
        tokio::task::block_in_place(|| match i {
            0 => common::standalone().addr(),
            _ => common::second_standalone().addr(),
        })
    };
    let mut expected: Vec<String> = vec![
        format!("{} {}", ids[0], standalone(0)),
        format!("{} {}", ids[1], standalone(1)),
    ];
    let masters = tokio::task::block_in_place(|| cluster().masters());
    expected.extend(masters.iter().map(|m| format!("{} {}", ids[2], m.addr)));
    expected.sort();
    let rows: Vec<&str> = report.masters.iter().map(|m| m.master.as_str()).collect();
    assert_eq!(rows, expected, "{report}");
    assert_eq!(report.partitions, DEFAULT_PARTITIONS);
    assert_eq!(
        report
            .masters
            .iter()
            .map(|m| u32::from(m.partitions))
            .sum::<u32>(),
        231
    );
    assert_eq!(report.entries(), 500, "{report}");
    assert!(report.bytes() >= 500 * 100, "{report}");
    // Each member's rows hold the partitions the rendezvous function gives it, and
    // every master holds some.
    let rendezvous = Rendezvous::new(ids.clone()).unwrap();
    let assignment = rendezvous.assignment(&name, DEFAULT_PARTITIONS);
    for (m, id) in ids.iter().enumerate() {
        let owned = assignment.iter().filter(|&&o| o == m).count();
        let reported: usize = report
            .masters
            .iter()
            .filter(|row| row.master.starts_with(&format!("{id} ")))
            .map(|row| usize::from(row.partitions))
            .sum();
        assert_eq!(reported, owned, "member {id}\n{report}");
    }
    assert!(
        report
            .masters
            .iter()
            .all(|m| m.partitions > 0 && m.entries > 0),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_see_the_events_of_every_member_from_other_processes() {
    let joined_url = joined::build_url(member_urls());
    let name = unique("events");
    let listening: Cache<String, String> = common::manager(&joined_url)
        .cache(&name)
        .build()
        .await
        .unwrap();
    let mut rx = listening
        .listen(EventFilter::kinds([EventKind::Created]))
        .await
        .unwrap();
    // Another manager stands for another process.
    let writer: Cache<String, String> = common::manager(&joined_url)
        .cache(&name)
        .build()
        .await
        .unwrap();
    let store = writer
        .raw_store()
        .unwrap()
        .as_any()
        .downcast_ref::<JoinedStore>()
        .unwrap();
    let map = writer.partition_map().unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("e{i}")).collect();
    let members: std::collections::BTreeSet<&str> = keys
        .iter()
        .filter_map(|k| store.member_of(map.partition_of(&HashingPolicy::Standard, k).ok()?))
        .collect();
    assert_eq!(
        members.len(),
        3,
        "the keys should cover every member: {members:?}"
    );
    for key in &keys {
        writer.put(key.clone(), "v".to_string()).await.unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < keys.len() {
        let event = tokio::time::timeout(DEADLINE, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {} events within {DEADLINE:?}",
                    seen.len(),
                    keys.len()
                )
            })
            .unwrap();
        assert!(seen.insert(event.key.clone()), "{} seen twice", event.key);
    }
}

/// A key of `cache` whose partition lives on member `member`.
fn key_on<V: partcache::CacheValue>(cache: &Cache<String, V>, member: &str) -> String {
    let store = cache
        .raw_store()
        .and_then(|raw| raw.as_any().downcast_ref::<JoinedStore>())
        .expect("a joined store");
    let map = cache.partition_map().expect("a partition map");
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| {
            store.member_of(map.partition_of(&HashingPolicy::Standard, k).unwrap()) == Some(member)
        })
        .expect("some key lands on every member")
}

async fn value(cache: &Cache<String, String>, key: &str) -> Option<String> {
    cache
        .get(&key.to_string())
        .await
        .unwrap()
        .map(|v| (*v).clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_is_down_fails_its_partitions_only_and_recovers() {
    let healthy = tokio::task::block_in_place(|| common::standalone().url());
    let flaky = tokio::task::block_in_place(|| {
        RedisServer::start(Flavor::Redis, ServerOptions::default()).expect("start redis-server")
    });
    let joined_url = joined::build_url([healthy, flaky.url()]);
    let ids: Vec<String> = joined::parse(&joined_url)
        .unwrap()
        .members
        .into_iter()
        .map(|m| m.id)
        .collect();
    let (healthy_id, flaky_id) = (&ids[0], &ids[1]);
    let manager = common::manager(&joined_url);
    let cache: Cache<String, String> = manager.cache(&unique("down")).build().await.unwrap();
    let (good_key, flaky_key) = (key_on(&cache, healthy_id), key_on(&cache, flaky_id));
    cache.put(good_key.clone(), "1".to_string()).await.unwrap();
    cache.put(flaky_key.clone(), "1".to_string()).await.unwrap();

    tokio::task::block_in_place(|| assert!(flaky.kill()));
    // The healthy member's partitions keep working.
    cache.put(good_key.clone(), "2".to_string()).await.unwrap();
    assert_eq!(value(&cache, &good_key).await.as_deref(), Some("2"));
    // The down member's fail with a typed error that names it.
    match cache.put(flaky_key.clone(), "2".to_string()).await {
        Err(Error::Unavailable(message)) => assert!(message.contains(flaky_id), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // A many-key call that needs it fails as a whole.
    let both = cache.get_all(&[good_key.clone(), flaky_key.clone()]).await;
    assert!(matches!(both, Err(ref e) if e.is_transient()), "{both:?}");
    // A cache built while the member is down builds, and serves the other member.
    let later: Cache<String, String> = manager.cache(&unique("down-later")).build().await.unwrap();
    let (later_good, later_flaky) = (key_on(&later, healthy_id), key_on(&later, flaky_id));
    later
        .put(later_good.clone(), "1".to_string())
        .await
        .unwrap();
    assert_eq!(value(&later, &later_good).await.as_deref(), Some("1"));
    match later.put(later_flaky.clone(), "1".to_string()).await {
        Err(Error::Unavailable(message)) => assert!(message.contains(flaky_id), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }

    // Once it is back, both caches use it again (its data is gone: no persistence).
    tokio::task::block_in_place(|| flaky.restart().unwrap());
    for (c, key) in [(&cache, &flaky_key), (&later, &later_flaky)] {
        eventually(
            "the member that came back serves its partitions",
            || async { c.put(key.clone(), "3".to_string()).await.is_ok() },
        )
        .await;
        assert_eq!(value(c, key).await.as_deref(), Some("3"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_near_cache_in_front_of_a_joined_store_follows_writes_on_every_member() {
    // The staleness bound, and slack for scheduling on 2 shared cores.
    const STALENESS: Duration = Duration::from_millis(600);
    const MARGIN: Duration = Duration::from_millis(1500);
    let joined_url = joined::build_url(member_urls());
    let ids: Vec<String> = joined::parse(&joined_url)
        .unwrap()
        .members
        .into_iter()
        .map(|m| m.id)
        .collect();
    let name = unique("near");
    // Two managers stand for two processes.
    let writer: Cache<String, u64> = common::manager(&joined_url)
        .cache(&name)
        .build()
        .await
        .unwrap();
    // History before the reader opens: the holding member's feeds have moved on, the
    // other members' feeds of those partitions have not.
    let keys: Vec<String> = ids.iter().map(|id| key_on(&writer, id)).collect();
    for round in 0..5u64 {
        for key in &keys {
            writer.put(key.clone(), 100 + round).await.unwrap();
        }
    }
    let reader: Cache<String, u64> = common::manager(&joined_url)
        .cache(&name)
        .near_cache(NearCache::max_entries(1000).max_staleness(STALENESS))
        .build()
        .await
        .unwrap();
    for (id, key) in ids.iter().zip(keys) {
        for round in 0..3u64 {
            writer.put(key.clone(), round).await.unwrap();
            let written = Instant::now();
            // The reader sees the write (its local copy of the previous value was
            // dropped by the member's feed)...
            loop {
                let got = reader.get(&key).await.unwrap().map(|v| *v);
                if got == Some(round) {
                    break;
                }
                assert!(
                    written.elapsed() < STALENESS + MARGIN,
                    "`{key}` on member {id} still reads {got:?}, not {round}, {:?} after the write",
                    written.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // ... and then serves it locally: the member's feed is live for it.
            let before = reader.stats().near_hits;
            eventually(
                &format!("`{key}` on member {id} is served locally"),
                || async {
                    reader.get(&key).await.unwrap();
                    reader.stats().near_hits > before
                },
            )
            .await;
        }
    }
}
