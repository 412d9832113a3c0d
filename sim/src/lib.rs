//! castari-sim: an in-memory simulator of the Castari REST API.
//!
//! It serves the documented and SDK/CLI-visible routes of `api.castari.com`
//! under `/api/v1`, with the upstream's rate limits per API key, fault knobs,
//! and introspection under `/_sim/`. The gateway's tests and `demo` command
//! run it on `127.0.0.1:0`; users run it with `castari-gateway sim` to test
//! their own tools offline.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! let sim = castari_sim::Simulator::start(castari_sim::SimConfig::default()).await?;
//! println!("upstream at {}", sim.url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

// Handlers return complete error responses (`Result<Response, Response>`):
// that is axum's model, and these are not hot paths.
#![allow(clippy::result_large_err)]

pub mod cli;
mod config;
mod error;
mod gate;
mod introspect;
mod limits;
mod record;
mod routes;
mod server;
mod state;
mod util;
mod validate;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use config::{Faults, RateLimit, SimConfig, WindowKind};
pub use record::{ClassStats, RecordedRequest, Stats};

/// A prompt containing this marker makes the invocation come back with
/// `status: "failed"`.
pub use routes::FAIL_MARKER;

use limits::{Class, Limiter};
use state::Account;

/// A running simulator.
#[derive(Debug)]
pub struct Simulator {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Simulator {
    /// Starts a simulator on `127.0.0.1:0`.
    ///
    /// # Errors
    /// The listener cannot be bound.
    pub async fn start(config: SimConfig) -> std::io::Result<Self> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Starts a simulator on `addr`.
    ///
    /// # Errors
    /// The listener cannot be bound.
    pub async fn bind(addr: SocketAddr, config: SimConfig) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(config, format!("http://{addr}")));
        let (stop, stopped) = oneshot::channel();
        let app = routes::router(shared.clone());
        let task = tokio::spawn(server::serve(listener, app, async {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Replaces the fault knobs.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.lock().faults = faults;
    }

    /// Every recorded request, oldest first (the last 10,000).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().log.iter().cloned().collect()
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Clears state, log, counters, limiter windows, faults and revoked keys.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops accepting and ends the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// State shared by every connection of one simulator.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: SimConfig,
    pub(crate) base_url: String,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) account: Account,
    pub(crate) limiter: Limiter,
    pub(crate) faults: Faults,
    pub(crate) log: VecDeque<RecordedRequest>,
    pub(crate) total: u64,
    pub(crate) routes: BTreeMap<String, u64>,
    pub(crate) unauthorized: u64,
    /// Keys revoked through the API (`DELETE /auth/api-key`,
    /// `DELETE /api-keys/{id}`): refused from then on, whatever
    /// `api_keys` says, until a reset.
    pub(crate) revoked: HashSet<String>,
}

impl Shared {
    fn new(config: SimConfig, base_url: String) -> Self {
        let inner = Inner::new(&config);
        Self {
            config,
            base_url,
            inner: Mutex::new(inner),
        }
    }

    /// Locks the state. A poisoned lock is still usable: every mutation
    /// leaves the state consistent.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn reset(&self) {
        *self.lock() = Inner::new(&self.config);
    }

    pub(crate) fn stats(&self) -> Stats {
        let inner = self.lock();
        let classes = [Class::Crud, Class::Invoke]
            .into_iter()
            .map(|class| {
                let limit = inner.limiter.limit(class);
                let c = inner.limiter.counters(class);
                let stats = ClassStats {
                    limit: limit.max,
                    window_ms: limit.window.as_millis() as u64,
                    admitted: c.admitted,
                    limited: c.limited,
                    max_in_window: c.max_in_window,
                };
                (class.name().to_string(), stats)
            })
            .collect();
        Stats {
            total: inner.total,
            routes: inner.routes.clone(),
            classes,
            unauthorized: inner.unauthorized,
        }
    }
}

impl Inner {
    fn new(config: &SimConfig) -> Self {
        Self {
            account: Account::default(),
            limiter: Limiter::new(config.window, config.crud_limit, config.invoke_limit),
            faults: config.faults.clone(),
            log: VecDeque::new(),
            total: 0,
            routes: BTreeMap::new(),
            unauthorized: 0,
            revoked: HashSet::new(),
        }
    }
}
