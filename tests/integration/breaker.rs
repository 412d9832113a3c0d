//! The circuit breaker (issue #7, item 2): consecutive upstream failures
//! open it; while open the gateway answers 503 at once without the
//! upstream, serves cached entries stale, and says so on /readyz and
//! /metrics; one probe after the cool-down closes it again.

use std::time::Duration;

use castari_sim::Faults;
use serde_json::Value;

use crate::support::*;

#[tokio::test]
async fn consecutive_failures_open_the_circuit_and_a_probe_closes_it() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.cache.ttl_secs.buckets = 1;
        c.retry.enabled = false;
        c.breaker.failure_threshold = 3;
        c.breaker.open_ms = 400;
    })
    .await;
    // Cached before the trouble starts.
    assert_eq!(get_status(&gw.url("/api/v1/buckets")).await, 200);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    sim.set_faults(Faults {
        error_rate: 1.0,
        error_statuses: vec![502],
        ..Faults::default()
    });
    for _ in 0..3 {
        assert_eq!(get_status(&gw.url("/api/v1/usage")).await, 502);
    }
    let sent = seen(&sim).await.len();
    let started = std::time::Instant::now();
    let refused = client().get(gw.url("/api/v1/usage")).send().await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "circuit_open");
    assert!(started.elapsed() < Duration::from_millis(200), "fails fast");
    // Writes are refused as well: nothing is sent while open.
    let write = client()
        .post(gw.url("/api/v1/agents"))
        .json(&serde_json::json!({"name": "x", "source_type": "git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(write.status(), 503);
    // The cached read stands in, stale.
    let stale = client()
        .get(gw.url("/api/v1/buckets"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);
    assert_eq!(stale.headers()["x-cache"], "STALE");
    assert_eq!(seen(&sim).await.len(), sent, "nothing reached the upstream");

    let ready = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<Value>().await.unwrap()["code"], "circuit_open");
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(
        metrics.contains("castari_gateway_circuit_state 2"),
        "{metrics}"
    );
    assert!(metrics.contains("castari_gateway_circuit_opened_total 1"));
    assert!(metrics.contains("castari_gateway_circuit_rejected_total 3"));

    // After the cool-down one probe goes; it fails: open again.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(get_status(&gw.url("/api/v1/usage")).await, 502);
    assert_eq!(seen(&sim).await.len(), sent + 1, "exactly one probe");
    assert_eq!(get_status(&gw.url("/api/v1/usage")).await, 503);

    // The upstream recovers: the next probe closes the circuit.
    sim.set_faults(Faults::default());
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(get_status(&gw.url("/api/v1/usage")).await, 200);
    for _ in 0..3 {
        assert_eq!(get_status(&gw.url("/api/v1/agents")).await, 200);
    }
    let ready: Value = get_json(&gw.url("/readyz")).await;
    assert_eq!(ready["circuit"], "closed");
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(metrics.contains("castari_gateway_circuit_state 0"));
}

#[tokio::test]
async fn answers_that_show_the_upstream_is_there_keep_it_closed() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.cache.enabled = false;
        c.retry.enabled = false;
        c.breaker.failure_threshold = 2;
    })
    .await;
    sim.set_faults(Faults {
        error_rate: 1.0,
        error_statuses: vec![500],
        ..Faults::default()
    });
    for _ in 0..5 {
        assert_eq!(get_status(&gw.url("/api/v1/usage")).await, 500);
    }
    sim.set_faults(Faults::default());
    for _ in 0..5 {
        assert_eq!(get_status(&gw.url("/api/v1/agents/nope")).await, 404);
    }
    let ready: Value = get_json(&gw.url("/readyz")).await;
    assert_eq!(ready["circuit"], "closed");
}
