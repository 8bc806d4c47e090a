//! A guided tour of partcache on the embedded store, no server needed:
//! `cargo run -p tour`. Set `PARTCACHE_URL` to run the same code on Redis.

use std::time::Duration;

use partcache::{CacheManager, EventFilter, ExpiryPolicy};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct User {
    id: u64,
    name: String,
}

/// Stands in for a database: slow, and it says when it is called.
async fn db_load(id: u64) -> Result<User, std::io::Error> {
    println!("  (database) loading user {id}...");
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(User {
        id,
        name: format!("user-{id}"),
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Makes redis://, redis-cluster://, valkey:// ... available to `from_env`.
    partcache_redis::install();
    let manager = CacheManager::from_env()?;
    println!("backend: {}", manager.url());
    let users = manager
        .cache::<u64, User>("users")
        .expiry(ExpiryPolicy::Accessed(Duration::from_secs(300)))
        .max_entries(100_000)
        .build()
        .await?;
    let mut events = users.subscribe(EventFilter::all());

    println!("\n1. put, then get: a hit");
    users
        .put(
            7,
            User {
                id: 7,
                name: "alice".into(),
            },
        )
        .await?;
    println!("  get(7) = {:?}", users.get(&7).await?);

    println!("\n2. get of an absent key: a miss");
    println!("  get(9) = {:?}", users.get(&9).await?);

    println!("\n3. get_or_load: 10 concurrent misses of one key, one database call");
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let users = users.clone();
        tasks.push(tokio::spawn(
            async move { users.get_or_load(&8, db_load).await },
        ));
    }
    for task in tasks {
        task.await??;
    }
    println!("  get(8) = {:?}  (from cache now)", users.get(&8).await?);

    println!("\n4. conditional writes");
    println!(
        "  put_if_absent(7) stored: {}",
        users
            .put_if_absent(
                7,
                User {
                    id: 7,
                    name: "mallory".into()
                }
            )
            .await?
    );
    println!(
        "  replace(7) stored: {}",
        users
            .replace(
                7,
                User {
                    id: 7,
                    name: "alice smith".into()
                }
            )
            .await?
    );

    println!("\n5. a per-entry TTL");
    users
        .put_with_ttl(
            99,
            User {
                id: 99,
                name: "temp".into(),
            },
            Duration::from_millis(100),
        )
        .await?;
    println!(
        "  get(99) now      = {:?}",
        users.get(&99).await?.map(|u| u.name.clone())
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    println!(
        "  get(99) at 150ms = {:?}",
        users.get(&99).await?.map(|u| u.name.clone())
    );

    println!("\n6. events seen so far:");
    while let Some(Ok(event)) = events.try_recv() {
        println!("  {:?} {}", event.kind, event.key);
    }

    let stats = users.stats();
    println!("\n7. statistics");
    println!(
        "  hits={} misses={} hit_ratio={:.2} puts={} loads={} avg_get={:?}",
        stats.hits,
        stats.misses,
        stats.hit_ratio(),
        stats.puts,
        stats.load_successes,
        stats.average_get_time
    );
    println!("  entries={}", users.len().await?);
    Ok(())
}
