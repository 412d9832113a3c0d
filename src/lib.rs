//! castari-gateway: a local gateway in front of the Castari API.
//!
//! A request goes one way through six stages; each is a module that
//! imports none above it (`tests/imports.rs` checks that `src/` has no
//! import circles):
//!
//! | # | stage | module | decides |
//! |---|---|---|---|
//! | 1 | frame | `server.rs`, `app.rs` | request id, peer, limits, access record, caught panics |
//! | 2 | admission | `routes/proxy.rs` | target and path checks, the one reading of the route (`route.rs`), local key, scope, the account's own credentials (`routes/guard.rs`) |
//! | 3 | cache | `routes/cached.rs` | fresh hit, coalesced miss, stale; writes drop what they change |
//! | 4 | shaper | `routes/forward.rs`, `routes/shaped.rs` | budget, fair queue, deadlines, session turn |
//! | 5 | upstream | `routes/forward.rs`, `upstream/` | breaker, send, 429 absorbed, safe retries |
//! | 6 | response | `routes/proxy.rs`, `app.rs` | `X-RateLimit-*` view, accounting, access record |
//!
//! Why this order: nothing is spent on a request that will be refused, so
//! the cheap local checks come first and a refused caller never sees a
//! cached answer (2 before 3); a hit costs no budget (3 before 4); what
//! waits for the budget is the request itself, so a retry or a 429 sent
//! again keeps its place in line (4 and 5 are one loop); and the answer
//! is stamped and counted once, whichever stage made it (6). After
//! admission the request travels as one typed value (`routes/call.rs`).
//!
//! ```text
//! client ──► server ──► app frame ──► proxy: check, route, broker ──► hit? answer now
//!                                       └► cache (GET) / write guard
//!                                            └► forward: breaker ► shaper ► upstream ► retry
//! ```
//!
//! In cluster mode (`cluster/`), stages 3 and 4 share what must be shared
//! through Redis behind small seams: the shaper's send decision
//! (`cluster::SharedBudget`), a write's cache effects
//! (`ResponseCache::written`, published on `cluster::events`) and session
//! turns (`cluster::turns`). The queue and the cache entries stay local.
//! The key broker's keys, rates, USD budgets and ledger move to Redis
//! behind `keys::backend::KeyBackend` (`keys::redis`).
//!
//! The views (the operator page at `/`, `/admin/events`, `/admin/snapshot`
//! and `castari-gateway status`) look at the gateway from the side:
//! `console` keeps what only they need (the last requests, fifteen minutes
//! of history, login sessions, the event feed) and `view` builds the
//! picture once a second on one sampler task, only while someone watches.
//! The request path's one part in it is a record in the console's ring of
//! recent requests, written by the access record (stage 6).
//!
//! The binary (`src/main.rs`) only parses arguments and calls into this
//! library, so tests build exactly the production app.

pub mod app;
pub mod body;
pub mod cache;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod config_status;
pub mod console;
pub mod counters;
pub mod error;
pub mod grant;
pub mod keys;
pub mod metrics;
pub mod reload;
pub mod route;
pub mod routes;
pub mod server;
pub mod shaper;
pub mod state;
pub mod telemetry;
pub mod types;
pub mod upstream;
pub mod view;

pub use app::build_app;
pub use config::Config;
pub use state::AppState;

/// Builds the state and the app from a validated config and serves it on
/// `listener` until `shutdown` resolves. The configuration is fixed: see
/// [`run_reloadable`].
///
/// # Errors
/// The upstream client cannot be built (TLS backend, proxy setting).
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), StartupError> {
    serve_with(config, listener, shutdown, None).await
}

/// Like [`run`], and reloads the configuration with `load` on `SIGHUP`,
/// on `POST /admin/config/reload`, and (with `reload.watch`) when
/// `source` or a key file it names changes.
///
/// # Errors
/// As [`run`].
pub async fn run_reloadable(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
    load: reload::Loader,
    source: Option<std::path::PathBuf>,
) -> Result<(), StartupError> {
    serve_with(config, listener, shutdown, Some((load, source))).await
}

async fn serve_with(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
    reload: Option<(reload::Loader, Option<std::path::PathBuf>)>,
) -> Result<(), StartupError> {
    let cluster = cluster::Cluster::connect(&config.cluster)
        .await
        .map_err(StartupError::Cluster)?;
    let live = reload::Live::new(build_state_with(config, cluster)?);
    let reloader =
        reload.map(|(load, source)| reload::Reloader::new(live.clone(), load, source).spawn());
    let watched = live.clone();
    let sampler = view::sampler::spawn(move || watched.state());
    let served = server::serve(listener, live, shutdown).await;
    sampler.abort();
    if let Some(task) = reloader {
        task.abort();
    }
    served.map_err(StartupError::Serve)
}

/// Builds the shared state from a validated config. Call it inside a Tokio
/// runtime: the shaper's dispatchers run on it.
///
/// # Errors
/// The config carries no upstream key, or the client cannot be built.
pub fn build_state(config: Config) -> Result<AppState, StartupError> {
    build_state_with(config, None)
}

/// Like [`build_state`], in cluster mode when `cluster` is given (connected
/// by [`cluster::Cluster::connect`]).
///
/// # Errors
/// As [`build_state`].
pub fn build_state_with(
    config: Config,
    cluster: Option<cluster::Cluster>,
) -> Result<AppState, StartupError> {
    if config.upstream_key.is_none() {
        return Err(StartupError::NoUpstreamKey);
    }
    let upstream = upstream::UpstreamClient::new(&config.upstream).map_err(StartupError::Client)?;
    let broker =
        keys::broker::Broker::open(&config, cluster.as_ref()).map_err(StartupError::Store)?;
    Ok(AppState::new(config, upstream, broker, cluster))
}

/// Failures while starting, after the config was accepted.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The config has no upstream key (validation should have caught it).
    #[error("no upstream key configured")]
    NoUpstreamKey,
    /// The upstream HTTP client could not be built.
    #[error("cannot build the upstream client: {0}")]
    Client(upstream::BuildError),
    /// The key store could not be opened.
    #[error("cannot open the key store: {0}")]
    Store(keys::broker::OpenError),
    /// Cluster mode could not start (Redis unreachable, bad URL or
    /// password file): a configuration error.
    #[error("{0}")]
    Cluster(cluster::ClusterError),
    /// Binding or serving failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}
