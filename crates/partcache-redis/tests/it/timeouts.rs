//! The response timeout covers the whole call, encoding included: a write whose value
//! takes longer to encode than the timeout fails with `Timeout` having sent nothing, so
//! the store is left as it was; on a standalone server and on a cluster.

use crate::common;

use common::unique;

use std::time::{Duration, Instant};

use partcache::{Cache, Error};
use serde::{Deserialize, Serialize, Serializer};

const TIMEOUT: Duration = Duration::from_millis(300);

/// How long encoding a [`Slow`] takes: longer than the timeout.
const ENCODING: Duration = Duration::from_millis(450);

/// A value whose encoding takes [`ENCODING`] (a large value, or a slow codec).
#[derive(Deserialize, Debug, Clone, PartialEq)]
struct Slow(String);

impl Serialize for Slow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        std::thread::sleep(ENCODING);
        serializer.serialize_newtype_struct("Slow", &self.0)
    }
}

async fn cache(url: &str) -> Cache<String, Slow> {
    let url = format!("{url}?response_timeout={}ms", TIMEOUT.as_millis());
    common::manager(&url)
        .cache(&unique("slow-encoding"))
        .build()
        .await
        .expect("build")
}

/// `put` and `put_all` of values that take longer to encode than the timeout: each
/// fails with `Timeout` right after encoding, and nothing was written.
async fn a_put_whose_encoding_outlasts_the_timeout_writes_nothing(url: &str) {
    let cache = cache(url).await;
    let started = Instant::now();
    let put = cache.put("k".to_string(), Slow("v".into())).await;
    let took = started.elapsed();
    assert!(matches!(put, Err(Error::Timeout(_))), "{put:?}");
    // Encoding cannot be interrupted; nothing else is waited for.
    assert!(took < ENCODING + TIMEOUT, "took {took:?}");
    assert_eq!(cache.get(&"k".to_string()).await.expect("get"), None);

    let entries = vec![("a".to_string(), Slow("1".into()))];
    let put_all = cache.put_all(entries).await;
    assert!(matches!(put_all, Err(Error::Timeout(_))), "{put_all:?}");
    assert_eq!(cache.get(&"a".to_string()).await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_a_put_whose_encoding_outlasts_the_timeout_writes_nothing() {
    let url = tokio::task::block_in_place(|| common::standalone().url());
    a_put_whose_encoding_outlasts_the_timeout_writes_nothing(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_a_put_whose_encoding_outlasts_the_timeout_writes_nothing() {
    let url = tokio::task::block_in_place(|| common::cluster().seed_url());
    a_put_whose_encoding_outlasts_the_timeout_writes_nothing(&url).await;
}
