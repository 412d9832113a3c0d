//! The cache-hit path inside the gateway, without sockets: what the router,
//! the layers and the cache cost per request, next to `/healthz` (same
//! router and layers, no cache) as the baseline in the same run.
//!
//! `cargo bench --bench hit_path` starts the simulator on 127.0.0.1:0 as
//! the upstream, primes one entry (`GET /api/v1/agents`), then sends
//! 200,000 requests straight into the app (`tower::ServiceExt::oneshot`)
//! and reports nanoseconds per request and heap allocations per request.
//! Single-threaded runtime, so wall-clock time is CPU time.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::alloc::System;
use std::time::Instant;

use axum::body::Body;
use castari_gateway::{build_app, build_state, Config};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tower::ServiceExt;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Requests per row; `HIT_PATH_REQUESTS` overrides (fewer under valgrind).
fn requests() -> usize {
    std::env::var("HIT_PATH_REQUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

async fn run() {
    let sim = castari_sim::Simulator::start(castari_sim::SimConfig::default())
        .await
        .unwrap();
    let mut config = Config::default();
    config.upstream.url = url::Url::parse(&sim.url()).unwrap();
    config.upstream_key = Some(castari_gateway::types::Secret::new("bench".to_string()));
    config.telemetry.access_log = false;
    let app = build_app(build_state(config).unwrap());

    let primed = send(&app, "/api/v1/agents").await;
    assert_eq!(primed.headers()["x-cache"], "MISS");
    let hit = send(&app, "/api/v1/agents").await;
    assert_eq!(hit.headers()["x-cache"], "HIT");

    // Axum alone, no layers: the floor under any handler.
    let bare = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));

    println!(
        "hit path benchmark: {} requests per row, single-threaded, no sockets",
        requests()
    );
    println!("{:<44} {:>10} {:>14}", "case", "ns/req", "allocs/req");
    for round in 1..=3 {
        let (ns, allocs) = measure(&bare, "/healthz").await;
        let label = format!("bare axum router, /healthz (run {round})");
        println!("{label:<44} {ns:>10.0} {allocs:>14.1}");
        for path in ["/healthz", "/nowhere", "/api/v1/agents"] {
            let (ns, allocs) = measure(&app, path).await;
            let label = format!("gateway {path} (run {round})");
            println!("{label:<44} {ns:>10.0} {allocs:>14.1}");
        }
    }
    sim.shutdown().await;
}

/// The gateway's app and a bare router alike.
trait App:
    tower::Service<
        http::Request<Body>,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
    > + Clone
{
}

impl<S> App for S where
    S: tower::Service<
            http::Request<Body>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
{
}

async fn measure(app: &impl App, path: &str) -> (f64, f64) {
    let region = Region::new(GLOBAL);
    let started = Instant::now();
    let requests = requests();
    for _ in 0..requests {
        let response = send(app, path).await;
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        std::hint::black_box(body);
    }
    let elapsed = started.elapsed();
    let allocs = region.change().allocations;
    (
        elapsed.as_nanos() as f64 / requests as f64,
        allocs as f64 / requests as f64,
    )
}

async fn send(app: &impl App, path: &str) -> axum::response::Response {
    let request = http::Request::builder()
        .uri(path)
        .header("host", "127.0.0.1")
        .header("user-agent", "bench")
        .body(Body::empty())
        .unwrap();
    app.clone().oneshot(request).await.unwrap()
}
