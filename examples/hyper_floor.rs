//! The floor of the gateway's stack, for `bench/cache.sh`: the same hyper
//! server setup as `src/server.rs` (hyper-util's auto builder with a timer
//! and a header deadline, keep-alive, vectored writes, `TCP_NODELAY`)
//! answering from memory, with no axum, no layers and no cache. What the
//! gateway spends per cache hit above this is its own work.
//!
//! ```text
//! cargo run --release --example hyper_floor -- 127.0.0.1:PORT \
//!     /api/v1/buckets/bench=bench/payload.json /api/v1/buckets/bench20=bench/payload-20k.json
//! ```
//!
//! Every other path, `/healthz` included, answers 200 with an empty body.

#![allow(clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: hyper_floor ADDR PATH=FILE...");
    let mut bodies = HashMap::new();
    for pair in args {
        let (path, file) = pair.split_once('=').expect("PATH=FILE");
        let bytes = std::fs::read(file).expect("readable body file");
        bodies.insert(path.to_string(), Bytes::from(bytes));
    }
    let bodies = Arc::new(bodies);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .keep_alive(true)
            .writev(true);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let bodies = bodies.clone();
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                let body = bodies
                    .get(request.uri().path())
                    .cloned()
                    .unwrap_or_default();
                async move {
                    let mut response = Response::new(Full::new(body));
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, Infallible>(response)
                }
            });
            let connection = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            tokio::spawn(connection);
        }
    });
}
