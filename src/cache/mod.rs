//! The response cache: GETs answered from memory, per upstream credential,
//! bounded in bytes, made stale by the writes that change them.
//!
//! | file | concern |
//! |---|---|
//! | `policy.rs` | which routes are cached for how long; the write → invalidation map |
//! | `key.rs` | cache keys (credential, method, decoded path, normalized query, `Accept`) |
//! | `entry.rs` | a stored response; `X-Cache`, `Age`, `ETag` and 304 |
//! | `invalidate.rs` | invalidation by sequence number (no read-after-write race) |
//! | `flight.rs` | coalescing concurrent misses onto one upstream fetch |
//! | `agents.rs` | agents in motion (deploying, an action not yet seen to land): coalesced fresh reads |
//! | `metrics.rs` | hits, misses, stale serves, evictions, bytes, entries |
//! | `shared.rs` | cluster mode: a write's invalidation on every replica |
//!
//! The request flow lives in `routes/cached.rs`; this module holds the
//! state. The cache sits in front of the rate shaper: a hit never spends
//! upstream budget.

pub mod agents;
pub mod entry;
pub mod flight;
pub mod invalidate;
pub mod key;
pub mod metrics;
pub mod policy;
mod shared;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;
use bytes::Bytes;
use futures_util::FutureExt;
use http::HeaderMap;
use moka::notification::RemovalCause;
use moka::Expiry;
use serde::Serialize;

use crate::config::CacheConfig;
use crate::error::GatewayError;
pub use agents::{Action, AgentWatch};
pub use entry::{CacheStatus, Entry, X_CACHE};
pub use flight::{Flights, Need, Role};
pub use invalidate::{Invalidations, Pattern};
pub use key::CacheKey;
pub use metrics::CacheMetrics;
pub use policy::{write_effect, AgentWrite, CacheRoute, WriteEffect};

/// What a fetch produced, shared by every waiter on it.
#[derive(Clone, Debug)]
pub enum Fetched {
    /// A 200 that is now stored.
    Stored(Arc<Entry>),
    /// Any other complete answer (not 200, or not storable): relayed to
    /// every waiter, stored for none.
    Passed(Arc<Passed>),
    /// The upstream (or the shaper) failed.
    Failed(GatewayError),
    /// The body was larger than `max_entry_bytes`: the leader got it
    /// streamed; the others fetch their own.
    Oversize,
}

/// A complete answer that is not stored.
#[derive(Debug)]
pub struct Passed {
    /// The response head.
    pub head: http::response::Parts,
    /// The whole body.
    pub body: Bytes,
}

impl Passed {
    /// The answer for one waiter.
    pub fn respond(&self) -> Response {
        let mut builder = http::Response::builder()
            .status(self.head.status)
            .version(self.head.version);
        if let Some(headers) = builder.headers_mut() {
            *headers = self.head.headers.clone();
        }
        builder
            .body(axum::body::Body::from(self.body.clone()))
            .unwrap_or_else(|_| axum::response::IntoResponse::into_response(GatewayError::Internal))
    }
}

/// Entries live for their TTL plus the stale-on-error window, and at
/// least the stale-if-limited age (seconds, changed by a config reload;
/// entries keep the lifetime they were given).
struct StaleWindow(Arc<[AtomicU64; 2]>);

impl StaleWindow {
    fn new(config: &CacheConfig) -> Self {
        Self(Arc::new([
            AtomicU64::new(config.stale_if_error_secs),
            AtomicU64::new(config.stale_if_limited_secs),
        ]))
    }

    fn set(&self, config: &CacheConfig) {
        self.0[0].store(config.stale_if_error_secs, Ordering::Relaxed);
        self.0[1].store(config.stale_if_limited_secs, Ordering::Relaxed);
    }

    fn lifetime(&self, ttl: Duration) -> Duration {
        let secs = |i: usize| Duration::from_secs(self.0[i].load(Ordering::Relaxed));
        (ttl + secs(0)).max(secs(1))
    }
}

impl Expiry<CacheKey, Arc<Entry>> for StaleWindow {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(self.lifetime(value.ttl))
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.lifetime(value.ttl))
    }
}

/// The cache and everything it needs to stay correct: the settings of
/// one configuration version over state that outlives reloads.
pub struct ResponseCache {
    config: CacheConfig,
    core: Arc<Core>,
}

/// What every configuration version shares: entries, invalidations,
/// fetches in flight, agents in motion. A reload that made a new store
/// would let a write in flight under the old version miss a read cached
/// under the new one.
struct Core {
    /// Keys hashed with aHash (randomly keyed, like SipHash resistant to
    /// chosen collisions): SipHash of a key was about 800 instructions of
    /// each cache hit (callgrind), aHash's a fraction of that.
    store: moka::future::Cache<CacheKey, Arc<Entry>, ahash::RandomState>,
    stale: StaleWindow,
    invalidations: Invalidations,
    flights: Flights<CacheKey, Fetched>,
    agents: AgentWatch,
    metrics: CacheMetrics,
    /// Cluster mode: where writes are published.
    cluster: Option<crate::cluster::Cluster>,
    /// Cluster mode: applies others' writes (kept alive here).
    sink: std::sync::OnceLock<Arc<dyn crate::cluster::events::Sink>>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("entries", &self.core.store.entry_count())
            .finish_non_exhaustive()
    }
}

impl ResponseCache {
    /// Builds the cache. `longest_fetch` bounds how long a fetch can run
    /// (the CRUD upstream timeout plus the longest queue wait), so that
    /// invalidations are kept long enough to catch it.
    /// In cluster mode (`cluster`), writes travel to every replica.
    pub fn new(
        config: &CacheConfig,
        metrics: CacheMetrics,
        longest_fetch: Duration,
        cluster: Option<crate::cluster::Cluster>,
    ) -> Self {
        let stale = StaleWindow::new(config);
        let listener_metrics = metrics.clone();
        let store = moka::future::Cache::builder()
            .max_capacity(config.max_bytes)
            .weigher(|key: &CacheKey, entry: &Arc<Entry>| {
                u32::try_from(key.weight() + entry.weight()).unwrap_or(u32::MAX)
            })
            .expire_after(StaleWindow(stale.0.clone()))
            .eviction_listener(move |_key, _entry, cause| match cause {
                RemovalCause::Size => listener_metrics.evicted("size"),
                RemovalCause::Expired => listener_metrics.evicted("expired"),
                RemovalCause::Explicit | RemovalCause::Replaced => {}
            })
            .build_with_hasher(ahash::RandomState::new());
        let core = Arc::new(Core {
            store,
            stale,
            invalidations: Invalidations::new(retention(config, longest_fetch)),
            flights: Flights::new(|| Fetched::Failed(GatewayError::Internal)),
            agents: AgentWatch::new(Duration::from_secs(config.agent_settle_secs)),
            metrics,
            cluster,
            sink: std::sync::OnceLock::new(),
        });
        Self::join_cluster(&core);
        Self {
            config: config.clone(),
            core,
        }
    }

    /// The same entries, invalidations and fetches under `config` (a
    /// reload): new TTLs, stale window and settle time apply to what is
    /// stored or acted on from now on. The byte limit is the store's and
    /// stays as built (a reload reports a change of it as needing a
    /// restart).
    pub fn reconfigured(&self, config: &CacheConfig, longest_fetch: Duration) -> Self {
        self.core.stale.set(config);
        self.core
            .agents
            .set_settle(Duration::from_secs(config.agent_settle_secs));
        self.core
            .invalidations
            .retain_at_least(retention(config, longest_fetch));
        Self {
            config: config.clone(),
            core: self.core.clone(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &CacheConfig {
        &self.config
    }

    /// The metric handles.
    pub fn metrics(&self) -> &CacheMetrics {
        &self.core.metrics
    }

    /// Agents in motion.
    pub fn agents(&self) -> &AgentWatch {
        &self.core.agents
    }

    /// Fetches in flight.
    pub fn flights(&self) -> &Flights<CacheKey, Fetched> {
        &self.core.flights
    }

    /// The invalidation record.
    pub fn invalidations(&self) -> &Invalidations {
        &self.core.invalidations
    }

    /// The TTL of `route` (zero: not cached).
    pub fn ttl(&self, route: CacheRoute) -> Duration {
        Duration::from_secs(route.ttl_secs(&self.config.ttl_secs))
    }

    /// The stored entry for `key`, if it is current and moka can tell
    /// without waiting (nearly always: it waits only while its upkeep is
    /// busy elsewhere). `None` leaves the answer to [`lookup`](Self::lookup),
    /// which also drops an entry a write made stale.
    pub fn lookup_now(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        let entry = self.core.store.get(key).now_or_never()??;
        self.current(key, entry.seq).then_some(entry)
    }

    /// The stored entry for `key`, unless a write made it stale. It may be
    /// past its TTL: the caller decides between fresh and stale.
    pub async fn lookup(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        let entry = self.core.store.get(key).await?;
        if self.current(key, entry.seq) {
            return Some(entry);
        }
        self.core.store.invalidate(key).await;
        None
    }

    /// Whether something for `key` stamped `seq` is still current.
    pub fn current(&self, key: &CacheKey, seq: u64) -> bool {
        self.core
            .invalidations
            .current(&key.principal, &key.path, seq)
    }

    /// Stores `entry` under `key` unless a write made it stale meanwhile.
    pub async fn insert(&self, key: CacheKey, entry: Arc<Entry>) {
        if self.current(&key, entry.seq) {
            self.core.store.insert(key, entry).await;
        }
    }

    /// Drops what a write changed, here only (see
    /// [`written`](Self::written) for every replica).
    pub fn invalidate(&self, principal: &Arc<str>, effect: &WriteEffect) {
        Self::apply(&self.core, principal, effect);
    }

    fn apply(core: &Core, principal: &Arc<str>, effect: &WriteEffect) {
        match &effect.agent {
            Some(AgentWrite::Settling(slug, action)) => {
                core.agents.acted(principal, slug, *action);
            }
            Some(AgentWrite::Deleted(slug)) => core.agents.forget(principal, slug),
            Some(AgentWrite::Created) | None => {}
        }
        if effect.drops.is_empty() {
            return;
        }
        core.invalidations.record(Some(principal), &effect.drops);
        core.metrics.invalidated();
    }

    fn forget_all(core: &Core) {
        core.invalidations
            .record(None, std::slice::from_ref(&Pattern::all()));
    }

    /// Makes every entry of `principal` (one upstream credential), or of
    /// all when `None`, stale at once: a reload gave that credential a
    /// new key or the gateway a new upstream, which may not see the same
    /// account.
    pub fn forget(&self, principal: Option<&Arc<str>>) {
        self.core
            .invalidations
            .record(principal, std::slice::from_ref(&Pattern::all()));
    }

    /// Purges everything (`prefix` `None`) or the paths under `prefix`
    /// (decoded segments after `/api/v1/`), for every credential. Returns
    /// the number of entries removed.
    pub async fn purge(&self, prefix: Option<&[&str]>) -> u64 {
        let pattern = match prefix {
            None => Pattern::all(),
            Some(parts) => Pattern::below(parts),
        };
        self.core
            .invalidations
            .record(None, std::slice::from_ref(&pattern));
        let doomed: Vec<Arc<CacheKey>> = self
            .core
            .store
            .iter()
            .filter(|(key, _)| pattern.matches(&key.path))
            .map(|(key, _)| key)
            .collect();
        for key in &doomed {
            self.core.store.invalidate(key.as_ref()).await;
        }
        self.refresh_gauges().await;
        doomed.len() as u64
    }

    /// Brings the size gauges up to date (after pending evictions).
    pub async fn refresh_gauges(&self) {
        self.core.store.run_pending_tasks().await;
        self.core.metrics.set_size(
            self.core.store.weighted_size(),
            self.core.store.entry_count(),
        );
    }

    /// A summary for `GET /admin/cache`: [`glance`](Self::glance) after
    /// pending evictions, with the largest entries.
    pub async fn summary(&self) -> CacheSummary {
        self.refresh_gauges().await;
        let now = Instant::now();
        let mut largest: Vec<(String, u64, u64)> = self
            .core
            .store
            .iter()
            .map(|(key, entry)| {
                (
                    key.display_path(),
                    entry.body.len() as u64,
                    entry.age(now).as_secs(),
                )
            })
            .collect();
        largest.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        largest.truncate(10);
        let mut summary = self.glance();
        summary.largest = largest
            .into_iter()
            .map(|(path, body_bytes, age_secs)| LargeEntry {
                path,
                body_bytes,
                age_secs,
            })
            .collect();
        summary
    }

    /// Counters and sizes without walking the entries; `largest` is
    /// empty. The sizes are as of the last
    /// [`refresh_gauges`](Self::refresh_gauges). The operator page's
    /// sampler reads it every second.
    pub fn glance(&self) -> CacheSummary {
        let routes = ALL_ROUTES;
        CacheSummary {
            entries: self.core.store.entry_count(),
            bytes: self.core.store.weighted_size(),
            max_bytes: self.config.max_bytes,
            max_entry_bytes: self.config.max_entry_bytes,
            hits: self.core.metrics.total(&routes, "hit"),
            misses: self.core.metrics.total(&routes, "miss"),
            stale: self.core.metrics.total(&routes, "stale"),
            stale_limited: self.core.metrics.stale_total(&routes, "limited"),
            bypass: self.core.metrics.total(&routes, "bypass"),
            coalesced: self.core.metrics.coalesced_total(),
            evicted_size: self.core.metrics.evicted_total("size"),
            evicted_expired: self.core.metrics.evicted_total("expired"),
            invalidations: self.core.metrics.invalidations_total(),
            in_flight: self.core.flights.len(),
            agents_in_motion: self.core.agents.snapshot(),
            largest: Vec::new(),
        }
    }
}

/// Every cacheable route class.
pub const ALL_ROUTES: [CacheRoute; 12] = [
    CacheRoute::AuthMe,
    CacheRoute::Agents,
    CacheRoute::Agent,
    CacheRoute::Secrets,
    CacheRoute::Sessions,
    CacheRoute::Invocations,
    CacheRoute::Usage,
    CacheRoute::Buckets,
    CacheRoute::BucketFiles,
    CacheRoute::Mounts,
    CacheRoute::Files,
    CacheRoute::AgentFiles,
];

/// How long an invalidation can matter: the longest an entry lives (its
/// TTL plus the stale window) plus the longest fetch.
fn retention(config: &CacheConfig, longest_fetch: Duration) -> Duration {
    let max_ttl = ALL_ROUTES
        .iter()
        .map(|r| r.ttl_secs(&config.ttl_secs))
        .max()
        .unwrap_or(0);
    let kept = (max_ttl + config.stale_if_error_secs).max(config.stale_if_limited_secs);
    Duration::from_secs(kept) + longest_fetch
}

/// `GET /admin/cache`.
#[derive(Debug, Serialize)]
pub struct CacheSummary {
    /// Entries held.
    pub entries: u64,
    /// Bytes held (as the weigher counts them).
    pub bytes: u64,
    /// `cache.max_bytes`.
    pub max_bytes: u64,
    /// `cache.max_entry_bytes`.
    pub max_entry_bytes: u64,
    /// Answers served from memory.
    pub hits: u64,
    /// Answers fetched upstream (coalesced waiters included).
    pub misses: u64,
    /// Stale entries served (the upstream failed, or the budget would
    /// have refused the fetch).
    pub stale: u64,
    /// Of those, the ones served because the budget would have refused.
    pub stale_limited: u64,
    /// Requests that skipped the cache (`no-store`, `Range`).
    pub bypass: u64,
    /// Misses that joined a fetch in flight.
    pub coalesced: u64,
    /// Entries evicted by the byte limit.
    pub evicted_size: u64,
    /// Entries that expired.
    pub evicted_expired: u64,
    /// Writes that dropped cached reads.
    pub invalidations: u64,
    /// Fetches running now.
    pub in_flight: usize,
    /// Agents fetched fresh right now.
    pub agents_in_motion: Vec<agents::MotionView>,
    /// The ten largest entries.
    pub largest: Vec<LargeEntry>,
}

/// One entry, for the admin page.
#[derive(Debug, Serialize)]
pub struct LargeEntry {
    /// `/api/v1/...?query`.
    pub path: String,
    /// Body size.
    pub body_bytes: u64,
    /// Seconds since it was fetched.
    pub age_secs: u64,
}

/// The headers of `request` that make a cached route skip or refresh.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Directive {
    /// Look up as usual.
    Normal,
    /// `no-cache`, `max-age=0` or `Pragma: no-cache`: fetch fresh, store.
    Revalidate,
    /// `no-store` or a `Range`: neither look up nor store.
    Bypass,
}

impl Directive {
    /// Reads the client's `Cache-Control`, `Pragma` and `Range`.
    pub fn of(headers: &HeaderMap) -> Self {
        if headers.contains_key(http::header::RANGE) {
            return Self::Bypass;
        }
        let mut directive = Self::Normal;
        let values = headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .chain(headers.get_all(http::header::PRAGMA).iter())
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for value in values {
            let value = value.trim().to_ascii_lowercase();
            match value.as_str() {
                "no-store" => return Self::Bypass,
                "no-cache" | "max-age=0" => directive = Self::Revalidate,
                _ => {}
            }
        }
        directive
    }
}
