//! Rate shaping against the simulator with short windows: the upstream never
//! answers 429 to traffic through the gateway, the budget is used, clients
//! share it fairly, sessions stay in order, a client that leaves spends
//! nothing, and the gateway follows what the upstream says.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use castari_gateway::config::Config;
use castari_sim::{Simulator, WindowKind};
use serde_json::Value;

use crate::support::*;

/// A second simulator key: setup traffic on it spends none of the budget of
/// [`UPSTREAM_KEY`], the one the gateway uses.
const SETUP_KEY: &str = "sk_setup_only";

/// A simulator with sliding windows (the strictest count) and these limits.
async fn limited_sim(crud: &str, invoke: &str) -> Simulator {
    sim_with(|c| {
        c.api_keys.push(SETUP_KEY.to_string());
        c.crud_limit = crud.parse().unwrap();
        c.invoke_limit = invoke.parse().unwrap();
        c.window = WindowKind::Sliding;
    })
    .await
}

/// A simulator and a gateway in front of it, both allowing `limit` in
/// each class; `tweak` edits the gateway's config further.
async fn shaped_pair(
    limit: &str,
    margin_ms: u64,
    tweak: impl FnOnce(&mut Config),
) -> (Simulator, TestGateway) {
    let sim = limited_sim(limit, limit).await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        shaped(c, limit, limit, margin_ms);
        tweak(c);
    })
    .await;
    (sim, gw)
}

fn shaped(config: &mut Config, crud: &str, invoke: &str, margin_ms: u64) {
    config.shaper.crud_limit = crud.parse().unwrap();
    config.shaper.invoke_limit = invoke.parse().unwrap();
    config.shaper.safety_margin_ms = margin_ms;
    // These tests count what reaches the upstream: every GET must go there.
    config.cache.enabled = false;
}

/// An active agent, created on the simulator with the setup key (waiting
/// out the simulator's limit when a test set it very low).
async fn active_agent(sim: &Simulator, name: &str) -> String {
    let body = serde_json::json!({"name": name, "source_type": "git", "git_repo_url": "https://example.invalid/r"});
    let agent = setup_post(sim, "/api/v1/agents", Some(body)).await;
    let slug = agent["slug"].as_str().unwrap().to_string();
    setup_post(sim, &format!("/api/v1/agents/{slug}/deploy"), None).await;
    slug
}

async fn setup_post(sim: &Simulator, path: &str, body: Option<Value>) -> Value {
    loop {
        let mut request = client()
            .post(format!("{}{path}", sim.url()))
            .bearer_auth(SETUP_KEY);
        if let Some(body) = &body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        if response.status() == 429 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        return response.json().await.unwrap();
    }
}

/// 429s the simulator answered to the gateway's key (setup traffic on
/// [`SETUP_KEY`] may be limited on purpose).
async fn upstream_429s(sim: &Simulator) -> usize {
    let bearer = format!("Bearer {UPSTREAM_KEY}");
    seen(sim)
        .await
        .iter()
        .filter(|r| r.status == 429 && header(r, "authorization") == Some(bearer.as_str()))
        .count()
}

/// A numeric response header.
fn header_u64(response: &reqwest::Response, name: &str) -> u64 {
    response.headers()[name].to_str().unwrap().parse().unwrap()
}

async fn stats(sim: &Simulator) -> Value {
    get_json(&format!("{}/_sim/stats", sim.url())).await
}

/// [`overload_many`] against one gateway.
async fn overload(
    gw: &TestGateway,
    clients: &[(&'static str, usize)],
    run_for: Duration,
) -> HashMap<&'static str, Vec<u16>> {
    let base = gw.url("");
    let clients: Vec<_> = clients
        .iter()
        .map(|&(name, workers)| (name, base.clone(), workers))
        .collect();
    overload_many(&clients, "/api/v1/agents", run_for).await
}

#[tokio::test]
async fn overload_gets_no_upstream_429_and_uses_the_whole_budget() {
    let (sim, gw) = shaped_pair("10/2s", 200, |c| {
        c.shaper.crud_max_wait_ms = 30_000;
    })
    .await;
    // Four clients, ten requests in flight each: 40 at once against 5/s.
    let clients = [("a", 10), ("b", 10), ("c", 10), ("d", 10)];
    let results = overload(&gw, &clients, Duration::from_millis(6_000)).await;

    let statuses: Vec<u16> = results.values().flatten().copied().collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = stats(&sim).await;
    let crud = &stats["classes"]["crud"];
    assert_eq!(crud["limited"], 0, "upstream 429s: {stats}");
    assert!(crud["max_in_window"].as_u64().unwrap() <= 10, "{stats}");

    // Used: the upstream allows at most 30 in the first three windows from
    // the first arrival; the gateway sent at least 95% of that.
    let arrivals: Vec<u64> = seen(&sim)
        .await
        .iter()
        .filter(|r| header(r, "authorization") == Some(&format!("Bearer {UPSTREAM_KEY}")))
        .map(|r| r.received_at_ms)
        .collect();
    let first = arrivals[0];
    let in_three_windows = arrivals.iter().filter(|t| **t < first + 6_000).count();
    assert!(in_three_windows >= 29, "{in_three_windows} of 30 used");
}

#[tokio::test]
async fn a_heavy_client_does_not_crowd_out_the_others() {
    let (sim, gw) = shaped_pair("10/1s", 100, |c| {
        c.shaper.crud_max_wait_ms = 30_000;
    })
    .await;
    // "heavy" keeps ten times as many requests waiting as each other client.
    let clients = [("heavy", 30), ("light-1", 3), ("light-2", 3)];
    let results = overload(&gw, &clients, Duration::from_millis(4_500)).await;
    let shares: Vec<f64> = clients
        .iter()
        .map(|(name, _)| results.get(name).map_or(0, Vec::len) as f64)
        .collect();
    let jain = jain(&shares);
    assert!(jain >= 0.95, "Jain's index {jain:.3} for shares {shares:?}");
    assert_eq!(stats(&sim).await["classes"]["crud"]["limited"], 0);
}

#[tokio::test]
async fn over_budget_is_refused_at_once_with_the_gateways_view() {
    let (sim, gw) = shaped_pair("2/10s", 0, |c| {
        c.shaper.crud_max_wait_ms = 1_000;
    })
    .await;
    let c = client();
    for expected_remaining in ["1", "0"] {
        let ok = c.get(gw.url("/api/v1/agents")).send().await.unwrap();
        assert_eq!(ok.status(), 200);
        assert_eq!(ok.headers()["x-ratelimit-limit"], "2");
        assert_eq!(ok.headers()["x-ratelimit-remaining"], expected_remaining);
    }
    let started = Instant::now();
    let refused = c.get(gw.url("/api/v1/agents")).send().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "not at once"
    );
    assert_eq!(refused.status(), 429);
    let retry_after: u64 = header_u64(&refused, "retry-after");
    assert!((9..=10).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(refused.headers()["x-ratelimit-remaining"], "0");
    let reset: u64 = header_u64(&refused, "x-ratelimit-reset");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(reset > now && reset <= now + 11, "reset {reset}, now {now}");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "rate_limited");
    assert_eq!(
        body["detail"],
        format!(
            "Rate limit exceeded: the account's CRUD budget at Castari is spent for longer than \
             this request may wait (shaper.crud_max_wait_ms, or its own Prefer: wait=N header). \
             Try again in {retry_after} seconds (code: rate_limited)"
        )
    );
    assert_eq!(seen(&sim).await.len(), 2, "the refused request never left");
}

#[tokio::test]
async fn a_full_queue_refuses_at_once() {
    let (_sim, gw) = shaped_pair("1/10s", 0, |c| {
        c.shaper.crud_queue_depth = 1;
        c.shaper.crud_max_wait_ms = 60_000;
    })
    .await;
    let c = client();
    assert_eq!(get_status(&gw.url("/api/v1/agents")).await, 200);
    let waiting = tokio::spawn(c.get(gw.url("/api/v1/agents")).send());
    let admin = gw.url("/admin/queue");
    assert!(queue_depth(&admin, "crud", 1).await);
    let started = Instant::now();
    let refused = c.get(gw.url("/api/v1/agents")).send().await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(500));
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "queue_full");
    waiting.abort();
}

/// Polls `/admin/queue` until `lane` holds `depth` waiters.
async fn queue_depth(admin: &str, lane: &str, depth: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let snapshot = get_json(admin).await;
        let found = snapshot["lanes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["lane"] == lane)
            .map(|l| l["depth"].as_u64().unwrap());
        if found == Some(depth) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn the_queue_is_visible_and_waits_are_reported() {
    // A margin: without one, a send that leaves exactly at the window's end
    // can reach the simulator's sliding window a hair early on a loaded
    // machine, get a 429 and be retried, which counts a third wait.
    let (sim, gw) = shaped_pair("1/2s", 200, |_| {}).await;
    let slug = active_agent(&sim, "Visible").await;
    let c = client();
    assert_eq!(get_status(&gw.url("/api/v1/agents")).await, 200);
    let url = gw.url(&format!("/api/v1/agents/{slug}"));
    let first = tokio::spawn(c.get(&url).bearer_auth("tool-1").send());
    let admin = gw.url("/admin/queue");
    assert!(queue_depth(&admin, "crud", 1).await);
    let second = tokio::spawn(c.get(&url).bearer_auth("tool-2").send());
    assert!(queue_depth(&admin, "crud", 2).await);

    let snapshot = get_json(&admin).await;
    let crud = &snapshot["lanes"][0];
    assert_eq!(crud["lane"], "crud");
    assert_eq!(crud["limit"], 1);
    let waiting = crud["waiting"].as_array().unwrap();
    assert_eq!(waiting[0]["position"], 1);
    assert_eq!(waiting[1]["position"], 2);
    assert_eq!(waiting[0]["agent"], slug.as_str());
    let labels: Vec<&str> = waiting
        .iter()
        .map(|w| w["client"].as_str().unwrap())
        .collect();
    assert!(labels.iter().all(|l| l.starts_with("key:")), "{labels:?}");
    assert_ne!(labels[0], labels[1]);
    assert!(
        !snapshot.to_string().contains("tool-1"),
        "a credential leaked"
    );

    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(
        metrics.contains("castari_gateway_queue_depth{lane=\"crud\",upstream=\"default\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("castari_gateway_budget_remaining{lane=\"crud\",upstream=\"default\"} 0")
    );
    assert!(
        metrics.contains("castari_gateway_dispatched_total{lane=\"crud\",upstream=\"default\"} 1")
    );

    let first = first.await.unwrap().unwrap();
    assert_eq!(first.status(), 200);
    let waited: u64 = header_u64(&first, "x-gateway-queue-wait-ms");
    assert!(waited >= 1_000, "waited {waited} ms");
    let second = second.await.unwrap().unwrap();
    assert_eq!(second.status(), 200);
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(
        metrics.contains(
            "castari_gateway_queue_wait_seconds_count{lane=\"crud\",upstream=\"default\"} 2"
        ),
        "{metrics}"
    );
    assert_eq!(upstream_429s(&sim).await, 0);
}

#[tokio::test]
async fn turns_of_a_session_go_in_order_and_sessions_run_in_parallel() {
    let sim = sim_with(|c| {
        c.api_keys.push(SETUP_KEY.to_string());
        c.invoke_latency_ms = 300;
    })
    .await;
    let slug = active_agent(&sim, "Turns").await;
    let gw = TestGateway::start(&sim.url()).await;
    let url = gw.url(&format!("/api/v1/agents/{slug}/invoke"));
    let mut tasks = Vec::new();
    let started = Instant::now();
    let mut send = |body: Value, tag: String| {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let response = client()
                .post(url)
                .header("x-tag", tag)
                .json(&body)
                .send()
                .await
                .unwrap();
            response.status().as_u16()
        }));
    };
    for turn in 1..=4 {
        send(
            serde_json::json!({"prompt": format!("turn {turn}"), "session_id": "s-1"}),
            format!("s1-{turn}"),
        );
        // The arrival order the gateway must keep.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for other in 1..=3 {
        send(
            serde_json::json!({"prompt": "other", "session_id": format!("s-other-{other}")}),
            format!("other-{other}"),
        );
    }
    send(
        serde_json::json!({"prompt": "no session"}),
        "none".to_string(),
    );
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    // Four turns of 300 ms one after another; the rest alongside them.
    assert!(started.elapsed() < Duration::from_millis(4 * 300 + 900));

    let invocations: Vec<(String, u64)> = seen(&sim)
        .await
        .iter()
        .filter(|r| r.path.ends_with("/invoke"))
        .map(|r| (header(r, "x-tag").unwrap().to_string(), r.received_at_ms))
        .collect();
    let turns: Vec<&(String, u64)> = invocations
        .iter()
        .filter(|(tag, _)| tag.starts_with("s1-"))
        .collect();
    let order: Vec<&str> = turns.iter().map(|(tag, _)| tag.as_str()).collect();
    assert_eq!(order, ["s1-1", "s1-2", "s1-3", "s1-4"]);
    for pair in turns.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(gap >= 290, "turn sent {gap} ms after the previous one");
    }
    let first = turns[0].1;
    for (tag, at) in invocations.iter().filter(|(t, _)| !t.starts_with("s1-")) {
        assert!(*at < first + 250, "{tag} waited for another session");
    }
}

#[tokio::test]
async fn a_client_that_leaves_the_queue_spends_nothing() {
    let (sim, gw) = shaped_pair("1/2s", 0, |_| {}).await;
    let c = client();
    let first_sent = Instant::now();
    assert_eq!(get_status(&gw.url("/api/v1/agents")).await, 200);
    let impatient = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    assert!(impatient
        .get(gw.url("/api/v1/agents?gone=1"))
        .send()
        .await
        .is_err());
    assert!(queue_depth(&gw.url("/admin/queue"), "crud", 0).await);

    // Past the window the budget is whole again: the one that left took
    // no slot, so the next request leaves at once.
    tokio::time::sleep_until((first_sent + Duration::from_millis(2_100)).into()).await;
    let started = Instant::now();
    let next = c.get(gw.url("/api/v1/agents")).send().await.unwrap();
    assert_eq!(next.status(), 200);
    assert!(started.elapsed() < Duration::from_millis(300));
    assert!(!next.headers().contains_key("x-gateway-queue-wait-ms"));

    let requests = seen(&sim).await;
    assert_eq!(requests.len(), 2);
    assert!(
        requests.iter().all(|r| r.query.is_none()),
        "sent after leaving"
    );
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(
        metrics.contains("castari_gateway_refused_total{lane=\"crud\",upstream=\"default\",reason=\"client_gone\"} 1")
    );
}

#[tokio::test]
async fn an_upstream_429_pauses_the_budget_and_is_retried_unseen() {
    // The upstream allows fewer than the gateway thinks: as if another tool
    // spent the account's budget without the gateway.
    let sim = limited_sim("3/2s", "3/2s").await;
    let gw = TestGateway::start_with(&sim.url(), |c| shaped(c, "10/2s", "10/2s", 0)).await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let url = gw.url("/api/v1/agents");
        tasks.push(tokio::spawn(async move { get_status(&url).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200, "a client saw something else");
    }
    let stats = stats(&sim).await;
    assert!(stats["classes"]["crud"]["limited"].as_u64().unwrap() >= 1);
    let ok = seen(&sim).await.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 6, "each request executed exactly once");
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(metrics.contains(
        "castari_gateway_upstream_rate_limited_total{lane=\"crud\",upstream=\"default\"}"
    ));
}

#[tokio::test]
async fn a_lower_upstream_remaining_is_followed() {
    let (sim, gw) = shaped_pair("5/3s", 100, |_| {}).await;
    let c = client();
    // Another tool spends three requests of the account, not through us.
    for _ in 0..3 {
        let direct = c
            .get(format!("{}/api/v1/agents", sim.url()))
            .bearer_auth(UPSTREAM_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(direct.status(), 200);
    }
    let first = c.get(gw.url("/api/v1/agents")).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-ratelimit-remaining"], "1");
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let url = gw.url("/api/v1/agents");
        tasks.push(tokio::spawn(async move { get_status(&url).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(
        stats(&sim).await["classes"]["crud"]["limited"],
        0,
        "the gateway did not follow the upstream's count"
    );
}

#[tokio::test]
async fn sigterm_drains_the_invocation_queue_and_loses_nothing() {
    use crate::binary::GatewayProcess;

    let sim = limited_sim("100/2s", "2/2s").await;
    let slug = active_agent(&sim, "Drain").await;
    let config = std::env::temp_dir().join(format!(
        "castari-drain-{}-{}.toml",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::write(
        &config,
        "[server]\nshutdown_grace_ms = 3000\n\n[shaper]\ninvoke_limit = \"2/2s\"\nsafety_margin_ms = 100\n",
    )
    .unwrap();
    let gw = GatewayProcess::start_with(
        &sim.url(),
        &[("CASTARI_GATEWAY_CONFIG", config.to_str().unwrap())],
    );
    let url = gw.url(&format!("/api/v1/agents/{slug}/invoke"));
    let mut tasks = Vec::new();
    for n in 1..=5 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let response = client()
                .post(url)
                .header("x-tag", n.to_string())
                .json(&serde_json::json!({"prompt": format!("job {n}")}))
                .send()
                .await
                .expect("every client gets an answer");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (n.to_string(), status, body)
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Two leave at once, three wait. Shutdown begins; the queue keeps
    // moving until just before the 3 s grace ends: two more leave at 2.1 s,
    // the last (due at 4.2 s) never will.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let mut answered = Vec::new();
    for task in tasks {
        answered.push(task.await.unwrap());
    }
    let _ = std::fs::remove_file(&config);
    let ok: Vec<&str> = answered
        .iter()
        .filter(|(_, status, _)| *status == 200)
        .map(|(tag, _, _)| tag.as_str())
        .collect();
    let drained: Vec<&(String, u16, Value)> =
        answered.iter().filter(|(_, s, _)| *s == 503).collect();
    assert_eq!(ok.len(), 4, "{answered:?}");
    assert_eq!(drained.len(), 1, "{answered:?}");
    assert_eq!(drained[0].2["code"], "shutting_down");

    // The upstream ran exactly the four that were answered, once each.
    let mut sent: Vec<String> = seen(&sim)
        .await
        .iter()
        .filter(|r| r.path.ends_with("/invoke"))
        .map(|r| header(r, "x-tag").unwrap().to_string())
        .collect();
    sent.sort();
    let mut ok_sorted: Vec<String> = ok.iter().map(|s| s.to_string()).collect();
    ok_sorted.sort();
    assert_eq!(sent, ok_sorted);
    assert_eq!(upstream_429s(&sim).await, 0);
}
