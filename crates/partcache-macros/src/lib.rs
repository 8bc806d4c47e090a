#![doc = include_str!("../README.md")]
//!
//! # The attributes
//!
//! | option | `#[cacheable]` | `#[cache_put]` | `#[cache_evict]` | meaning |
//! |---|---|---|---|---|
//! | `cache = "name"` | required | required | required | the cache's name in the manager |
//! | `key = expr` | ✓ | ✓ | ✓ | the key, an expression over the arguments; default below |
//! | `key_type = T` | ✓ | ✓ | ✓ | the key's type, when it is not an argument or a tuple of them |
//! | `value_type = T` | | | required | the cache's value type (the function's output is not it) |
//! | `manager = expr` | ✓ | ✓ | ✓ | the `CacheManager` (`self.caches`, `&Arc<CacheManager>` work); default: the process-wide one |
//! | `condition = expr` | ✓ | ✓ | ✓ | evaluated before the call, over the arguments; `false`: no cache at all for this call |
//! | `unless = expr` | ✓ | ✓ | | evaluated on the value about to be cached, bound as `result: &V`; `true`: not cached |
//! | `ttl = "5m"` | ✓ | ✓ | | entries this function writes expire after this (units `ms`, `s`, `m`, `h`, `d`, combinable: `"1h30m"`), or any `Duration` expression; on top of the cache's own expiry |
//! | `sync` | ✓ | | | concurrent misses of one key call the function once (single-flight); not with `unless` |
//! | `cache_none` | ✓ | ✓ | | `Option` outputs: cache `None` too |
//! | `cache_err` | ✓ | ✓ | | `Result` outputs: cache `Err` too (the whole `Result` is the value) |
//! | `all_entries` | | | ✓ | clear the whole cache (needs `key_type`) |
//! | `before` / `before = true` | | | ✓ | evict before the call, even when it fails; default: after a successful call |
//!
//! Flags accept `flag = true|false` too. An unknown or repeated option is a compile
//! error naming the options the attribute takes.
//!
//! # Semantics (Spring's)
//!
//! - `#[cacheable]`: a hit returns the cached value without calling the function; a
//!   miss calls it and caches what the output shape allows (below) unless `unless` says
//!   no. With `sync`, the first caller of a missing key runs the function and the others
//!   wait for its value; if its output is not cacheable (an `Err`, a `None`), each waiter
//!   runs the function itself, and a panic reaches the caller that ran the function.
//! - `#[cache_put]`: always calls the function, then caches its output under the key. The
//!   key may read `result` (the cached value, e.g. `key = result.id` for an id the database
//!   assigned), with `key_type`.
//! - `#[cache_evict]`: removes the key (or, with `all_entries`, every entry, as
//!   `Cache::clear` does) after the function succeeded (returned, or returned `Ok` for a
//!   `Result`), or with `before` first, whatever happens next.
//!
//! # Output shapes: what is cached
//!
//! | the function returns | the cache's value type `V` | cached |
//! |---|---|---|
//! | `T` | `T` | always |
//! | `Result<T, E>` (any `Result` alias too) | `T` | `Ok` only; with `cache_err`: `V = Result<T, E>`, both |
//! | `Option<T>` | `T` | `Some` only; with `cache_none`: `V = Option<T>`, both |
//! | `Result<Option<T>, E>` | `T` | `Ok(Some)` only; with `cache_none`: `V = Option<T>`, `Ok` |
//!
//! `V` must be `Clone + Serialize + DeserializeOwned + Send + Sync + 'static`: a hit hands
//! the caller its own copy (the cache keeps `Arc<V>`; return `Arc<T>` to share instead).
//!
//! # Keys
//!
//! - `key = id`, `key = (tenant, id)`: arguments, or a tuple of them (a composite key). Their
//!   types give the key type; a reference argument contributes its owned type (`&str` →
//!   `String`, `&T` → `<T as ToOwned>::Owned`). A name that is not an argument is a
//!   compile error listing the arguments.
//! - Any other expression (`key = p.id`, `key = format!("{a}:{b}")`) needs `key_type = T`.
//!   It is evaluated on the borrowed arguments before the call and cloned.
//! - Default: every argument except the receiver, database handles and arguments marked
//!   `#[skip]` (the attribute is removed from the expansion); none left: the key is `()`,
//!   one: that argument, several: a tuple in argument order.
//! - **Database handles** are recognised by name: a type whose last path segment (after
//!   `&`/`&mut`) contains `Db`, `DB`, `Database`, `Connection`, `Pool` or `Transaction`
//!   (`&Db`, `&DatabaseConnection`, `PgPool`, `&mut Transaction<'_, Postgres>`), an
//!   `impl Trait`/`dyn Trait` whose trait's name does (`&impl ConnectionTrait`), or a type
//!   parameter bounded by such a trait (`db: &C` with `C: ConnectionTrait`). Anything else
//!   that must stay out of the key: `#[skip]`.
//! - Every key type must be a `partcache::CacheKey` (hashable, serializable, `Clone`):
//!   otherwise the compile error points at the argument's type.
//!
//! # Where the cache comes from
//!
//! `manager = expr` names a `CacheManager` (evaluated before the call; with `&self`
//! methods, `self.caches` is the usual form). Without it the function uses the
//! process-wide default manager, installed once with `partcache::set_default_manager`.
//! The cache is looked up by name (`get_cache`), or built on first use with the
//! manager's settings for that name (its configuration file, else the defaults), so
//! configure it there or build it before the first call. Each function keeps the handle
//! it resolved in a `static`: after the first call, a call through the same manager does
//! no lookup (a call through another manager does a lookup, and the first manager stays
//! alive for the process's life).
//!
//! # Failing open
//!
//! A cache is never the reason a call fails (DESIGN §7). No default manager, a cache that
//! cannot be opened (for instance, already open with other key/value types): the function
//! runs uncached and the problem is logged once at `error` (then at `debug`). A store
//! error or timeout on a read: the function runs uncached and no write is attempted; on a
//! write or an eviction: the output is returned all the same. Store errors are logged at
//! `warn` and counted in the cache's statistics (`store_errors`, or `rejections` for input
//! the cache refused).
//!
//! # Limits
//!
//! - `async fn` only, free or in an `impl` with `&self` (`manager = self...` borrows
//!   `self` while the body runs; `&mut self` and `self` by value conflict with that).
//! - The key and value types live in a `static`, so they cannot name the function's or
//!   the impl's generic parameters, or `Self`; generic functions whose generics stay out
//!   of the key and value (a generic database handle) are fine.
//! - Arguments are moved into the body: `unless` sees `result` only, and a `manager`
//!   expression must not borrow an argument the body takes by value.
//!
//! # What the code becomes
//!
//! This is what `cargo expand` prints for
//! `#[cacheable(cache = "products", key = id, ttl = "5m", sync)]` on the free function
//! `async fn product(db: &Db, id: u64) -> Result<Product, Error> { db.load(id).await }`
//! (so with the default manager). The body moves into an `async move` block; the `if false` block
//! pins that block's output type, so `?` and `return` behave as in the original; the
//! `const _` items turn a non-cacheable key or value type into an error at that type.
//!
//! ```ignore
//! async fn product(db: &Db, id: u64) -> Result<Product, Error> {
//!     const _: fn() = || {
//!         fn assert_key<T: ::partcache::CacheKey>() {}
//!         assert_key::<u64>();
//!     };
//!     const _: fn() = || {
//!         fn assert_value<T: ::partcache::CacheValue + ::core::clone::Clone>() {}
//!         assert_value::<Product>();
//!     };
//!     static __PARTCACHE_SITE: ::partcache::__private::CallSite<u64, Product> =
//!         ::partcache::__private::CallSite::new(
//!             "products",
//!             ::core::concat!(::core::module_path!(), "::", "product"),
//!         );
//!     let __partcache_manager = ::partcache::__private::default_manager();
//!     let __partcache_key: ::core::option::Option<u64> =
//!         ::core::option::Option::Some(::core::clone::Clone::clone(&id));
//!     let __partcache_call = async move {
//!         #[allow(
//!             unreachable_code,
//!             clippy::diverging_sub_expression,
//!             clippy::empty_loop,
//!             clippy::let_unit_value,
//!             clippy::needless_return,
//!             clippy::unreachable
//!         )]
//!         if false {
//!             let __partcache_output: Result<Product, Error> = loop {};
//!             return __partcache_output;
//!         }
//!         { db.load(id).await }
//!     };
//!     __PARTCACHE_SITE
//!         .cacheable(
//!             __partcache_manager,
//!             __partcache_key,
//!             ::partcache::__private::Options::new()
//!                 .ttl(::core::time::Duration::from_millis(300000))
//!                 .sync(),
//!             ::partcache::__private::OkOnly,
//!             |_: &Product| false,
//!             __partcache_call,
//!         )
//!         .await
//! }
//! ```
//!
//! With `condition = c` the key line becomes `if c { Some(key) } else { None }`; with
//! `manager = self.caches`, the manager line becomes
//! `::partcache::__private::explicit_manager(&(self.caches))`; with `unless = u`, the
//! closure becomes `|result: &Product| -> bool { u }`. `#[cache_put]` and
//! `#[cache_evict]` expand the same way around `CallSite::cache_put` and
//! `CallSite::cache_evict`.

#![warn(missing_docs)]

mod expand;
mod options;
mod signature;

use proc_macro::TokenStream;

use options::Kind;

fn run(kind: Kind, attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match expand::expand(kind, attr.into(), item.clone()) {
        Ok(expanded) => expanded.into(),
        // The function stays as written, so its callers do not add errors of their own.
        Err(error) => {
            let mut output = error.into_compile_error();
            output.extend(item);
            output.into()
        }
    }
}

/// Caches an async function's output (Spring's `@Cacheable`). See the [crate docs](crate).
#[proc_macro_attribute]
pub fn cacheable(attr: TokenStream, item: TokenStream) -> TokenStream {
    run(Kind::Cacheable, attr, item)
}

/// Always runs an async function and caches its output (Spring's `@CachePut`). See the
/// [crate docs](crate).
#[proc_macro_attribute]
pub fn cache_put(attr: TokenStream, item: TokenStream) -> TokenStream {
    run(Kind::Put, attr, item)
}

/// Evicts an entry (or every entry) when an async function runs (Spring's
/// `@CacheEvict`). See the [crate docs](crate).
#[proc_macro_attribute]
pub fn cache_evict(attr: TokenStream, item: TokenStream) -> TokenStream {
    run(Kind::Evict, attr, item)
}
