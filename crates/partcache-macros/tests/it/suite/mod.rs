//! The behaviour suite of the three attributes, written against a `CacheManager` so
//! that every backend runs the same checks: `behaviour_suite!(make_manager)` expands to
//! one `#[tokio::test]` per scenario (see `local.rs`; a Redis variant instantiates it
//! with a Redis manager).
//!
//! Every scenario uses its own cache names, and counts the calls that reached the
//! function's body.

#![allow(dead_code)] // Each test binary uses the part of the suite it needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use partcache::{CacheDecl, CacheManager, cache_evict, cache_put, cacheable};
use serde::{Deserialize, Serialize};

/// A product, the cached value of most scenarios.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Product {
    pub id: u64,
    pub name: String,
    pub price: u32,
}

fn product(id: u64) -> Product {
    Product {
        id,
        name: format!("product {id}"),
        price: if id == 0 { 0 } else { 100 + id as u32 },
    }
}

/// The error the fake database returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct NotFound(pub u64);

/// The caches of the scenarios, each declared once with its types.
pub(crate) static PRODUCTS: CacheDecl<u64, Product> = CacheDecl::new("products");
pub(crate) static PRODUCTS_OR_ERROR: CacheDecl<u64, Result<Product, NotFound>> =
    CacheDecl::new("products-or-error");
pub(crate) static MAYBE: CacheDecl<u64, Product> = CacheDecl::new("maybe");
pub(crate) static MAYBE_NONE_CACHED: CacheDecl<u64, Option<Product>> =
    CacheDecl::new("maybe-none-cached");
pub(crate) static FIND: CacheDecl<u64, Product> = CacheDecl::new("find");
pub(crate) static CHEAP: CacheDecl<u64, Product> = CacheDecl::new("cheap");
pub(crate) static PRICED: CacheDecl<u64, Product> = CacheDecl::new("priced");
pub(crate) static SLOW: CacheDecl<u64, Product> = CacheDecl::new("slow");
pub(crate) static SLOW_FAILING: CacheDecl<u64, Product> = CacheDecl::new("slow-failing");
pub(crate) static SHORT_LIVED: CacheDecl<u64, Product> = CacheDecl::new("short-lived");
pub(crate) static TENANT_PRODUCTS: CacheDecl<(String, u64), Product> =
    CacheDecl::new("tenant-products");
pub(crate) static TENANT_PRODUCTS_EXPLICIT: CacheDecl<(String, u64), Product> =
    CacheDecl::new("tenant-products-explicit");
/// Caches of one scenario each, so that its manager is the first their declarations
/// resolve (the path of every call after the first, a lookup answered in place).
pub(crate) static COUNTED: CacheDecl<u64, Product> = CacheDecl::new("counted");
pub(crate) static COUNTED_SYNC: CacheDecl<u64, Product> = CacheDecl::new("counted-sync");
/// The caches of the stacked-attribute scenarios.
pub(crate) static STACKED: CacheDecl<u64, Product> = CacheDecl::new("stacked");
pub(crate) static STACKED_COPY: CacheDecl<u64, Product> = CacheDecl::new("stacked-copy");
pub(crate) static PAGES: CacheDecl<u64, String> = CacheDecl::new("pages");

/// A fake database handle: its name marks it, so default keys leave it out.
pub(crate) struct Db;

/// Something a caller passes that must not be part of the key.
pub(crate) struct TraceId(pub u64);

/// The service under test: caches come from `self.caches`.
pub(crate) struct Catalog {
    pub caches: CacheManager,
    pub calls: AtomicUsize,
}

impl Catalog {
    pub(crate) fn new(caches: CacheManager) -> Arc<Self> {
        Arc::new(Catalog {
            caches,
            calls: AtomicUsize::new(0),
        })
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn called(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
    }

    /// Ids from 1000 on do not exist.
    #[cacheable(cache = PRODUCTS, key = id, manager = self.caches)]
    pub async fn product(&self, _db: &Db, id: u64) -> Result<Product, NotFound> {
        self.called();
        if id >= 1000 {
            return Err(NotFound(id));
        }
        Ok(product(id))
    }

    #[cacheable(cache = PRODUCTS_OR_ERROR, manager = self.caches, cache_err)]
    pub async fn product_or_error(&self, db: &Db, id: u64) -> Result<Product, NotFound> {
        let _ = db;
        self.called();
        if id >= 1000 {
            Err(NotFound(id))
        } else {
            Ok(product(id))
        }
    }

    #[cacheable(cache = MAYBE, manager = self.caches)]
    pub async fn maybe(&self, id: u64) -> Option<Product> {
        self.called();
        (id < 1000).then(|| product(id))
    }

    #[cacheable(cache = MAYBE_NONE_CACHED, manager = self.caches, cache_none)]
    pub async fn maybe_none_cached(&self, id: u64) -> Option<Product> {
        self.called();
        (id < 1000).then(|| product(id))
    }

    #[cacheable(cache = FIND, manager = self.caches)]
    pub async fn find(&self, id: u64) -> Result<Option<Product>, NotFound> {
        self.called();
        match id {
            2000.. => Err(NotFound(id)),
            1000.. => Ok(None),
            _ => Ok(Some(product(id))),
        }
    }

    #[cacheable(cache = CHEAP, manager = self.caches, condition = id < 100)]
    pub async fn cheap(&self, id: u64) -> Product {
        self.called();
        product(id)
    }

    #[cacheable(cache = PRICED, manager = self.caches, unless = result.price == 0)]
    pub async fn priced(&self, id: u64) -> Product {
        self.called();
        product(id)
    }

    #[cacheable(cache = SLOW, manager = self.caches, key = id, ttl = "5m", sync)]
    pub async fn slow(&self, id: u64) -> Result<Product, NotFound> {
        self.called();
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok(product(id))
    }

    #[cacheable(cache = SLOW_FAILING, manager = self.caches, sync)]
    pub async fn slow_failing(&self, id: u64) -> Result<Product, NotFound> {
        self.called();
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(NotFound(id))
    }

    #[cacheable(cache = COUNTED, manager = self.caches)]
    pub async fn counted(&self, id: u64) -> Product {
        self.called();
        product(id)
    }

    #[cacheable(cache = COUNTED_SYNC, manager = self.caches, sync)]
    pub async fn counted_sync(&self, id: u64) -> Product {
        self.called();
        product(id)
    }

    #[cacheable(cache = SHORT_LIVED, manager = self.caches, ttl = "300ms")]
    pub async fn short_lived(&self, id: u64) -> Product {
        self.called();
        product(id)
    }

    /// Default key: `tenant` and `id`; `db` is a database handle, `trace` is skipped.
    #[cacheable(cache = TENANT_PRODUCTS, manager = self.caches)]
    pub async fn tenant_product(
        &self,
        db: &Db,
        tenant: &str,
        id: u64,
        #[skip] trace: TraceId,
    ) -> Product {
        let (_, _) = (db, trace);
        self.called();
        Product {
            name: format!("{tenant}/{id}"),
            ..product(id)
        }
    }

    #[cacheable(cache = TENANT_PRODUCTS_EXPLICIT, manager = self.caches, key = (tenant, id))]
    pub async fn tenant_product_explicit(
        &self,
        tenant: String,
        id: u64,
        page_size: u32,
    ) -> Product {
        let _ = page_size;
        self.called();
        Product {
            name: format!("{tenant}/{id}"),
            ..product(id)
        }
    }

    #[cache_put(cache = PRODUCTS, manager = self.caches, key = p.id)]
    pub async fn save(&self, _db: &Db, p: Product) -> Result<Product, NotFound> {
        self.called();
        if p.id >= 1000 {
            Err(NotFound(p.id))
        } else {
            Ok(p)
        }
    }

    /// The key comes from the saved product (as a database would assign it).
    #[cache_put(cache = PRODUCTS, manager = self.caches, key = result.id)]
    pub async fn create(&self, name: String) -> Result<Product, NotFound> {
        self.called();
        Ok(Product {
            id: 500,
            name,
            price: 1,
        })
    }

    #[cache_evict(cache = PRODUCTS, manager = self.caches, key = id)]
    pub async fn delete(&self, _db: &Db, id: u64) -> Result<(), NotFound> {
        self.called();
        if id >= 1000 {
            Err(NotFound(id))
        } else {
            Ok(())
        }
    }

    #[cache_evict(cache = PRODUCTS, manager = self.caches, key = id, before = true)]
    pub async fn delete_before(&self, _db: &Db, id: u64) -> Result<(), NotFound> {
        self.called();
        Err(NotFound(id))
    }

    #[cache_evict(
        cache = PRODUCTS,
        manager = self.caches,
        all_entries
    )]
    pub async fn delete_all(&self) {
        self.called();
    }

    #[cache_evict(
        cache = PRODUCTS,
        manager = self.caches,
        key = id,
        condition = id != 1
    )]
    pub async fn delete_unless_first(&self, id: u64) -> Result<(), NotFound> {
        self.called();
        Ok(())
    }
}

/// The same stacks of attributes in both textual orders: they behave the same.
impl Catalog {
    /// The `n`-th version of product `id`, counting the calls that reached a body.
    fn version(&self, id: u64) -> Product {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        Product {
            name: format!("product {id} v{n}"),
            ..product(id)
        }
    }

    #[cacheable(cache = STACKED, manager = self.caches)]
    #[cache_evict(cache = STACKED, manager = self.caches, key = id, before)]
    pub async fn refreshed_cacheable_first(&self, id: u64) -> Product {
        self.version(id)
    }

    #[cache_evict(cache = STACKED, manager = self.caches, key = id, before)]
    #[cacheable(cache = STACKED, manager = self.caches)]
    pub async fn refreshed_evict_first(&self, id: u64) -> Product {
        self.version(id)
    }

    #[cacheable(cache = STACKED, manager = self.caches)]
    #[cache_evict(cache = PAGES, manager = self.caches, all_entries)]
    pub async fn read_clearing_pages_cacheable_first(&self, id: u64) -> Product {
        self.version(id)
    }

    #[cache_evict(cache = PAGES, manager = self.caches, all_entries)]
    #[cacheable(cache = STACKED, manager = self.caches)]
    pub async fn read_clearing_pages_evict_first(&self, id: u64) -> Product {
        self.version(id)
    }

    #[cacheable(cache = STACKED, manager = self.caches)]
    #[cache_put(cache = STACKED_COPY, manager = self.caches, key = id)]
    pub async fn read_and_copy_cacheable_first(&self, id: u64) -> Product {
        self.version(id)
    }

    #[cache_put(cache = STACKED_COPY, manager = self.caches, key = id)]
    #[cacheable(cache = STACKED, manager = self.caches)]
    pub async fn read_and_copy_put_first(&self, id: u64) -> Product {
        self.version(id)
    }

    #[cache_evict(cache = PAGES, manager = self.caches, key = id)]
    #[cache_put(cache = STACKED, manager = self.caches, key = id)]
    #[cache_evict(cache = STACKED_COPY, manager = self.caches, key = id, before)]
    pub async fn failing_write_after_first(&self, id: u64) -> Result<Product, NotFound> {
        self.called();
        Err(NotFound(id))
    }

    #[cache_evict(cache = STACKED_COPY, manager = self.caches, key = id, before)]
    #[cache_put(cache = STACKED, manager = self.caches, key = id)]
    #[cache_evict(cache = PAGES, manager = self.caches, key = id)]
    pub async fn failing_write_before_first(&self, id: u64) -> Result<Product, NotFound> {
        self.called();
        Err(NotFound(id))
    }

    /// Two `#[cacheable]`s: looked up in textual order, the first hit wins.
    #[cacheable(cache = STACKED, manager = self.caches)]
    #[cacheable(cache = STACKED_COPY, manager = self.caches)]
    pub async fn two_levels(&self, id: u64) -> Product {
        self.version(id)
    }
}

/// `#[cache_evict(before)]` with `#[cacheable]` on one key: the eviction runs first, so
/// every call misses, runs the body and caches its fresh value (Spring's order: early
/// evictions, then the lookup). Before the attributes were expanded together, the
/// bottom one ran first, so with the eviction on top a hit returned before it ran.
pub(crate) async fn before_evictions_run_before_the_lookup_in_either_order(manager: CacheManager) {
    for evict_first in [false, true] {
        let catalog = Catalog::new(manager.clone());
        let cache = STACKED.open(&manager).await.expect("opened");
        cache.clear().await.expect("cleared");
        for n in 1..=3 {
            let got = if evict_first {
                catalog.refreshed_evict_first(1).await
            } else {
                catalog.refreshed_cacheable_first(1).await
            };
            assert_eq!(
                got.name,
                format!("product 1 v{n}"),
                "evict_first={evict_first}"
            );
            let cached = cache
                .get(&1)
                .await
                .expect("get")
                .expect("the fresh value is cached");
            assert_eq!(
                cached.name,
                format!("product 1 v{n}"),
                "evict_first={evict_first}"
            );
        }
        assert_eq!(catalog.calls(), 3, "evict_first={evict_first}");
    }
}

/// Evictions after the call run on a hit as well as after a successful call (Spring
/// evaluates them whatever the lookup found), in either textual order.
pub(crate) async fn after_evictions_run_on_hits_and_misses_in_either_order(manager: CacheManager) {
    for evict_first in [false, true] {
        let catalog = Catalog::new(manager.clone());
        let products = STACKED.open(&manager).await.expect("opened");
        products.clear().await.expect("cleared");
        let pages = PAGES.open(&manager).await.expect("opened");
        for _ in 0..2 {
            pages.put(9, "page".to_string()).await.expect("put");
            let got = if evict_first {
                catalog.read_clearing_pages_evict_first(2).await
            } else {
                catalog.read_clearing_pages_cacheable_first(2).await
            };
            assert_eq!(got.name, "product 2 v1", "evict_first={evict_first}");
            assert!(
                pages.get(&9).await.expect("get").is_none(),
                "pages not cleared, evict_first={evict_first}"
            );
        }
        assert_eq!(catalog.calls(), 1, "the second call is a hit");
    }
}

/// `#[cacheable]` with `#[cache_put]`: the function always runs (the put wants its
/// output), the put stores that output, and the `#[cacheable]` cache keeps what it had
/// on a hit (Spring stores a `@Cacheable`'s value on a miss only), in either order.
pub(crate) async fn a_put_beside_a_cacheable_always_calls_in_either_order(manager: CacheManager) {
    for put_first in [false, true] {
        let catalog = Catalog::new(manager.clone());
        let products = STACKED.open(&manager).await.expect("opened");
        let copies = STACKED_COPY.open(&manager).await.expect("opened");
        products.clear().await.expect("cleared");
        copies.clear().await.expect("cleared");
        for n in 1..=2 {
            let got = if put_first {
                catalog.read_and_copy_put_first(3).await
            } else {
                catalog.read_and_copy_cacheable_first(3).await
            };
            assert_eq!(got.name, format!("product 3 v{n}"), "put_first={put_first}");
            let copy = copies.get(&3).await.expect("get").expect("put stored it");
            assert_eq!(
                copy.name,
                format!("product 3 v{n}"),
                "put_first={put_first}"
            );
            let cached = products
                .get(&3)
                .await
                .expect("get")
                .expect("cached on the miss");
            assert_eq!(cached.name, "product 3 v1", "put_first={put_first}");
        }
        assert_eq!(catalog.calls(), 2, "put_first={put_first}");
    }
}

/// A failing call: the `before` eviction ran, the put and the eviction after the call
/// did not, in either order.
pub(crate) async fn a_failing_call_runs_only_the_before_evictions_in_either_order(
    manager: CacheManager,
) {
    for before_first in [false, true] {
        let catalog = Catalog::new(manager.clone());
        let products = STACKED.open(&manager).await.expect("opened");
        let copies = STACKED_COPY.open(&manager).await.expect("opened");
        let pages = PAGES.open(&manager).await.expect("opened");
        products.clear().await.expect("cleared");
        copies.put(4, product(4)).await.expect("put");
        pages.put(4, "page".to_string()).await.expect("put");
        let got = if before_first {
            catalog.failing_write_before_first(4).await
        } else {
            catalog.failing_write_after_first(4).await
        };
        assert_eq!(got, Err(NotFound(4)));
        assert!(
            copies.get(&4).await.expect("get").is_none(),
            "before: evicted"
        );
        assert!(pages.get(&4).await.expect("get").is_some(), "after: kept");
        assert!(
            products.get(&4).await.expect("get").is_none(),
            "nothing put"
        );
    }
}

/// Two `#[cacheable]`s: a hit in the second is returned without storing it in the
/// first (Spring stores on a miss of every cache only); a miss of both stores in both.
pub(crate) async fn stacked_cacheables_look_up_in_order(manager: CacheManager) {
    let catalog = Catalog::new(manager.clone());
    let first = STACKED.open(&manager).await.expect("opened");
    let second = STACKED_COPY.open(&manager).await.expect("opened");
    second.put(5, product(5)).await.expect("put");
    assert_eq!(catalog.two_levels(5).await, product(5));
    assert_eq!(catalog.calls(), 0);
    assert!(first.get(&5).await.expect("get").is_none());

    assert_eq!(catalog.two_levels(6).await.name, "product 6 v1");
    assert!(first.get(&6).await.expect("get").is_some());
    assert!(second.get(&6).await.expect("get").is_some());
    first.put(6, product(60)).await.expect("put");
    assert_eq!(
        catalog.two_levels(6).await,
        product(60),
        "the first cache wins"
    );
    assert_eq!(catalog.calls(), 1);
}

/// Polls `done` until it holds or `limit` passes; returns whether it held.
pub(crate) async fn eventually(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    done().await
}

pub(crate) async fn a_hit_skips_the_call(manager: CacheManager) {
    let catalog = Catalog::new(manager.clone());
    assert_eq!(catalog.product(&Db, 1).await, Ok(product(1)));
    assert_eq!(catalog.product(&Db, 1).await, Ok(product(1)));
    assert_eq!(catalog.product(&Db, 2).await, Ok(product(2)));
    assert_eq!(catalog.calls(), 2);
    let cache = manager
        .get_cache::<u64, Product>("products")
        .expect("the first call built the cache");
    let stats = cache.stats();
    assert_eq!((stats.hits, stats.misses, stats.puts), (1, 2, 2));
}

/// Every call reads the cache once, counted once, whichever path answers it (the first
/// call opens the cache; later ones find it resolved): with `sync` too, whose miss goes
/// on to the single flight without reading again.
pub(crate) async fn each_call_counts_one_read(manager: CacheManager) {
    let catalog = Catalog::new(manager.clone());
    for id in [1, 1, 2, 1, 2] {
        assert_eq!(catalog.counted(id).await, product(id));
    }
    for id in [1, 1, 2, 1, 2] {
        assert_eq!(catalog.counted_sync(id).await, product(id));
    }
    assert_eq!(catalog.calls(), 4);
    // (A `sync` call's value is a load where a store shares leases: not a put.)
    for name in ["counted", "counted-sync"] {
        let stats = manager
            .get_cache::<u64, Product>(name)
            .expect("the first call built the cache")
            .stats();
        assert_eq!((stats.hits, stats.misses), (3, 2), "{name}");
    }
}

pub(crate) async fn result_errors_are_not_cached(manager: CacheManager) {
    let catalog = Catalog::new(manager);
    assert_eq!(catalog.product(&Db, 1000).await, Err(NotFound(1000)));
    assert_eq!(catalog.product(&Db, 1000).await, Err(NotFound(1000)));
    assert_eq!(catalog.calls(), 2);
}

pub(crate) async fn cache_err_caches_errors_too(manager: CacheManager) {
    let catalog = Catalog::new(manager);
    assert_eq!(
        catalog.product_or_error(&Db, 1000).await,
        Err(NotFound(1000))
    );
    assert_eq!(
        catalog.product_or_error(&Db, 1000).await,
        Err(NotFound(1000))
    );
    assert_eq!(catalog.product_or_error(&Db, 3).await, Ok(product(3)));
    assert_eq!(catalog.product_or_error(&Db, 3).await, Ok(product(3)));
    assert_eq!(catalog.calls(), 2);
}

pub(crate) async fn option_none_is_cached_only_when_asked(manager: CacheManager) {
    let catalog = Catalog::new(manager);
    assert_eq!(catalog.maybe(1000).await, None);
    assert_eq!(catalog.maybe(1000).await, None);
    assert_eq!(catalog.calls(), 2);
    assert_eq!(catalog.maybe(4).await, Some(product(4)));
    assert_eq!(catalog.maybe(4).await, Some(product(4)));
    assert_eq!(catalog.calls(), 3);

    assert_eq!(catalog.maybe_none_cached(1000).await, None);
    assert_eq!(catalog.maybe_none_cached(1000).await, None);
    assert_eq!(catalog.calls(), 4);
}

pub(crate) async fn result_of_option_caches_only_ok_some(manager: CacheManager) {
    let catalog = Catalog::new(manager);
    assert_eq!(catalog.find(5).await, Ok(Some(product(5))));
    assert_eq!(catalog.find(5).await, Ok(Some(product(5))));
    assert_eq!(catalog.calls(), 1);
    assert_eq!(catalog.find(1000).await, Ok(None));
    assert_eq!(catalog.find(1000).await, Ok(None));
    assert_eq!(catalog.calls(), 3);
    assert_eq!(catalog.find(2000).await, Err(NotFound(2000)));
    assert_eq!(catalog.find(2000).await, Err(NotFound(2000)));
    assert_eq!(catalog.calls(), 5);
}

pub(crate) async fn a_false_condition_bypasses_the_cache(manager: CacheManager) {
    let catalog = Catalog::new(manager.clone());
    assert_eq!(catalog.cheap(500).await, product(500));
    assert_eq!(catalog.cheap(500).await, product(500));
    assert_eq!(catalog.calls(), 2);
    assert_eq!(catalog.cheap(5).await, product(5));
    assert_eq!(catalog.cheap(5).await, product(5));
    assert_eq!(catalog.calls(), 3);
    let cache = manager.get_cache::<u64, Product>("cheap").expect("built");
    assert!(cache.get(&500).await.expect("get").is_none());
}

pub(crate) async fn a_true_unless_leaves_the_result_uncached(manager: CacheManager) {
    let catalog = Catalog::new(manager);
    assert_eq!(catalog.priced(0).await.price, 0);
    assert_eq!(catalog.priced(0).await.price, 0);
    assert_eq!(catalog.calls(), 2);
    assert_eq!(catalog.priced(6).await, product(6));
    assert_eq!(catalog.priced(6).await, product(6));
    assert_eq!(catalog.calls(), 3);
}

pub(crate) async fn sync_makes_concurrent_misses_call_once(manager: CacheManager) {
    let catalog = Catalog::new(manager);
    let gate = Arc::new(tokio::sync::Barrier::new(50));
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (catalog, gate) = (catalog.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            catalog.slow(7).await
        }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("no panic"), Ok(product(7)));
    }
    assert_eq!(catalog.calls(), 1);
}

pub(crate) async fn sync_waiters_of_a_failed_call_run_their_own(manager: CacheManager) {
    let catalog = Catalog::new(manager);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let catalog = catalog.clone();
        tasks.push(tokio::spawn(async move { catalog.slow_failing(8).await }));
    }
    for task in tasks {
        assert_eq!(task.await.expect("no panic"), Err(NotFound(8)));
    }
    // The leader's error is not shared (it is not cached): every caller ran the body.
    assert_eq!(catalog.calls(), 5);
}

pub(crate) async fn ttl_expires_entries_written_by_the_function(manager: CacheManager) {
    let catalog = Catalog::new(manager);
    assert_eq!(catalog.short_lived(9).await, product(9));
    assert_eq!(catalog.short_lived(9).await, product(9));
    assert_eq!(catalog.calls(), 1);
    let expired = eventually(Duration::from_secs(10), async || {
        catalog.short_lived(9).await;
        catalog.calls() == 2
    })
    .await;
    assert!(expired, "the entry never expired");
}

pub(crate) async fn default_keys_leave_out_db_handles_and_skipped_arguments(manager: CacheManager) {
    let catalog = Catalog::new(manager.clone());
    let first = catalog.tenant_product(&Db, "acme", 1, TraceId(1)).await;
    let second = catalog.tenant_product(&Db, "acme", 1, TraceId(2)).await;
    assert_eq!(first, second);
    assert_eq!(first.name, "acme/1");
    assert_eq!(
        catalog
            .tenant_product(&Db, "other", 1, TraceId(3))
            .await
            .name,
        "other/1"
    );
    assert_eq!(catalog.calls(), 2);
    let cache = manager
        .get_cache::<(String, u64), Product>("tenant-products")
        .expect("the key type is (String, u64)");
    assert!(
        cache
            .get(&("acme".to_string(), 1))
            .await
            .expect("get")
            .is_some()
    );
}

pub(crate) async fn composite_keys_are_tuples(manager: CacheManager) {
    let catalog = Catalog::new(manager.clone());
    let a = catalog.tenant_product_explicit("acme".into(), 1, 10).await;
    let b = catalog.tenant_product_explicit("acme".into(), 1, 20).await;
    assert_eq!(a, b);
    catalog.tenant_product_explicit("acme".into(), 2, 10).await;
    assert_eq!(catalog.calls(), 2);
    let cache = manager
        .get_cache::<(String, u64), Product>("tenant-products-explicit")
        .expect("built");
    assert!(
        cache
            .get(&("acme".to_string(), 2))
            .await
            .expect("get")
            .is_some()
    );
}

pub(crate) async fn cache_put_always_calls_and_updates_the_entry(manager: CacheManager) {
    let catalog = Catalog::new(manager);
    let renamed = Product {
        name: "renamed".into(),
        ..product(1)
    };
    assert_eq!(
        catalog.save(&Db, renamed.clone()).await,
        Ok(renamed.clone())
    );
    assert_eq!(
        catalog.save(&Db, renamed.clone()).await,
        Ok(renamed.clone())
    );
    assert_eq!(catalog.calls(), 2);
    // The reader finds the saved product without calling its body.
    assert_eq!(catalog.product(&Db, 1).await, Ok(renamed));
    assert_eq!(catalog.calls(), 2);
    // A failed save caches nothing.
    let missing = product(1001);
    assert_eq!(catalog.save(&Db, missing).await, Err(NotFound(1001)));
    assert_eq!(catalog.product(&Db, 1001).await, Err(NotFound(1001)));
    assert_eq!(catalog.calls(), 4);
}

pub(crate) async fn cache_put_keys_can_come_from_the_result(manager: CacheManager) {
    let catalog = Catalog::new(manager);
    let created = catalog.create("new".into()).await.expect("created");
    assert_eq!(catalog.product(&Db, created.id).await, Ok(created));
    assert_eq!(catalog.calls(), 1);
}

pub(crate) async fn cache_evict_removes_after_success_only(manager: CacheManager) {
    let catalog = Catalog::new(manager.clone());
    catalog.product(&Db, 1).await.expect("found");
    catalog.delete(&Db, 1).await.expect("deleted");
    catalog.product(&Db, 1).await.expect("found");
    assert_eq!(catalog.calls(), 3, "the entry was evicted");

    // A failing call leaves the entry in place: the key 1000 is not evicted.
    let cache = manager
        .get_cache::<u64, Product>("products")
        .expect("built");
    cache.put(1000, product(1000)).await.expect("put");
    assert_eq!(catalog.delete(&Db, 1000).await, Err(NotFound(1000)));
    assert!(cache.get(&1000).await.expect("get").is_some());
}

pub(crate) async fn cache_evict_before_evicts_even_when_the_call_fails(manager: CacheManager) {
    let catalog = Catalog::new(manager.clone());
    catalog.product(&Db, 2).await.expect("found");
    assert_eq!(catalog.delete_before(&Db, 2).await, Err(NotFound(2)));
    let cache = manager
        .get_cache::<u64, Product>("products")
        .expect("built");
    assert!(cache.get(&2).await.expect("get").is_none());
}

pub(crate) async fn cache_evict_all_entries_clears_the_cache(manager: CacheManager) {
    let catalog = Catalog::new(manager.clone());
    for id in 1..=3 {
        catalog.product(&Db, id).await.expect("found");
    }
    catalog.delete_all().await;
    let cache = manager
        .get_cache::<u64, Product>("products")
        .expect("built");
    for id in 1..=3 {
        assert!(cache.get(&id).await.expect("get").is_none());
    }
}

pub(crate) async fn cache_evict_condition_guards_the_eviction(manager: CacheManager) {
    let catalog = Catalog::new(manager.clone());
    catalog.product(&Db, 1).await.expect("found");
    catalog.product(&Db, 2).await.expect("found");
    catalog.delete_unless_first(1).await.expect("ok");
    catalog.delete_unless_first(2).await.expect("ok");
    let cache = manager
        .get_cache::<u64, Product>("products")
        .expect("built");
    assert!(cache.get(&1).await.expect("get").is_some());
    assert!(cache.get(&2).await.expect("get").is_none());
}

/// A cache that rejects every key (a custom hashing policy no key matches) stands in
/// for a failing store: the function must still run and answer.
pub(crate) async fn store_errors_fail_open(manager: CacheManager) {
    let cache = manager
        .cache::<u64, Product>("products")
        .hashing_rules(["^never:(?<tag>.+)"])
        .build()
        .await
        .expect("built");
    let catalog = Catalog::new(manager);
    assert_eq!(catalog.product(&Db, 1).await, Ok(product(1)));
    assert_eq!(catalog.product(&Db, 1).await, Ok(product(1)));
    assert_eq!(catalog.save(&Db, product(2)).await, Ok(product(2)));
    assert_eq!(catalog.delete(&Db, 2).await, Ok(()));
    assert_eq!(catalog.calls(), 4);
    let stats = cache.stats();
    assert!(stats.rejections + stats.store_errors >= 1, "{stats:?}");
}

/// A cache already open with other types cannot serve the function: it runs uncached.
pub(crate) async fn a_cache_of_other_types_runs_the_function_uncached(manager: CacheManager) {
    manager
        .cache::<String, String>("products")
        .build()
        .await
        .expect("built");
    let catalog = Catalog::new(manager);
    assert_eq!(catalog.product(&Db, 1).await, Ok(product(1)));
    assert_eq!(catalog.product(&Db, 1).await, Ok(product(1)));
    assert_eq!(catalog.calls(), 2);
}

/// One `#[tokio::test]` per scenario, on managers `$make` returns (an expression
/// evaluated once per test, e.g. `partcache::CacheManager::from_url("memory://").unwrap()`).
#[macro_export]
macro_rules! behaviour_suite {
    ($make:expr) => {
        $crate::behaviour_suite!(@tests $make;
            a_hit_skips_the_call,
            each_call_counts_one_read,
            result_errors_are_not_cached,
            cache_err_caches_errors_too,
            option_none_is_cached_only_when_asked,
            result_of_option_caches_only_ok_some,
            a_false_condition_bypasses_the_cache,
            a_true_unless_leaves_the_result_uncached,
            sync_makes_concurrent_misses_call_once,
            sync_waiters_of_a_failed_call_run_their_own,
            ttl_expires_entries_written_by_the_function,
            default_keys_leave_out_db_handles_and_skipped_arguments,
            composite_keys_are_tuples,
            cache_put_always_calls_and_updates_the_entry,
            cache_put_keys_can_come_from_the_result,
            cache_evict_removes_after_success_only,
            cache_evict_before_evicts_even_when_the_call_fails,
            cache_evict_all_entries_clears_the_cache,
            cache_evict_condition_guards_the_eviction,
            store_errors_fail_open,
            a_cache_of_other_types_runs_the_function_uncached,
            before_evictions_run_before_the_lookup_in_either_order,
            after_evictions_run_on_hits_and_misses_in_either_order,
            a_put_beside_a_cacheable_always_calls_in_either_order,
            a_failing_call_runs_only_the_before_evictions_in_either_order,
            stacked_cacheables_look_up_in_order,
        );
    };
    (@tests $make:expr; $($name:ident,)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::suite::$name($make).await;
            }
        )*
    };
}
