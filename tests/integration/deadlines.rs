//! The queue keeps its word (issue 20): a request let into the queue is
//! sent, never refused after it waited; a refusal comes at once. A request
//! may set its own wait with `Prefer: wait=N`. An upstream answer counts
//! as of when its request was sent, so slow invocations do not block
//! slots that are free.

use std::time::{Duration, Instant};

use castari_gateway::config::Config;
use serde_json::Value;

use crate::support::*;

/// Budget `crud` (no margin), longest wait `wait_ms`, nothing cached.
fn tight(config: &mut Config, crud: &str, wait_ms: u64) {
    config.shaper.crud_limit = crud.parse().unwrap();
    config.shaper.safety_margin_ms = 0;
    config.shaper.crud_max_wait_ms = wait_ms;
    config.cache.enabled = false;
}

/// Sends `GET /api/v1/auth/me` as `client` after `delay`: the status, the
/// error code if any, and how long the client waited for the answer.
fn ask(
    gw: &TestGateway,
    client_name: &'static str,
    delay: Duration,
) -> tokio::task::JoinHandle<(u16, String, Duration)> {
    let url = gw.url("/api/v1/auth/me");
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let asked = Instant::now();
        let response = client()
            .get(url)
            .bearer_auth(client_name)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["code"].as_str().unwrap_or("").to_string();
        (status, code, asked.elapsed())
    })
}

/// Client A fills the queue to its deadline; client B arrives a moment
/// later. Fair order would send B ahead of A's second waiter and push that
/// one past its deadline, to be refused after waiting 3 s. Instead B is
/// refused at once, and everyone let in is sent.
#[tokio::test]
async fn a_queued_request_is_sent_and_a_refusal_comes_at_once() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| tight(c, "2/2s", 3000)).await;
    let mut tasks: Vec<_> = (0..6)
        .map(|_| ask(&gw, "client-a", Duration::ZERO))
        .collect();
    tasks.push(ask(&gw, "client-b", Duration::from_millis(150)));
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    for (status, code, waited) in &results {
        match status {
            200 => {}
            429 => {
                assert_ne!(code, "queue_timeout", "refused after waiting {waited:?}");
                assert!(
                    *waited < Duration::from_millis(300),
                    "a 429 ({code}) after {waited:?}"
                );
            }
            other => panic!("status {other}"),
        }
    }
    let sent = results.iter().filter(|(s, ..)| *s == 200).count();
    // Two at once, two at the 2 s slots; the rest refused at once.
    assert_eq!(sent, 4, "{results:?}");
    let b = &results[6];
    assert_eq!(b.0, 429, "B would have cost A's waiter its deadline");
    assert!(seen(&sim).await.iter().all(|r| r.status != 429));
}

/// `Prefer: wait=1` makes a request that would be let in (the lane waits
/// 3 s) refused at once; `Prefer: wait=5` lets one in that the lane's 1 s
/// would refuse, and its answer says what was applied.
#[tokio::test]
async fn prefer_wait_shortens_and_lengthens_the_wait() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        tight(c, "1/2s", 3000);
        c.shaper.prefer_wait_max_ms = 10_000;
    })
    .await;
    let url = gw.url("/api/v1/auth/me");
    assert_eq!(get_status(&url).await, 200);
    let short = client()
        .get(&url)
        .header("prefer", "wait=1")
        .send()
        .await
        .unwrap();
    assert_eq!(short.status(), 429);
    let plain = client().get(&url).send().await.unwrap();
    assert_eq!(plain.status(), 200, "the lane's 3 s covers the 2 s slot");
    assert!(plain.headers().get("preference-applied").is_none());

    let gw = TestGateway::start_with(&sim.url(), |c| {
        tight(c, "1/2s", 1000);
        c.shaper.prefer_wait_max_ms = 10_000;
    })
    .await;
    let url = gw.url("/api/v1/auth/me");
    assert_eq!(get_status(&url).await, 200);
    assert_eq!(get_status(&url).await, 429, "1 s is not enough");
    let long = client()
        .get(&url)
        .header("prefer", "respond-async, wait=5")
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 200);
    assert_eq!(long.headers()["preference-applied"], "wait=5");
    let waited: u64 = long.headers()["x-gateway-queue-wait-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(waited >= 1000, "waited {waited} ms");
}

/// Invocations that take longer than the window: their answers report the
/// upstream's count from when they were admitted. Read as of now, those
/// counts made up sends that blocked the next invocations for a window.
#[tokio::test]
async fn slow_invocations_do_not_lower_the_budget() {
    let sim = sim_with(|c| {
        c.invoke_limit = "3/2s".parse().unwrap();
        c.invoke_latency_ms = 3000;
    })
    .await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.shaper.invoke_limit = "3/2s".parse().unwrap();
        c.shaper.safety_margin_ms = 200;
    })
    .await;
    let slug = create_agent(&gw, "Slow").await;
    deploy_agent(&gw, &slug).await;
    let invoke = |n: usize| {
        let url = gw.url(&format!("/api/v1/agents/{slug}/invoke"));
        tokio::spawn(async move {
            let response = client()
                .post(url)
                .json(&serde_json::json!({"prompt": format!("run {n}")}))
                .send()
                .await
                .unwrap();
            let waited = response.headers().get("x-gateway-queue-wait-ms").cloned();
            (response.status().as_u16(), waited)
        })
    };
    for round in 0..2 {
        let tasks: Vec<_> = (0..3).map(|n| invoke(round * 3 + n)).collect();
        for task in tasks {
            let (status, waited) = task.await.unwrap();
            assert_eq!(status, 200);
            // The first round's answers came 3 s after their sends: the
            // window they describe is over, the budget is whole again.
            assert!(waited.is_none(), "round {round} waited {waited:?} ms");
        }
    }
    let stats = get_json(&format!("{}/_sim/stats", sim.url())).await;
    assert_eq!(stats["classes"]["invoke"]["limited"], 0);
}
