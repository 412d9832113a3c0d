//! A second floor for `bench/cache.sh` (`FLOOR_BIN`): the hyper floor
//! (`hyper_floor.rs`) plus the part of a cache hit that no version of the
//! gateway can leave out, done by the gateway's own code. Its hits/s is
//! the most the gateway could reach if every other step of a hit cost
//! nothing; compared with the peers in the same run, it says whether
//! issue 21's hit target is within reach at all.
//!
//! Per request, as the gateway does it:
//! - the path checked and decoded (`ApiPath::parse`): the cache key holds
//!   the decoded path, and an unchecked path must never reach the cache;
//! - the cache key made and looked up in the moka store
//!   (`CacheKey::new`, `ResponseCache::lookup_now`);
//! - the stored answer served (`Entry::respond`: its headers, `Age`,
//!   `X-Cache`);
//! - the three `X-RateLimit-*` headers the reference sends on every answer
//!   (`set_rate_limit`, with fixed numbers: no shaper is read);
//! - an `x-request-id` made and echoed (`RequestIds`).
//!
//! Left out, though the gateway does them: the admission checks, the
//! cache-control reading, the write and deploy checks, the shaper's view,
//! metrics, the overhead histogram, the access record and the console's
//! recent requests.
//!
//! ```text
//! cargo run --release --example hit_work_floor -- 127.0.0.1:PORT \
//!     /api/v1/buckets/bench=bench/payload.json /api/v1/buckets/bench20=bench/payload-20k.json
//! ```
//!
//! The bodies are stored once at start, with the headers nginx sends for
//! them in `bench/cache.sh` (so the answers are the same size as the
//! gateway's). Every other path, `/healthz` included, answers 200 with an
//! empty body.

#![allow(clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use castari_gateway::cache::entry::{CacheStatus, Entry};
use castari_gateway::cache::key::CacheKey;
use castari_gateway::cache::policy::CacheRoute;
use castari_gateway::cache::ResponseCache;
use castari_gateway::config::CacheConfig;
use castari_gateway::metrics::Metrics;
use castari_gateway::telemetry::RequestIds;
use castari_gateway::upstream::headers::{set_rate_limit, X_REQUEST_ID};
use castari_gateway::upstream::path::ApiPath;
use http::{header, HeaderMap, HeaderValue, Request, Response};
use hyper::body::Incoming;

// The gateway's allocator (`src/main.rs`), as the work done here is its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let addr: std::net::SocketAddr = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: hit_work_floor ADDR PATH=FILE...");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let metrics = Metrics::default();
    let cache = ResponseCache::new(
        &CacheConfig::default(),
        metrics.cache().clone(),
        Duration::from_secs(60),
        None,
    );
    let principal: Arc<str> = Arc::from("bench-key");
    for pair in args {
        let (path, file) = pair.split_once('=').expect("PATH=FILE");
        let body = Bytes::from(std::fs::read(file).expect("readable body file"));
        let decoded = ApiPath::parse(path)
            .expect("an /api/v1/ path")
            .decoded()
            .clone();
        let entry = Arc::new(Entry::new(
            stored_headers(body.len()),
            body,
            cache.invalidations().stamp(),
            Duration::from_secs(3600),
            CacheRoute::Buckets,
        ));
        // Keyed as wrk asks (no `Accept`) and as curl does (`*/*`).
        for accept in [None, Some("*/*")] {
            let mut asked = HeaderMap::new();
            if let Some(accept) = accept {
                asked.insert(header::ACCEPT, HeaderValue::from_static(accept));
            }
            let key = CacheKey::new(&principal, decoded.clone(), None, &asked);
            runtime.block_on(cache.insert(key, entry.clone()));
        }
    }
    let ids = RequestIds::default();
    support::serve(addr, move |request: Request<Incoming>| {
        let response = hit(&cache, &principal, &ids, &request);
        async move { response }
    });
}

/// The required part of a hit; an empty 200 for anything not stored.
fn hit(
    cache: &ResponseCache,
    principal: &Arc<str>,
    ids: &RequestIds,
    request: &Request<Incoming>,
) -> Response<Body> {
    let id = ids.next();
    let found = ApiPath::parse(request.uri().path()).ok().and_then(|path| {
        let key = CacheKey::new(
            principal,
            path.decoded().clone(),
            request.uri().query(),
            request.headers(),
        );
        cache.lookup_now(&key)
    });
    let Some(entry) = found else {
        return Response::new(Body::empty());
    };
    let mut response = entry.respond(CacheStatus::Hit, request.headers(), Instant::now());
    let headers = response.headers_mut();
    set_rate_limit(headers, 100, 99, 1_800_000_000);
    headers.insert(X_REQUEST_ID, id);
    response
}

/// What nginx sends with a static file in `bench/cache.sh`, so that the
/// stored answer carries as many headers as the gateway's does.
fn stored_headers(len: usize) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let value = HeaderValue::from_static;
    headers.insert(header::SERVER, value("nginx/1.22.1"));
    headers.insert(header::DATE, value("Sun, 06 Dec 2026 23:01:21 GMT"));
    headers.insert(header::CONTENT_TYPE, value("application/json"));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::LAST_MODIFIED,
        value("Sun, 06 Dec 2026 23:01:20 GMT"),
    );
    headers.insert(header::ETAG, value("\"6747f1a0-400\""));
    headers.insert(header::ACCEPT_RANGES, value("bytes"));
    headers
}
