//! One kind of local hit in a loop on one thread, for an instruction count (the
//! workload of `BENCH cacheable_hit` in `local.rs`: 1,000 keys, a small struct value,
//! `ExpiryPolicy::Modified` against moka's `time_to_live`, the value handed out as the
//! caller's own copy).
//!
//! ```text
//! cargo bench -p partcache --bench hit_instructions --no-run
//! valgrind --tool=callgrind target/release/deps/hit_instructions-<hash> cacheable 200000
//! ```
//!
//! Arguments: the side (`moka` for `moka::future::Cache::get`, `get` for `Cache::get`,
//! `cacheable` for a `#[cacheable]` function) and the number of hits. The count with
//! 200,000 hits minus the count with 0, over 200,000, is the instructions of one hit:
//! deterministic, so it compares two builds on a machine too loaded for wall-clock
//! figures (moka's own share moves by a few per cent between runs, with its hasher's
//! random seed). `time <rounds>` instead prints the best time per hit of each side over
//! that many rounds of 20,000 hits, and the size of the futures of `get` and of the
//! `#[cacheable]` function.

use std::time::Instant;

use partcache::CacheManager;

mod support;
use support::{HIT_KEYS as KEYS, ITEMS, Item, cached_item, filled_moka};

/// The sides, in the order `time` reports them.
const SIDES: [&str; 3] = ["moka", "get", "cacheable"];

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(side), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok()))
    else {
        eprintln!("usage: hit_instructions <moka|get|cacheable> <hits> | time <rounds>");
        std::process::exit(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let manager = CacheManager::from_url("memory://").expect("memory");
        partcache::set_default_manager(manager.clone()).expect("default manager");
        let items = ITEMS.open(&manager).await.expect("open");
        let moka = filled_moka().await;
        let hits = async |side: &str, n: u64| {
            // The key sequence of `local.rs` (xorshift).
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 | 1;
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = x % KEYS;
                let value = match side {
                    "moka" => moka.get(&k).await.expect("hit"),
                    "get" => Item::clone(&items.get(&k).await.expect("get").expect("hit")),
                    _ => cached_item(k).await,
                };
                std::hint::black_box(value);
            }
        };
        if side == "time" {
            let mut best = [f64::MAX; SIDES.len()];
            for _ in 0..n {
                for (side, best) in SIDES.iter().zip(&mut best) {
                    let start = Instant::now();
                    hits(side, 20_000).await;
                    *best = best.min(start.elapsed().as_nanos() as f64 / 20_000.0);
                }
            }
            for (side, best) in SIDES.iter().zip(best) {
                println!("{side}: {best:.1} ns per hit");
            }
            // What a hit's future holds (and every call creates).
            let (get, cacheable) = (
                std::mem::size_of_val(&items.get(&0)),
                std::mem::size_of_val(&cached_item(0)),
            );
            println!("futures: get {get} bytes, cacheable {cacheable} bytes");
        } else if SIDES.contains(&side.as_str()) {
            hits(&side, n).await;
        } else {
            eprintln!("unknown side `{side}`: moka, get or cacheable");
            std::process::exit(2);
        }
    });
}
