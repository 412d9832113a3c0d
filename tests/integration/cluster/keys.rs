//! The key broker in cluster mode: local keys, USD budgets and the usage
//! ledger in one real `redis-server`, shared by real gateway processes
//! (and the `keys` CLI) in front of one simulator.

use std::time::Duration;

use castari_gateway::cluster::Cluster;
use castari_gateway::config::ClusterConfig;
use castari_gateway::keys::backend::KeyBackend;
use castari_gateway::keys::clock;
use castari_gateway::keys::model::{Budget, UsageDelta};
use castari_gateway::keys::redis::RedisKeys;
use castari_gateway::keys::store::Reserve;
use castari_gateway::types::Secret;
use castari_sim::Simulator;
use reqwest::Method;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::{replica_config, RedisServer};
use crate::binary::{command, GatewayProcess};
use crate::support::*;

const ADMIN: &str = "cluster-admin-key-0123456789abcdef";

/// A replica in keys mode on `redis` under prefix `it-{name}`.
fn replica(redis: &RedisServer, sim: &Simulator, name: &str) -> GatewayProcess {
    let auth = "[auth]\nmode = \"keys\"\nledger_flush_ms = 100\ninvoke_reserve_usd = \"0.0001\"\n";
    let file = replica_config(name, &redis.url(), "1000/60s", 100, auth);
    GatewayProcess::start_with_config_env(
        &sim.url(),
        &file,
        &[("CASTARI_GATEWAY_ADMIN_KEY", ADMIN)],
    )
}

/// A call with `key` as the bearer; (status, body).
async fn call(
    gw: &GatewayProcess,
    key: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = client().request(method, gw.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Creates a key through `gw`'s admin API; (token, id).
async fn create_key(gw: &GatewayProcess, spec: Value) -> (String, String) {
    let (status, body) = call(gw, ADMIN, Method::POST, "/admin/keys", Some(spec)).await;
    assert_eq!(status, 201, "{body} {:?}", gw.logs());
    let id = body["info"]["id"].as_str().unwrap().to_string();
    (body["key"].as_str().unwrap().to_string(), id)
}

async fn status_with(gw: &GatewayProcess, key: &str) -> (u16, Value) {
    call(gw, key, Method::GET, "/api/v1/agents", None).await
}

/// Runs `keys ARGS --redis URL --prefix it-{name}`; (exit code, stdout, stderr).
fn keys_cli(redis: &RedisServer, name: &str, args: &[&str]) -> (i32, String, String) {
    let output = command()
        .arg("keys")
        .args(args)
        .args(["--redis", &redis.url(), "--prefix", &format!("it-{name}")])
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_key_changed_through_any_replica_or_the_cli_holds_on_every_replica_at_once() {
    let redis = RedisServer::start();
    let sim = sim().await;
    let name = "revoke";
    let gws = [
        replica(&redis, &sim, name),
        replica(&redis, &sim, name),
        replica(&redis, &sim, name),
    ];
    // Made through A, known to B and C on their next request.
    let (token, id) = create_key(&gws[0], json!({"name": "ci", "role": "read"})).await;
    for gw in &gws {
        assert_eq!(status_with(gw, &token).await.0, 200);
    }
    // Revoked through A: the very next request on B and C is refused,
    // and never reaches the upstream.
    let before = seen(&sim).await.len();
    let path = format!("/admin/keys/{id}");
    let (status, body) = call(&gws[0], ADMIN, Method::DELETE, &path, None).await;
    assert_eq!(status, 200, "{body}");
    for gw in &gws[1..] {
        let (status, body) = status_with(gw, &token).await;
        assert_eq!((status, body["code"].as_str()), (401, Some("key_revoked")));
    }
    assert_eq!(seen(&sim).await.len(), before, "refused requests stay home");

    // Rotated through C: the new secret works on A at once, the old one
    // through its grace.
    let (old, id) = create_key(&gws[1], json!({"name": "bot", "role": "read"})).await;
    assert_eq!(status_with(&gws[0], &old).await.0, 200);
    let rotate = format!("/admin/keys/{id}/rotate");
    let (status, body) = call(
        &gws[2],
        ADMIN,
        Method::POST,
        &rotate,
        Some(json!({"grace_secs": 60})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let new = body["key"].as_str().unwrap();
    assert_eq!(status_with(&gws[0], new).await.0, 200);
    assert_eq!(status_with(&gws[0], &old).await.0, 200, "in its grace");

    // Revoked by the CLI on Redis: every replica refuses it at once.
    let (code, _, stderr) = keys_cli(&redis, name, &["revoke", &id]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("revoked"), "{stderr}");
    for gw in &gws {
        assert_eq!(status_with(gw, new).await.0, 401);
    }
    // The CLI lists what the replicas made, never a secret.
    let (code, out, _) = keys_cli(&redis, name, &["list", "--json"]);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2, "{listed}");
    assert!(!out.contains(new) && !out.contains(&token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_keys_own_rate_holds_across_replicas() {
    let redis = RedisServer::start();
    let sim = sim().await;
    let gws = [
        replica(&redis, &sim, "rate"),
        replica(&redis, &sim, "rate"),
        replica(&redis, &sim, "rate"),
    ];
    let spec = json!({"name": "ci", "role": "read", "rate": "6/min"});
    let (token, _) = create_key(&gws[0], spec).await;
    let mut statuses = Vec::new();
    for n in 0..12 {
        let response = client()
            .get(gws[n % 3].url("/api/v1/agents"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if status == 429 {
            let wait: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(
                (1..=10).contains(&wait),
                "one slot comes back in 10 s: {wait}"
            );
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "key_rate_limited");
        }
        statuses.push(status);
    }
    // 6 in the minute, whichever replica they reached: not 6 per replica.
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        6,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        6,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn verified_keys_keep_working_while_redis_is_lost_and_changes_wait_for_it() {
    let redis = RedisServer::start();
    let sim = sim().await;
    let gws = [replica(&redis, &sim, "lost"), replica(&redis, &sim, "lost")];
    let (token, id) = create_key(&gws[0], json!({"name": "ci", "role": "read"})).await;
    for gw in &gws {
        assert_eq!(status_with(gw, &token).await.0, 200);
    }
    redis.pause();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for gw in &gws {
        assert_eq!(status_with(gw, &token).await.0, 200, "already verified");
    }
    // A revocation cannot be made now: it says so, and nothing changes.
    let path = format!("/admin/keys/{id}");
    let (status, body) = call(&gws[1], ADMIN, Method::DELETE, &path, None).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "key_store_unavailable");
    redis.resume();
    // Back: the revocation goes through and holds everywhere.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = call(&gws[1], ADMIN, Method::DELETE, &path, None).await;
        if status == 200 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for gw in &gws {
        assert_eq!(status_with(gw, &token).await.0, 401);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_usd_budget_holds_under_concurrent_invocations_on_three_replicas() {
    let redis = RedisServer::start();
    let sim = sim_with(|s| s.invoke_latency_ms = 150).await;
    let gws = [
        replica(&redis, &sim, "budget"),
        replica(&redis, &sim, "budget"),
        replica(&redis, &sim, "budget"),
    ];
    let (ops, _) = create_key(&gws[0], json!({"name": "ops", "role": "admin"})).await;
    let agent = json!({"name": "demo-a", "slug": "demo-a", "source_type": "git",
                       "git_repo_url": "https://example.invalid/r"});
    let (status, body) = call(&gws[0], &ops, Method::POST, "/api/v1/agents", Some(agent)).await;
    assert_eq!(status, 201, "{body}");
    let deploy = "/api/v1/agents/demo-a/deploy";
    assert_eq!(call(&gws[0], &ops, Method::POST, deploy, None).await.0, 200);
    // Each "hi" costs 0.000171 USD in the simulator.
    let spec = json!({"name": "bot", "role": "invoke", "budget_usd": "0.001/day"});
    let (token, id) = create_key(&gws[1], spec).await;
    let invoke =
        |gw: &GatewayProcess| invoke_hi(gw.url("/api/v1/agents/demo-a/invoke"), token.clone());
    // Most of it, one at a time, around the replicas: 5 × 0.000171.
    for n in 0..5 {
        assert_eq!(invoke(&gws[n % 3]).await.0, 200);
    }
    let before = seen(&sim).await.len();
    let burst = futures_util::future::join_all((0..15).map(|n| invoke(&gws[n % 3]))).await;
    let ok = burst.iter().filter(|(s, _)| *s == 200).count();
    let refused: Vec<&Value> = (burst.iter().filter(|(s, _)| *s == 402))
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ok + refused.len(), 15, "{burst:?}");
    assert!(ok >= 1, "the budget had room for one more");
    assert_eq!(refused[0]["code"], "budget_exceeded");
    assert_eq!(
        seen(&sim).await.len() - before,
        ok,
        "refused ones never left"
    );

    // Every replica's ledger is the cluster's, exact to the last digit;
    // the budget is passed by less than one invocation's cost.
    let one: Decimal = "0.000171".parse().unwrap();
    for gw in &gws {
        let (status, usage) = call(gw, ADMIN, Method::GET, "/admin/usage", None).await;
        assert_eq!(status, 200, "{usage}");
        let total = (usage["totals"].as_array().unwrap().iter())
            .find(|t| t["key_id"] == id.as_str())
            .unwrap();
        let spent: Decimal = total["cost_usd"].as_str().unwrap().parse().unwrap();
        assert_eq!(spent, one * Decimal::from(5 + ok as u64), "{usage}");
        assert_eq!(total["invocations"], 5 + ok as u64);
        assert!(spent < "0.001".parse::<Decimal>().unwrap() + one);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_with_sigkill_loses_no_finished_invocation_from_the_ledger() {
    let redis = RedisServer::start();
    let sim = sim().await;
    let mut a = replica(&redis, &sim, "ledger");
    let b = replica(&redis, &sim, "ledger");
    // With a budget: each invocation is reserved, then settled.
    let spec = json!({"name": "ops", "role": "admin", "budget_usd": "5/day"});
    let (ops, id) = create_key(&a, spec).await;
    let agent = json!({"name": "demo-l", "slug": "demo-l", "source_type": "git",
                       "git_repo_url": "https://example.invalid/r"});
    assert_eq!(
        call(&a, &ops, Method::POST, "/api/v1/agents", Some(agent))
            .await
            .0,
        201
    );
    assert_eq!(
        call(&a, &ops, Method::POST, "/api/v1/agents/demo-l/deploy", None)
            .await
            .0,
        200
    );
    for _ in 0..7 {
        assert_eq!(status_with(&a, &ops).await.0, 200);
    }
    // Past one flush (auth.ledger_flush_ms = 100): the counts are written.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let turn = json!({"prompt": "hi"});
    for _ in 0..4 {
        let (status, body) = call(
            &a,
            &ops,
            Method::POST,
            "/api/v1/agents/demo-l/invoke",
            Some(turn.clone()),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    a.child.kill().unwrap(); // SIGKILL, right after the last answer
    let (status, usage) = call(&b, ADMIN, Method::GET, "/admin/usage?format=json", None).await;
    assert_eq!(status, 200, "{usage}");
    let rows = usage["rows"].as_array().unwrap();
    let invoked = (rows.iter())
        .find(|r| r["key_id"] == id.as_str() && r["agent"] == "demo-l" && r["class"] == "invoke")
        .unwrap();
    assert_eq!(invoked["invocations"], 4, "{usage}");
    assert_eq!(invoked["cost_usd"], "0.000684", "4 × 0.000171, exact");
    // The create, the deploy and the 7 reads were flushed before the kill.
    let before_kill: u64 = (rows.iter())
        .filter(|r| r["key_id"] == id.as_str() && r["class"] != "invoke")
        .map(|r| r["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(before_kill, 9, "{usage}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_adds_and_compares_money_exactly() {
    let redis = RedisServer::start();
    let config = ClusterConfig {
        redis_url: Some(Secret::new(redis.url())),
        prefix: "it-money".into(),
        ..ClusterConfig::default()
    };
    let cluster = Cluster::connect(&config).await.unwrap().unwrap();
    let keys = RedisKeys::new(cluster);
    let costs = [
        "0.123456789012345678",
        "12.5",
        "0.000000000000000001",
        "999.999999999999999999",
        "0",
        "7",
        "0.000171",
    ];
    let mut sum = Decimal::ZERO;
    for (n, cost) in costs.iter().enumerate() {
        let cost: Decimal = cost.parse().unwrap();
        sum += cost;
        let delta = UsageDelta {
            key_id: "k1".into(),
            day: "2026-12-05".into(),
            agent: format!("a{}", n % 2),
            class: "invoke".into(),
            invocations: 1,
            cost_usd: cost,
            ..UsageDelta::default()
        };
        let write = 1_000 + n as u64;
        keys.add_usage(write, std::slice::from_ref(&delta))
            .await
            .unwrap();
        // The same write again (a retry after a lost answer): not counted.
        keys.add_usage(write, std::slice::from_ref(&delta))
            .await
            .unwrap();
    }
    let rows = keys.usage(Some("k1"), "2026-12-01").await.unwrap();
    let total: Decimal = rows.iter().map(|r| r.cost_usd).sum();
    assert_eq!(total, sum);
    assert_eq!(rows.iter().map(|r| r.invocations).sum::<u64>(), 7);

    // A budget spent to one unit of the last digit short of its limit
    // still grants; reaching the limit exactly refuses.
    let now = clock::now_unix();
    let budget: Budget = "1/day".parse().unwrap();
    let spend = |key: &str, cost: &str| UsageDelta {
        key_id: key.into(),
        day: clock::day(now),
        agent: "x".into(),
        class: "invoke".into(),
        cost_usd: cost.parse().unwrap(),
        ..UsageDelta::default()
    };
    keys.add_usage(1, &[spend("k2", "0.999999999999999999")])
        .await
        .unwrap();
    let tiny: Decimal = "0.000000000000000001".parse().unwrap();
    let granted = keys
        .reserve("k2", &budget, tiny, now, now + 60)
        .await
        .unwrap();
    let Reserve::Granted(held) = granted else {
        panic!("one unit short of the limit must grant: {granted:?}");
    };
    keys.settle(2, held, &spend("k2", "0.000000000000000001"))
        .await
        .unwrap();
    let refused = keys
        .reserve("k2", &budget, tiny, now, now + 60)
        .await
        .unwrap();
    assert_eq!(
        refused,
        Reserve::Refused {
            spent: Decimal::ONE,
            reserved: Decimal::ZERO,
            limit: Decimal::ONE
        }
    );

    // A write the script cannot finish (a corrupt stored amount) writes
    // nothing and leaves no marker: once mended, its retry applies it once.
    let mut raw = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let spent_key = format!("it-money:spent:k3:{}", clock::day(now));
    let set = |value: &str| redis::cmd("SET").arg(&spent_key).arg(value).clone();
    set("garbage").query_async::<()>(&mut raw).await.unwrap();
    let mut delta = spend("k3", "1");
    delta.requests = 5;
    assert!(keys
        .add_usage(77, std::slice::from_ref(&delta))
        .await
        .is_err());
    // Redis counts as lost after a failed script until a probe answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        match keys.usage(Some("k3"), "2000-01-01").await {
            Ok(rows) => break rows,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("Redis never came back: {error}"),
        }
    };
    assert!(rows.is_empty(), "nothing half-written: {rows:?}");
    set("0").query_async::<()>(&mut raw).await.unwrap();
    for _ in 0..2 {
        keys.add_usage(77, std::slice::from_ref(&delta))
            .await
            .unwrap();
    }
    let rows = keys.usage(Some("k3"), "2000-01-01").await.unwrap();
    assert_eq!((rows.len(), rows[0].requests), (1, 5), "{rows:?}");
    assert_eq!(rows[0].cost_usd, Decimal::ONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_move_from_sqlite_to_redis_with_export_and_import() {
    let redis = RedisServer::start();
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keys.db");
    let sqlite = |args: &[&str]| {
        command()
            .arg("keys")
            .args(args)
            .arg("--db")
            .arg(&db)
            .output()
            .unwrap()
    };
    let created = sqlite(&["create", "--name", "ci", "--role", "read"]);
    assert!(created.status.success());
    let token = String::from_utf8(created.stdout)
        .unwrap()
        .trim()
        .to_string();
    let exported = sqlite(&["export"]);
    assert!(exported.status.success());
    let lines = String::from_utf8(exported.stdout).unwrap();
    assert_eq!(lines.lines().count(), 1);
    assert!(!lines.contains(&token), "never a token: {lines}");
    let file = dir.path().join("keys.jsonl");
    std::fs::write(&file, &lines).unwrap();
    let file = file.to_str().unwrap();

    let (code, _, stderr) = keys_cli(&redis, "import", &["import", file]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("imported 1 keys"), "{stderr}");
    let gw = replica(&redis, &sim, "import");
    assert_eq!(
        status_with(&gw, &token).await.0,
        200,
        "the same token works"
    );
    // Again: nothing is duplicated or overwritten.
    let (code, _, stderr) = keys_cli(&redis, "import", &["import", file]);
    assert_eq!(code, 0);
    assert!(stderr.contains("imported 0 keys; 1 were there"), "{stderr}");
    // A broken line is named, and exit 78.
    std::fs::write(dir.path().join("bad.jsonl"), "{\"id\": \"zz\"}\n").unwrap();
    let bad = dir.path().join("bad.jsonl");
    let (code, _, stderr) = keys_cli(&redis, "import", &["import", bad.to_str().unwrap()]);
    assert_eq!(code, 78, "{stderr}");
    assert!(stderr.contains("line 1: name: missing"), "{stderr}");
}
