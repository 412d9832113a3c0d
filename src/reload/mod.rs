//! Hot reload: a new configuration, applied atomically to new requests.
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | [`Live`] (the version serving requests) and [`Reloader`] |
//! | `pin.rs` | settings only a restart can change |
//! | `watch.rs` | the optional file watch |
//!
//! A reload (on `SIGHUP`, `POST /admin/config/reload`, or a change of the
//! watched files) loads the configuration exactly as startup does: the
//! file, the environment, the original flags, and the key files read
//! again. It is validated; restart-only settings keep their running values
//! and are reported; then the next [`AppState`] is built over the lasting
//! parts of the running one (metrics, shapers' send logs and queues, cache
//! entries, breaker, retry budget, key store) and stored with one pointer
//! swap. Each request reads that pointer once, when it arrives: it runs
//! wholly under the old version or wholly under the new one, and requests
//! in flight finish under the version they started with. A refused reload
//! changes nothing; its error is logged and shown at `GET /admin/config`.
//!
//! What `GET /admin/config` shows of reloads, and their metrics, live in
//! `config_status/`: the state holds them, and this driver updates them.

pub mod pin;
pub mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::mpsc;

use crate::app::App;
use crate::config::{Config, ConfigError};
use crate::config_status::{Attempt, ReloadRequest, Trigger};
use crate::keys::clock::now_unix;
use crate::state::{AppState, RebuildError};

/// The version serving new requests, and its router.
pub struct Live {
    current: ArcSwap<Served>,
}

struct Served {
    state: AppState,
    app: App,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("version", &self.state().version)
            .finish()
    }
}

impl Live {
    /// Serves `state` first.
    pub fn new(state: AppState) -> Arc<Self> {
        let app = crate::build_app(state.clone());
        Arc::new(Self {
            current: ArcSwap::from_pointee(Served { state, app }),
        })
    }

    /// The service of the current version: one atomic load per request.
    pub fn app(&self) -> App {
        self.current.load().app.clone()
    }

    /// The current version's state.
    pub fn state(&self) -> AppState {
        self.current.load().state.clone()
    }

    fn install(&self, state: AppState) {
        let app = crate::build_app(state.clone());
        let (console, version) = (state.console.clone(), state.version);
        self.current.store(Arc::new(Served { state, app }));
        // Open event streams hold the version they were opened on (its
        // admin key, its settings): they end and reconnect to this one.
        console.installed(version);
    }
}

/// The server serves the current version: its app for each request, the
/// first version's listener settings, the current one's shapers to drain.
impl crate::server::Site for Live {
    type Service = App;

    fn service(&self, peer: crate::types::Peer) -> App {
        let mut app = self.app();
        app.get_mut().on_connection(peer);
        app
    }

    fn settings(&self) -> crate::server::Settings {
        let state = self.state();
        let server = &state.config.server;
        crate::server::Settings {
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            max_connections: server.max_connections,
            shutdown_grace: Duration::from_millis(server.shutdown_grace_ms),
        }
    }

    fn connection(&self, open: bool) {
        let state = self.state();
        let gauge = state.metrics.connections_open();
        if open {
            gauge.inc();
        } else {
            gauge.dec();
        }
    }

    fn connection_rejected(&self) {
        self.state().metrics.connection_rejected();
    }

    fn drain(&self, deadline: std::time::Instant) {
        let state = self.state();
        // Event streams never end by themselves: end them, or they would
        // hold the drain for its whole grace.
        state.console.close();
        for shaper in state.credentials.iter().filter_map(|c| c.shaper()) {
            shaper.drain(deadline);
        }
    }

    async fn stopped(&self) {
        let state = self.state();
        let ledger = state.broker.ledger();
        ledger.flush().await;
        let owed = ledger.owed();
        if owed > 0 {
            // Said once, loudly: these records die with the process.
            tracing::error!(
                owed,
                "stopping with usage records the key store never took (it was unreachable); they are lost"
            );
        }
    }
}

/// Loads the configuration as startup did (file, environment, flags).
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>;

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new configuration is invalid.
    #[error("{0}")]
    Config(ConfigError),
    /// Valid, but not with the running values of the restart-only settings.
    #[error("{0} (with the running values of settings that need a restart: {1})")]
    Pinned(ConfigError, String),
    /// A part could not be rebuilt.
    #[error("{0}")]
    Rebuild(RebuildError),
    /// The reload task failed.
    #[error("the reload task failed")]
    Task,
}

/// Re-reads the configuration and swaps the running version.
pub struct Reloader {
    live: Arc<Live>,
    load: Loader,
    source: Option<PathBuf>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Reloader {
    /// Reloads `live` with `load`; `source` is the config file, watched
    /// when `reload.watch` is on.
    pub fn new(live: Arc<Live>, load: Loader, source: Option<PathBuf>) -> Self {
        Self { live, load, source }
    }

    /// Loads, checks and applies a new configuration; logs and records
    /// the outcome. Blocking (it reads files and the key store): call it
    /// off the async threads, inside the runtime.
    pub fn reload(&self, trigger: Trigger) -> Attempt {
        let running = self.live.state();
        let outcome = self.next(&running);
        let status = &running.status;
        let (attempt, next) = match outcome {
            Ok((next, pending_restart)) => {
                let changed = pin::changed(&running.config, &next.config);
                crate::telemetry::set_log_level(&next.config.telemetry.log_level);
                status.applied(next.version, pending_restart.clone());
                let attempt = Attempt {
                    at: now_unix(),
                    trigger,
                    applied: true,
                    version: next.version,
                    error: None,
                    pending_restart,
                };
                (attempt, Some((next, changed)))
            }
            Err(error) => {
                tracing::error!(
                    version = running.version,
                    trigger = trigger.as_str(),
                    %error,
                    "configuration reload refused; the running configuration stays"
                );
                let attempt = Attempt {
                    at: now_unix(),
                    trigger,
                    applied: false,
                    version: running.version,
                    error: Some(error.to_string()),
                    pending_restart: Vec::new(),
                };
                (attempt, None)
            }
        };
        // Recorded before a new version goes live: whoever sees the new
        // version (`GET /admin/config`) sees this attempt too, not the one
        // before it.
        status.attempted(attempt.clone());
        if let Some((next, changed)) = next {
            self.live.install(next);
            tracing::info!(
                version = attempt.version,
                trigger = trigger.as_str(),
                changed = %changed.join(", "),
                pending_restart = %attempt.pending_restart.join(", "),
                "configuration reloaded"
            );
        }
        attempt
    }

    fn next(&self, running: &AppState) -> Result<(AppState, Vec<&'static str>), ReloadError> {
        let mut config = (self.load)().map_err(ReloadError::Config)?;
        let pending = pin::pin(&running.config, &mut config);
        let config = config
            .validate()
            .map_err(|e| ReloadError::Pinned(e, pending.join(", ")))?;
        let next = running.reconfigured(config).map_err(ReloadError::Rebuild)?;
        Ok((next, pending))
    }

    /// Reloads on `SIGHUP`, on admin requests and, when `reload.watch` is
    /// on, when the watched files change; until the task is aborted.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        let (tx, rx) = mpsc::channel(8);
        self.live.state().status.accept_requests(tx);
        tokio::spawn(Arc::new(self).run(rx))
    }

    async fn run(self: Arc<Self>, mut requests: mpsc::Receiver<ReloadRequest>) {
        let mut hangups = hangups();
        let mut seen = self.fingerprint();
        loop {
            let reload = self.live.state().config.reload.clone();
            let (trigger, reply) = tokio::select! {
                () = next_hangup(&mut hangups) => (Trigger::Signal, None),
                Some(reply) = requests.recv() => (Trigger::Admin, Some(reply)),
                () = tokio::time::sleep(Duration::from_millis(reload.watch_interval_ms)), if reload.watch => {
                    let print = self.fingerprint();
                    if print == seen {
                        continue;
                    }
                    (Trigger::Watch, None)
                }
            };
            let reloader = self.clone();
            let attempt = tokio::task::spawn_blocking(move || reloader.reload(trigger)).await;
            seen = self.fingerprint();
            if let Some(reply) = reply {
                let attempt = attempt.unwrap_or_else(|_| Attempt {
                    at: now_unix(),
                    trigger,
                    applied: false,
                    version: self.live.state().version,
                    error: Some(ReloadError::Task.to_string()),
                    pending_restart: Vec::new(),
                });
                let _ = reply.send(attempt);
            }
        }
    }

    fn fingerprint(&self) -> [u8; 32] {
        let config = &self.live.state().config;
        watch::fingerprint(&watch::watched(self.source.as_deref(), config))
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(stream) => Some(stream),
        Err(error) => {
            tracing::warn!(%error, "cannot listen for SIGHUP; reload with POST /admin/config/reload");
            None
        }
    }
}

#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

/// The next `SIGHUP`; never, where there are none (or no more).
async fn next_hangup(hangups: &mut Hangups) {
    #[cfg(unix)]
    if let Some(stream) = hangups.as_mut() {
        if stream.recv().await.is_some() {
            return;
        }
    }
    *hangups = None;
    std::future::pending().await
}
