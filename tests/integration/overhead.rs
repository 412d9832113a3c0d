//! The gateway measures its own overhead (issue #21, item 3): the time a
//! request spends in the gateway less the time it waited for the upstream
//! (every attempt, a shared fetch) and in the shaper's queue.

use std::time::{Duration, Instant};

use castari_sim::Faults;

use crate::support::*;

/// The value of the metric line that starts with `prefix`.
fn metric(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {prefix} in {metrics}"))
}

#[tokio::test]
async fn overhead_leaves_out_upstream_and_queue_time() {
    let sim = sim().await;
    sim.set_faults(Faults {
        latency_ms: 250,
        ..Faults::default()
    });
    // Two sends per 2 s: the third request waits in the queue.
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.shaper.crud_limit = "2/2s".parse().unwrap();
        c.shaper.safety_margin_ms = 0;
    })
    .await;
    let started = Instant::now();
    let sends = [
        client().get(gw.url("/api/v1/agents")).send(),
        client().get(gw.url("/api/v1/usage")).send(),
        client().post(gw.url("/api/v1/agents/nope/stop")).send(),
    ];
    for response in futures_util::future::join_all(sends).await {
        assert!(response.unwrap().status().as_u16() < 500);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "one queued"
    );
    let metrics = get_text(&gw.url("/metrics")).await;
    let count = metric(
        &metrics,
        "castari_gateway_overhead_seconds_count{class=\"crud\"}",
    );
    assert_eq!(count, 3.0, "{metrics}");
    let under = metric(
        &metrics,
        "castari_gateway_overhead_seconds_bucket{le=\"0.05\",class=\"crud\"}",
    );
    assert_eq!(
        under, 3.0,
        "each took 250 ms upstream, one queued 1.5 s: {metrics}"
    );
    let sum = metric(
        &metrics,
        "castari_gateway_overhead_seconds_sum{class=\"crud\"}",
    );
    assert!(sum < 0.15, "overhead sum {sum}");
    let upstream = metric(
        &metrics,
        "castari_gateway_upstream_latency_seconds_sum{class=\"crud\"}",
    );
    assert!(upstream >= 0.75, "upstream time {upstream}");
    gw.stop().await;
}

#[tokio::test]
async fn a_request_that_times_out_upstream_is_not_counted_as_overhead() {
    let sim = sim().await;
    sim.set_faults(Faults {
        latency_ms: 600,
        ..Faults::default()
    });
    let gw = TestGateway::start_with(&sim.url(), |c| c.upstream.crud_timeout_ms = 300).await;
    let response = client()
        .post(gw.url("/api/v1/agents/nope/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 504);
    let metrics = get_text(&gw.url("/metrics")).await;
    let count = metric(
        &metrics,
        "castari_gateway_overhead_seconds_count{class=\"crud\"}",
    );
    assert_eq!(count, 1.0, "{metrics}");
    let under = metric(
        &metrics,
        "castari_gateway_overhead_seconds_bucket{le=\"0.05\",class=\"crud\"}",
    );
    assert_eq!(
        under, 1.0,
        "300 ms waited for the upstream is not overhead: {metrics}"
    );
    gw.stop().await;
}
