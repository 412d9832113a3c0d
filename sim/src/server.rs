//! The simulator's accept loop. Each connection gets a cancellation token,
//! passed to handlers as a request extension, so the drop fault can close the
//! TCP connection without writing a single response byte.

use std::future::Future;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// Cancelling it closes the connection the request arrived on.
#[derive(Clone, Debug)]
pub(crate) struct ConnToken(pub(crate) CancellationToken);

/// Serves `app` until `stop` resolves; open connections are closed then.
pub(crate) async fn serve(listener: TcpListener, app: Router, stop: impl Future<Output = ()>) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let all = CancellationToken::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let token = all.child_token();
        let ext = ConnToken(token.clone());
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ext.clone());
                request
            },
        ));
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        tokio::spawn(async move {
            tokio::select! {
                _ = connection => {}
                () = token.cancelled() => {}
            }
        });
    }
    all.cancel();
}
