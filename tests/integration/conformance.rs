//! What a conformance fuzzer found at the gateway (issue 19, G1–G3), over
//! real sockets against the simulator: every `/api/v1` answer carries the
//! `X-RateLimit-*` headers with the shaper off too (cache answers and the
//! gateway's own errors included), and an id with an encoded control
//! character can be deleted through the gateway as it was made.

use serde_json::{json, Value};

use crate::support::*;

fn limits(response: &reqwest::Response) -> Option<[u64; 3]> {
    let read =
        |name: &str| -> Option<u64> { response.headers().get(name)?.to_str().ok()?.parse().ok() };
    Some([
        read("x-ratelimit-limit")?,
        read("x-ratelimit-remaining")?,
        read("x-ratelimit-reset")?,
    ])
}

#[tokio::test]
async fn shaper_off_answers_carry_the_upstream_rate_limit_view() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.shaper.enabled = false;
        // Unlike the simulator's 10000: tells the two sources apart.
        c.shaper.crud_limit = "77/60s".parse().unwrap();
    })
    .await;

    // Before the upstream said anything, a gateway error carries the
    // configured budget.
    let refused = client()
        .get(gw.url("/api/v1/agents/a%00"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    let [limit, remaining, _] = limits(&refused).expect("a refusal carries the headers");
    assert_eq!((limit, remaining), (77, 77));

    // A cacheable miss and then a hit: the upstream's view on both.
    let url = gw.url("/api/v1/usage?days=7");
    let miss = client().get(&url).send().await.unwrap();
    assert_eq!(miss.status(), 200);
    assert_eq!(miss.headers()["x-cache"], "MISS");
    let [limit, remaining, reset] = limits(&miss).expect("a miss carries the headers");
    assert_eq!(limit, 10_000, "the simulator's limit, not the config's");
    let hit = client().get(&url).send().await.unwrap();
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(limits(&hit), Some([limit, remaining, reset]));
    assert_eq!(upstream_gets(&sim, "/api/v1/usage").await, 1);

    // A gateway error after the upstream spoke: its last view.
    let refused = client()
        .post(gw.url("/api/v1/api-keys"))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(limits(&refused), Some([limit, remaining, reset]));

    // An uncached answer keeps the upstream's own headers.
    let direct = client()
        .get(gw.url("/api/v1/api-keys"))
        .send()
        .await
        .unwrap();
    let [limit, now_remaining, _] = limits(&direct).unwrap();
    assert_eq!(limit, 10_000);
    assert!(now_remaining < remaining, "the upstream counted one more");
}

#[tokio::test]
async fn an_encoded_control_character_in_an_id_is_forwarded_encoded() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let slug = create_agent(&gw, "controls").await;
    let deployed = client()
        .post(gw.url(&format!("/api/v1/agents/{slug}/deploy")))
        .send()
        .await
        .unwrap();
    assert!(deployed.status().is_success());

    // The upstream takes the id in a body and lists it.
    let session = "s\u{85}x";
    let invoked = client()
        .post(gw.url(&format!("/api/v1/agents/{slug}/invoke")))
        .json(&json!({"prompt": "hi", "session_id": session}))
        .send()
        .await
        .unwrap();
    assert_eq!(invoked.status(), 200);
    let sessions_url = gw.url(&format!("/api/v1/agents/{slug}/sessions"));
    let ids = |list: &Value| -> Vec<String> {
        list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&get_json(&sessions_url).await), [session]);

    // And the gateway deletes it, sending the path as the client wrote it.
    let path = format!("/api/v1/agents/{slug}/sessions/s%C2%85x");
    let deleted = client().delete(gw.url(&path)).send().await.unwrap();
    assert_eq!(deleted.status(), 204, "{}", deleted.text().await.unwrap());
    let last = last_seen(&sim).await;
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("DELETE", path.as_str())
    );
    assert!(ids(&get_json(&sessions_url).await).is_empty());

    // An encoded NUL is still refused, in Castari's shape.
    let nul = client()
        .delete(gw.url(&format!("/api/v1/agents/{slug}/sessions/s%00x")))
        .send()
        .await
        .unwrap();
    assert_eq!(nul.status(), 400);
    let body: Value = nul.json().await.unwrap();
    assert_eq!(body["code"], "bad_request");
    assert!(body["detail"].as_str().unwrap().contains("NUL"));
}

#[tokio::test]
async fn the_description_is_served_as_compiled_in() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let response = client().get(gw.url("/openapi.json")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let served: Value = response.json().await.unwrap();
    let file: Value = serde_json::from_str(include_str!("../../assets/openapi.json")).unwrap();
    assert_eq!(served, file);
    assert!(served["paths"]["/openapi.json"]["get"].is_object());
    assert!(seen(&sim).await.is_empty(), "a local endpoint");
}
