//! Shared state handed to every handler: config, upstream client, metrics,
//! readiness.
//!
//! One `AppState` is one configuration version. A reload builds the next
//! one with [`AppState::reconfigured`] over the parts that must outlive it
//! (metrics, shapers, cache entries, breaker, retry budget, key store) and
//! swaps it in whole (`reload::Live`).

use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::ResponseCache;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::config_status::ConfigStatus;
use crate::console::Console;
use crate::keys::broker::Broker;
use crate::keys::store::StoreError;
use crate::metrics::Metrics;
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
    /// Its version: 1 at startup, one more on each applied reload.
    pub version: u64,
    /// The pooled upstream client.
    pub upstream: Arc<UpstreamClient>,
    /// The upstream keys, each with its rate shaper.
    pub credentials: Credentials,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// When the upstream last answered.
    pub readiness: Arc<Readiness>,
    /// Reload history, for `GET /admin/config`.
    pub status: Arc<ConfigStatus>,
    /// The response cache, unless `cache.enabled` is false.
    pub cache: Option<ResponseCache>,
    /// Local keys, scopes, budgets and the usage ledger.
    pub broker: Broker,
    /// Which failed attempts are sent again.
    pub retrier: Retrier,
    /// Fails fast while the upstream is down.
    pub breaker: Breaker,
    /// Cluster mode: Redis, shared by every config version.
    pub cluster: Option<Cluster>,
    /// What the operator page and `status` show: the last requests,
    /// history, login sessions, the event feed.
    pub console: Arc<Console>,
}

/// Why a new configuration could not be put in place.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// The upstream HTTP client could not be built.
    #[error("cannot build the upstream client: {0}")]
    Client(crate::upstream::BuildError),
    /// The key store could not be read to load the declared keys.
    #[error("cannot read the key store: {0}")]
    Store(StoreError),
}

impl AppState {
    /// Wraps the parts. With shaping on, this must run inside a Tokio
    /// runtime (the shaper's dispatchers are spawned on it).
    pub fn new(
        config: Config,
        upstream: UpstreamClient,
        broker: Broker,
        cluster: Option<Cluster>,
    ) -> Self {
        let metrics = Arc::new(Metrics::new(cluster.as_ref().map(Cluster::metrics)));
        let status = Arc::new(ConfigStatus::new(metrics.reload().clone()));
        let credentials = Credentials::new(&config, metrics.shaper(), cluster.as_ref());
        let retrier = Retrier::new(&config.retry, metrics.retry().clone());
        let breaker = Breaker::new(&config.breaker, metrics.breaker().clone());
        let cache = config.cache.enabled.then(|| {
            ResponseCache::new(
                &config.cache,
                metrics.cache().clone(),
                longest_fetch(&config),
                cluster.clone(),
            )
        });
        status.applied(1, Vec::new());
        Self(Arc::new(Inner {
            config,
            version: 1,
            cache,
            upstream: Arc::new(upstream),
            metrics,
            readiness: Arc::new(Readiness::new()),
            status,
            credentials,
            broker,
            retrier,
            breaker,
            cluster,
            console: Arc::new(Console::new()),
        }))
    }

    /// The next version: `config` over this version's lasting parts. The
    /// caller has already pinned the settings only a restart can change
    /// (`reload::pin`), so the cache's byte limit, the auth mode and the
    /// store are the running ones. The shared parts take their new
    /// settings here (declared keys, shaper limits, the cache's stale
    /// window and settle time); the steps that can fail come first, and the
    /// declared keys are put back if reading the store fails, so a refused
    /// reload changes nothing.
    ///
    /// # Errors
    /// The upstream client cannot be built or the key store cannot be read.
    pub fn reconfigured(&self, config: Config) -> Result<Self, RebuildError> {
        let upstream = if config.upstream == self.config.upstream {
            self.upstream.clone()
        } else {
            Arc::new(UpstreamClient::new(&config.upstream).map_err(RebuildError::Client)?)
        };
        let broker = self
            .broker
            .reconfigured(&config)
            .map_err(RebuildError::Store)?;
        let credentials =
            self.credentials
                .reconfigured(&config, self.metrics.shaper(), self.cluster.as_ref());
        let cache = self.cache.as_ref().map(|cache| {
            forget_other_accounts(cache, &self.config, &config);
            cache.reconfigured(&config.cache, longest_fetch(&config))
        });
        Ok(Self(Arc::new(Inner {
            version: self.version + 1,
            upstream,
            credentials,
            cache,
            broker,
            retrier: self.retrier.reconfigured(&config.retry),
            breaker: self.breaker.reconfigured(&config.breaker),
            metrics: self.metrics.clone(),
            cluster: self.cluster.clone(),
            readiness: self.readiness.clone(),
            status: self.status.clone(),
            console: self.console.clone(),
            config,
        })))
    }
}

/// Entries fetched with a key or an upstream that `next` replaces may
/// belong to another account: they are not served again.
fn forget_other_accounts(cache: &ResponseCache, running: &Config, next: &Config) {
    if next.upstream.url != running.upstream.url {
        cache.forget(None);
        return;
    }
    let key_of = |config: &Config, name: &str| {
        if name == crate::config::DEFAULT_CREDENTIAL {
            config.upstream_key.clone()
        } else {
            config.named_keys.get(name).cloned()
        }
    };
    let names = std::iter::once(crate::config::DEFAULT_CREDENTIAL)
        .chain(running.named_keys.keys().map(String::as_str));
    for name in names {
        if key_of(running, name) != key_of(next, name) {
            cache.forget(Some(&Arc::from(name)));
        }
    }
}

/// The longest a cache fill can take: the CRUD upstream timeout plus the
/// longest queue wait (a `Prefer: wait` may ask for more than the lane's).
fn longest_fetch(config: &Config) -> Duration {
    let wait = config
        .shaper
        .crud_max_wait_ms
        .max(config.shaper.prefer_wait_max_ms);
    Duration::from_millis(config.upstream.crud_timeout_ms + wait)
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
