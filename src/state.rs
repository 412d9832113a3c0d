//! Shared state handed to every handler: config, upstream client, metrics,
//! readiness.

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::ResponseCache;
use crate::config::Config;
use crate::keys::broker::Broker;
use crate::metrics::Metrics;
use crate::shaper::Shaper;
use crate::upstream::breaker::Breaker;
use crate::upstream::credential::Credentials;
use crate::upstream::retry::Retrier;
use crate::upstream::UpstreamClient;

/// Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Inner {
    /// The validated configuration.
    pub config: Config,
    /// The pooled upstream client.
    pub upstream: UpstreamClient,
    /// The upstream keys, each with its rate shaper.
    pub credentials: Credentials,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// When the upstream last answered.
    pub readiness: Readiness,
    /// The response cache, unless `cache.enabled` is false.
    pub cache: Option<ResponseCache>,
    /// Local keys, scopes, budgets and the usage ledger.
    pub broker: Broker,
    /// Which failed attempts are sent again.
    pub retrier: Retrier,
    /// Fails fast while the upstream is down.
    pub breaker: Breaker,
}

impl AppState {
    /// Wraps the parts. With shaping on, this must run inside a Tokio
    /// runtime (the shaper's dispatchers are spawned on it).
    pub fn new(config: Config, upstream: UpstreamClient, broker: Broker) -> Self {
        let metrics = Metrics::new();
        let credentials = Credentials::new(&config, metrics.shaper());
        let retrier = Retrier::new(&config.retry, metrics.retry().clone());
        let breaker = Breaker::new(&config.breaker, metrics.breaker().clone());
        let cache = config.cache.enabled.then(|| {
            let up = &config.upstream;
            let longest =
                Duration::from_millis(up.crud_timeout_ms + config.shaper.crud_max_wait_ms);
            ResponseCache::new(&config.cache, metrics.cache().clone(), longest)
        });
        Self(Arc::new(Inner {
            config,
            cache,
            upstream,
            metrics,
            readiness: Readiness::new(),
            credentials,
            broker,
            retrier,
            breaker,
        }))
    }

    /// The `default` credential's shaper, unless shaping is off.
    pub fn default_shaper(&self) -> Option<&Shaper> {
        self.credentials.default_credential().shaper()
    }
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Tracks the last time the upstream answered anything (any status).
#[derive(Debug)]
pub struct Readiness {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last answer, plus one; 0 = never.
    last_ok: AtomicU64,
}

impl Readiness {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            last_ok: AtomicU64::new(0),
        }
    }

    /// Records that the upstream answered just now.
    pub fn mark_ok(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64 + 1;
        self.last_ok.store(ms, Ordering::Relaxed);
    }

    /// Whether the upstream answered within `window`.
    pub fn recently_ok(&self, window: Duration) -> bool {
        match self.last_ok.load(Ordering::Relaxed) {
            0 => false,
            ms => self.epoch.elapsed().as_millis() as u64 + 1 - ms <= window.as_millis() as u64,
        }
    }
}
