//! Operations endpoints: health, readiness and metrics.

use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn healthz_and_readyz_follow_the_upstream() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let health = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let ready = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let orphan = TestGateway::start(&format!("http://127.0.0.1:{port}")).await;
    assert_eq!(
        client()
            .get(orphan.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let not_ready = client().get(orphan.url("/readyz")).send().await.unwrap();
    assert_eq!(not_ready.status(), 503);
    let body: Value = not_ready.json().await.unwrap();
    assert_eq!(body["code"], "upstream_unreachable");
    assert!(
        seen(&sim).await.is_empty(),
        "probes spend no upstream budget"
    );
}

#[tokio::test]
async fn metrics_count_requests_by_class_method_and_status() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.cache.enabled = false).await;
    for _ in 0..3 {
        client().get(gw.url("/api/v1/agents")).send().await.unwrap();
    }
    client()
        .get(gw.url("/api/v1/agents/missing"))
        .send()
        .await
        .unwrap();
    client().get(gw.url("/nowhere")).send().await.unwrap();
    let response = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert!(
        text.contains(
            r#"castari_gateway_requests_total{class="crud",method="GET",status="200",code=""} 3"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            r#"castari_gateway_requests_total{class="crud",method="GET",status="404",code=""} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"castari_gateway_requests_total{class="local",method="GET",status="404",code="not_found"} 1"#), "{text}");
    assert!(
        text.contains(r#"castari_gateway_upstream_latency_seconds_count{class="crud"} 4"#),
        "{text}"
    );
    assert!(
        text.contains("castari_gateway_in_flight_requests"),
        "{text}"
    );
    assert!(!text.contains(UPSTREAM_KEY));
}
