//! Gateway-made errors: the right status, Castari-shaped, upstream untouched.

use std::time::Duration;

use castari_sim::Faults;
use serde_json::Value;

use crate::support::*;

async fn expect_error(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    // The SDK shows `detail` only: it names the code for the README.
    let suffix = format!(" (code: {code})");
    assert!(
        body["detail"]
            .as_str()
            .and_then(|d| d.strip_suffix(&suffix))
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    let text = body.to_string();
    assert!(!text.contains(UPSTREAM_KEY));
    body
}

#[tokio::test]
async fn paths_outside_the_api_are_404_and_never_forwarded() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    // `/` is the operator page (`page.rs`).
    for path in [
        "/index.html",
        "/api/v2/agents",
        "/api/v1",
        "/admin",
        "/_sim/requests",
        "/ui/x",
    ] {
        let response = client().get(gw.url(path)).send().await.unwrap();
        expect_error(response, 404, "not_found").await;
    }
    assert!(seen(&sim).await.is_empty());
}

#[tokio::test]
async fn unreachable_upstream_is_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gw = TestGateway::start(&format!("http://127.0.0.1:{port}")).await;
    let response = client().get(gw.url("/api/v1/agents")).send().await.unwrap();
    expect_error(response, 502, "upstream_unreachable").await;
}

#[tokio::test]
async fn slow_upstream_is_504() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.upstream.crud_timeout_ms = 200).await;
    sim.set_faults(Faults {
        latency_ms: 2_000,
        ..Faults::default()
    });
    let response = client().get(gw.url("/api/v1/agents")).send().await.unwrap();
    expect_error(response, 504, "upstream_timeout").await;
}

#[tokio::test]
async fn dropped_upstream_connection_is_502() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    sim.set_faults(Faults {
        drop_next: 1,
        ..Faults::default()
    });
    // A create may have happened: it is never sent twice.
    let response = client()
        .post(gw.url("/api/v1/agents"))
        .json(&serde_json::json!({"name": "x", "source_type": "git"}))
        .send()
        .await
        .unwrap();
    expect_error(response, 502, "upstream_failed").await;
    assert_eq!(seen(&sim).await.len(), 1, "sent once");
}

#[tokio::test]
async fn upstream_5xx_is_relayed_not_rewritten() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    sim.set_faults(Faults {
        fail_next: 10,
        error_statuses: vec![503],
        ..Faults::default()
    });
    let response = client().get(gw.url("/api/v1/agents")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["x-gateway-attempts"], "3");
    let body: Value = response.json().await.unwrap();
    assert!(
        body.get("code").is_none() || body["code"] != "upstream_failed",
        "{body}"
    );
}

#[tokio::test]
async fn declared_body_over_the_limit_is_413_before_the_upstream() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.server.max_body_bytes = 1024).await;
    let response = client()
        .post(gw.url("/api/v1/files"))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    let body = expect_error(response, 413, "payload_too_large").await;
    assert!(body["detail"].as_str().unwrap().contains("1024"));
    assert!(seen(&sim).await.is_empty());
}

#[tokio::test]
async fn chunked_body_over_the_limit_is_413() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.server.max_body_bytes = 64 * 1024).await;
    let chunks = futures_util::stream::iter(
        (0..64).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 4096]))),
    );
    let response = client()
        .post(gw.url("/api/v1/agents/a/upload-code"))
        .header("content-type", "multipart/form-data; boundary=x")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "payload_too_large").await;
}

#[tokio::test]
async fn stalled_request_body_is_408() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.server.body_idle_timeout_ms = 300).await;
    let request = "POST /api/v1/agents HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"name\":";
    // Within 3 s although the body never completes: the 300 ms idle deadline fired.
    let answer = raw_exchange(gw.addr, request.as_bytes(), Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("\"code\":\"request_body_timeout\""),
        "{answer}"
    );
}

#[tokio::test]
async fn wrong_method_on_a_gateway_endpoint_is_405_json() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let response = client().post(gw.url("/healthz")).send().await.unwrap();
    expect_error(response, 405, "method_not_allowed").await;
}
