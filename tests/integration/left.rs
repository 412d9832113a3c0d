//! A client that hangs up while its invocation waits (for the invoke
//! lane's budget or its session's turn) spends nothing: the invocation is
//! never sent, its place in the queue and its budget reservation are given
//! back. Once sent, it runs and is billed whether the client stays or not.

use std::time::{Duration, Instant};

use castari_sim::{RecordedRequest, Simulator};
use reqwest::Method;
use serde_json::json;

use crate::keys::{call, make_agent, Broker};
use crate::support::*;

/// A client that gives up after 300 ms.
fn impatient() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap()
}

/// Invocations the simulator received.
async fn invocations(sim: &Simulator) -> Vec<RecordedRequest> {
    seen(sim)
        .await
        .into_iter()
        .filter(|r| r.path.ends_with("/invoke"))
        .collect()
}

/// A simulator and a keys-mode gateway whose invoke lane sends one a 2 s
/// window, with agent `demo-a` deployed and an invoke key (token, info)
/// whose budget holds one run and one reservation: a key may reserve while
/// what it spent and holds is under its budget, and after one run
/// (0.000171 USD) a reservation held (0.0006) leaves no room for another.
async fn budgeted(max_wait_ms: Option<u64>) -> (Simulator, Broker, String, serde_json::Value) {
    let sim = sim().await;
    let b = Broker::start(&sim.url(), |c| {
        c.shaper.invoke_limit = "1/2s".parse().unwrap();
        c.shaper.safety_margin_ms = 0;
        if let Some(max_wait_ms) = max_wait_ms {
            c.shaper.invoke_max_wait_ms = max_wait_ms;
        }
        c.auth.invoke_reserve_usd = "0.0006".into();
    })
    .await;
    let (admin, _) = b.create(json!({"name": "ops", "role": "admin"})).await;
    make_agent(&b.gw, &admin, "demo-a").await;
    let (token, info) = b
        .create(json!({"name": "bot", "role": "invoke", "budget_usd": "0.0007/day"}))
        .await;
    (sim, b, token, info)
}

#[tokio::test]
async fn an_invocation_left_in_the_queue_is_never_sent_and_its_reservation_is_freed() {
    let (sim, b, token, info) = budgeted(None).await;
    let url = b.gw.url("/api/v1/agents/demo-a/invoke");

    // The lane's one slot in this window.
    let first_sent = Instant::now();
    assert_eq!(invoke_hi(url.clone(), token.clone()).await.0, 200);

    // The next one waits for the window; its client leaves first.
    let left = impatient()
        .post(&url)
        .bearer_auth(&token)
        .header("x-tag", "left")
        .json(&json!({"prompt": "hi"}))
        .send()
        .await;
    assert!(left.is_err(), "the impatient client got {left:?}");

    // Its reservation is freed as the gateway sees the hang-up, so another
    // invocation fits in the budget and takes the next window's slot.
    // Held, it would stay for minutes (the reservation's lifetime), past
    // these retries, and this one would get 402.
    let (status, body) = invoke_until_not_402(&url, &token).await;
    assert_eq!(status, 200, "{body}");

    // Well past the window the one that left would have gone in.
    tokio::time::sleep_until((first_sent + Duration::from_millis(4_500)).into()).await;
    let sent = invocations(&sim).await;
    assert_eq!(
        sent.len(),
        2,
        "sent: {:?}",
        sent.iter().map(|r| header(r, "x-tag")).collect::<Vec<_>>()
    );
    assert!(
        sent.iter().all(|r| header(r, "x-tag").is_none()),
        "the one that left was sent"
    );

    // The ledger holds the two that ran, and nothing is still held.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let total = b.usage_total(info["id"].as_str().unwrap()).await;
    assert_eq!(total["invocations"], 2, "{total}");
    let metrics = get_text(&b.gw.url("/metrics")).await;
    assert!(
        metrics.contains(
            "castari_gateway_refused_total{lane=\"invoke\",upstream=\"default\",reason=\"client_gone\"} 1"
        ),
        "{metrics}"
    );
}

/// Invokes until the answer is not 402, for at most 3 s: the gateway frees
/// a reservation once it has seen the hang-up or refusal that ends it.
async fn invoke_until_not_402(url: &str, token: &str) -> (u16, serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, body) = invoke_hi(url.to_string(), token.to_string()).await;
        if status != 402 || Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_refusal_before_the_send_frees_the_reservation_at_once() {
    // A wait of a whole window is refused at once.
    let (sim, b, token, _) = budgeted(Some(500)).await;
    let url = b.gw.url("/api/v1/agents/demo-a/invoke");
    let first_sent = Instant::now();
    assert_eq!(invoke_hi(url.clone(), token.clone()).await.0, 200);
    let (status, body) = invoke_hi(url.clone(), token.clone()).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["code"], "rate_limited", "{body}");

    // Next window: the refused one's reservation is not held, so this fits.
    tokio::time::sleep_until((first_sent + Duration::from_millis(2_100)).into()).await;
    let (status, body) = invoke_until_not_402(&url, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(invocations(&sim).await.len(), 2);
}

#[tokio::test]
async fn an_invocation_left_waiting_for_its_session_turn_is_never_sent() {
    let sim = sim_with(|c| c.invoke_latency_ms = 800).await;
    let gw = TestGateway::start(&sim.url()).await;
    let (status, body) = call(
        &gw,
        None,
        Method::POST,
        "/api/v1/agents",
        Some(json!({"name": "turns", "slug": "turns", "source_type": "git", "git_repo_url": "https://example.invalid/r"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, _) = call(&gw, None, Method::POST, "/api/v1/agents/turns/deploy", None).await;
    assert_eq!(status, 200);
    let url = gw.url("/api/v1/agents/turns/invoke");

    // Turn 1 runs for 800 ms; turn 2 waits for it, and its client leaves.
    let first = tokio::spawn({
        let url = url.clone();
        async move {
            client()
                .post(url)
                .json(&json!({"prompt": "one", "session_id": "s"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    // Turn 1 has reached the simulator (it counts arrivals at once).
    let stats = format!("{}/_sim/stats", sim.url());
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_json(&stats).await["routes"]["POST /api/v1/agents/{slug}/invoke"] != 1 {
        assert!(Instant::now() < deadline, "turn 1 never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let left = impatient()
        .post(&url)
        .header("x-tag", "left")
        .json(&json!({"prompt": "two", "session_id": "s"}))
        .send()
        .await;
    assert!(left.is_err(), "the impatient client got {left:?}");
    assert_eq!(first.await.unwrap(), 200);

    // Turn 3 goes as soon as turn 1 is done; turn 2 never goes.
    let (status, _) = call(
        &gw,
        None,
        Method::POST,
        "/api/v1/agents/turns/invoke",
        Some(json!({"prompt": "three", "session_id": "s"})),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = invocations(&sim).await;
    let tags: Vec<Option<&str>> = sent.iter().map(|r| header(r, "x-tag")).collect();
    assert_eq!(tags, [None, None], "the one that left was sent");
}
