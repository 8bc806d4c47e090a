//! The router against a scripted fake cluster (`fake.rs`): what the nodes saw, one line
//! per round trip, and what the caller got, for each answer a cluster gives while it
//! changes (redirections, busy slots, failovers, missing functions, silence, broken
//! connections). Real clusters exercise the same paths in `tests/it/cluster.rs`,
//! `tests/it/topology.rs` and `tests/it/timeouts.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use partcache::Error;
use partcache::store::raw::started_at;
use redis::Value;

use super::fake::{Answer, FakeCluster, error, reply};
use super::{Pools, Request, Router};
use crate::scripts::scripts;

const A: &str = "10.0.0.1:7001";
const B: &str = "10.0.0.2:7002";
const C: &str = "10.0.0.3:7003";

/// The response timeout of the router and of the fake's connections (one setting in
/// production: the URL's `response_timeout`).
const TIMEOUT: Duration = Duration::from_millis(300);

/// Slack for a loaded machine (a CI runner with two cores) when a test checks that a
/// call ended within its budget: much less than a second timeout would add.
const SLACK: Duration = Duration::from_millis(600);

/// A slot of each master.
const SLOT_A: u16 = 100;
const SLOT_B: u16 = 6000;

fn cluster(script: impl Fn(&str, &str) -> Answer + Send + Sync + 'static) -> FakeCluster {
    FakeCluster::new(
        &[(0, 5460, A), (5461, 10922, B), (10923, 16383, C)],
        TIMEOUT,
        script,
    )
}

/// A cluster that serves every command until the returned switch is set; from then
/// on a command `changed` has an answer for gets that answer instead.
fn cluster_switched(
    changed: impl Fn(&str, &str) -> Option<Answer> + Send + Sync + 'static,
) -> (FakeCluster, Arc<AtomicBool>) {
    let switch = Arc::new(AtomicBool::new(false));
    let fake = cluster({
        let switch = switch.clone();
        move |addr, cmd| match switch.load(Ordering::SeqCst) {
            true => changed(addr, cmd).unwrap_or_else(|| served(addr, cmd)),
            false => served(addr, cmd),
        }
    });
    (fake, switch)
}

/// A router for the fake cluster, with `A` as its seed.
fn router() -> Router {
    Router::cluster(vec![A.to_string()], TIMEOUT, false, Duration::from_secs(1))
}

/// The node's answer when it serves a command: its address and the command's last
/// argument (the key).
fn served(addr: &str, cmd: &str) -> Answer {
    reply(&served_text(addr, cmd))
}

fn served_text(addr: &str, cmd: &str) -> String {
    format!("{addr} {}", cmd.rsplit(' ').next().unwrap_or(""))
}

fn bulk(text: &str) -> Value {
    Value::BulkString(text.as_bytes().to_vec())
}

/// An `FCALL` of the key `key` in `slot`.
fn fcall(slot: u16, key: &str) -> Request {
    let mut cmd = redis::cmd("FCALL");
    cmd.arg("get").arg(1).arg(key);
    Request::new(slot, cmd)
}

async fn run(
    router: &Router,
    fake: &FakeCluster,
    requests: Vec<Request>,
) -> partcache::Result<Vec<Value>> {
    let pools = Pools {
        primary: fake,
        replicas: None,
    };
    router.execute(pools, requests).await
}

fn lines(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| l.to_string()).collect()
}

#[tokio::test]
async fn the_first_call_reads_the_slot_map_and_later_calls_go_straight_to_the_master() {
    let fake = cluster(served);
    let router = router();
    let got = run(&router, &fake, vec![fcall(SLOT_B, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.2:7002 k")]));
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: (connect)",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.2:7002: (connect)",
            "10.0.0.2:7002: FCALL get 1 k",
        ])
    );
    let got = run(&router, &fake, vec![fcall(SLOT_B, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.2:7002 k")]));
    assert_eq!(fake.take_log(), lines(&["10.0.0.2:7002: FCALL get 1 k"]));
}

#[tokio::test]
async fn requests_for_one_node_go_in_one_pipeline_and_replies_keep_the_callers_order() {
    let fake = cluster(served);
    let router = router();
    let got = run(
        &router,
        &fake,
        vec![
            fcall(SLOT_A, "a"),
            fcall(SLOT_B, "b"),
            fcall(SLOT_A + 1, "c"),
        ],
    )
    .await;
    assert_eq!(
        got.ok(),
        Some(vec![
            bulk("10.0.0.1:7001 a"),
            bulk("10.0.0.2:7002 b"),
            bulk("10.0.0.1:7001 c"),
        ])
    );
    let mut log = fake.take_log();
    // The nodes are asked concurrently: in either order.
    log[2..].sort();
    assert_eq!(
        log,
        lines(&[
            "10.0.0.1:7001: (connect)",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.1:7001: FCALL get 1 a | FCALL get 1 c",
            "10.0.0.2:7002: (connect)",
            "10.0.0.2:7002: FCALL get 1 b",
        ])
    );
}

#[tokio::test]
async fn moved_refreshes_the_slot_map_and_retries_on_the_new_master() {
    let (fake, moved) =
        cluster_switched(|addr, _| (addr == A).then(|| error("MOVED 100 10.0.0.2:7002")));
    let router = router();
    assert!(run(&router, &fake, vec![fcall(SLOT_A, "k")]).await.is_ok());
    fake.take_log();
    // The slot moves to B (a resharding).
    fake.assign(0, 5460, B);
    moved.store(true, Ordering::SeqCst);
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.2:7002 k")]));
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: FCALL get 1 k",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.2:7002: (connect)",
            "10.0.0.2:7002: FCALL get 1 k",
        ])
    );
    // The new map holds: straight to B.
    assert!(run(&router, &fake, vec![fcall(SLOT_A, "k")]).await.is_ok());
    assert_eq!(fake.take_log(), lines(&["10.0.0.2:7002: FCALL get 1 k"]));
}

#[tokio::test]
async fn ask_retries_on_the_named_node_after_asking_and_keeps_the_slot_map() {
    // A slot being migrated from A to B: A sends the keys it no longer has to B.
    let fake = cluster(|addr, cmd| {
        if addr == A {
            error("ASK 100 10.0.0.2:7002")
        } else {
            served(addr, cmd)
        }
    });
    let router = router();
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.2:7002 k")]));
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: (connect)",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.1:7001: FCALL get 1 k",
            "10.0.0.2:7002: (connect)",
            "10.0.0.2:7002: ASKING | FCALL get 1 k",
        ])
    );
    // The map still says A (an `ASK` is for one command): the next call asks A first,
    // and is not read again. (The fast path's redirection is not reused: the rounds
    // ask A once more.)
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.2:7002 k")]));
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: FCALL get 1 k",
            "10.0.0.1:7001: FCALL get 1 k",
            "10.0.0.2:7002: ASKING | FCALL get 1 k",
        ])
    );
}

#[tokio::test]
async fn tryagain_is_retried_after_growing_pauses_until_the_slot_settles() {
    let busy = Arc::new(AtomicUsize::new(0));
    let fake = cluster({
        let busy = busy.clone();
        move |addr, cmd| {
            if busy.fetch_add(1, Ordering::SeqCst) < 2 {
                error("TRYAGAIN Multiple keys request during rehashing of slot")
            } else {
                served(addr, cmd)
            }
        }
    });
    let router = router();
    let start = Instant::now();
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.1:7001 k")]));
    // Pauses of 5 and 10 ms, each followed by a fresh slot map.
    assert!(start.elapsed() >= Duration::from_millis(15));
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: (connect)",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.1:7001: FCALL get 1 k",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.1:7001: FCALL get 1 k",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.1:7001: FCALL get 1 k",
        ])
    );
}

/// Runs one call against a node that always answers `answer`: the call must end in a
/// timeout within its budget, having asked the node a bounded number of times, each
/// after a fresh slot map, and without counting a timeout against the node (it
/// answered).
async fn a_state_that_never_passes_ends_in_a_timeout(answer: &'static str) {
    let fake = cluster(move |_, _| error(answer));
    let router = router();
    let start = Instant::now();
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    let elapsed = start.elapsed();
    assert!(
        matches!(got, Err(Error::Timeout(t)) if t == TIMEOUT),
        "{got:?}"
    );
    assert!(
        elapsed >= TIMEOUT && elapsed < TIMEOUT + SLACK,
        "{elapsed:?}"
    );
    let log = fake.take_log();
    let calls = log.iter().filter(|l| l.ends_with("FCALL get 1 k")).count();
    // Pauses of 5, 10, 20, 40, 80, then 100 ms: 6 or 7 tries fit in 300 ms (fewer on
    // a loaded machine, whose pauses run long).
    assert!((2..=8).contains(&calls), "{calls} tries: {log:?}");
    for pair in log[1..].chunks(2) {
        assert_eq!(pair[0], "10.0.0.1:7001: CLUSTER SLOTS", "{log:?}");
    }
    assert!(fake.router_timeouts().is_empty());
}

#[tokio::test]
async fn tryagain_that_never_settles_ends_in_a_timeout_within_the_budget() {
    a_state_that_never_passes_ends_in_a_timeout(
        "TRYAGAIN Multiple keys request during rehashing of slot",
    )
    .await;
}

#[tokio::test]
async fn clusterdown_is_retried_on_fresh_slot_maps_then_ends_in_a_timeout() {
    a_state_that_never_passes_ends_in_a_timeout("CLUSTERDOWN The cluster is down").await;
}

#[tokio::test]
async fn clusterdown_that_passes_lets_the_call_succeed() {
    let down = Arc::new(AtomicUsize::new(0));
    let fake = cluster({
        let down = down.clone();
        move |addr, cmd| {
            if down.fetch_add(1, Ordering::SeqCst) == 0 {
                error("CLUSTERDOWN The cluster is down")
            } else {
                served(addr, cmd)
            }
        }
    });
    let got = run(&router(), &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.1:7001 k")]));
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: (connect)",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.1:7001: FCALL get 1 k",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.1:7001: FCALL get 1 k",
        ])
    );
}

#[tokio::test]
async fn readonly_from_a_demoted_master_refreshes_the_slot_map_and_retries_on_the_new_master() {
    let (fake, demoted) = cluster_switched(|addr, _| {
        (addr == A).then(|| error("READONLY You can't write against a read only replica."))
    });
    let router = router();
    assert!(run(&router, &fake, vec![fcall(SLOT_A, "k")]).await.is_ok());
    fake.take_log();
    // A failover: B (A's replica) takes A's slots; A is a replica now.
    fake.assign(0, 5460, B);
    demoted.store(true, Ordering::SeqCst);
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.2:7002 k")]));
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: FCALL get 1 k",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.2:7002: (connect)",
            "10.0.0.2:7002: FCALL get 1 k",
        ])
    );
}

#[tokio::test]
async fn readonly_while_the_failover_is_not_yet_known_waits_for_it() {
    // A was demoted, but the first slot map read after still names A (the cluster
    // has not agreed yet): the router pauses and reads it again.
    let reads = Arc::new(AtomicUsize::new(0));
    let fake = Arc::new(cluster(|addr, cmd| {
        if addr == A {
            error("READONLY You can't write against a read only replica.")
        } else {
            served(addr, cmd)
        }
    }));
    let router = router();
    let promote = {
        let (fake, reads) = (fake.clone(), reads.clone());
        async move {
            // After the router's first look at the map, B is promoted.
            let deadline = Instant::now() + Duration::from_secs(5);
            while !fake.log_contains("10.0.0.1:7001: FCALL get 1 k") {
                assert!(Instant::now() < deadline, "the router never asked A");
                tokio::task::yield_now().await;
            }
            reads.fetch_add(1, Ordering::SeqCst);
            fake.assign(0, 5460, B);
        }
    };
    let (got, ()) = tokio::join!(run(&router, &fake, vec![fcall(SLOT_A, "k")]), promote);
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.2:7002 k")]));
    assert_eq!(reads.load(Ordering::SeqCst), 1);
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: (connect)",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.1:7001: FCALL get 1 k",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.2:7002: (connect)",
            "10.0.0.2:7002: FCALL get 1 k",
        ])
    );
}

#[tokio::test]
async fn readonly_from_a_standalone_server_is_the_callers_reply_without_a_retry() {
    let fake = cluster(|_, _| error("READONLY You can't write against a read only replica."));
    let router = Router::standalone(A, TIMEOUT, Duration::from_secs(1));
    for log in [
        lines(&["10.0.0.1:7001: (connect)", "10.0.0.1:7001: FCALL get 1 k"]),
        lines(&["10.0.0.1:7001: FCALL get 1 k"]),
    ] {
        let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
        assert!(
            matches!(&got.as_deref(), Ok([Value::ServerError(e)]) if e.code() == "READONLY"),
            "{got:?}"
        );
        assert_eq!(fake.take_log(), log);
    }
}

/// A node without partcache's function library until it is loaded; `load` is how it
/// answers `FUNCTION LOAD`.
fn without_library(load: &'static str) -> FakeCluster {
    let loaded = AtomicBool::new(false);
    cluster(move |addr, cmd| {
        if cmd.starts_with("FUNCTION LOAD") {
            loaded.store(true, Ordering::SeqCst);
            if load.is_empty() {
                reply("partcache")
            } else {
                error(load)
            }
        } else if loaded.load(Ordering::SeqCst) {
            served(addr, cmd)
        } else {
            error("ERR Function not found")
        }
    })
}

#[tokio::test]
async fn a_missing_function_library_is_loaded_and_the_call_retried() {
    let fake = without_library("");
    let got = run(&router(), &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.1:7001 k")]));
    assert_eq!(
        fake.take_log(),
        vec![
            "10.0.0.1:7001: (connect)".to_string(),
            "10.0.0.1:7001: CLUSTER SLOTS".to_string(),
            "10.0.0.1:7001: FCALL get 1 k".to_string(),
            format!("10.0.0.1:7001: FUNCTION LOAD {}", scripts().library.source),
            "10.0.0.1:7001: FCALL get 1 k".to_string(),
        ]
    );
}

#[tokio::test]
async fn a_library_another_client_loaded_meanwhile_is_no_error() {
    let fake = without_library("ERR Library 'partcache' already exists");
    let got = run(&router(), &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.1:7001 k")]));
}

#[tokio::test]
async fn a_library_the_node_refuses_is_a_store_error_naming_it() {
    let fake = without_library("ERR Error registering functions");
    let got = run(&router(), &fake, vec![fcall(SLOT_A, "k")]).await;
    match got {
        Err(Error::Store(message)) => assert!(
            message.contains("cannot load function library") && message.contains(A),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_node_that_never_answers_times_out_within_the_budget_and_its_breaker_hears_of_it() {
    // The connection's own response timeout started later than the call (after a
    // slow connect, or a slot map read): the call's deadline ends the wait first.
    let fake = FakeCluster::new(
        &[(0, 5460, A), (5461, 10922, B), (10923, 16383, C)],
        TIMEOUT * 2,
        |addr, cmd| {
            if cmd.starts_with("FCALL") {
                Answer::Hang
            } else {
                served(addr, cmd)
            }
        },
    );
    let router = router();
    let start = Instant::now();
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    let elapsed = start.elapsed();
    assert!(
        matches!(got, Err(Error::Timeout(t)) if t == TIMEOUT),
        "{got:?}"
    );
    assert!(elapsed < TIMEOUT + SLACK, "{elapsed:?}");
    // The router's deadline ended the wait, and it told that node (once).
    assert_eq!(fake.router_timeouts(), vec![A.to_string()]);
    assert!(fake.connection_timeouts().is_empty());
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: (connect)",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.1:7001: FCALL get 1 k",
        ])
    );
    // A node that does not answer may be gone: the next call reads the map again.
    let _ = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(fake.take_log()[0], "10.0.0.1:7001: CLUSTER SLOTS");
}

#[tokio::test]
async fn a_call_on_an_open_connection_ends_with_its_response_timeout_and_reconnects_after() {
    let (fake, silent) = cluster_switched(|_, cmd| cmd.starts_with("FCALL").then(|| Answer::Hang));
    let router = router();
    assert!(run(&router, &fake, vec![fcall(SLOT_A, "k")]).await.is_ok());
    fake.take_log();
    silent.store(true, Ordering::SeqCst);
    let start = Instant::now();
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    let elapsed = start.elapsed();
    assert!(
        matches!(got, Err(Error::Timeout(t)) if t == TIMEOUT),
        "{got:?}"
    );
    assert!(
        elapsed >= TIMEOUT && elapsed < TIMEOUT + SLACK,
        "{elapsed:?}"
    );
    // The connection's own response timeout ended it (and told the breaker): the
    // router does not count it a second time.
    assert_eq!(fake.connection_timeouts(), vec![A.to_string()]);
    assert!(fake.router_timeouts().is_empty());
    assert_eq!(fake.take_log(), lines(&["10.0.0.1:7001: FCALL get 1 k"]));
    silent.store(false, Ordering::SeqCst);
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.1:7001 k")]));
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: (connect)",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.1:7001: FCALL get 1 k",
        ])
    );
}

#[tokio::test]
async fn a_dropped_connection_fails_the_call_without_sending_it_again_and_the_next_call_reconnects()
{
    let drops = Arc::new(AtomicUsize::new(0));
    let fake = cluster({
        let drops = drops.clone();
        move |addr, cmd| {
            if cmd.starts_with("FCALL") && drops.fetch_add(1, Ordering::SeqCst) == 1 {
                Answer::Drop
            } else {
                served(addr, cmd)
            }
        }
    });
    let router = router();
    assert!(run(&router, &fake, vec![fcall(SLOT_A, "k")]).await.is_ok());
    fake.take_log();
    // The command may have run before the connection broke (a write may have been
    // applied): it is not sent again, and the caller hears that the node is
    // unavailable.
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    assert!(matches!(got, Err(Error::Unavailable(_))), "{got:?}");
    assert_eq!(fake.take_log(), lines(&["10.0.0.1:7001: FCALL get 1 k"]));
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.1:7001 k")]));
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: (connect)",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.1:7001: FCALL get 1 k",
        ])
    );
}

#[tokio::test]
async fn a_dropped_connection_in_a_pipeline_fails_every_request_of_the_call() {
    let fake = cluster(|addr, cmd| {
        if addr == B && cmd.starts_with("FCALL") {
            Answer::Drop
        } else {
            served(addr, cmd)
        }
    });
    let got = run(
        &router(),
        &fake,
        vec![
            fcall(SLOT_A, "a"),
            fcall(SLOT_B, "b"),
            fcall(SLOT_A + 1, "c"),
        ],
    )
    .await;
    assert!(matches!(got, Err(Error::Unavailable(_))), "{got:?}");
    let log = fake.take_log();
    assert_eq!(
        log.iter().filter(|l| l.contains("FCALL")).count(),
        2,
        "each node asked once: {log:?}"
    );
}

/// Every scenario above uses the third master only as a bystander: nothing is sent
/// to it.
#[tokio::test]
async fn a_node_no_request_is_for_is_never_asked() {
    let fake = cluster(served);
    let _ = run(
        &router(),
        &fake,
        vec![fcall(SLOT_A, "a"), fcall(SLOT_B, "b")],
    )
    .await;
    assert!(fake.take_log().iter().all(|l| !l.starts_with(C)));
}

#[tokio::test]
async fn a_call_whose_start_used_up_its_timeout_sends_nothing() {
    // Encoding (or a wait before the store) took the whole response timeout: the
    // call fails without sending, so its timeout leaves the store as it was.
    let fake = cluster(served);
    let router = router();
    let started = Instant::now() - TIMEOUT - Duration::from_millis(1);
    let got = started_at(started, run(&router, &fake, vec![fcall(SLOT_A, "k")])).await;
    assert!(
        matches!(got, Err(Error::Timeout(t)) if t == TIMEOUT),
        "{got:?}"
    );
    assert!(fake.take_log().is_empty());
}

#[tokio::test]
async fn a_call_that_started_earlier_keeps_to_its_start_deadline_and_tells_the_breaker() {
    let (fake, silent) = cluster_switched(|_, cmd| cmd.starts_with("FCALL").then(|| Answer::Hang));
    let router = router();
    assert!(run(&router, &fake, vec![fcall(SLOT_A, "k")]).await.is_ok());
    fake.take_log();
    silent.store(true, Ordering::SeqCst);
    // Two thirds of the timeout went into encoding: the wait gets the last third,
    // not a whole timeout from the send (the connection's own timer).
    let started = Instant::now() - TIMEOUT * 2 / 3;
    let got = started_at(started, run(&router, &fake, vec![fcall(SLOT_A, "k")])).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(got, Err(Error::Timeout(t)) if t == TIMEOUT),
        "{got:?}"
    );
    assert!(
        elapsed >= TIMEOUT && elapsed < TIMEOUT + SLACK,
        "{elapsed:?}"
    );
    assert_eq!(fake.router_timeouts(), vec![A.to_string()]);
    assert!(fake.connection_timeouts().is_empty());
    assert_eq!(fake.take_log(), lines(&["10.0.0.1:7001: FCALL get 1 k"]));
}

#[tokio::test]
async fn an_open_breaker_fails_at_once_and_a_failover_is_looked_for_once_per_probe_interval() {
    let fake = cluster(served);
    let interval = Duration::from_millis(100);
    let router = Router::cluster(vec![A.to_string()], TIMEOUT, false, interval);
    assert!(run(&router, &fake, vec![fcall(SLOT_A, "k")]).await.is_ok());
    fake.take_log();
    fake.open_breaker(A);
    // Within the probe interval of the last slot map read: failed at once, nothing
    // sent, the map not read again.
    for _ in 0..3 {
        let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
        assert!(
            matches!(&got, Err(Error::CircuitOpen { node, .. }) if node == A),
            "{got:?}"
        );
    }
    assert!(fake.take_log().is_empty());
    // A failover meanwhile: B serves A's slots. Once the interval has passed, a call
    // that meets the open breaker has the map read again, from a node whose breaker
    // is closed, and the next call goes to the new master.
    fake.assign(0, 5460, B);
    tokio::time::sleep(interval).await;
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    assert!(matches!(got, Err(Error::CircuitOpen { .. })), "{got:?}");
    let got = run(&router, &fake, vec![fcall(SLOT_A, "k")]).await;
    assert_eq!(got.ok(), Some(vec![bulk("10.0.0.2:7002 k")]));
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.2:7002: (connect)",
            "10.0.0.2:7002: CLUSTER SLOTS",
            "10.0.0.2:7002: FCALL get 1 k",
        ])
    );
}

#[tokio::test]
async fn a_redirection_in_a_pipeline_resends_only_the_redirected_request() {
    // Slot 101 moved to B; slot 100 stays on A.
    let fake = cluster(|addr, cmd| {
        if addr == A && cmd.ends_with(" moved") {
            error("MOVED 101 10.0.0.2:7002")
        } else {
            served(addr, cmd)
        }
    });
    let router = router();
    assert!(run(&router, &fake, vec![fcall(SLOT_A, "k")]).await.is_ok());
    fake.take_log();
    fake.assign(101, 101, B);
    let got = run(
        &router,
        &fake,
        vec![fcall(SLOT_A, "stays"), fcall(SLOT_A + 1, "moved")],
    )
    .await;
    assert_eq!(
        got.ok(),
        Some(vec![
            bulk("10.0.0.1:7001 stays"),
            bulk("10.0.0.2:7002 moved")
        ])
    );
    assert_eq!(
        fake.take_log(),
        lines(&[
            "10.0.0.1:7001: FCALL get 1 stays | FCALL get 1 moved",
            "10.0.0.1:7001: CLUSTER SLOTS",
            "10.0.0.2:7002: (connect)",
            "10.0.0.2:7002: FCALL get 1 moved",
        ])
    );
}

#[tokio::test]
async fn the_node_that_answered_is_recorded_after_a_redirection() {
    // A subscription lives on the connection of the node that confirmed it.
    let fake = cluster(|addr, cmd| {
        if addr == A {
            error("ASK 100 10.0.0.2:7002")
        } else {
            served(addr, cmd)
        }
    });
    let pools = Pools {
        primary: &fake,
        replicas: None,
    };
    let got = router()
        .execute_recording_nodes(pools, vec![fcall(SLOT_A, "a"), fcall(SLOT_B, "b")])
        .await;
    let (replies, nodes) = got.expect("answered");
    assert_eq!(
        replies,
        vec![bulk("10.0.0.2:7002 a"), bulk("10.0.0.2:7002 b")]
    );
    assert_eq!(nodes, vec![B.to_string(), B.to_string()]);
}

#[tokio::test]
async fn readonly_from_a_replica_asked_for_a_read_is_the_callers_reply_without_a_retry() {
    // With replica reads, a read goes through the replica connections; a replica
    // that refuses it refuses what no other node would take either.
    let masters = cluster(served);
    let replicas = cluster(|_, _| error("READONLY You can't write against a read only replica."));
    let router = Router::cluster(vec![A.to_string()], TIMEOUT, true, Duration::from_secs(1));
    let mut read = fcall(SLOT_A, "k");
    read.read_only = true;
    let pools = Pools {
        primary: &masters,
        replicas: Some(&replicas),
    };
    let got = router.execute(pools, vec![read]).await;
    assert!(
        matches!(&got.as_deref(), Ok([Value::ServerError(e)]) if e.code() == "READONLY"),
        "{got:?}"
    );
    // (The fake's slot map names no replicas: the master's address stands in.)
    assert_eq!(
        replicas.take_log(),
        lines(&["10.0.0.1:7001: (connect)", "10.0.0.1:7001: FCALL get 1 k"])
    );
    assert_eq!(
        masters.take_log(),
        lines(&["10.0.0.1:7001: (connect)", "10.0.0.1:7001: CLUSTER SLOTS"])
    );
}
