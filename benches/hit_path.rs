//! The cache-hit path inside the gateway, without sockets: what the router,
//! the layers and the cache cost per request, next to `/healthz` (same
//! router and layers, no cache) as the baseline in the same run.
//!
//! `cargo bench --bench hit_path` starts the simulator on 127.0.0.1:0 as
//! the upstream, primes one entry (`GET /api/v1/agents`), then sends
//! 200,000 requests straight into the app (`tower::ServiceExt::oneshot`)
//! and reports nanoseconds per request and heap allocations per request.
//! Single-threaded runtime, so wall-clock time is CPU time. The hit is
//! measured in open mode and in keys mode (a local key verified per
//! request: the look at the store that never waits, `keys/ring.rs`).

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
    let (keys_config, token, _dir) = keys_mode(config.clone());
    let app = build_app(build_state(config).unwrap());
    let keys_app = build_app(build_state(keys_config).unwrap());

    let primed = send(&app, "/api/v1/agents").await;
    assert_eq!(primed.headers()["x-cache"], "MISS");
    let hit = send(&app, "/api/v1/agents").await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    set_token(Some(&token));
    let primed = send(&keys_app, "/api/v1/agents").await;
    assert_eq!(primed.status(), 200);
    let hit = send(&keys_app, "/api/v1/agents").await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    set_token(None);

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
        set_token(Some(&token));
        let (ns, allocs) = measure(&keys_app, "/api/v1/agents").await;
        set_token(None);
        let label = format!("gateway keys mode /api/v1/agents (run {round})");
        println!("{label:<44} {ns:>10.0} {allocs:>14.1}");
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

thread_local! {
    /// The `Authorization` value sent with each request (keys mode), made
    /// once: the client's cost stays out of the gateway's row.
    static TOKEN: std::cell::RefCell<Option<http::HeaderValue>> = const { std::cell::RefCell::new(None) };
}

fn set_token(token: Option<&str>) {
    let value = token.map(|t| http::HeaderValue::from_str(&format!("Bearer {t}")).unwrap());
    TOKEN.with_borrow_mut(|slot| *slot = value);
}

/// `config` in keys mode, over a fresh store holding one `read` key.
fn keys_mode(mut config: Config) -> (Config, String, tempfile::TempDir) {
    use castari_gateway::keys::model::{KeyRecord, Origin, Role};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keys.db");
    let minted = castari_gateway::keys::token::mint().unwrap();
    let store = castari_gateway::keys::store::Store::open(&db).unwrap();
    store
        .insert_key(&KeyRecord {
            id: minted.id.clone(),
            name: "bench".into(),
            role: Role::Read,
            agents: Vec::new(),
            rate: None,
            budget: None,
            upstream: "default".into(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            hash: minted.hash,
            previous: None,
            origin: Origin::Store,
        })
        .unwrap();
    config.auth.mode = Some(castari_gateway::config::AuthMode::Keys);
    config.auth.db_path = Some(db);
    (config, minted.token.expose().clone(), dir)
}

async fn send(app: &impl App, path: &str) -> axum::response::Response {
    let mut request = http::Request::builder()
        .uri(path)
        .header("host", "127.0.0.1")
        .header("user-agent", "bench");
    if let Some(token) = TOKEN.with_borrow(Clone::clone) {
        request = request.header("authorization", token);
    }
    app.clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}
