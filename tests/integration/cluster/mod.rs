//! Cluster mode: several real gateway processes, one real `redis-server`,
//! one simulator. Each test asserts on what the clients got and on what
//! the simulator (the upstream) saw.

mod budget;
mod keys;
mod page;
mod redis;

use std::time::{Duration, Instant};

use castari_sim::{SimConfig, Simulator};
use serde_json::Value;

use crate::binary::{command, GatewayProcess};
use crate::support::*;
pub use redis::RedisServer;

/// A config file for a replica: `limit` for both budgets, the cache off
/// unless `cache`, Redis at `redis`.
fn replica_config(
    name: &str,
    redis: &str,
    limit: &str,
    margin_ms: u64,
    extra: &str,
) -> std::path::PathBuf {
    let text = format!(
        "[shaper]\ncrud_limit = \"{limit}\"\ninvoke_limit = \"{limit}\"\nsafety_margin_ms = {margin_ms}\n\
         crud_max_wait_ms = 30000\n\n[cluster]\nredis_url = \"{redis}\"\nexpected_replicas = 3\n\
         prefix = \"it-{name}\"\n{extra}"
    );
    let dir = std::env::temp_dir().join(format!("castari-gw-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Asserts that `replica` never lost Redis: a script error also counts as
/// a loss, and the fallback to the local share would hide it otherwise.
async fn never_lost_redis(replica: &GatewayProcess) {
    let metrics = get_text(&replica.url("/metrics")).await;
    let lost = metrics
        .lines()
        .find_map(|line| line.strip_prefix("castari_gateway_cluster_redis_lost_total "));
    assert_eq!(lost, Some("0"), "{metrics}");
}

async fn limited_sim(limit: &str) -> Simulator {
    sim_with(|c: &mut SimConfig| {
        c.crud_limit = limit.parse().unwrap();
        c.invoke_limit = limit.parse().unwrap();
        c.window = "sliding".parse().unwrap();
    })
    .await
}

async fn stats(sim: &Simulator) -> Value {
    get_json(&format!("{}/_sim/stats", sim.url())).await
}

/// The times (ms) the simulator received requests made with the gateway's key.
async fn arrivals(sim: &Simulator) -> Vec<u64> {
    let bearer = format!("Bearer {UPSTREAM_KEY}");
    seen(sim)
        .await
        .iter()
        .filter(|r| header(r, "authorization") == Some(bearer.as_str()))
        .map(|r| r.received_at_ms)
        .collect()
}

/// Runs `serve --config file`, which must stop with exit 78 and one line
/// naming `cluster.redis_url` on stderr; returns that line.
fn serve_refused(file: &std::path::Path) -> String {
    let output = command()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(file)
        .env("CASTARI_API_KEY", UPSTREAM_KEY)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cluster.redis_url"), "{stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_share_one_budget_exactly_and_fairly() {
    let redis = RedisServer::start();
    let sim = limited_sim("20/3s").await;
    let replicas: Vec<GatewayProcess> = (0..3)
        .map(|_| {
            let file = replica_config(
                "share",
                &redis.url(),
                "20/3s",
                100,
                "[cache]\nenabled = false\n",
            );
            GatewayProcess::start_with_config(&sim.url(), &file)
        })
        .collect();
    let url = |i: usize| format!("http://{}", replicas[i].addr);
    // Seven clients spread unevenly: one on the first replica, two on the
    // second, four on the third; three requests in flight each.
    let clients = [
        ("a", url(0), 3),
        ("b", url(1), 3),
        ("c", url(1), 3),
        ("d", url(2), 3),
        ("e", url(2), 3),
        ("f", url(2), 3),
        ("g", url(2), 3),
    ];
    let results = overload_many(&clients, "/api/v1/agents", Duration::from_millis(7_500)).await;

    let statuses: Vec<u16> = results.values().flatten().copied().collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = stats(&sim).await;
    let crud = &stats["classes"]["crud"];
    assert_eq!(crud["limited"], 0, "upstream 429s: {stats}");
    assert!(crud["max_in_window"].as_u64().unwrap() <= 20, "{stats}");
    // Used: from the first arrival, two windows (6 s) allow 40 sends with
    // a 100 ms margin; the cluster sent at least 90% of them.
    let arrivals = arrivals(&sim).await;
    let first = arrivals[0];
    let used = arrivals.iter().filter(|t| **t < first + 6_000).count();
    assert!(used >= 36, "{used} of 40 used");
    // Fair across clients, whichever replica they talk to.
    let shares: Vec<f64> = clients
        .iter()
        .map(|(name, _, _)| results.get(name).map_or(0, Vec::len) as f64)
        .collect();
    // 0.8: alone this measures 0.85 to 1.0; the first window goes by
    // arrival (a replica's clients that arrive first take what is free
    // before the others are known), later ones by share. Beside two busy
    // loops on two cores, 50 runs measured 0.881 at the least (median
    // 0.985); with each replica taking slots free now without its share
    // (the cap in `cluster/budget.rs` off), 4 of 30 failed (0.618 at the
    // least: the starved replica's clients got what its dispatcher was
    // quick enough to take). `scripts/test` still runs this test alone.
    // Starving one replica's clients (0.43 when they get nothing, 0.75 at
    // 3:1) fails.
    let index = jain(&shares);
    assert!(
        index >= 0.8,
        "Jain's index {index:.3} for shares {shares:?}"
    );
    for replica in &replicas {
        never_lost_redis(replica).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_that_leaves_gives_its_slot_to_another_replica() {
    let redis = RedisServer::start();
    let sim = limited_sim("1/2s").await;
    let file = |n: &str| replica_config(n, &redis.url(), "1/2s", 100, "[cache]\nenabled = false\n");
    let a = GatewayProcess::start_with_config(&sim.url(), &file("leave"));
    let b = GatewayProcess::start_with_config(&sim.url(), &file("leave"));
    let c = client();
    // The one send of this window, through A.
    let first = c
        .get(a.url("/api/v1/agents"))
        .bearer_auth("x")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    // X waits on A for the next slot (about 2.1 s away), then gives up.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(400),
        c.get(a.url("/api/v1/usage")).bearer_auth("x").send(),
    )
    .await;
    assert!(gave_up.is_err(), "X was answered: it should have waited");
    // A notices the hang-up and gives the slot back (one Redis round
    // trip after it sees the connection close).
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Y asks B: it gets X's slot, not the one after it (4.2 s away).
    let asked = Instant::now();
    let y = c
        .get(b.url("/api/v1/agents"))
        .bearer_auth("y")
        .send()
        .await
        .unwrap();
    assert_eq!(y.status(), 200);
    let waited = asked.elapsed();
    assert!(waited < Duration::from_millis(2_600), "Y waited {waited:?}");
    // X's request never reached the upstream.
    let usage = seen(&sim)
        .await
        .iter()
        .filter(|r| r.path.contains("usage"))
        .count();
    assert_eq!(usage, 0);
    assert_eq!(stats(&sim).await["classes"]["crud"]["limited"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deploy_through_one_replica_is_seen_through_every_other() {
    let redis = RedisServer::start();
    let sim = sim().await;
    let file = |n: &str| replica_config(n, &redis.url(), "10000/60s", 100, "");
    let a = GatewayProcess::start_with_config(&sim.url(), &file("deploy"));
    let b = GatewayProcess::start_with_config(&sim.url(), &file("deploy"));
    let c = client();
    let slug = create_agent_at(&a.url(""), "cluster-deploy").await;
    let path = format!("/api/v1/agents/{slug}");
    // B caches the agent as it is before the deploy.
    for _ in 0..2 {
        let before: Value = c
            .get(b.url(&path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_ne!(before["status"], "active", "{before}");
    }
    let hits_before = upstream_gets(&sim, &path).await;
    // Deployed through A (the simulator deploys synchronously).
    let deployed = c
        .post(a.url(&format!("{path}/deploy")))
        .send()
        .await
        .unwrap();
    assert!(deployed.status().is_success(), "{}", deployed.status());
    // At once through B: the new status, fetched afresh.
    let after = c.get(b.url(&path)).send().await.unwrap();
    let cache = after
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_string());
    let after: Value = after.json().await.unwrap();
    assert_eq!(after["status"], "active", "B answered {after} ({cache:?})");
    assert!(upstream_gets(&sim, &path).await > hits_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_lost_and_back_mid_run_keeps_every_promise() {
    let mut redis = RedisServer::start();
    let sim = limited_sim("12/2s").await;
    let file =
        |n: &str| replica_config(n, &redis.url(), "12/2s", 100, "[cache]\nenabled = false\n");
    let a = GatewayProcess::start_with_config(&sim.url(), &file("fault"));
    let b = GatewayProcess::start_with_config(&sim.url(), &file("fault"));
    let ready = |g: &GatewayProcess| g.url("/readyz");
    assert_eq!(get_json(&ready(&a)).await["redis"], "up");
    let clients = [
        ("a", format!("http://{}", a.addr), 3),
        ("b", format!("http://{}", b.addr), 3),
    ];
    let load = tokio::spawn({
        let clients = clients.clone();
        async move { overload_many(&clients, "/api/v1/agents", Duration::from_millis(9_000)).await }
    });
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let during = get_json(&ready(&a)).await;
    assert_eq!(during["status"], "degraded", "{during}");
    let metrics = get_text(&a.url("/metrics")).await;
    assert!(
        metrics.contains("castari_gateway_cluster_redis_up 0"),
        "{metrics}"
    );
    let queue = get_json(&a.url("/admin/queue")).await;
    assert_eq!(queue["cluster"]["shared"], false, "{queue}");
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    redis.restart();
    let results = load.await.unwrap();
    let statuses: Vec<u16> = results.values().flatten().copied().collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = stats(&sim).await;
    assert_eq!(stats["classes"]["crud"]["limited"], 0, "{stats}");
    assert!(
        stats["classes"]["crud"]["max_in_window"].as_u64().unwrap() <= 12,
        "{stats}"
    );
    let mut back = false;
    for _ in 0..50 {
        if get_json(&ready(&b)).await["redis"] == "up" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "B never saw Redis again");
    let queue = get_json(&b.url("/admin/queue")).await;
    assert_eq!(queue["cluster"]["shared"], true, "{queue}");
    assert_eq!(queue["cluster"]["replica"].as_str().unwrap().len(), 16);
    let logs = a.logs().join("\n");
    assert_eq!(logs.matches("Redis lost").count(), 1, "{logs}");
}

#[tokio::test]
async fn redis_unreachable_at_start_is_a_config_error_unless_degraded_start_is_asked() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let file = replica_config(
        "down",
        &format!("redis://127.0.0.1:{port}"),
        "10/1s",
        100,
        "",
    );
    serve_refused(&file);
    // check-config validates without contacting Redis, and says so.
    let checked = command()
        .args(["check-config", "--config", file.to_str().unwrap()])
        .env("CASTARI_API_KEY", UPSTREAM_KEY)
        .output()
        .unwrap();
    assert_eq!(checked.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert!(stdout.contains("cluster mode (prefix it-down)"), "{stdout}");

    let degraded = replica_config(
        "down-ok",
        &format!("redis://127.0.0.1:{port}"),
        "10/1s",
        100,
        "start_degraded = true\n",
    );
    let sim = sim().await;
    let gw = GatewayProcess::start_with_config(&sim.url(), &degraded);
    let readyz = get_json(&gw.url("/readyz")).await;
    assert_eq!(readyz["status"], "degraded", "{readyz}");
    assert_eq!(readyz["redis"], "lost", "{readyz}");
    // It serves, on its local share.
    let answered = client().get(gw.url("/api/v1/agents")).send().await.unwrap();
    assert_eq!(answered.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn turns_of_one_session_stay_in_order_across_replicas() {
    let redis = RedisServer::start();
    let sim = sim_with(|c: &mut SimConfig| c.invoke_latency_ms = 300).await;
    let file = |n: &str| replica_config(n, &redis.url(), "10000/60s", 100, "");
    let a = GatewayProcess::start_with_config(&sim.url(), &file("turns"));
    let b = GatewayProcess::start_with_config(&sim.url(), &file("turns"));
    let slug = create_agent_at(&a.url(""), "turns").await;
    deploy_agent_at(&a.url(""), &slug).await;
    // Turns 1..4 of one session, alternating between the replicas, 30 ms
    // apart: each must wait for the one before, wherever it went.
    let mut tasks = Vec::new();
    for turn in 1..=4 {
        let replica = if turn % 2 == 1 { &a } else { &b };
        let url = replica.url(&format!("/api/v1/agents/{slug}/invoke"));
        tasks.push(tokio::spawn(async move {
            client()
                .post(url)
                .header("x-tag", format!("s1-{turn}"))
                .json(&serde_json::json!({"prompt": format!("turn {turn}"), "session_id": "s-1"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let turns: Vec<(String, u64)> = seen(&sim)
        .await
        .iter()
        .filter(|r| r.path.ends_with("/invoke"))
        .map(|r| (header(r, "x-tag").unwrap().to_string(), r.received_at_ms))
        .collect();
    let order: Vec<&str> = turns.iter().map(|(tag, _)| tag.as_str()).collect();
    assert_eq!(order, ["s1-1", "s1-2", "s1-3", "s1-4"]);
    for pair in turns.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= 295,
            "{} left {gap} ms after {}",
            pair[1].0,
            pair[0].0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_left_while_its_ticket_was_being_taken_holds_nobody_up() {
    let redis = RedisServer::start();
    let sim = sim_with(|c: &mut SimConfig| c.invoke_latency_ms = 50).await;
    // Redis stalls well inside the op timeout: the replica waits, no
    // fallback to its own order.
    let extra = "op_timeout_ms = 5000\n";
    let config = replica_config("orphan", &redis.url(), "10000/60s", 100, extra);
    let gw = GatewayProcess::start_with_config(&sim.url(), &config);
    let slug = create_agent_at(&gw.url(""), "orphan").await;
    deploy_agent_at(&gw.url(""), &slug).await;
    let url = gw.url(&format!("/api/v1/agents/{slug}/invoke"));
    let turn = serde_json::json!({"prompt": "hi", "session_id": "s-orphan"});

    // The first turn's ticket (`INCR`) is out when its client leaves; Redis
    // answers it after.
    redis.pause();
    let left = client()
        .post(&url)
        .timeout(Duration::from_millis(300))
        .json(&turn)
        .send()
        .await;
    assert!(left.is_err_and(|e| e.is_timeout()));
    redis.resume();
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The next turn is served at once, not after the line's grace for a
    // ticket nobody claims (2 s).
    let started = Instant::now();
    let next = client().post(&url).json(&turn).send().await.unwrap();
    let took = started.elapsed();
    assert_eq!(next.status(), 200);
    assert!(
        took < Duration::from_millis(1_000),
        "the next turn waited {took:?} for a ticket nobody held"
    );
    let sent = seen(&sim)
        .await
        .iter()
        .filter(|r| r.path.ends_with("/invoke"))
        .count();
    assert_eq!(sent, 1, "the turn that was left never went upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invocations_through_ten_seconds_without_redis_are_each_sent_once() {
    let mut redis = RedisServer::start();
    let sim = sim_with(|c: &mut SimConfig| {
        c.invoke_limit = "6/2s".parse().unwrap();
        c.window = "sliding".parse().unwrap();
        c.invoke_latency_ms = 50;
    })
    .await;
    let extra = "invoke_max_wait_ms = 60000\n";
    let file = |n: &str| {
        let path = replica_config(n, &redis.url(), "6/2s", 100, "");
        // Only invocations are limited here; CRUD is far above the load.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("crud_limit = \"6/2s\"", "crud_limit = \"10000/60s\"", 1)
            .replacen("[shaper]\n", &format!("[shaper]\n{extra}"), 1)
            .replacen("expected_replicas = 3", "expected_replicas = 2", 1);
        std::fs::write(&path, text).unwrap();
        path
    };
    let a = GatewayProcess::start_with_config(&sim.url(), &file("invoke-outage"));
    let b = GatewayProcess::start_with_config(&sim.url(), &file("invoke-outage"));
    let slug = create_agent_at(&a.url(""), "outage").await;
    deploy_agent_at(&a.url(""), &slug).await;

    // Four workers per replica, each invoking in a closed loop, every
    // request tagged; Redis is down from 3 s to 13 s.
    let stop = Instant::now() + Duration::from_millis(16_000);
    let mut tasks = Vec::new();
    for (r, replica) in [&a, &b].into_iter().enumerate() {
        for w in 0..4 {
            let url = replica.url(&format!("/api/v1/agents/{slug}/invoke"));
            tasks.push(tokio::spawn(async move {
                let mut answered = Vec::new();
                for n in 0.. {
                    let remaining = stop.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        break;
                    }
                    let tag = format!("r{r}-w{w}-{n}");
                    let sent = client()
                        .post(&url)
                        .bearer_auth(format!("client-{r}-{w}"))
                        .header("x-tag", &tag)
                        .json(&serde_json::json!({"prompt": "hi"}))
                        .send();
                    let Ok(Ok(response)) = tokio::time::timeout(remaining, sent).await else {
                        break;
                    };
                    answered.push((tag, response.status().as_u16()));
                }
                answered
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(10_000)).await;
    redis.restart();
    let mut answered = Vec::new();
    for task in tasks {
        answered.extend(task.await.unwrap());
    }
    assert!(answered.len() >= 20, "only {} answered", answered.len());
    assert!(answered.iter().all(|(_, s)| *s == 200), "{answered:?}");
    let stats = stats(&sim).await;
    let invoke = &stats["classes"]["invoke"];
    assert_eq!(invoke["limited"], 0, "upstream 429s: {stats}");
    assert!(invoke["max_in_window"].as_u64().unwrap() <= 6, "{stats}");
    // Each answered invocation reached the upstream exactly once, and the
    // upstream saw none that was not answered (abandoned at the end aside).
    let seen_tags: Vec<String> = seen(&sim)
        .await
        .iter()
        .filter(|r| r.path.ends_with("/invoke"))
        .filter_map(|r| header(r, "x-tag").map(str::to_string))
        .collect();
    for (tag, _) in &answered {
        let times = seen_tags.iter().filter(|t| *t == tag).count();
        assert_eq!(times, 1, "{tag} reached the upstream {times} times");
    }
    let unanswered = seen_tags
        .iter()
        .filter(|t| !answered.iter().any(|(a, _)| a == *t))
        .count();
    assert!(unanswered <= 8, "{unanswered} sent but never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_429_seen_by_one_replica_pauses_every_replica() {
    let redis = RedisServer::start();
    let sim = sim_with(|c: &mut SimConfig| c.crud_limit = "3/4s".parse().unwrap()).await;
    // The replicas believe in far more than the account has: another
    // client of the account spends it (below), so only a 429 tells them.
    let file =
        |n: &str| replica_config(n, &redis.url(), "100/4s", 100, "[cache]\nenabled = false\n");
    let a = GatewayProcess::start_with_config(&sim.url(), &file("pause"));
    let b = GatewayProcess::start_with_config(&sim.url(), &file("pause"));
    let direct = client();
    for _ in 0..3 {
        let spent = direct
            .get(format!("{}/api/v1/agents", sim.url()))
            .bearer_auth(UPSTREAM_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(spent.status(), 200);
    }
    // A's request meets the 429, pauses and waits to send again.
    let through_a = tokio::spawn({
        let url = a.url("/api/v1/agents");
        async move { client().get(url).send().await.unwrap().status().as_u16() }
    });
    // Once A has met the 429 (and a moment for its pause to reach Redis),
    // B is asked.
    for _ in 0..200 {
        if stats(&sim).await["classes"]["crud"]["limited"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // B was told: it does not try before the pause ends.
    let through_b = client().get(b.url("/api/v1/agents")).send().await.unwrap();
    assert_eq!(through_b.status(), 200);
    assert_eq!(through_a.await.unwrap(), 200);
    let stats = stats(&sim).await;
    assert_eq!(
        stats["classes"]["crud"]["limited"], 1,
        "only A's first send: {stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_run_stops_nobody_else() {
    let redis = RedisServer::start();
    let sim = sim_with(|c: &mut SimConfig| {
        c.crud_limit = "10/2s".parse().unwrap();
        c.window = "sliding".parse().unwrap();
        c.invoke_latency_ms = 1_500;
    })
    .await;
    let file =
        |n: &str| replica_config(n, &redis.url(), "10/2s", 100, "[cache]\nenabled = false\n");
    let mut a = GatewayProcess::start_with_config(&sim.url(), &file("kill"));
    let b = GatewayProcess::start_with_config(&sim.url(), &file("kill"));
    let slug = create_agent_at(&b.url(""), "killed").await;
    deploy_agent_at(&b.url(""), &slug).await;
    let invoke = |g: &GatewayProcess| g.url(&format!("/api/v1/agents/{slug}/invoke"));
    let turn = serde_json::json!({"prompt": "hi", "session_id": "s-killed"});
    // A holds the session's turn (1.5 s upstream) when it dies.
    let held = tokio::spawn({
        let (url, turn) = (invoke(&a), turn.clone());
        async move { client().post(url).json(&turn).send().await }
    });
    // Both replicas under CRUD overload.
    let clients = [
        ("a1", format!("http://{}", a.addr), 3),
        ("b1", format!("http://{}", b.addr), 3),
        ("b2", format!("http://{}", b.addr), 3),
    ];
    let load = tokio::spawn(async move {
        overload_many(&clients, "/api/v1/agents", Duration::from_millis(6_000)).await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The next turn of the session, through B, waits for A's.
    let next = tokio::spawn({
        let (url, turn) = (invoke(&b), turn.clone());
        async move {
            let started = Instant::now();
            let status = client()
                .post(url)
                .json(&turn)
                .send()
                .await
                .unwrap()
                .status();
            (status.as_u16(), started.elapsed())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.child.kill().unwrap(); // SIGKILL
    let _ = held.await;
    let results = load.await.unwrap();
    // B's clients were all answered; A's got whatever a dead process gives.
    for name in ["b1", "b2"] {
        let statuses = &results[name];
        assert!(statuses.iter().all(|s| *s == 200), "{name}: {statuses:?}");
        assert!(statuses.len() >= 5, "{name}: {statuses:?}");
    }
    let stats = stats(&sim).await;
    assert_eq!(stats["classes"]["crud"]["limited"], 0, "{stats}");
    assert!(
        stats["classes"]["crud"]["max_in_window"].as_u64().unwrap() <= 10,
        "{stats}"
    );
    // The dead replica's turn is given up when its lease runs out.
    let (status, waited) = tokio::time::timeout(Duration::from_secs(20), next)
        .await
        .expect("the session's line stayed stuck")
        .unwrap();
    assert_eq!(status, 200);
    assert!(waited < Duration::from_secs(15), "waited {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_password_from_a_file_opens_redis_and_a_wrong_one_is_a_config_error() {
    const PASSWORD: &str = "s3cret-redis-pass";
    let redis = RedisServer::start_with(&["--requirepass", PASSWORD]);
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("redis_password");
    std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
    let extra = format!("redis_password_file = \"{}\"\n", password.display());
    let file = replica_config("auth", &redis.url(), "10/1s", 100, &extra);
    let gw = GatewayProcess::start_with_config(&sim.url(), &file);
    assert_eq!(get_json(&gw.url("/readyz")).await["redis"], "up");
    let answered = client().get(gw.url("/api/v1/agents")).send().await.unwrap();
    assert_eq!(answered.status(), 200);
    let logs = gw.logs().join("\n");
    assert!(!logs.contains(PASSWORD), "{logs}");

    std::fs::write(&password, "wrong-password\n").unwrap();
    let stderr = serve_refused(&file);
    assert!(
        !stderr.contains("wrong-password") && !stderr.contains(PASSWORD),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rediss_with_a_private_ca_works_and_without_it_is_a_config_error() {
    let redis = RedisServer::start_tls();
    let sim = sim().await;
    let extra = format!("redis_ca_file = \"{}\"\n", redis.ca_file().display());
    let file = replica_config("tls", &redis.url(), "10/1s", 100, &extra);
    let gw = GatewayProcess::start_with_config(&sim.url(), &file);
    assert_eq!(get_json(&gw.url("/readyz")).await["redis"], "up");
    let answered = client().get(gw.url("/api/v1/agents")).send().await.unwrap();
    assert_eq!(answered.status(), 200);

    // Without the CA, Redis's certificate is not trusted: exit 78.
    let untrusted = replica_config("tls-untrusted", &redis.url(), "10/1s", 100, "");
    serve_refused(&untrusted);
}
