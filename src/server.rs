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
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;

use crate::app::App;
use crate::reload::Live;

/// The connection a request came on: held by the app's frame for each
/// connection, and in a request's extensions once the request waits.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    /// The local address it arrived on: whether an absolute-form target
    /// names this gateway.
    pub local: std::net::SocketAddr,
    /// The client's address: the fairness identity of a client without a
    /// key, and the loopback check of `/admin/*`.
    pub remote: std::net::SocketAddr,
}

/// One connection's service for hyper: each request takes the app of the
/// version current when it arrives, so a reload reaches keep-alive
/// connections too.
///
/// It calls the app directly rather than through hyper-util's tower
/// adapter and a `oneshot`: the app is always ready (`App` never waits in
/// `poll_ready`; debug builds, and so every test over a socket, check it on
/// each request), and the adapter's state machine moved the request three
/// more times, about 5% of a cache hit (callgrind).
struct Connection {
    live: Arc<Live>,
    peer: Peer,
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Connection {
    type Response = <App as Service<http::Request<hyper::body::Incoming>>>::Response;
    type Error = Infallible;
    type Future = <App as Service<http::Request<hyper::body::Incoming>>>::Future;

    fn call(&self, request: http::Request<hyper::body::Incoming>) -> Self::Future {
        let mut app = self.live.app();
        app.get_mut().on_connection(self.peer);
        debug_assert!(app_is_ready(&mut app));
        app.call(request)
    }
}

/// Whether `app` is ready at once, as [`Connection`] relies on.
fn app_is_ready(app: &mut App) -> bool {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    matches!(
        Service::<http::Request<hyper::body::Incoming>>::poll_ready(app, &mut cx),
        Poll::Ready(Ok(()))
    )
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains.
///
/// # Errors
/// None today: accept errors (such as running out of file descriptors) are
/// logged and retried after a short pause. The `Result` leaves room for
/// listener setup that can fail.
pub async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    // The listener's settings are restart-only (`reload::pin`): the first
    // version's hold for the life of the process.
    let state = live.state();
    let server = &state.config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(server.header_read_timeout_ms))
        .keep_alive(true)
        // Headers and body as two iovecs of one writev: the body is not
        // copied into hyper's buffer first. 20 KiB cache hits: 8-20% more
        // per core in each of 5 alternating wrk rounds; 1 KiB: no
        // difference beyond noise.
        .writev(true);
    builder.http2().timer(TokioTimer::new());

    let permits = Arc::new(Semaphore::new(server.max_connections));
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
            state.metrics.connection_rejected();
            tracing::warn!("connection refused: server.max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let service = Connection {
            live: live.clone(),
            peer: Peer {
                local,
                remote: peer,
            },
        };
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let metrics_state = state.clone();
        metrics_state.metrics.connections_open().inc();
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "connection ended with an error");
            }
            metrics_state.metrics.connections_open().dec();
            drop(permit);
        });
    }

    drop(listener);
    // The grace period and the shapers are the current version's.
    let state = live.state();
    let server = &state.config.server;
    let grace = Duration::from_millis(server.shutdown_grace_ms);
    // Queued requests keep leaving as the budget allows; what is still
    // queued shortly before the grace ends gets a 503, with time left to
    // write it.
    let answer_time = (grace / 4).min(Duration::from_secs(1));
    for shaper in state.credentials.iter().filter_map(|c| c.shaper()) {
        shaper.drain(std::time::Instant::now() + grace - answer_time);
    }
    tracing::info!(
        grace_ms = server.shutdown_grace_ms,
        "shutting down: draining connections"
    );
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace period over; closing remaining connections");
    }
    state.broker.ledger().flush().await;
    Ok(())
}
