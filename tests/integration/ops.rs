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

/// The `in_flight_requests` gauge, read off `/metrics` (which counts the
/// scrape itself).
async fn in_flight(gw: &TestGateway) -> u64 {
    let text = get_text(&gw.url("/metrics")).await;
    text.lines()
        .find_map(|line| line.strip_prefix("castari_gateway_in_flight_requests "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no in-flight gauge in {text}"))
}

/// Whether the gauge reads `n` within 400 ms.
async fn in_flight_reaches(gw: &TestGateway, n: u64) -> bool {
    for _ in 0..20 {
        if in_flight(gw).await == n {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn the_in_flight_gauge_lets_go_of_a_request_whose_client_hung_up() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    sim.set_faults(castari_sim::Faults {
        latency_ms: 1_500,
        path_prefix: Some("/api/v1/usage".into()),
        ..castari_sim::Faults::default()
    });
    let impatient = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(600))
        .build()
        .unwrap();
    let url = gw.url("/api/v1/usage");
    let waiting = tokio::spawn(async move { impatient.get(url).send().await });
    assert!(
        in_flight_reaches(&gw, 2).await,
        "the slow request and the scrape are in flight"
    );

    let gave_up = waiting.await.unwrap();
    assert!(gave_up.unwrap_err().is_timeout());
    // The client's hang-up drops the request's future well before the
    // upstream answers (1.5 s): the gauge must not keep counting it.
    assert!(
        in_flight_reaches(&gw, 1).await,
        "only the scrape is in flight"
    );
}
