//! The account's own credentials (issue 19, C1): open mode refuses the
//! routes that mint or revoke upstream keys unless a setting allows them,
//! and no mode revokes the key the gateway holds unless a setting allows
//! it. Over real sockets against the simulator, which models the legacy
//! `DELETE /auth/api-key` revoking the key that sends it.

use reqwest::Method as M;
use serde_json::{json, Value};

use crate::keys::{call, Broker};
use crate::support::*;

/// The routes that mint or revoke upstream credentials, as a tool sends
/// them, with a few spellings of the same route.
const CREDENTIAL_ROUTES: [(&str, &str); 8] = [
    ("POST", "/api/v1/api-keys"),
    ("DELETE", "/api/v1/api-keys/ak_1"),
    ("POST", "/api/v1/auth/api-key"),
    ("DELETE", "/api/v1/auth/api-key"),
    ("POST", "/api/v1/sandbox/sbx_1/access"),
    ("POST", "/api/v1/api-keys/"),
    ("DELETE", "/api/v1/auth//api-key"),
    ("DELETE", "/api/v1/%61uth/api-key"),
];

fn method(name: &str) -> M {
    M::from_bytes(name.as_bytes()).unwrap()
}

#[tokio::test]
async fn open_mode_refuses_credential_routes_by_default() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    for (verb, path) in CREDENTIAL_ROUTES {
        let (status, body) = call(&gw, None, method(verb), path, Some(json!({"name": "x"}))).await;
        assert_eq!(status, 403, "{verb} {path}: {body}");
        assert_eq!(body["code"], "credential_route_refused", "{verb} {path}");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("auth.open_mode_credential_routes"),
            "the detail names the setting: {detail}"
        );
    }
    assert!(seen(&sim).await.is_empty(), "nothing reached the upstream");

    // Reading the key list (prefixes only) and whoami still work.
    assert_eq!(
        call(&gw, None, M::GET, "/api/v1/api-keys", None).await.0,
        200
    );
    assert_eq!(
        call(&gw, None, M::GET, "/api/v1/auth/me", None).await.0,
        200
    );
}

#[tokio::test]
async fn open_mode_may_mint_when_allowed_but_never_revokes_its_own_key() {
    let sim = sim().await;
    let gw =
        TestGateway::start_with(&sim.url(), |c| c.auth.open_mode_credential_routes = true).await;

    let (status, created) = call(
        &gw,
        None,
        M::POST,
        "/api/v1/api-keys",
        Some(json!({"name": "ci"})),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    assert!(created["key"].as_str().unwrap().starts_with("cast_"));

    let before = seen(&sim).await.len();
    for path in ["/api/v1/auth/api-key", "/api/v1/auth//api-key"] {
        let (status, body) = call(&gw, None, M::DELETE, path, None).await;
        assert_eq!(status, 403, "{body}");
        assert_eq!(body["code"], "gateway_key_protected");
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.contains("auth.allow_revoking_gateway_key"),
            "{detail}"
        );
        assert!(!detail.contains(UPSTREAM_KEY));
    }
    assert_eq!(seen(&sim).await.len(), before, "the revoke was not sent");
    assert_eq!(
        call(&gw, None, M::GET, "/api/v1/auth/me", None).await.0,
        200
    );
}

/// What the guard prevents: with both settings on, the legacy revoke goes
/// through, the simulator revokes the key in use, and every later request
/// through the gateway fails.
#[tokio::test]
async fn the_legacy_revoke_takes_the_gateway_offline_when_allowed() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.auth.open_mode_credential_routes = true;
        c.auth.allow_revoking_gateway_key = true;
    })
    .await;
    let (status, body) = call(&gw, None, M::DELETE, "/api/v1/auth/api-key", None).await;
    assert!(status == 200 || status == 204, "{status} {body}");
    let last = last_seen(&sim).await;
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("DELETE", "/api/v1/auth/api-key")
    );
    let (status, _) = call(&gw, None, M::GET, "/api/v1/auth/me", None).await;
    assert_eq!(
        status, 401,
        "the upstream no longer takes the gateway's key"
    );
}

/// Mints a key at the simulator itself, for a gateway to hold: the account
/// then lists it with its prefix.
async fn minted(sim: &castari_sim::Simulator, name: &str) -> (String, String) {
    let body: Value = client()
        .post(format!("{}/api/v1/api-keys", sim.url()))
        .bearer_auth("cast_setup000_anykeyworks")
        .json(&json!({"name": name}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = body["key"].as_str().unwrap().to_string();
    let id = body["api_key"]["id"].as_str().unwrap().to_string();
    (key, id)
}

#[tokio::test]
async fn no_mode_revokes_the_gateway_key_by_id() {
    // Any non-empty key works at this simulator, so the gateway can hold
    // one the account lists.
    let sim = sim_with(|c| c.api_keys.clear()).await;
    let (gateway_key, gateway_id) = minted(&sim, "gateway").await;
    let (_, other_id) = minted(&sim, "spare").await;
    let b = Broker::start(&sim.url(), |c| {
        c.upstream_key = Some(castari_gateway::types::Secret::new(gateway_key.clone()));
    })
    .await;
    let (admin, _) = b.create(json!({"name": "ops", "role": "admin"})).await;

    // The admin may not revoke the gateway's key, by id or as the key in use.
    let own = format!("/api/v1/api-keys/{gateway_id}");
    let (status, body) = call(&b.gw, Some(&admin), M::DELETE, &own, None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "gateway_key_protected");
    assert!(!body["detail"].as_str().unwrap().contains(&gateway_key));
    // In another spelling of the method too, in case an upstream reads it.
    let lower = M::from_bytes(b"delete").unwrap();
    let (status, body) = call(&b.gw, Some(&admin), lower, &own, None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("gateway_key_protected"))
    );
    let (status, body) = call(&b.gw, Some(&admin), M::DELETE, "/api/v1/auth/api-key", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("gateway_key_protected"))
    );
    let deletes = |seen: &[castari_sim::RecordedRequest]| {
        seen.iter().filter(|r| r.method == "DELETE").count()
    };
    let upstream = seen(&sim).await;
    assert_eq!(deletes(&upstream), 0, "no revoke was sent");
    assert!(
        upstream
            .iter()
            .any(|r| r.method == "GET" && r.path == "/api/v1/api-keys"),
        "the gateway looked the id up"
    );

    // Another key of the account may go.
    let other = format!("/api/v1/api-keys/{other_id}");
    let (status, body) = call(&b.gw, Some(&admin), M::DELETE, &other, None).await;
    assert_eq!(status, 204, "{body}");
    assert_eq!(deletes(&seen(&sim).await), 1);
    // An id the account does not have is the upstream's to answer.
    let (status, _) = call(
        &b.gw,
        Some(&admin),
        M::DELETE,
        "/api/v1/api-keys/ak_none",
        None,
    )
    .await;
    assert_eq!(status, 404);

    // The gateway still works, and its key is still listed.
    let (status, list) = call(&b.gw, Some(&admin), M::GET, "/api/v1/api-keys", None).await;
    assert_eq!(status, 200);
    assert!(list.to_string().contains(&gateway_id));
}

#[tokio::test]
async fn the_setting_lets_the_gateway_key_be_revoked_by_id() {
    let sim = sim_with(|c| c.api_keys.clear()).await;
    let (gateway_key, gateway_id) = minted(&sim, "gateway").await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.upstream_key = Some(castari_gateway::types::Secret::new(gateway_key));
        c.auth.open_mode_credential_routes = true;
        c.auth.allow_revoking_gateway_key = true;
    })
    .await;
    let path = format!("/api/v1/api-keys/{gateway_id}");
    let (status, body) = call(&gw, None, M::DELETE, &path, None).await;
    assert_eq!(status, 204, "{body}");
    let last = last_seen(&sim).await;
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("DELETE", path.as_str())
    );
}
