//! A second floor for `bench/cache.sh` (`FLOOR_BIN`): the hyper floor
//! (`hyper_floor.rs`) plus the part of a cache hit the gateway cannot leave
//! out, done by the gateway's own code. Its hits/s is the most the gateway
//! could reach if every other step of a hit cost nothing; compared with
//! the peers in the same run, it says whether issue 21's hit target is
//! within reach at all.
//!
//! Per request, as the gateway does it (what the reference, issue 21 and
//! the suite's assertions ask of every hit):
//! - the path checked and decoded (`ApiPath::parse`): the cache key holds
//!   the decoded path (issue 21, item 5), and an unchecked path must never
//!   reach the cache;
//! - the cache key made and looked up in the moka store
//!   (`CacheKey::new`, `ResponseCache::lookup_now`);
//! - the stored answer served (`Entry::respond`: its headers, `Age`,
//!   `X-Cache`);
//! - the three `X-RateLimit-*` headers the reference sends on every answer
//!   (`set_rate_limit`, with fixed numbers: no shaper is read);
//! - an `x-request-id` made and echoed (`RequestIds`);
//! - the request counted and its overhead observed (`Metrics`: issue 21's
//!   histogram, item 3).
//!
//! Left out, though the gateway does them: the admission checks, the
//! cache-control reading, the freshness, write and deploy checks, the
//! shaper's view, the access record and the console's recent requests.
//!
//! `HIT_WORK=bound` does less than any gateway can: the raw path compared
//! with the stored ones (no check, no decoding, no key made per request),
//! the moka lookup, and the stored headers with `Age` and `X-RateLimit-*`
//! on a plain `Full` body (no `X-Cache`, request id or metrics). A target
//! this one misses is missed by every gateway that keeps moka and answers
//! with the reference's headers.
//!
//! ```text
//! cargo run --release --example hit_work_floor -- 127.0.0.1:PORT \
//!     /api/v1/buckets/bench=bench/payload.json /api/v1/buckets/bench20=bench/payload-20k.json
//! ```
//!
//! The bodies are stored once at start, with the headers nginx sends for
//! them in `bench/cache.sh` (so the answers are the same size as the
//! gateway's). `/healthz` answers 200 with an empty body, anything not
//! stored 404. Unlike `hyper_floor`, which runs on the system allocator,
//! it runs on the gateway's (mimalloc).

#![allow(clippy::expect_used)]

mod support;

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use castari_gateway::cache::entry::{CacheStatus, Entry};
use castari_gateway::cache::key::CacheKey;
use castari_gateway::cache::policy::CacheRoute;
use castari_gateway::cache::ResponseCache;
use castari_gateway::config::CacheConfig;
use castari_gateway::metrics::{Metrics, RequestLabels};
use castari_gateway::telemetry::RequestIds;
use castari_gateway::upstream::headers::{reuse_rendered, set_rate_limit, X_REQUEST_ID};
use castari_gateway::upstream::path::ApiPath;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;

// The gateway's allocator (`src/main.rs`), as the work done here is its.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: [HIT_WORK=bound] hit_work_floor ADDR PATH=FILE...";
    let addr: std::net::SocketAddr = args.next().and_then(|a| a.parse().ok()).expect(usage);
    let bound = match std::env::var("HIT_WORK").as_deref() {
        Err(_) | Ok("" | "required") => false,
        Ok("bound") => true,
        Ok(_) => panic!("{usage}"),
    };
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
    let mut stored = Vec::new();
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
            runtime.block_on(cache.insert(key.clone(), entry.clone()));
            if accept.is_none() {
                stored.push((path.to_string(), key));
            }
        }
    }
    if bound {
        support::serve(addr, move |request: Request<Incoming>| {
            let response = bound_hit(&cache, &stored, &request);
            async move { response }
        });
    } else {
        let ids = RequestIds::default();
        support::serve(addr, move |request: Request<Incoming>| {
            let response = hit(&cache, &principal, &ids, &metrics, &request);
            async move { response }
        });
    }
}

/// The required part of a hit; 404 for anything not stored.
fn hit(
    cache: &ResponseCache,
    principal: &Arc<str>,
    ids: &RequestIds,
    metrics: &Metrics,
    request: &Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
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
        return not_stored(request);
    };
    let mut response = entry.respond(CacheStatus::Hit, request.headers(), started);
    let headers = response.headers_mut();
    set_rate_limit(headers, 100, 99, 1_800_000_000);
    headers.insert(X_REQUEST_ID, id);
    metrics.overhead("crud", started.elapsed());
    metrics.request(RequestLabels {
        class: "crud",
        method: "GET",
        status: 200,
        code: "",
    });
    response
}

/// `HIT_WORK=bound`: less than any gateway can do, to bound them all. The
/// key is found by comparing the raw path with the stored ones (no check,
/// no decoding, no key made per request), the moka store is asked for it,
/// and the answer is the stored headers, `Age` and `X-RateLimit-*` on a
/// plain `Full` body: no `X-Cache`, no request id, no metrics. Only a plain
/// GET matches (no query, `Accept` absent or `*/*`, no `Accept-Encoding`,
/// as the stored keys were made), so it never answers for another key; it
/// does not read `If-None-Match` (neither wrk nor the scripts' curl sends
/// one).
fn bound_hit(
    cache: &ResponseCache,
    stored: &[(String, CacheKey)],
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let headers = request.headers();
    let plain = request.method() == http::Method::GET
        && request.uri().query().is_none()
        && headers
            .get(header::ACCEPT)
            .is_none_or(|accept| accept == "*/*")
        && !headers.contains_key(header::ACCEPT_ENCODING);
    let path = request.uri().path();
    let found = stored
        .iter()
        .find(|(stored, _)| plain && stored == path)
        .and_then(|(_, key)| cache.lookup_now(key));
    let Some(entry) = found else {
        return not_stored(request).map(|_| Full::default());
    };
    let mut response = Response::new(Full::new(entry.body.clone()));
    let headers = response.headers_mut();
    *headers = entry.headers.clone();
    let age = entry.age(Instant::now()).as_secs();
    headers.insert(
        header::AGE,
        reuse_rendered(&AGE, age, |a| HeaderValue::from(*a)),
    );
    set_rate_limit(headers, 100, 99, 1_800_000_000);
    response
}

/// What is not stored: 200 for `/healthz` (the scripts wait on it), 404
/// for anything else, so that a miss is never counted as a hit.
fn not_stored(request: &Request<Incoming>) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    if request.uri().path() != "/healthz" {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    response
}

thread_local! {
    /// The last `Age` rendered, as the gateway keeps it.
    static AGE: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
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
