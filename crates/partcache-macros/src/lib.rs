#![doc = include_str!("../README.md")]
//!
//! Each attribute's page ([`cacheable`], [`cache_put`], [`cache_evict`]) holds the whole
//! grammar: the options, the declaration of a cache and the type checks, the order of
//! stacked attributes, what is cached, the keys, where the cache comes from, failing
//! open, and the code an attribute becomes.

mod expand;
mod options;
mod signature;

use proc_macro::TokenStream;

use options::Kind;

fn run(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match expand::expand(kind, attr.into(), item.clone()) {
        Ok(expanded) => expanded.into(),
        // The function stays as written, so its callers do not add errors of their own;
        // without its other partcache attributes, whose errors this one reported.
        Err(error) => {
            let mut output = error.into_compile_error();
            output.extend(expand::without_attributes(item));
            output.into()
        }
    }
}

/// Caches an async function's output (Spring's `@Cacheable`): a hit returns the cached
/// value without calling the function.
///
/// ```
/// use partcache::{CacheDecl, CacheManager, cacheable};
///
/// static GREETINGS: CacheDecl<String, String> = CacheDecl::new("greetings");
///
/// #[cacheable(cache = GREETINGS, manager = caches, key = name, ttl = "10m")]
/// async fn greeting(caches: &CacheManager, name: &str) -> String {
///     format!("hello, {name}")
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let caches = CacheManager::from_url("memory://")?;
/// assert_eq!(greeting(&caches, "ada").await, "hello, ada"); // a miss: the function runs
/// assert_eq!(greeting(&caches, "ada").await, "hello, ada"); // a hit
/// assert_eq!(GREETINGS.open(&caches).await?.stats().hits, 1);
/// # Ok::<(), partcache::Error>(()) }).unwrap();
/// ```
#[doc = include_str!("attributes.md")]
#[proc_macro_attribute]
pub fn cacheable(attr: TokenStream, item: TokenStream) -> TokenStream {
    run(Kind::Cacheable, attr, item)
}

/// Always runs an async function, then caches its output (Spring's `@CachePut`).
///
/// ```
/// use partcache::{CacheDecl, CacheManager, cache_put};
///
/// static NAMES: CacheDecl<u64, String> = CacheDecl::new("names");
///
/// #[cache_put(cache = NAMES, manager = caches, key = id)]
/// async fn rename(caches: &CacheManager, id: u64, name: String) -> Result<String, std::io::Error> {
///     Ok(name) // written to the database first, in a real service
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let caches = CacheManager::from_url("memory://")?;
/// rename(&caches, 7, "ada".into()).await?;
/// let names = NAMES.open(&caches).await?;
/// assert_eq!(names.get(&7).await?.as_deref().map(String::as_str), Some("ada"));
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[doc = include_str!("attributes.md")]
#[proc_macro_attribute]
pub fn cache_put(attr: TokenStream, item: TokenStream) -> TokenStream {
    run(Kind::Put, attr, item)
}

/// Evicts an entry (or every entry) when an async function runs (Spring's
/// `@CacheEvict`): after it succeeded, or with `before`, first.
///
/// ```
/// use partcache::{CacheDecl, CacheManager, cache_evict};
///
/// static NAMES: CacheDecl<u64, String> = CacheDecl::new("names");
///
/// #[cache_evict(cache = NAMES, manager = caches, key = id)]
/// async fn delete(caches: &CacheManager, id: u64) -> Result<(), std::io::Error> {
///     Ok(()) // deleted from the database, in a real service
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let caches = CacheManager::from_url("memory://")?;
/// let names = NAMES.open(&caches).await?;
/// names.put(7, "ada".to_string()).await?;
/// delete(&caches, 7).await?;
/// assert!(names.get(&7).await?.is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
/// ```
#[doc = include_str!("attributes.md")]
#[proc_macro_attribute]
pub fn cache_evict(attr: TokenStream, item: TokenStream) -> TokenStream {
    run(Kind::Evict, attr, item)
}
