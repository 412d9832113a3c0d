//! The floor of the gateway's stack, for `bench/cache.sh`: the same hyper
//! server setup as `src/server.rs` (`support/mod.rs`: hyper-util's auto
//! builder with a timer and a header deadline, keep-alive, vectored writes,
//! `TCP_NODELAY`) answering from memory, with no axum, no layers and no
//! cache. What the gateway spends per cache hit above this is its own work.
//!
//! ```text
//! cargo run --release --example hyper_floor -- 127.0.0.1:PORT \
//!     /api/v1/buckets/bench=bench/payload.json /api/v1/buckets/bench20=bench/payload-20k.json
//! ```
//!
//! Every other path, `/healthz` included, answers 200 with an empty body.

#![allow(clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;

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
    support::serve(addr, move |request: Request<Incoming>| {
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
            response
        }
    });
}
