//! Per-key coalescing of concurrent misses: the flights of [`partcache::flight`],
//! which the cache's own loads use too, re-exported under their former path.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! use partcache_tower::coalesce::{Flights, Joined};
//! use std::sync::Arc;
//!
//! let flights = Arc::new(Flights::<String, u32>::new());
//! let Joined::Leader(flight) = flights.join(&"k".to_string()) else { unreachable!() };
//! let Joined::Waiter(waiter) = flights.join(&"k".to_string()) else { unreachable!() };
//! flight.complete(7);
//! assert_eq!(waiter.wait().await, Some(7));
//! # });
//! ```

pub use partcache::flight::{Flight, Flights, Joined, Waiter};

/// The former name of [`Flights`].
#[deprecated(note = "use `partcache::flight::Flights`")]
pub type Coalescer<K, T> = Flights<K, T>;
