//! A small deterministic generator (xorshift64): the same seed gives the same
//! sequence on every run, so every start seeds the same shop and a load replays the
//! same requests. Not for anything that must be unpredictable.

use crate::db::PRODUCTS;

/// A xorshift64 sequence; the seed must not be zero.
#[derive(Debug, Clone)]
pub struct Seq(pub u64);

impl Seq {
    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..n` (`n` above zero).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// A product id in `1..=PRODUCTS`, skewed towards the low ids: the popular
    /// products, ordered (and viewed) more often than the rest.
    pub fn popular_product(&mut self) -> i32 {
        let r = self.below(1000);
        1 + (r * r / 5000) as i32 % PRODUCTS
    }
}
