//! A second proxy floor for `bench/instructions.sh`: the `hyper` proxy floor
//! (`proxy_floor.rs`), with the gateway's own upstream client (`Hop`:
//! hyper-util's pool behind the rustls connector), plus the part of a
//! proxied request the gateway cannot leave out (what the reference, issue
//! 21 and the suite's assertions ask of every request), done by the
//! gateway's own code. Its instructions per request are the least the
//! gateway could spend if every other step cost nothing; against 1.2x the
//! hyper floor, they say whether issue 21's CPU target is within reach at
//! all.
//!
//! Per request, as the gateway does it:
//! - an `x-request-id` taken or made, passed on and echoed (`RequestIds`);
//! - the path checked and decoded (`ApiPath::parse`) and the upstream URI
//!   made from it (`ApiPath::upstream_uri_for`);
//! - the request's hop-by-hop and client-credential headers dropped and
//!   the upstream key put in (`sanitize_request`);
//! - the send under the CRUD timeout, the answer's hop-by-hop
//!   headers dropped (`strip_hop_by_hop`) and its body under the idle
//!   deadline (`Guarded`);
//! - the three `X-RateLimit-*` headers the reference sends on every answer
//!   (`set_rate_limit`, with fixed numbers: no shaper is read);
//! - the request counted and its upstream time and overhead observed
//!   (`Metrics`: issue 21's overhead histogram).
//!
//! Left out, though the gateway does them: the route table, the admission
//! checks, the breaker and the retry budget, the cache's write checks, the
//! access record, the console's recent requests, the in-flight gauge and
//! the caught panic.
//!
//! ```text
//! cargo run --release --example pass_work_floor -- \
//!     127.0.0.1:PORT http://127.0.0.1:UPSTREAM
//! ```
//!
//! `/healthz` answers 200 itself; every other path is proxied. A path
//! outside `/api/v1/` answers 404, an upstream that cannot be reached 502,
//! both with empty bodies.

#![allow(clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use castari_gateway::body::{Guarded, Verdict};
use castari_gateway::config::UpstreamConfig;
use castari_gateway::metrics::{Metrics, RequestLabels};
use castari_gateway::telemetry::RequestIds;
use castari_gateway::upstream::headers::{
    sanitize_request, set_rate_limit, strip_hop_by_hop, X_REQUEST_ID,
};
use castari_gateway::upstream::hop::Hop;
use castari_gateway::upstream::path::{ApiPath, UpstreamBase};
use http::header::Entry;
use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

// The gateway's allocator (`src/main.rs`), as the work done here is its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Proxy {
    hop: Hop,
    /// The gateway's defaults for a CRUD request's timeout and an answer's
    /// idle deadline.
    timeout: Duration,
    idle: Duration,
    base: UpstreamBase,
    authorization: HeaderValue,
    ids: RequestIds,
    metrics: Metrics,
}

impl Proxy {
    async fn forward(&self, mut request: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        if request.uri().path() == "/healthz" {
            return Response::new(Body::empty());
        }
        let id = match request.headers_mut().entry(X_REQUEST_ID) {
            Entry::Occupied(given) => given.get().clone(),
            Entry::Vacant(slot) => slot.insert(self.ids.next()).clone(),
        };
        let mut response = match self.send(request).await {
            Ok((response, upstream)) => {
                self.metrics.upstream_latency("crud", upstream);
                self.metrics
                    .overhead("crud", started.elapsed().saturating_sub(upstream));
                response
            }
            Err(status) => {
                let mut response = Response::new(Body::empty());
                *response.status_mut() = status;
                response
            }
        };
        self.metrics.request(RequestLabels {
            class: "crud",
            method: "GET",
            status: response.status().as_u16(),
            code: "",
        });
        let headers = response.headers_mut();
        set_rate_limit(headers, 100, 99, 1_800_000_000);
        headers.insert(X_REQUEST_ID, id);
        response
    }

    async fn send(
        &self,
        request: Request<Incoming>,
    ) -> Result<(Response<Body>, Duration), StatusCode> {
        let (mut parts, body) = request.into_parts();
        let path = ApiPath::parse(parts.uri.path()).map_err(|_| StatusCode::NOT_FOUND)?;
        parts.uri = path
            .upstream_uri_for(&self.base, &parts.uri)
            .map_err(|_| StatusCode::BAD_GATEWAY)?;
        sanitize_request(&mut parts.headers);
        parts
            .headers
            .insert(header::AUTHORIZATION, self.authorization.clone());
        let asked = Instant::now();
        let request = Request::from_parts(parts, Body::new(body));
        let sent = tokio::time::timeout(self.timeout, self.hop.send(request)).await;
        let upstream = asked.elapsed();
        let Ok(Ok(answer)) = sent else {
            return Err(StatusCode::BAD_GATEWAY);
        };
        let (mut parts, body) = answer.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let body = Guarded::new(body, self.idle, u64::MAX, Verdict::unread());
        Ok((Response::from_parts(parts, Body::new(body)), upstream))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: pass_work_floor LISTEN_ADDR UPSTREAM_URL";
    let addr: std::net::SocketAddr = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let base: url::Url = args.next().and_then(|u| u.parse().ok()).expect(usage);
    let config = UpstreamConfig {
        url: base.clone(),
        ..UpstreamConfig::default()
    };
    let proxy = Arc::new(Proxy {
        hop: Hop::new(&config).expect("the upstream client"),
        timeout: Duration::from_millis(config.crud_timeout_ms),
        idle: Duration::from_millis(config.download_idle_timeout_ms),
        base: UpstreamBase::new(&base),
        authorization: HeaderValue::from_static("Bearer bench-key"),
        ids: RequestIds::default(),
        metrics: Metrics::default(),
    });
    support::serve(addr, move |request: Request<Incoming>| {
        let proxy = proxy.clone();
        async move { proxy.forward(request).await }
    });
}
