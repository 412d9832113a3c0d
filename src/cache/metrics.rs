//! The cache's metrics: lookups by route and result, coalesced waiters,
//! evictions, invalidations, and the bytes and entries held.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::entry::CacheStatus;
use super::policy::CacheRoute;
use crate::counters::CounterSlots;

/// Labels: the route class and the result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// A [`CacheRoute`] label.
    pub route: &'static str,
    /// `hit`, `miss`, `stale` or `bypass`.
    pub result: &'static str,
}

/// Lookup results: the variants of [`CacheStatus`].
const RESULTS: usize = 4;
/// Slots for every route and result; a route added later past these
/// falls back to the family.
const LOOKUP_SLOTS: usize = 12 * RESULTS;

/// Labels: why an entry left.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    /// `size` (the byte limit) or `expired`.
    pub cause: &'static str,
}

/// Labels: why a stale entry was served.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StaleLabels {
    /// A [`CacheRoute`] label.
    pub route: &'static str,
    /// `error` (the upstream failed) or `limited` (the shaper would have
    /// refused the fetch).
    pub reason: &'static str,
}

/// Handles to the cache's metric families (clones share the values).
#[derive(Clone, Debug)]
pub struct CacheMetrics {
    lookups: Family<LookupLabels, Counter>,
    /// `lookups` by route and result, found without hashing.
    lookup_slots: CounterSlots,
    coalesced: Counter,
    stale: Family<StaleLabels, Counter>,
    evictions: Family<EvictionLabels, Counter>,
    invalidations: Counter,
    bytes: Gauge,
    entries: Gauge,
}

impl Default for CacheMetrics {
    fn default() -> Self {
        Self {
            lookups: Family::default(),
            lookup_slots: CounterSlots::new(LOOKUP_SLOTS),
            coalesced: Counter::default(),
            stale: Family::default(),
            evictions: Family::default(),
            invalidations: Counter::default(),
            bytes: Gauge::default(),
            entries: Gauge::default(),
        }
    }
}

impl CacheMetrics {
    /// Creates the families and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "cache_lookups",
            "Requests to cached routes, by route class and result (hit, miss, stale, bypass)",
            metrics.lookups.clone(),
        );
        registry.register(
            "cache_coalesced",
            "Misses that joined a fetch already in flight instead of going upstream",
            metrics.coalesced.clone(),
        );
        registry.register(
            "cache_stale_served",
            "Stale entries served, by route class and reason (error: the upstream failed; \
             limited: the budget would have refused the fetch)",
            metrics.stale.clone(),
        );
        registry.register(
            "cache_evictions",
            "Entries that left the cache, by cause (size: the byte limit; expired)",
            metrics.evictions.clone(),
        );
        registry.register(
            "cache_invalidations",
            "Writes that dropped cached reads",
            metrics.invalidations.clone(),
        );
        registry.register(
            "cache_bytes",
            "Bytes held by the cache (bodies, headers, keys)",
            metrics.bytes.clone(),
        );
        registry.register(
            "cache_entries",
            "Entries held by the cache",
            metrics.entries.clone(),
        );
        metrics
    }

    /// Counts one request to a cached route.
    pub fn lookup(&self, route: CacheRoute, status: CacheStatus) {
        let result = match status {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
            CacheStatus::Bypass => "bypass",
        };
        let labels = || LookupLabels {
            route: route.as_str(),
            result,
        };
        let slot = route as usize * RESULTS + status as usize;
        match self.lookup_slots.get(slot, &self.lookups, labels) {
            Some(counter) => counter.inc(),
            None => self.lookups.get_or_create(&labels()).inc(),
        };
    }

    /// Counts, for all routes, the lookups with `result`.
    pub fn total(&self, routes: &[CacheRoute], result: &'static str) -> u64 {
        routes
            .iter()
            .map(|route| {
                self.lookups
                    .get_or_create(&LookupLabels {
                        route: route.as_str(),
                        result,
                    })
                    .get()
            })
            .sum()
    }

    /// One waiter joined a fetch in flight.
    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    /// Waiters that joined a fetch in flight, so far.
    pub fn coalesced_total(&self) -> u64 {
        self.coalesced.get()
    }

    /// A stale entry of `route` was served, for `reason`.
    pub fn stale_served(&self, route: CacheRoute, reason: &'static str) {
        self.stale
            .get_or_create(&StaleLabels {
                route: route.as_str(),
                reason,
            })
            .inc();
    }

    /// Stale entries served for `reason`, over `routes`.
    pub fn stale_total(&self, routes: &[CacheRoute], reason: &'static str) -> u64 {
        routes
            .iter()
            .map(|route| {
                self.stale
                    .get_or_create(&StaleLabels {
                        route: route.as_str(),
                        reason,
                    })
                    .get()
            })
            .sum()
    }

    /// One entry left because of `cause`.
    pub fn evicted(&self, cause: &'static str) {
        self.evictions
            .get_or_create(&EvictionLabels { cause })
            .inc();
    }

    /// Entries evicted for `cause`, so far.
    pub fn evicted_total(&self, cause: &'static str) -> u64 {
        self.evictions
            .get_or_create(&EvictionLabels { cause })
            .get()
    }

    /// One write dropped cached reads.
    pub fn invalidated(&self) {
        self.invalidations.inc();
    }

    /// Writes that dropped cached reads, so far.
    pub fn invalidations_total(&self) -> u64 {
        self.invalidations.get()
    }

    /// Sets the size gauges.
    pub fn set_size(&self, bytes: u64, entries: u64) {
        self.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.entries.set(i64::try_from(entries).unwrap_or(i64::MAX));
    }
}
