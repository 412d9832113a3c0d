//! Safe retries (issue #7, item 1): the simulator's fault knobs fail
//! attempts, and each test counts exactly how often the upstream saw each
//! request.

use std::time::Duration;

use castari_sim::{Faults, Simulator};
use serde_json::json;

use crate::support::*;

async fn count(sim: &Simulator, method: &str, path: &str) -> usize {
    seen(sim)
        .await
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

fn failing(next: u32, status: u16) -> Faults {
    Faults {
        fail_next: next,
        error_statuses: vec![status],
        ..Faults::default()
    }
}

#[tokio::test]
async fn safe_routes_are_retried_on_502_503_504_and_broken_connections() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.cache.enabled = false).await;
    for status in [502, 503, 504] {
        sim.set_faults(failing(2, status));
        let response = client().get(gw.url("/api/v1/usage")).send().await.unwrap();
        assert_eq!(response.status(), 200, "after two {status}s");
        assert_eq!(response.headers()["x-gateway-attempts"], "3");
    }
    assert_eq!(count(&sim, "GET", "/api/v1/usage").await, 9);

    // A secret upsert is safe (same key, same value): its body is sent again.
    let slug = create_agent(&gw, "retry-me").await;
    sim.set_faults(Faults {
        drop_next: 1,
        ..Faults::default()
    });
    let path = format!("/api/v1/agents/{slug}/secrets");
    let response = client()
        .post(gw.url(&path))
        .json(&json!({"key": "K", "value": "v"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let sent: Vec<u64> = seen(&sim)
        .await
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.body_len)
        .collect();
    assert_eq!(sent.len(), 2, "dropped once, then sent again");
    assert!(sent[1] > 0, "the body was sent again whole");
    let listed = get_json(&gw.url(&path)).await;
    assert_eq!(listed["secrets"][0]["key"], "K", "{listed}");

    // Three failures: the last answer reaches the client as it was.
    sim.set_faults(failing(3, 503));
    let response = client().get(gw.url("/api/v1/usage")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(count(&sim, "GET", "/api/v1/usage").await, 12);
}

#[tokio::test]
async fn side_effects_are_never_sent_twice() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.breaker.enabled = false;
        // `POST /api-keys` is among the cases: open mode refuses it by default.
        c.auth.open_mode_credential_routes = true;
    })
    .await;
    let slug = create_agent(&gw, "once").await;
    client()
        .post(gw.url(&format!("/api/v1/agents/{slug}/deploy")))
        .send()
        .await
        .unwrap();
    let cases = [
        (
            "POST",
            format!("/api/v1/agents/{slug}/invoke"),
            json!({"prompt": "hi"}),
        ),
        (
            "POST",
            "/api/v1/agents".to_string(),
            json!({"name": "dup", "source_type": "git"}),
        ),
        ("POST", format!("/api/v1/agents/{slug}/deploy"), json!({})),
        ("POST", "/api/v1/api-keys".to_string(), json!({"name": "k"})),
        (
            "POST",
            "/api/v1/files/upload-url".to_string(),
            json!({"filename": "a", "size_bytes": 1}),
        ),
    ];
    for (method, path, body) in &cases {
        for faults in [
            failing(5, 503),
            failing(5, 502),
            Faults {
                drop_next: 1,
                ..Faults::default()
            },
        ] {
            let before = count(&sim, method, path).await;
            sim.set_faults(faults);
            let response = client().post(gw.url(path)).json(body).send().await.unwrap();
            assert!(
                response.status().is_server_error(),
                "{path}: {}",
                response.status()
            );
            assert!(!response.headers().contains_key("x-gateway-attempts"));
            assert_eq!(
                count(&sim, method, path).await - before,
                1,
                "{path} sent once"
            );
            sim.set_faults(Faults::default());
        }
    }
}

/// A loopback port nothing listens on until `after`; then it forwards to
/// `to`. Stops after `for_how_long`.
async fn late_listener(after: Duration, to: std::net::SocketAddr) -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while let Ok(Ok((mut inbound, _))) =
            tokio::time::timeout_at(deadline, listener.accept()).await
        {
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    port
}

#[tokio::test]
async fn a_refused_connection_is_retried_for_any_route() {
    let sim = sim().await;
    let port = late_listener(Duration::from_millis(40), sim.addr()).await;
    let gw = TestGateway::start_with(&format!("http://127.0.0.1:{port}"), |c| {
        c.retry.base_delay_ms = 400;
        c.retry.max_attempts = 6;
    })
    .await;
    // A create: unsafe once sent, but a refused connection sent nothing.
    let response = client()
        .post(gw.url("/api/v1/agents"))
        .json(&json!({"name": "late", "source_type": "git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let attempts: u32 = response.headers()["x-gateway-attempts"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(attempts >= 2, "{attempts}");
    assert_eq!(
        count(&sim, "POST", "/api/v1/agents").await,
        1,
        "created once"
    );
}

#[tokio::test]
async fn the_retry_budget_stops_a_storm() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.cache.enabled = false;
        c.retry.budget_ratio = 0.0;
        c.retry.base_delay_ms = 1;
        c.retry.max_delay_ms = 1;
        c.breaker.enabled = false;
    })
    .await;
    sim.set_faults(Faults {
        error_rate: 1.0,
        error_statuses: vec![503],
        ..Faults::default()
    });
    for _ in 0..30 {
        let response = client().get(gw.url("/api/v1/usage")).send().await.unwrap();
        assert_eq!(response.status(), 503);
    }
    // 30 requests and the reserve of 10 retries; then no more.
    assert_eq!(count(&sim, "GET", "/api/v1/usage").await, 40);
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(
        metrics.contains("castari_gateway_upstream_retries_total{reason=\"status\"} 10"),
        "{metrics}"
    );
    assert!(metrics.contains("castari_gateway_retry_budget_exhausted_total 25"));
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_long_one_is_passed_on() {
    // A tiny upstream: `/usage` is in maintenance for 1 s the first time;
    // `/files` asks for 30 s, past `max_delay_ms`.
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen_calls = calls.clone();
    let app = axum::Router::new()
        .route(
            "/api/v1/usage",
            axum::routing::get(move || {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    let status = if n == 0 { 503 } else { 200 };
                    (
                        http::StatusCode::from_u16(status).unwrap(),
                        [(http::header::RETRY_AFTER, "1")],
                        "{}",
                    )
                }
            }),
        )
        .fallback(|| async {
            (
                http::StatusCode::SERVICE_UNAVAILABLE,
                [(http::header::RETRY_AFTER, "30")],
                "{\"detail\":\"maintenance\"}",
            )
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gw = TestGateway::start_with(&format!("http://{addr}"), |c| c.cache.enabled = false).await;

    let started = std::time::Instant::now();
    let response = client().get(gw.url("/api/v1/usage")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-gateway-attempts"], "2");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited Retry-After"
    );
    assert_eq!(seen_calls.load(std::sync::atomic::Ordering::SeqCst), 2);

    let started = std::time::Instant::now();
    let response = client().get(gw.url("/api/v1/files")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "30");
    assert!(
        !response.headers().contains_key("x-gateway-attempts"),
        "not retried: 30 s is past max_delay_ms"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
}
