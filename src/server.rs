//! The accept loop: hyper-util's server with a timer (so the header-read
//! deadline fires), a connection cap, and graceful shutdown.
//!
//! axum's own `serve` gives hyper no timer, so its header timeout never
//! fires; this loop does it by hand. A connection over the cap is closed at
//! once rather than left waiting in the backlog. On shutdown the listener is
//! dropped, idle keep-alive connections are closed, and in-flight requests get
//! `server.shutdown_grace_ms` to finish; requests queued for the upstream
//! budget keep being dispatched until shortly before that, then get 503.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use crate::types::Peer;

/// What the server serves, as far as the accept loop needs to know: a
/// service per request, its limits, and hooks for counting connections and
/// for the drain. `reload::Live` is the one in production (the current
/// version's app); the server knows neither the app's insides nor how a
/// new version is made.
pub trait Site: Send + Sync + 'static {
    /// The service one request is handed to. It must be ready at once
    /// (`poll_ready` never waits): the loop calls it without asking, and
    /// debug builds, so every test over a socket, check it.
    type Service: tower::Service<
            http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Send
        + 'static;

    /// The service for a request that arrived now on `peer`'s connection:
    /// each request takes the version current when it arrives, so a reload
    /// reaches keep-alive connections too.
    fn service(&self, peer: Peer) -> Self::Service;

    /// The accept loop's settings (restart-only: read once, at start).
    fn settings(&self) -> Settings;

    /// A connection was accepted (`true`) or ended (`false`).
    fn connection(&self, open: bool);

    /// A connection was refused: the cap was reached.
    fn connection_rejected(&self);

    /// Shutdown began: requests still waiting should be answered by
    /// `deadline`.
    fn drain(&self, deadline: Instant);

    /// Every connection is closed (or the grace is over): flush what must
    /// outlive the process.
    fn stopped(&self) -> impl Future<Output = ()> + Send;
}

/// The accept loop's settings.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Longest time to read a request's headers.
    pub header_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Time in-flight requests get to finish on shutdown.
    pub shutdown_grace: Duration,
}

/// One connection's service for hyper: the site's service for each
/// request. It calls that service directly rather than through hyper-util's
/// tower adapter and a `oneshot`: the app is always ready, and the adapter's
/// state machine moved the request three more times, about 5% of a cache
/// hit (callgrind).
struct Connection<S> {
    site: Arc<S>,
    peer: Peer,
}

impl<S: Site> hyper::service::Service<http::Request<hyper::body::Incoming>> for Connection<S> {
    type Response = Response;
    type Error = Infallible;
    type Future = <S::Service as tower::Service<http::Request<hyper::body::Incoming>>>::Future;

    fn call(&self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let mut service = self.site.service(self.peer);
        debug_assert!(is_ready(&mut service));
        tower::Service::call(&mut service, request)
    }
}

/// Whether `service` is ready at once, as [`Connection`] relies on.
fn is_ready<T: tower::Service<http::Request<hyper::body::Incoming>>>(service: &mut T) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    matches!(service.poll_ready(&mut cx), std::task::Poll::Ready(Ok(())))
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
///
/// # Errors
/// None today: accept errors (such as running out of file descriptors) are
/// logged and retried after a short pause. The `Result` leaves room for
/// listener setup that can fail.
pub async fn serve<S: Site>(
    listener: TcpListener,
    site: Arc<S>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    // The listener's settings are restart-only (`reload::pin`): the first
    // version's hold for the life of the process.
    let settings = site.settings();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true)
        // Headers and body as two iovecs of one writev: the body is not
        // copied into hyper's buffer first. 20 KiB cache hits: 8-20% more
        // per core in each of 5 alternating wrk rounds; 1 KiB: no
        // difference beyond noise.
        .writev(true);
    builder.http2().timer(TokioTimer::new());

    let permits = Arc::new(Semaphore::new(settings.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            site.connection_rejected();
            tracing::warn!("connection refused: server.max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let service = Connection {
            site: site.clone(),
            peer: Peer {
                local,
                remote: peer,
            },
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let counted = site.clone();
        counted.connection(true);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            counted.connection(false);
            drop(permit);
        });
    }

    drop(listener);
    let grace = settings.shutdown_grace;
    // Queued requests keep leaving as the budget allows; what is still
    // queued shortly before the grace ends gets a 503, with time left to
    // write it.
    let answer_time = (grace / 4).min(Duration::from_secs(1));
    site.drain(Instant::now() + grace - answer_time);
    tracing::info!(
        grace_ms = grace.as_millis() as u64,
        "shutting down: draining connections"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
    site.stopped().await;
    Ok(())
}
