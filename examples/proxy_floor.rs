//! The floor of a proxy on the gateway's stack, for `bench/run.sh`: the
//! same hyper server setup as `src/server.rs` and `hyper_floor.rs`, and the
//! least a proxy must do per request: take the request, replace its
//! `Authorization`, send it upstream over a pooled keep-alive connection and
//! stream the answer back. No routing, no checks, no metrics, no logs.
//!
//! Two upstream clients, chosen by the first argument:
//! - `hyper`: hyper-util's pooled client with its plain HTTP connector,
//!   the least any hyper-based proxy spends on the upstream hop;
//! - `reqwest`: reqwest built as the gateway built it until issue 21
//!   (rustls, redirects off, no system proxy, `TCP_NODELAY`).
//!
//! The gateway's hop is hyper-util's client (`src/upstream/hop.rs`): what it
//! spends above the `hyper` floor is its own work; what the `reqwest` floor
//! spends above the `hyper` one is reqwest's.
//!
//! ```text
//! cargo run --release --example proxy_floor -- hyper 127.0.0.1:PORT http://127.0.0.1:UPSTREAM
//! ```
//!
//! `/healthz` answers 200 itself; every other path is proxied. Errors
//! reaching the upstream answer 502 with an empty body.

#![allow(clippy::expect_used)]

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The upstream hop. One value per process, so its size does not matter.
#[allow(clippy::large_enum_variant)]
enum Upstream {
    Hyper(Client<HttpConnector, Incoming>),
    /// The client and the upstream's base URL, parsed once.
    Reqwest(reqwest::Client, reqwest::Url),
}

struct Proxy {
    upstream: Upstream,
    /// `scheme://authority` of the upstream, without a trailing slash.
    base: String,
    authorization: HeaderValue,
}

impl Proxy {
    async fn forward(&self, request: Request<Incoming>) -> Response<Body> {
        if request.uri().path() == "/healthz" {
            return Response::new(empty());
        }
        let (mut parts, body) = request.into_parts();
        parts.headers.remove(header::HOST);
        parts
            .headers
            .insert(header::AUTHORIZATION, self.authorization.clone());
        match &self.upstream {
            Upstream::Hyper(client) => {
                let target = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |path_and_query| path_and_query.as_str());
                let Ok(uri) = format!("{}{target}", self.base).parse::<Uri>() else {
                    return bad_gateway();
                };
                parts.uri = uri;
                match client.request(Request::from_parts(parts, body)).await {
                    Ok(response) => response.map(|body| body.map_err(Into::into).boxed()),
                    Err(_) => bad_gateway(),
                }
            }
            Upstream::Reqwest(client, base) => {
                // From the parsed base, as the gateway builds its URLs; no
                // parse of the whole URL per request.
                let mut url = base.clone();
                url.set_path(parts.uri.path());
                url.set_query(parts.uri.query());
                let mut outbound = reqwest::Request::new(parts.method, url);
                *outbound.headers_mut() = parts.headers;
                *outbound.body_mut() = Some(reqwest::Body::wrap(body));
                match client.execute(outbound).await {
                    Ok(response) => {
                        http::Response::from(response).map(|body| body.map_err(Into::into).boxed())
                    }
                    Err(_) => bad_gateway(),
                }
            }
        }
    }
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: proxy_floor hyper|reqwest LISTEN_ADDR UPSTREAM_URL";
    let kind = args.next().expect(usage);
    let addr: std::net::SocketAddr = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let base = args.next().expect(usage).trim_end_matches('/').to_string();
    let upstream = match kind.as_str() {
        "hyper" => {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            Upstream::Hyper(
                Client::builder(TokioExecutor::new())
                    .pool_timer(TokioTimer::new())
                    .build(connector),
            )
        }
        "reqwest" => Upstream::Reqwest(
            reqwest::Client::builder()
                .use_rustls_tls()
                .redirect(reqwest::redirect::Policy::none())
                .tcp_nodelay(true)
                .no_proxy()
                .build()
                .expect("reqwest client"),
            base.parse().expect(usage),
        ),
        _ => panic!("{usage}"),
    };
    let proxy = Arc::new(Proxy {
        upstream,
        base,
        authorization: HeaderValue::from_static("Bearer bench-key"),
    });
    support::serve(addr, move |request: Request<Incoming>| {
        let proxy = proxy.clone();
        async move { proxy.forward(request).await }
    });
}
