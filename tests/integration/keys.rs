//! Key brokering (issue #4): local keys, roles and agent scopes, budgets,
//! per-key rates, several upstream credentials and the usage ledger, over
//! real sockets with the simulator as the upstream.

use std::path::PathBuf;
use std::time::Duration;

use castari_gateway::config::{AuthMode, Config};
use castari_gateway::keys::store::Store;
use castari_gateway::types::Secret;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::support::*;

/// The admin key of these tests.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";
/// A second upstream key, for the `team-b` credential.
pub const TEAM_B_KEY: &str = "cast_teamb02_secondupstreamkey";

/// A gateway in keys mode with its store in a fresh directory.
pub struct Broker {
    pub gw: TestGateway,
    pub db: PathBuf,
    _dir: tempfile::TempDir,
}

impl Broker {
    pub async fn start(upstream: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("keys.db");
        let path = db.clone();
        let gw = TestGateway::start_with(upstream, move |c| {
            c.auth.mode = Some(AuthMode::Keys);
            c.auth.db_path = Some(path);
            c.auth.ledger_flush_ms = 50;
            c.admin_key = Some(Secret::new(ADMIN_KEY.to_string()));
            tweak(c);
        })
        .await;
        Self { gw, db, _dir: dir }
    }

    /// Creates a key through the admin API; returns (token, info).
    pub async fn create(&self, spec: Value) -> (String, Value) {
        let response = client()
            .post(self.gw.url("/admin/keys"))
            .bearer_auth(ADMIN_KEY)
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        assert_eq!(response.headers()["cache-control"], "no-store");
        let body: Value = response.json().await.unwrap();
        (
            body["key"].as_str().unwrap().to_string(),
            body["info"].clone(),
        )
    }

    /// Rotates key `id` with a grace period; returns the answer.
    pub async fn rotate(&self, id: &str, grace_secs: u64) -> Value {
        client()
            .post(self.gw.url(&format!("/admin/keys/{id}/rotate")))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({ "grace_secs": grace_secs }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Key `id`'s line in `/admin/usage`'s totals (`Null` when it has none).
    pub async fn usage_total(&self, id: &str) -> Value {
        let usage: Value = self
            .admin(reqwest::Method::GET, "/admin/usage")
            .await
            .json()
            .await
            .unwrap();
        usage["totals"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key_id"] == id)
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        client()
            .request(method, self.gw.url(path))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
    }
}

/// `method path` with `key`; returns (status, JSON body or Null).
pub async fn call(
    gw: &TestGateway,
    key: Option<&str>,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client().request(method, gw.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// `GET path` with `key`.
pub async fn get(gw: &TestGateway, key: &str, path: &str) -> (u16, Value) {
    call(gw, Some(key), reqwest::Method::GET, path, None).await
}

pub async fn make_agent(gw: &TestGateway, key: &str, slug: &str) {
    let (status, body) = call(
        gw,
        Some(key),
        reqwest::Method::POST,
        "/api/v1/agents",
        Some(json!({"name": slug, "slug": slug, "source_type": "git", "git_repo_url": "https://example.invalid/r"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        gw,
        Some(key),
        reqwest::Method::POST,
        &format!("/api/v1/agents/{slug}/deploy"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn keys_mode_refuses_missing_unknown_and_revoked_keys_without_the_upstream() {
    let sim = sim().await;
    let b = Broker::start(&sim.url(), |_| {}).await;
    let (token, info) = b.create(json!({"name": "ci-bot", "role": "read"})).await;
    assert!(token.starts_with("cgw_"));
    assert!(info.get("hash").is_none() && !info.to_string().contains(&token));

    let (status, _) = get(&b.gw, &token, "/api/v1/agents").await;
    assert_eq!(status, 200);
    let upstream = last_seen(&sim).await;
    assert_eq!(
        header(&upstream, "authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    let before = seen(&sim).await.len();

    let (status, body) = call(&b.gw, None, reqwest::Method::GET, "/api/v1/agents", None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("missing_api_key"))
    );
    let forged = format!("{}x", &token[..token.len() - 1]);
    let (status, body) = get(&b.gw, &forged, "/api/v1/usage").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("invalid_api_key"))
    );
    let (status, _) = get(&b.gw, UPSTREAM_KEY, "/api/v1/usage").await;
    assert_eq!(status, 401, "the upstream key itself is not a local key");

    // Revoked from another process's connection (what `keys revoke` does):
    // the running gateway refuses it on the very next request.
    let id = info["id"].as_str().unwrap();
    Store::open(&b.db).unwrap().revoke(id, 1).unwrap();
    let (status, body) = get(&b.gw, &token, "/api/v1/agents").await;
    assert_eq!((status, body["code"].as_str()), (401, Some("key_revoked")));
    assert_eq!(
        seen(&sim).await.len(),
        before,
        "refusals never reach the upstream"
    );

    // The admin API needs the admin key.
    let (status, body) = get(&b.gw, &token, "/admin/keys").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("admin_key_required"))
    );
    let listed: Value = b
        .admin(reqwest::Method::GET, "/admin/keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["keys"][0]["id"], id);
    assert!(listed["keys"][0]["revoked_at"].is_number());
}

#[tokio::test]
async fn roles_and_agent_globs_are_enforced_before_the_cache() {
    let sim = sim().await;
    let b = Broker::start(&sim.url(), |_| {}).await;
    let (admin, _) = b.create(json!({"name": "ops", "role": "admin"})).await;
    for slug in ["demo-a", "demo-b", "prod-x"] {
        make_agent(&b.gw, &admin, slug).await;
    }
    let (reader, _) = b.create(json!({"name": "dash", "role": "read"})).await;
    let (bot, _) = b
        .create(json!({"name": "bot", "role": "invoke", "agents": ["demo-*"]}))
        .await;
    let (deployer, _) = b.create(json!({"name": "ci", "role": "deploy"})).await;
    use reqwest::Method as M;

    // The admin reads prod-x: now it is cached.
    assert_eq!(
        call(&b.gw, Some(&admin), M::GET, "/api/v1/agents/prod-x", None)
            .await
            .0,
        200
    );
    let before = seen(&sim).await.len();
    let denied = [
        (
            &reader,
            M::POST,
            "/api/v1/agents/demo-a/invoke",
            "role_forbids_route",
        ),
        (
            &reader,
            M::DELETE,
            "/api/v1/agents/demo-a",
            "role_forbids_route",
        ),
        (&bot, M::GET, "/api/v1/agents/prod-x", "agent_not_allowed"),
        (
            &bot,
            M::POST,
            "/api/v1/agents/prod-x/invoke",
            "agent_not_allowed",
        ),
        (
            &bot,
            M::POST,
            "/api/v1/agents/demo-a/deploy",
            "role_forbids_route",
        ),
        (
            &deployer,
            M::POST,
            "/api/v1/agents/demo-a/invoke",
            "role_forbids_route",
        ),
        (
            &deployer,
            M::GET,
            "/api/v1/api-keys",
            "route_requires_admin",
        ),
        (&bot, M::POST, "/api/v1/api-keys", "route_requires_admin"),
        (
            &reader,
            M::DELETE,
            "/api/v1/auth/api-key",
            "route_requires_admin",
        ),
        (
            &bot,
            M::POST,
            "/api/v1/sandbox/sbx_1/access",
            "route_requires_admin",
        ),
    ];
    for (key, method, path, code) in denied {
        let (status, body) = call(
            &b.gw,
            Some(key),
            method.clone(),
            path,
            Some(json!({"prompt": "x"})),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (403, Some(code)),
            "{method} {path}"
        );
        assert!(body["detail"].as_str().unwrap().len() > 10);
    }
    assert_eq!(
        seen(&sim).await.len(),
        before,
        "no denial reached the upstream"
    );

    // What each role may do goes through.
    let (status, body) = call(
        &b.gw,
        Some(&bot),
        M::POST,
        "/api/v1/agents/demo-a/invoke",
        Some(json!({"prompt": "hi"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        call(&b.gw, Some(&reader), M::GET, "/api/v1/auth/me", None)
            .await
            .0,
        200
    );
    assert_eq!(
        call(
            &b.gw,
            Some(&deployer),
            M::PATCH,
            "/api/v1/agents/demo-b",
            Some(json!({"description": "d"}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&b.gw, Some(&admin), M::GET, "/api/v1/api-keys", None)
            .await
            .0,
        200
    );

    // A scoped key's agent list shows only its agents; unscoped keys see all.
    let (status, list) = call(&b.gw, Some(&bot), M::GET, "/api/v1/agents", None).await;
    assert_eq!(status, 200);
    let slugs: Vec<&str> = list["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["slug"].as_str().unwrap())
        .collect();
    assert_eq!(slugs, ["demo-a", "demo-b"]);
    let (_, all) = call(&b.gw, Some(&reader), M::GET, "/api/v1/agents", None).await;
    assert_eq!(all["agents"].as_array().unwrap().len(), 3);

    // A scoped create must name an allowed slug.
    let (status, body) = call(
        &b.gw,
        Some(&bot),
        M::POST,
        "/api/v1/agents",
        Some(json!({"name": "x", "slug": "prod-y", "source_type": "git"})),
    )
    .await;
    assert_eq!(status, 403, "{body}");
}

#[tokio::test]
async fn budgets_hold_under_concurrent_invocations() {
    let sim = sim_with(|s| s.invoke_latency_ms = 150).await;
    let b = Broker::start(&sim.url(), |c| {
        c.auth.invoke_reserve_usd = "0.0001".into();
    })
    .await;
    let (admin, _) = b.create(json!({"name": "ops", "role": "admin"})).await;
    make_agent(&b.gw, &admin, "demo-a").await;
    // Each "hi" invocation costs 0.000171 USD in the simulator.
    let (token, info) = b
        .create(json!({"name": "bot", "role": "invoke", "budget_usd": "0.001/day"}))
        .await;
    let invoke = |token: String| invoke_hi(b.gw.url("/api/v1/agents/demo-a/invoke"), token);
    // Spend most of it one by one: 5 × 0.000171 = 0.000855.
    for _ in 0..5 {
        assert_eq!(invoke(token.clone()).await.0, 200);
    }
    let before = seen(&sim).await.len();
    let burst = futures_util::future::join_all((0..12).map(|_| invoke(token.clone()))).await;
    let ok = burst.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<&Value> = burst
        .iter()
        .filter(|(s, _)| *s == 402)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ok + refused.len(), 12, "{burst:?}");
    assert!(ok >= 1, "the budget had room for one more");
    assert_eq!(refused[0]["code"], "budget_exceeded");
    assert!(refused[0]["detail"]
        .as_str()
        .unwrap()
        .contains("0.001 USD per day"));
    assert_eq!(
        seen(&sim).await.len() - before,
        ok,
        "refused invocations never left"
    );

    // The ledger's cost equals the upstream's, to the last digit, and the
    // budget is exceeded by less than one invocation's cost.
    let total = b.usage_total(info["id"].as_str().unwrap()).await;
    let spent: Decimal = total["cost_usd"].as_str().unwrap().parse().unwrap();
    let one: Decimal = "0.000171".parse().unwrap();
    assert_eq!(spent, one * Decimal::from(5 + ok as u64));
    assert!(
        spent < "0.001".parse::<Decimal>().unwrap() + one,
        "spent {spent}"
    );
    assert_eq!(total["invocations"], 5 + ok as u64);
}

#[tokio::test]
async fn a_keys_own_rate_answers_429_with_retry_after() {
    let sim = sim().await;
    let b = Broker::start(&sim.url(), |c| c.cache.enabled = false).await;
    let (slow, _) = b
        .create(json!({"name": "slow", "role": "read", "rate": "3/min"}))
        .await;
    let (other, _) = b.create(json!({"name": "other", "role": "read"})).await;
    let before = seen(&sim).await.len();
    for _ in 0..3 {
        assert_eq!(get(&b.gw, &slow, "/api/v1/usage").await.0, 200);
    }
    let response = client()
        .get(b.gw.url("/api/v1/usage"))
        .bearer_auth(&slow)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry), "retry-after {retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "key_rate_limited");
    assert_eq!(get(&b.gw, &other, "/api/v1/usage").await.0, 200);
    assert_eq!(seen(&sim).await.len() - before, 4, "3 + the other key's 1");
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_only_for_the_grace_period() {
    let sim = sim().await;
    let b = Broker::start(&sim.url(), |_| {}).await;
    let (old, info) = b.create(json!({"name": "r", "role": "read"})).await;
    let id = info["id"].as_str().unwrap();
    let rotated = b.rotate(id, 3600).await;
    let new = rotated["key"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    for key in [&old, &new] {
        assert_eq!(get(&b.gw, key, "/api/v1/usage").await.0, 200);
    }
    let rotated = b.rotate(id, 0).await;
    let newest = rotated["key"].as_str().unwrap();
    assert_eq!(get(&b.gw, &new, "/api/v1/usage").await.0, 401);
    assert_eq!(get(&b.gw, newest, "/api/v1/usage").await.0, 200);
    let gone = b
        .admin(reqwest::Method::DELETE, "/admin/keys/nosuchkey")
        .await;
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn each_upstream_credential_has_its_own_key_cache_and_budget() {
    let sim = sim_with(|s| s.api_keys.push(TEAM_B_KEY.to_string())).await;
    let b = Broker::start(&sim.url(), |c| {
        c.upstream.credentials.insert(
            "team-b".into(),
            castari_gateway::config::CredentialSource {
                key_env: Some("UNUSED".into()),
                key_file: None,
            },
        );
        c.named_keys
            .insert("team-b".into(), Secret::new(TEAM_B_KEY.to_string()));
        c.shaper.crud_limit = "2/60s".parse().unwrap();
        c.shaper.crud_max_wait_ms = 100;
    })
    .await;
    let (a, _) = b.create(json!({"name": "a", "role": "read"})).await;
    let (bk, info) = b
        .create(json!({"name": "b", "role": "read", "upstream": "team-b"}))
        .await;
    assert_eq!(info["upstream"], "team-b");
    let bad = client()
        .post(b.gw.url("/admin/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "c", "role": "read", "upstream": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);

    let get = |key: String| {
        let url = b.gw.url("/api/v1/usage");
        async move { client().get(url).bearer_auth(key).send().await.unwrap() }
    };
    let first = get(a.clone()).await;
    assert_eq!(first.headers()["x-cache"], "MISS");
    assert_eq!(
        header(&last_seen(&sim).await, "authorization"),
        Some(format!("Bearer {UPSTREAM_KEY}").as_str())
    );
    // Team B's first read is its own miss, sent with its own key.
    let second = get(bk.clone()).await;
    assert_eq!(second.headers()["x-cache"], "MISS");
    assert_eq!(
        header(&last_seen(&sim).await, "authorization"),
        Some(format!("Bearer {TEAM_B_KEY}").as_str())
    );
    assert_eq!(get(a.clone()).await.headers()["x-cache"], "HIT");
    // Each credential has its own budget of 2/min: A spending its second
    // leaves B's second free.
    let url = b.gw.url("/api/v1/agents");
    let a2 = client().get(&url).bearer_auth(&a).send().await.unwrap();
    assert_eq!(a2.status(), 200);
    let a3 = client()
        .get(format!("{url}?limit=3"))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(a3.status(), 429, "default's budget is spent");
    let b2 = client().get(&url).bearer_auth(&bk).send().await.unwrap();
    assert_eq!(b2.status(), 200, "team-b's budget is its own");
    let metrics = get_text(&b.gw.url("/metrics")).await;
    assert!(metrics.contains("upstream=\"team-b\""));
    assert!(!metrics.contains(TEAM_B_KEY) && !metrics.contains(UPSTREAM_KEY));
}

#[tokio::test]
async fn config_declared_keys_work_and_cannot_be_changed_through_the_api() {
    let sim = sim().await;
    let token = "cgw_gitops1_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let hash = castari_gateway::keys::token::hex(&castari_gateway::keys::token::hash(token));
    let b = Broker::start(&sim.url(), move |c| {
        c.auth.keys.push(castari_gateway::config::DeclaredKey {
            id: "gitops1".into(),
            name: "declared".into(),
            sha256: hash,
            role: castari_gateway::keys::model::Role::Read,
            agents: vec![],
            rate: None,
            budget_usd: None,
            upstream: None,
            expires_at: None,
        });
    })
    .await;
    assert_eq!(get(&b.gw, token, "/api/v1/usage").await.0, 200);
    let listed: Value = b
        .admin(reqwest::Method::GET, "/admin/keys")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["keys"][0]["origin"], "config");
    let refused = b
        .admin(reqwest::Method::DELETE, "/admin/keys/gitops1")
        .await;
    assert_eq!(refused.status(), 409);
}

#[tokio::test]
async fn the_ledger_counts_requests_and_invocations_per_key_and_agent() {
    let sim = sim().await;
    let b = Broker::start(&sim.url(), |_| {}).await;
    let (admin, _) = b.create(json!({"name": "ops", "role": "admin"})).await;
    make_agent(&b.gw, &admin, "demo-a").await;
    let (bot, info) = b
        .create(json!({"name": "bot,\"quoted\"", "role": "invoke"}))
        .await;
    for _ in 0..3 {
        let (status, _) = call(
            &b.gw,
            Some(&bot),
            reqwest::Method::POST,
            "/api/v1/agents/demo-a/invoke",
            Some(json!({"prompt": "hello there"})),
        )
        .await;
        assert_eq!(status, 200);
    }
    for _ in 0..4 {
        get(&b.gw, &bot, "/api/v1/agents/demo-a").await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = info["id"].as_str().unwrap();
    let usage: Value = b
        .admin(reqwest::Method::GET, &format!("/admin/usage?key={id}"))
        .await
        .json()
        .await
        .unwrap();
    let rows = usage["rows"].as_array().unwrap();
    let invoke = rows.iter().find(|r| r["class"] == "invoke").unwrap();
    assert_eq!(invoke["agent"], "demo-a");
    assert_eq!(invoke["invocations"], 3);
    assert_eq!(invoke["requests"], 3);
    // "hello there": 14 input, 11 output tokens: 14×3 + 11×15 = 207 µUSD.
    assert_eq!(invoke["input_tokens"], 42);
    assert_eq!(invoke["cost_usd"], "0.000621");
    let crud = rows.iter().find(|r| r["class"] == "crud").unwrap();
    assert_eq!(crud["requests"], 4);
    assert_eq!(usage["totals"][0]["key_name"], "bot,\"quoted\"");

    // A bad query gets a Castari-shaped 400, and only after the admin check.
    let bad = b
        .admin(reqwest::Method::GET, "/admin/usage?days=many")
        .await;
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["code"], "bad_request");
    let (status, body) = call(
        &b.gw,
        None,
        reqwest::Method::GET,
        "/admin/usage?days=many",
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (401, Some("admin_key_required"))
    );

    let csv = b
        .admin(reqwest::Method::GET, "/admin/usage?format=csv")
        .await;
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    assert!(csv.starts_with("day,key_id,key_name,agent,class,"));
    assert!(
        csv.contains(&format!(
            "{id},\"bot,\"\"quoted\"\"\",demo-a,invoke,3,3,42,33,0.000621"
        )),
        "{csv}"
    );
}
