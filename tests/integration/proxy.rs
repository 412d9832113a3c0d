//! Forwarding: what crosses the gateway, both ways.

use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn key_swap_upstream_sees_only_the_upstream_key() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let response = client()
        .get(gw.url("/api/v1/agents"))
        .header("authorization", format!("Bearer {LOCAL_KEY}"))
        .header("x-api-key", LOCAL_KEY)
        .header("cookie", "session=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(!body.contains(UPSTREAM_KEY));

    let seen = last_seen(&sim).await;
    assert_eq!(
        header(&seen, "authorization"),
        Some(&*format!("Bearer {UPSTREAM_KEY}"))
    );
    assert_eq!(header(&seen, "x-api-key"), None);
    assert_eq!(header(&seen, "cookie"), None);
    let all = format!("{:?}", seen.headers);
    assert!(!all.contains(LOCAL_KEY), "local key leaked upstream: {all}");
}

#[tokio::test]
async fn request_without_credentials_still_gets_the_upstream_key() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let response = client()
        .get(gw.url("/api/v1/auth/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let seen = last_seen(&sim).await;
    assert_eq!(
        header(&seen, "authorization"),
        Some(&*format!("Bearer {UPSTREAM_KEY}"))
    );
}

#[tokio::test]
async fn path_query_method_and_body_arrive_exactly() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let slug = create_agent(&gw, "Exact Path").await;
    let response = client()
        .post(gw.url(&format!("/api/v1/agents/{slug}/secrets")))
        .json(&json!({"key": "MY KEY", "value": "v"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    let response = client()
        .delete(gw.url(&format!("/api/v1/agents/{slug}/secrets/MY%20KEY")))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let seen = last_seen(&sim).await;
    assert_eq!(seen.method, "DELETE");
    assert_eq!(seen.path, format!("/api/v1/agents/{slug}/secrets/MY%20KEY"));

    client()
        .get(gw.url(&format!(
            "/api/v1/agents/{slug}/invocations?status=completed&limit=5&offset=0"
        )))
        .send()
        .await
        .unwrap();
    let seen = last_seen(&sim).await;
    assert_eq!(
        seen.query.as_deref(),
        Some("status=completed&limit=5&offset=0")
    );
}

#[tokio::test]
async fn hop_by_hop_and_connection_named_headers_are_dropped() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let request = "GET /api/v1/agents HTTP/1.1\r\nHost: gw\r\nConnection: close, x-hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nProxy-Authorization: Basic eA==\r\nX-Kept: yes\r\n\r\n";
    let answer = raw_exchange(
        gw.addr,
        request.as_bytes(),
        std::time::Duration::from_secs(5),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = last_seen(&sim).await;
    assert_eq!(header(&seen, "x-hop"), None);
    assert_eq!(header(&seen, "keep-alive"), None);
    assert_eq!(header(&seen, "proxy-authorization"), None);
    assert_eq!(header(&seen, "x-kept"), Some("yes"));
    assert_ne!(
        header(&seen, "host"),
        Some("gw"),
        "Host is set for the upstream"
    );
}

#[tokio::test]
async fn request_id_is_passed_on_or_generated() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.cache.enabled = false).await;
    let response = client()
        .get(gw.url("/api/v1/agents"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    assert_eq!(
        header(&last_seen(&sim).await, "x-request-id"),
        Some("trace-42")
    );

    let response = client().get(gw.url("/api/v1/agents")).send().await.unwrap();
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(generated.starts_with("gw-"), "{generated}");
    assert_eq!(
        header(&last_seen(&sim).await, "x-request-id"),
        Some(&*generated)
    );
}

#[tokio::test]
async fn upstream_errors_reach_the_client_untouched() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let via_gateway = client()
        .get(gw.url("/api/v1/agents/nope"))
        .send()
        .await
        .unwrap();
    let direct = client()
        .get(format!("{}/api/v1/agents/nope", sim.url()))
        .bearer_auth(UPSTREAM_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(via_gateway.status(), 404);
    assert_eq!(via_gateway.status(), direct.status());
    assert_eq!(
        via_gateway.bytes().await.unwrap(),
        direct.bytes().await.unwrap()
    );

    let invalid = client()
        .post(gw.url("/api/v1/agents"))
        .json(&json!({"description": "no name"}))
        .send()
        .await
        .unwrap();
    assert_eq!(invalid.status(), 422);
    let body: Value = invalid.json().await.unwrap();
    assert!(body["detail"].is_array(), "422 list form kept: {body}");
}

#[tokio::test]
async fn with_shaping_off_upstream_429s_are_relayed() {
    let sim = sim_with(|c| c.crud_limit = "2/60s".parse().unwrap()).await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.shaper.enabled = false;
        c.cache.enabled = false;
    })
    .await;
    let mut last = None;
    for _ in 0..3 {
        last = Some(client().get(gw.url("/api/v1/agents")).send().await.unwrap());
    }
    let last = last.unwrap();
    assert_eq!(last.status(), 429);
    assert!(last.headers().contains_key("retry-after"));
    assert!(last.headers().contains_key("x-ratelimit-limit"));
    let body: Value = last.json().await.unwrap();
    assert!(body["detail"]
        .as_str()
        .unwrap()
        .starts_with("Rate limit exceeded"));
}

#[tokio::test]
async fn sdk_stop_form_is_rewritten_to_the_documented_route() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let slug = create_agent(&gw, "Stop Me").await;
    deploy_agent(&gw, &slug).await;
    let stop = client()
        .delete(gw.url(&format!("/api/v1/{slug}/sandbox")))
        .send()
        .await
        .unwrap();
    assert!(stop.status().is_success(), "{}", stop.status());
    let seen = last_seen(&sim).await;
    assert_eq!(seen.method, "DELETE");
    assert_eq!(seen.path, format!("/api/v1/agents/{slug}/sandbox"));
    let agent: Value = client()
        .get(gw.url(&format!("/api/v1/agents/{slug}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(agent["status"], "stopped");
}

#[tokio::test]
async fn unknown_routes_under_api_v1_are_forwarded() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let response = client()
        .put(gw.url("/api/v1/brand-new/route?x=1"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["detail"], "Not Found",
        "the upstream's 404, not the gateway's"
    );
    assert!(body.get("code").is_none());
    let seen = last_seen(&sim).await;
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("PUT", "/api/v1/brand-new/route")
    );
    assert_eq!(seen.query.as_deref(), Some("x=1"));
}

#[tokio::test]
async fn no_content_responses_have_no_body() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let slug = create_agent(&gw, "Delete Me").await;
    let response = client()
        .delete(gw.url(&format!("/api/v1/agents/{slug}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert!(response.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn http2_clients_are_served_too() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2.get(gw.url("/api/v1/agents")).send().await.unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    let seen = last_seen(&sim).await;
    assert_eq!(seen.path, "/api/v1/agents");
    assert_eq!(
        header(&seen, "authorization"),
        Some(&*format!("Bearer {UPSTREAM_KEY}"))
    );
}
