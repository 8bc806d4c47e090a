//! Per-cache statistics, counted as JSR-107 counts them.
//!
//! | operation | counts |
//! |---|---|
//! | `get`, `get_all` (per key), `get_and_*` | a hit or a miss |
//! | `put`, `get_and_put` | a put (none under a zero creation expiry) |
//! | `put_all` | a put per entry stored (none under a zero creation expiry) |
//! | `put_if_absent` | absent: a miss and a put; present: a hit |
//! | `replace`, `get_and_replace` | present: a hit and a put; absent: a miss |
//! | `replace_if_equals` | equal: a hit and a put; unequal: a hit; absent: a miss |
//! | `remove`, `get_and_remove`, `remove_all` | a removal per entry removed (and a hit/miss for `get_and_remove`) |
//! | `remove_if_equals` | equal: a hit and a removal; unequal: a hit; absent: a miss |
//! | `contains_key`, `clear`, `keys` | nothing |
//! | iteration ([`crate::Cache::entries`]) | a hit per entry returned; [`crate::Entries::remove`]: a removal |
//! | `invoke`, `invoke_all` (per key) | present: a hit, absent: a miss (read or not); then set → put, remove → removal (net effect) |
//! | read-through load (`get`, `get_all`, `invoke`), `load_all`, `get_or_load` | a load success or failure, never a put |
//! | a loaded value refused because its lease was invalidated (remote stores) | a stale set prevented |
//!
//! Counters are striped over cache-line-padded cells so that tasks on different cores
//! do not fight over one line; a [`CacheStats`] snapshot sums them. The snapshot is
//! what [`crate::Cache::stats`] returns; [`crate::Cache::publish_metrics`] pushes it to
//! the `metrics` facade (so the hot path never pays for a metrics registry lookup).
//!
//! # Metrics
//!
//! [`CacheStats::publish`] sets these series, each labelled `cache="<name>"`:
//! counters `partcache_{hits,misses,puts,removals,evictions,expirations,
//! load_successes,load_failures,decode_errors,store_errors,rejections,near_hits,
//! near_misses,stale_sets_prevented}_total`, gauges `partcache_{get,put,remove,load}_seconds_avg` and
//! `partcache_hit_ratio`.
//!
//! Latency is also recorded as it happens, in the histogram
//! [`LATENCY_HISTOGRAM`] (`partcache_operation_duration_seconds`, labels `cache` and
//! `op` = `get` | `put` | `remove`; `get_all`/`put_all` count as one `get`/`put`).
//! Its handles are resolved once, when the cache is built, from the recorder installed
//! then: install the `metrics` recorder *before* building caches. Without a recorder the
//! handles are no-ops and a timed operation pays one branch (the local get path is
//! benchmarked against moka; see `benches/local.rs`).
//!
//! One-key gets are timed by sampling: the counter of gets is striped (threads share a
//! few stripes), and each stripe times its first get and one in [`GET_SAMPLE`] after
//! it. A sampled get is recorded in the histogram with a count of [`GET_SAMPLE`], so the
//! histogram's count and rate follow the number of gets (to within [`GET_SAMPLE`] per
//! stripe, less the rare tick lost when two threads that share a stripe tick it at the
//! same moment: the tick is a plain load and store, kept off the hot path's locked
//! instructions); the average get time is the mean of the sample.
//! Hits, misses and every other counter are exact, and puts, removals, loads and batch
//! reads are all timed.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

const STRIPES: usize = 8;

/// One get in this many (per stripe) is timed for [`CacheStats::average_get_time`] and
/// the latency histogram. A local hit takes a few hundred nanoseconds, and timing it
/// (two clock reads and their bookkeeping) cost about a fifth of that; the other
/// counters stay exact.
pub const GET_SAMPLE: u64 = 16;

/// Times one operation for the averages and the latency histogram.
///
/// Reads the CPU's time-stamp counter through `quanta` where it is invariant (the OS
/// clock otherwise): a local hit is a few hundred nanoseconds, and two reads of
/// `std::time::Instant` cost about a third of that on a virtual machine.
#[derive(Clone, Copy)]
pub(crate) struct Stopwatch(quanta::Instant);

impl Stopwatch {
    #[inline]
    pub(crate) fn start() -> Self {
        Stopwatch(quanta::Instant::now())
    }

    #[inline]
    pub(crate) fn elapsed(self) -> Duration {
        quanta::Instant::now().saturating_duration_since(self.0)
    }
}

/// A one-key get under way, from [`StatsCounters::sample_get`]: the stripe it counts
/// in (read once) and its stopwatch when it is timed.
#[must_use]
pub(crate) struct GetTicket {
    stripe: usize,
    timed: Option<Stopwatch>,
}

/// The latency histogram every cache records into (seconds; labels `cache`, `op`).
pub const LATENCY_HISTOGRAM: &str = "partcache_operation_duration_seconds";

/// Histogram handles of one cache, resolved when it is built ([`StatsCounters::named`]).
/// The default is three no-op handles.
struct Latency {
    get: metrics::Histogram,
    put: metrics::Histogram,
    remove: metrics::Histogram,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            get: metrics::Histogram::noop(),
            put: metrics::Histogram::noop(),
            remove: metrics::Histogram::noop(),
        }
    }
}

impl Latency {
    fn named(cache: &str) -> Self {
        let histogram = |op: &'static str| metrics::histogram!(LATENCY_HISTOGRAM, "cache" => cache.to_string(), "op" => op);
        Latency {
            get: histogram("get"),
            put: histogram("put"),
            remove: histogram("remove"),
        }
    }
}

#[repr(align(128))]
#[derive(Default)]
struct Cell128(AtomicU64);

/// A counter striped over a few cache lines.
#[derive(Default)]
pub struct Counter {
    cells: [Cell128; STRIPES],
}

fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    STRIPE.with(|s| {
        let mut v = s.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            s.set(v);
        }
        v
    })
}

impl Counter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.cells[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn incr(&self) {
        self.add(1);
    }

    /// Adds one to stripe `stripe` (a [`stripe`] read earlier, maybe on another
    /// thread: any stripe is right, this thread's is merely the fastest).
    #[inline]
    fn incr_at(&self, stripe: usize) {
        self.cells[stripe].0.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves the sampling tick of stripe `stripe` on by one and returns what it held.
    /// A plain load and store, not a read-modify-write: two threads sharing a stripe
    /// may lose a tick between them, which moves the sample by one get and counts
    /// nothing wrong (the tick is no statistic), and the hot path of a local hit is
    /// spared a locked instruction.
    #[inline]
    fn tick(&self, stripe: usize) -> u64 {
        let cell = &self.cells[stripe].0;
        let n = cell.load(Ordering::Relaxed);
        cell.store(n.wrapping_add(1), Ordering::Relaxed);
        n
    }

    /// Takes a [`Counter::tick`] back.
    #[inline]
    fn untick(&self, stripe: usize) {
        let cell = &self.cells[stripe].0;
        cell.store(
            cell.load(Ordering::Relaxed).wrapping_sub(1),
            Ordering::Relaxed,
        );
    }

    /// The sum over all stripes.
    pub fn get(&self) -> u64 {
        self.cells.iter().map(|c| c.0.load(Ordering::Relaxed)).sum()
    }

    fn reset(&self) {
        for c in &self.cells {
            c.0.store(0, Ordering::Relaxed);
        }
    }
}

/// The live counters of one cache. Stores receive a shared reference to count what
/// only they can see (evictions, expirations, decode errors).
#[derive(Default)]
pub struct StatsCounters {
    /// Reads that found a value.
    pub hits: Counter,
    /// Reads that found nothing.
    pub misses: Counter,
    /// Values stored.
    pub puts: Counter,
    /// Entries removed by callers.
    pub removals: Counter,
    /// Entries evicted for size.
    pub evictions: Counter,
    /// Entries that reached their deadline.
    pub expirations: Counter,
    /// Loader calls that returned a value.
    pub load_successes: Counter,
    /// Loader calls that failed or panicked.
    pub load_failures: Counter,
    /// Stored values that could not be decoded (each also counted as a miss).
    pub decode_errors: Counter,
    /// Store calls that failed (unavailable, timeout, server error).
    pub store_errors: Counter,
    /// Writes refused before reaching the store (oversized values, unmatched keys).
    pub rejections: Counter,
    /// Local (near-cache) hits, for stores that keep a local copy.
    pub near_hits: Counter,
    /// Local (near-cache) misses.
    pub near_misses: Counter,
    /// Loaded values not stored because a write or removal of their key, in any
    /// process, invalidated the load's lease while it ran (remote stores).
    pub stale_sets_prevented: Counter,
    /// Gets, for sampling: each stripe times its first get and one in [`GET_SAMPLE`].
    gets: Counter,
    /// Nanoseconds of the timed gets, and how many were timed.
    get_nanos: Counter,
    gets_timed: Counter,
    put_nanos: Counter,
    remove_nanos: Counter,
    load_nanos: Counter,
    puts_timed: Counter,
    removes_timed: Counter,
    latency: Latency,
}

impl StatsCounters {
    /// Counters for the cache `cache`, with its latency histograms
    /// ([`LATENCY_HISTOGRAM`]) registered with the `metrics` recorder installed now (no-op
    /// handles when there is none). `Default` gives counters without histograms.
    pub fn named(cache: &str) -> Self {
        StatsCounters {
            latency: Latency::named(cache),
            ..StatsCounters::default()
        }
    }

    /// Records a get (or a batch read) that took `d`.
    #[inline]
    pub(crate) fn time_get(&self, d: Duration) {
        self.get_nanos.add(d.as_nanos() as u64);
        self.gets_timed.incr();
        self.latency.get.record(d);
    }

    /// Starts a one-key get: ticks this thread's stripe of the get sample and starts a
    /// stopwatch if this get is to be timed (the first on each stripe, so every
    /// thread's first get after a reset is, and then one in [`GET_SAMPLE`]). Pass the
    /// ticket to [`StatsCounters::end_get`], or to [`StatsCounters::unsample_get`]
    /// when the get is not made after all.
    #[inline]
    pub(crate) fn sample_get(&self) -> GetTicket {
        let stripe = stripe();
        let timed = self
            .gets
            .tick(stripe)
            .is_multiple_of(GET_SAMPLE)
            .then(Stopwatch::start);
        GetTicket { stripe, timed }
    }

    /// Takes back a [`StatsCounters::sample_get`] whose get was not made after all (a
    /// store that cannot answer in place: the caller awaits `get`, which counts it), so
    /// that a get is sampled once.
    #[inline]
    pub(crate) fn unsample_get(&self, ticket: GetTicket) {
        self.gets.untick(ticket.stripe);
    }

    /// Ends a one-key get that found a value (`hit`) or not: counts the hit or the
    /// miss (exactly) and records the time of a timed one. The histogram counts a timed
    /// get for the [`GET_SAMPLE`] gets it stands for, so its count and rate follow the
    /// number of gets.
    #[inline]
    pub(crate) fn end_get(&self, ticket: GetTicket, hit: bool) {
        if hit {
            self.hits.incr_at(ticket.stripe);
        } else {
            self.misses.incr_at(ticket.stripe);
        }
        if let Some(stopwatch) = ticket.timed {
            let d = stopwatch.elapsed();
            self.get_nanos.add(d.as_nanos() as u64);
            self.gets_timed.incr();
            self.latency.get.record_many(d, GET_SAMPLE as usize);
        }
    }

    #[inline]
    pub(crate) fn time_put(&self, d: Duration) {
        self.put_nanos.add(d.as_nanos() as u64);
        self.puts_timed.incr();
        self.latency.put.record(d);
    }

    #[inline]
    pub(crate) fn time_remove(&self, d: Duration) {
        self.remove_nanos.add(d.as_nanos() as u64);
        self.removes_timed.incr();
        self.latency.remove.record(d);
    }

    pub(crate) fn time_load(&self, d: Duration) {
        self.load_nanos.add(d.as_nanos() as u64);
    }

    /// Sets every counter back to zero (JCache's `clear()` on the statistics bean).
    pub fn reset(&self) {
        for c in [
            &self.hits,
            &self.misses,
            &self.puts,
            &self.removals,
            &self.evictions,
            &self.expirations,
            &self.load_successes,
            &self.load_failures,
            &self.decode_errors,
            &self.store_errors,
            &self.rejections,
            &self.near_hits,
            &self.near_misses,
            &self.stale_sets_prevented,
            &self.gets,
            &self.get_nanos,
            &self.put_nanos,
            &self.remove_nanos,
            &self.load_nanos,
            &self.gets_timed,
            &self.puts_timed,
            &self.removes_timed,
        ] {
            c.reset();
        }
    }

    /// A consistent-enough snapshot (each counter read once; counters keep moving).
    pub fn snapshot(&self) -> CacheStats {
        let avg = |nanos: &Counter, n: &Counter| {
            Duration::from_nanos(nanos.get().checked_div(n.get()).unwrap_or(0))
        };
        let loads = self.load_successes.get() + self.load_failures.get();
        CacheStats {
            hits: self.hits.get(),
            misses: self.misses.get(),
            puts: self.puts.get(),
            removals: self.removals.get(),
            evictions: self.evictions.get(),
            expirations: self.expirations.get(),
            load_successes: self.load_successes.get(),
            load_failures: self.load_failures.get(),
            decode_errors: self.decode_errors.get(),
            store_errors: self.store_errors.get(),
            rejections: self.rejections.get(),
            near_hits: self.near_hits.get(),
            near_misses: self.near_misses.get(),
            stale_sets_prevented: self.stale_sets_prevented.get(),
            average_get_time: avg(&self.get_nanos, &self.gets_timed),
            average_put_time: avg(&self.put_nanos, &self.puts_timed),
            average_remove_time: avg(&self.remove_nanos, &self.removes_timed),
            average_load_time: Duration::from_nanos(
                self.load_nanos.get().checked_div(loads).unwrap_or(0),
            ),
        }
    }
}

/// A snapshot of one cache's statistics.
///
/// Serialises as a flat object a stats endpoint can publish as it is; the average
/// times are microseconds, as JSR-107's `CacheStatisticsMXBean` gives them:
///
/// ```
/// use std::time::Duration;
///
/// let mut stats = partcache::CacheStats::default();
/// stats.hits = 3;
/// stats.average_get_time = Duration::from_nanos(50_666);
/// let json = serde_json::to_value(stats).unwrap();
/// assert_eq!(json["hits"], 3);
/// assert_eq!(json["average_get_time_us"], 50.666);
/// assert_eq!(json["average_put_time_us"], 0.0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Reads that found a value.
    pub hits: u64,
    /// Reads that found nothing (including undecodable values).
    pub misses: u64,
    /// Values stored.
    pub puts: u64,
    /// Entries removed by callers.
    pub removals: u64,
    /// Entries evicted for size.
    pub evictions: u64,
    /// Entries that reached their deadline (as far as this process saw).
    pub expirations: u64,
    /// Loader calls that returned a value.
    pub load_successes: u64,
    /// Loader calls that failed or panicked.
    pub load_failures: u64,
    /// Stored values that could not be decoded.
    pub decode_errors: u64,
    /// Store calls that failed.
    pub store_errors: u64,
    /// Inputs refused (oversized values, unmatched keys).
    pub rejections: u64,
    /// Near-cache hits.
    pub near_hits: u64,
    /// Near-cache misses.
    pub near_misses: u64,
    /// Loaded values not stored because a write or removal of their key, in any
    /// process, invalidated the load's lease while it ran (remote stores): each one a
    /// stale value that would otherwise have been served until it expired.
    pub stale_sets_prevented: u64,
    /// Mean time of a get: of one-key gets, the first of each counter stripe and one
    /// in [`GET_SAMPLE`] after it are timed (the mean of that sample). Serialised as
    /// `average_get_time_us`, microseconds.
    #[serde(rename = "average_get_time_us", serialize_with = "micros")]
    pub average_get_time: Duration,
    /// Mean time of a put. Serialised as `average_put_time_us`, microseconds.
    #[serde(rename = "average_put_time_us", serialize_with = "micros")]
    pub average_put_time: Duration,
    /// Mean time of a remove. Serialised as `average_remove_time_us`, microseconds.
    #[serde(rename = "average_remove_time_us", serialize_with = "micros")]
    pub average_remove_time: Duration,
    /// Mean time of a load. Serialised as `average_load_time_us`, microseconds.
    #[serde(rename = "average_load_time_us", serialize_with = "micros")]
    pub average_load_time: Duration,
}

/// A duration as a number of microseconds (a float, to the nanosecond): JSR-107's
/// `CacheStatisticsMXBean` reports its average times so, and a dashboard reads a plain
/// number where serde's own `{"secs":0,"nanos":50666}` needs arithmetic.
fn micros<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(duration.as_nanos() as f64 / 1_000.0)
}

impl CacheStats {
    /// `hits + misses`.
    pub fn gets(&self) -> u64 {
        self.hits + self.misses
    }

    /// Hits over gets, 0.0 when there were no gets.
    pub fn hit_ratio(&self) -> f64 {
        let gets = self.gets();
        if gets == 0 {
            0.0
        } else {
            self.hits as f64 / gets as f64
        }
    }

    /// Pushes the snapshot to the `metrics` facade under the label `cache`.
    ///
    /// Counters are set with `absolute`, so calling this periodically exports
    /// monotonic counters without any cost on the cache's hot path.
    pub fn publish(&self, cache: &str) {
        let label = [("cache", cache.to_string())];
        let counters: [(&'static str, u64); 14] = [
            ("partcache_hits_total", self.hits),
            ("partcache_misses_total", self.misses),
            ("partcache_puts_total", self.puts),
            ("partcache_removals_total", self.removals),
            ("partcache_evictions_total", self.evictions),
            ("partcache_expirations_total", self.expirations),
            ("partcache_load_successes_total", self.load_successes),
            ("partcache_load_failures_total", self.load_failures),
            ("partcache_decode_errors_total", self.decode_errors),
            ("partcache_store_errors_total", self.store_errors),
            ("partcache_rejections_total", self.rejections),
            ("partcache_near_hits_total", self.near_hits),
            ("partcache_near_misses_total", self.near_misses),
            (
                "partcache_stale_sets_prevented_total",
                self.stale_sets_prevented,
            ),
        ];
        for (name, value) in counters {
            metrics::counter!(name, &label).absolute(value);
        }
        let gauges = [
            ("partcache_get_seconds_avg", self.average_get_time),
            ("partcache_put_seconds_avg", self.average_put_time),
            ("partcache_remove_seconds_avg", self.average_remove_time),
            ("partcache_load_seconds_avg", self.average_load_time),
        ];
        for (name, value) in gauges {
            metrics::gauge!(name, &label).set(value.as_secs_f64());
        }
        metrics::gauge!("partcache_hit_ratio", &label).set(self.hit_ratio());
    }
}

/// Where a store node's circuit breaker stands (see [`BreakerStats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go to the node.
    Closed,
    /// The node timed out repeatedly: calls to it fail at once
    /// ([`crate::Error::CircuitOpen`]).
    Open,
    /// Still open, and one probe is checking whether the node answers again.
    Probing,
}

impl BreakerState {
    /// `closed`, `open` or `probing`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::Probing => "probing",
        }
    }
}

/// One store node's circuit breaker: its state and how often it changed, for
/// dashboards and metrics. Stores without breakers (the embedded one) report none; see
/// [`crate::store::raw::RawStore::breakers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerStats {
    /// The node's address (`host:port`).
    pub node: String,
    /// The state now.
    pub state: BreakerState,
    /// How long it has been in this state.
    pub since: Duration,
    /// Times it opened.
    pub opened: u64,
    /// Times it closed again (a probe, or a call, found the node answering).
    pub closed: u64,
    /// Calls that failed at once because it was open.
    pub rejected: u64,
    /// Probes sent to the node while it was open.
    pub probes: u64,
}

impl BreakerStats {
    /// Pushes the breaker to the `metrics` facade, labelled `node`: the gauge
    /// `partcache_breaker_open` (1 open or probing, 0 closed) and the counters
    /// `partcache_breaker_{opened,closed,rejected,probes}_total`.
    pub fn publish(&self) {
        let label = [("node", self.node.clone())];
        let open = if self.state == BreakerState::Closed {
            0.0
        } else {
            1.0
        };
        metrics::gauge!("partcache_breaker_open", &label).set(open);
        for (name, value) in [
            ("partcache_breaker_opened_total", self.opened),
            ("partcache_breaker_closed_total", self.closed),
            ("partcache_breaker_rejected_total", self.rejected),
            ("partcache_breaker_probes_total", self.probes),
        ] {
            metrics::counter!(name, &label).absolute(value);
        }
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

impl std::fmt::Debug for StatsCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsCounters")
            .field("hits", &self.hits)
            .field("misses", &self.misses)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use metrics::{
        Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata,
        Recorder, SharedString, Unit,
    };
    use parking_lot::Mutex;

    use super::*;

    /// Records what the facade receives, keyed by `name{cache=...}`.
    #[derive(Default, Clone)]
    struct Recorded(Arc<Mutex<BTreeMap<String, f64>>>);

    struct Cell(String, Recorded);

    impl CounterFn for Cell {
        fn increment(&self, value: u64) {
            *self.1.0.lock().entry(self.0.clone()).or_default() += value as f64;
        }
        fn absolute(&self, value: u64) {
            self.1.0.lock().insert(self.0.clone(), value as f64);
        }
    }

    impl GaugeFn for Cell {
        fn increment(&self, value: f64) {
            *self.1.0.lock().entry(self.0.clone()).or_default() += value;
        }
        fn decrement(&self, value: f64) {
            *self.1.0.lock().entry(self.0.clone()).or_default() -= value;
        }
        fn set(&self, value: f64) {
            self.1.0.lock().insert(self.0.clone(), value);
        }
    }

    /// A histogram records how many samples it received and their sum.
    impl HistogramFn for Cell {
        fn record(&self, value: f64) {
            let mut values = self.1.0.lock();
            *values.entry(format!("{}:count", self.0)).or_default() += 1.0;
            *values.entry(format!("{}:sum", self.0)).or_default() += value;
        }
    }

    fn name(key: &Key) -> String {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        format!("{}{{{}}}", key.name(), labels.join(","))
    }

    impl Recorder for Recorded {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(Cell(name(key), self.clone())))
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(Arc::new(Cell(name(key), self.clone())))
        }
        fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Cell(name(key), self.clone())))
        }
    }

    #[test]
    fn striped_counters_sum_across_threads() {
        let counters = Arc::new(StatsCounters::default());
        std::thread::scope(|s| {
            for _ in 0..4 {
                let counters = counters.clone();
                s.spawn(move || (0..1000).for_each(|_| counters.hits.incr()));
            }
        });
        assert_eq!(counters.snapshot().hits, 4000);
        counters.reset();
        assert_eq!(counters.snapshot(), CacheStats::default());
    }

    #[test]
    fn snapshots_export_through_the_metrics_facade_with_the_cache_label() {
        let counters = StatsCounters::default();
        counters.hits.add(3);
        counters.misses.add(1);
        counters.evictions.add(2);
        let recorded = Recorded::default();
        metrics::with_local_recorder(&recorded, || counters.snapshot().publish("users"));
        let values = recorded.0.lock();
        assert_eq!(values["partcache_hits_total{cache=users}"], 3.0);
        assert_eq!(values["partcache_misses_total{cache=users}"], 1.0);
        assert_eq!(values["partcache_evictions_total{cache=users}"], 2.0);
        assert_eq!(values["partcache_hit_ratio{cache=users}"], 0.75);
    }

    #[test]
    fn named_counters_record_latency_per_operation_with_the_cache_label() {
        let recorded = Recorded::default();
        let counters = metrics::with_local_recorder(&recorded, || StatsCounters::named("users"));
        counters.time_get(Duration::from_millis(2));
        counters.time_get(Duration::from_millis(4));
        counters.time_put(Duration::from_millis(1));
        let values = recorded.0.lock();
        let get = "partcache_operation_duration_seconds{cache=users,op=get}";
        assert_eq!(values[&format!("{get}:count")], 2.0);
        assert!((values[&format!("{get}:sum")] - 0.006).abs() < 1e-9);
        let put = "partcache_operation_duration_seconds{cache=users,op=put}";
        assert_eq!(values[&format!("{put}:count")], 1.0);
        assert!(
            !values
                .contains_key("partcache_operation_duration_seconds{cache=users,op=remove}:count")
        );
        drop(values);
        // The averages of the snapshot are unaffected by the histograms.
        assert_eq!(
            counters.snapshot().average_get_time,
            Duration::from_millis(3)
        );
    }

    #[test]
    fn one_get_in_a_sample_is_timed_and_the_histogram_counts_every_get() {
        let recorded = Recorded::default();
        let counters = metrics::with_local_recorder(&recorded, || StatsCounters::named("users"));
        let mut timed = 0;
        for i in 0..GET_SAMPLE * 2 {
            let ticket = counters.sample_get();
            timed += usize::from(ticket.timed.is_some());
            counters.end_get(ticket, i % 2 == 0);
        }
        assert_eq!(timed, 2, "the first get and one in GET_SAMPLE after it");
        let snapshot = counters.snapshot();
        assert_eq!((snapshot.hits, snapshot.misses), (GET_SAMPLE, GET_SAMPLE));
        let get = "partcache_operation_duration_seconds{cache=users,op=get}";
        assert_eq!(
            recorded.0.lock()[&format!("{get}:count")],
            (GET_SAMPLE * 2) as f64
        );
        // After a reset, the next get is timed again: an average is there at once.
        counters.reset();
        let ticket = counters.sample_get();
        assert!(ticket.timed.is_some());
        std::thread::sleep(Duration::from_millis(1));
        counters.end_get(ticket, true);
        assert!(counters.snapshot().average_get_time >= Duration::from_millis(1));
    }

    /// A get tried in place first and then awaited (a store that cannot answer in
    /// place) is counted once, so the sampling still times one get in GET_SAMPLE.
    #[test]
    fn a_get_taken_back_is_neither_counted_nor_keeps_the_sample_from_the_next() {
        let counters = StatsCounters::named("in-place");
        let mut timed = 0;
        for _ in 0..GET_SAMPLE * 2 {
            let tried = counters.sample_get();
            counters.unsample_get(tried);
            let ticket = counters.sample_get();
            timed += usize::from(ticket.timed.is_some());
            counters.end_get(ticket, true);
        }
        assert_eq!(
            timed, 2,
            "one get in GET_SAMPLE timed, as without the tries"
        );
        assert_eq!(counters.snapshot().hits, GET_SAMPLE * 2);
    }

    /// What a stats endpoint publishes: plain numbers, the averages in microseconds
    /// (JSR-107's unit), never serde's `{"secs":..,"nanos":..}`.
    #[test]
    fn cache_stats_serialise_average_times_as_microseconds() {
        let counters = StatsCounters::default();
        counters.hits.incr();
        counters.time_put(Duration::from_nanos(50_666));
        counters.time_remove(Duration::from_millis(2));
        let json = serde_json::to_value(counters.snapshot()).unwrap();
        assert_eq!(json["hits"], 1);
        assert_eq!(json["average_put_time_us"], 50.666);
        assert_eq!(json["average_remove_time_us"], 2_000.0);
        assert_eq!(json["average_get_time_us"], 0.0);
        assert_eq!(json["average_load_time_us"], 0.0);
        let object = json.as_object().unwrap();
        assert!(object.values().all(serde_json::Value::is_number), "{json}");
        assert!(!object.contains_key("average_put_time"), "{json}");
    }

    #[test]
    fn counters_built_without_a_recorder_time_operations_without_histograms() {
        let counters = StatsCounters::named("nobody-listens");
        counters.time_remove(Duration::from_millis(5));
        assert_eq!(
            counters.snapshot().average_remove_time,
            Duration::from_millis(5)
        );
    }
}
