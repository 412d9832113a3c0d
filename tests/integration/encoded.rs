//! An invocation written with percent-encoded characters is an invocation
//! (issue #21, item 5): it waits in the invoke lane and goes with its
//! budget reservation, as the plain form does. Before the one reading of the
//! path, `POST /agents/x/%69nvoke` was classed CRUD: an upstream that
//! decodes it would run it outside the invoke budget and the key's USD
//! budget.

use std::time::Duration;

use serde_json::{json, Value};

use crate::keys::{call, Broker};
use crate::support::*;

const ENCODED: [&str; 3] = ["%69nvoke", "invok%65", "%73tream"];

#[tokio::test]
async fn an_encoded_invoke_waits_in_the_invoke_lane() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.shaper.invoke_limit = "3/60s".parse().unwrap();
    })
    .await;
    let slug = create_agent(&gw, "enc").await;
    deploy_agent(&gw, &slug).await;
    for segment in ENCODED {
        let response = client()
            .post(gw.url(&format!("/api/v1/agents/{slug}/{segment}")))
            .json(&json!({"prompt": "hi"}))
            .send()
            .await
            .unwrap();
        // The gateway's view of the invoke lane, not the CRUD lane's 100.
        assert_eq!(response.headers()["x-ratelimit-limit"], "3", "{segment}");
        let seen = last_seen(&sim).await;
        assert!(
            seen.path.ends_with(segment),
            "sent as written: {}",
            seen.path
        );
    }
    // The lane is spent: a fourth invocation, encoded or not, waits (and is
    // refused at once when it asks to wait no longer than a second).
    let over = client()
        .post(gw.url(&format!("/api/v1/agents/{slug}/%69nvoke")))
        .header("prefer", "wait=1")
        .json(&json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(over.status(), 429);
    let body: Value = over.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited", "{body}");
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(
        metrics.contains("class=\"invoke\""),
        "counted as invocations"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_encoded_invoke_cannot_pass_a_spent_budget() {
    let sim = sim().await;
    let b = Broker::start(&sim.url(), |c| {
        c.auth.invoke_reserve_usd = "0.0001".into();
    })
    .await;
    let (admin, _) = b.create(json!({"name": "ops", "role": "admin"})).await;
    let (status, _) = call(
        &b.gw,
        Some(&admin),
        reqwest::Method::POST,
        "/api/v1/agents",
        Some(json!({"name": "enc", "slug": "enc", "source_type": "git", "git_repo_url": "https://example.invalid/r"})),
    )
    .await;
    assert_eq!(status, 201);
    let deploy = "/api/v1/agents/enc/deploy";
    let (status, _) = call(&b.gw, Some(&admin), reqwest::Method::POST, deploy, None).await;
    assert_eq!(status, 200);
    // One "hi" costs 0.000171 USD: the first spends this budget.
    let (token, _) = b
        .create(json!({"name": "bot", "role": "invoke", "budget_usd": "0.0002/day"}))
        .await;
    let invoke = |segment: &'static str| {
        let gw = &b.gw;
        let token = token.clone();
        async move {
            let path = format!("/api/v1/agents/enc/{segment}");
            call(
                gw,
                Some(&token),
                reqwest::Method::POST,
                &path,
                Some(json!({"prompt": "hi"})),
            )
            .await
        }
    };
    // Spend it with plain invocations until the budget refuses one.
    let mut spent = false;
    for _ in 0..10 {
        let (status, body) = invoke("invoke").await;
        if status == 402 {
            spent = true;
            break;
        }
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(spent, "the budget refused a plain invocation");
    let before = seen(&sim).await.len();
    for segment in ENCODED {
        let (status, body) = invoke(segment).await;
        assert_eq!(status, 402, "{segment}: {body}");
        assert_eq!(body["code"], "budget_exceeded");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen(&sim).await.len(), before, "none left for the upstream");
}
