//! The fault battery (issue #7, item 4): one test per upstream fault, over
//! real sockets. For each, the client gets a correct answer or a clear
//! Castari-shaped error, nothing is executed twice upstream, and the
//! gateway keeps serving afterwards.

use std::process::Command;
use std::time::{Duration, Instant};

use castari_sim::{Faults, Simulator};
use serde_json::{json, Value};

use crate::binary::GatewayProcess;
use crate::support::*;

/// A gateway error: the status, Castari's shape, the code.
async fn castari_error(response: reqwest::Response, status: u16, code: &str) {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], code, "{body}");
    assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
}

/// After the fault is gone, reads and writes go through again.
async fn keeps_serving(gw: &TestGateway, sim: &Simulator) {
    sim.set_faults(Faults::default());
    let read = client().get(gw.url("/api/v1/usage")).send().await.unwrap();
    assert_eq!(read.status(), 200, "the gateway keeps serving");
    let slug = create_agent(gw, "after-the-fault").await;
    assert!(!slug.is_empty());
}

/// How often the upstream executed `method path` (answered 2xx).
async fn executed(sim: &Simulator, method: &str, path: &str) -> usize {
    seen(sim)
        .await
        .iter()
        .filter(|r| r.method == method && r.path == path && (200..300).contains(&r.status))
        .count()
}

#[tokio::test]
async fn refused_connections() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let gw = TestGateway::start_with(&format!("http://127.0.0.1:{port}"), |c| {
        c.retry.base_delay_ms = 1;
        c.breaker.enabled = false;
    })
    .await;
    let response = client().get(gw.url("/api/v1/agents")).send().await.unwrap();
    castari_error(response, 502, "upstream_unreachable").await;
    let response = client()
        .post(gw.url("/api/v1/agents"))
        .json(&json!({"name": "x", "source_type": "git"}))
        .send()
        .await
        .unwrap();
    castari_error(response, 502, "upstream_unreachable").await;
    assert_eq!(get_status(&gw.url("/healthz")).await, 200);
}

#[tokio::test]
async fn slow_beyond_the_timeout() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.upstream.crud_timeout_ms = 300).await;
    sim.set_faults(Faults {
        latency_ms: 2_000,
        path_prefix: Some("/api/v1/agents".into()),
        ..Faults::default()
    });
    let started = Instant::now();
    let response = client()
        .post(gw.url("/api/v1/agents"))
        .json(&json!({"name": "slow", "source_type": "git"}))
        .send()
        .await
        .unwrap();
    castari_error(response, 504, "upstream_timeout").await;
    assert!(
        started.elapsed() < Duration::from_millis(1_500),
        "not retried"
    );
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    assert!(
        executed(&sim, "POST", "/api/v1/agents").await <= 1,
        "never sent twice"
    );
    keeps_serving(&gw, &sim).await;
}

#[tokio::test]
async fn a_burst_of_5xx() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.cache.enabled = false;
        c.retry.base_delay_ms = 1;
        c.breaker.failure_threshold = 50;
    })
    .await;
    // Reads ride it out by retrying; creates report it and are sent once.
    sim.set_faults(Faults {
        fail_next: 2,
        error_statuses: vec![503],
        ..Faults::default()
    });
    assert_eq!(get_status(&gw.url("/api/v1/usage")).await, 200);
    sim.set_faults(Faults {
        fail_next: 1,
        error_statuses: vec![502],
        ..Faults::default()
    });
    let response = client()
        .post(gw.url("/api/v1/agents"))
        .json(&json!({"name": "burst", "source_type": "git"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 502, "relayed as the upstream said");
    let posts = seen(&sim)
        .await
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1);
    keeps_serving(&gw, &sim).await;
}

#[tokio::test]
async fn a_reset_in_the_middle_of_a_body() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.breaker.enabled = false).await;
    sim.set_faults(Faults {
        stall_next: 1,
        stall_ms: 50,
        ..Faults::default()
    });
    // A cached read gets the whole body or an error, never half of one.
    let response = client().get(gw.url("/api/v1/agents")).send().await.unwrap();
    castari_error(response, 502, "upstream_failed").await;
    keeps_serving(&gw, &sim).await;
    // The broken answer was not stored.
    let fresh = client().get(gw.url("/api/v1/agents")).send().await.unwrap();
    assert_eq!(fresh.status(), 200);
    assert!(fresh.json::<Value>().await.unwrap()["agents"].is_array());
}

#[tokio::test]
async fn a_stalled_response() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.upstream.download_idle_timeout_ms = 300;
        c.breaker.enabled = false;
    })
    .await;
    sim.set_faults(Faults {
        stall_next: 1,
        stall_ms: 30_000,
        ..Faults::default()
    });
    let started = Instant::now();
    let response = client()
        .get(gw.url("/api/v1/buckets"))
        .send()
        .await
        .unwrap();
    castari_error(response, 502, "upstream_failed").await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the idle timeout ended it"
    );
    keeps_serving(&gw, &sim).await;
}

#[tokio::test]
async fn a_storm_of_429s() {
    // The upstream allows 4 a second; the gateway was told 40.
    let sim = sim_with(|c| c.crud_limit = "4/1s".parse().unwrap()).await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.cache.enabled = false;
        c.shaper.crud_limit = "40/1s".parse().unwrap();
        c.shaper.safety_margin_ms = 50;
    })
    .await;
    let answers = futures_util::future::join_all((0..12).map(|_| async {
        let response = client().get(gw.url("/api/v1/usage")).send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let body: Value = response.json().await.unwrap();
        (status, retry_after, body)
    }))
    .await;
    for (status, retry_after, body) in &answers {
        match status {
            200 => {}
            429 => {
                assert!(retry_after, "{body}");
                assert!(
                    body["code"].is_string(),
                    "a gateway 429, Castari-shaped: {body}"
                );
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let ok = answers.iter().filter(|(s, _, _)| *s == 200).count();
    assert!(ok >= 8, "most waited for the budget: {ok}");
    assert!(upstream_429s(&sim).await > 0, "the storm happened");
    // Each success ran upstream exactly once.
    assert_eq!(executed(&sim, "GET", "/api/v1/usage").await, ok);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    keeps_serving(&gw, &sim).await;
}

async fn upstream_429s(sim: &Simulator) -> usize {
    seen(sim).await.iter().filter(|r| r.status == 429).count()
}

#[tokio::test]
async fn sigterm_under_load() {
    let sim = sim_with(|c| c.invoke_latency_ms = 800).await;
    let gw = GatewayProcess::start(&sim.url());
    let create = client()
        .post(gw.url("/api/v1/agents"))
        .json(&json!({"name": "Load", "slug": "load", "source_type": "git", "git_repo_url": "https://example.invalid/r"}))
        .send()
        .await
        .unwrap();
    assert!(create.status().is_success());
    let deploy = client()
        .post(gw.url("/api/v1/agents/load/deploy"))
        .send()
        .await
        .unwrap();
    assert!(deploy.status().is_success());
    // Ten invocations and ten reads in flight when SIGTERM arrives.
    let mut load = Vec::new();
    for i in 0..10 {
        let url = gw.url("/api/v1/agents/load/invoke");
        load.push(tokio::spawn(async move {
            let response = client()
                .post(url)
                .json(&json!({"prompt": format!("turn {i}")}))
                .send()
                .await?;
            Ok::<_, reqwest::Error>(response.status().as_u16())
        }));
        let url = gw.url("/api/v1/usage");
        load.push(tokio::spawn(async move {
            Ok(client().get(url).send().await?.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for task in load {
        assert_eq!(
            task.await.unwrap().unwrap(),
            200,
            "every request in flight finished"
        );
    }
    let invoked = seen(&sim)
        .await
        .iter()
        .filter(|r| r.path == "/api/v1/agents/load/invoke")
        .count();
    assert_eq!(invoked, 10, "each invocation ran once");
}

/// Sends `SIGHUP` to the gateway process.
fn hangup(gw: &GatewayProcess) {
    let sent = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Polls `GET /admin/config` until `done` holds (10 s at most).
async fn config_until(gw: &GatewayProcess, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shown = get_json(&gw.url("/admin/config")).await;
        if done(&shown) || Instant::now() > deadline {
            return shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_corrupt_config_on_reload() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let good = "[shaper]\ncrud_limit = \"10000/60s\"\n[cache.ttl_secs]\nusage = 60\n";
    std::fs::write(&file, good).unwrap();
    let gw = GatewayProcess::start_with_config(&sim.url(), &file);
    let usage = gw.url("/api/v1/usage");
    assert_eq!(get_status(&usage).await, 200);

    // A half-written file, as an editor or a deploy tool can leave it.
    std::fs::write(
        &file,
        "[shaper]\ncrud_limit = \"10000/60s\"\n[cache.ttl_secs]\nusage = ",
    )
    .unwrap();
    hangup(&gw);
    let shown = config_until(&gw, |c| !c["last_reload"].is_null()).await;
    assert_eq!(shown["version"], 1, "{shown}");
    assert_eq!(shown["last_reload"]["applied"], false);
    assert_eq!(shown["last_reload"]["trigger"], "signal");
    let error = shown["last_reload"]["error"].as_str().unwrap();
    assert!(error.contains("line 4"), "the error says where: {error}");
    let logged = eventually(Duration::from_secs(5), || {
        gw.logs()
            .iter()
            .any(|l| l.contains("reload refused") && l.contains("line 4"))
    })
    .await;
    assert!(logged, "the refusal is logged: {:?}", gw.logs());

    // The gateway keeps serving under the old config: its cache answers,
    // and a write goes upstream exactly once.
    let hit = client().get(&usage).send().await.unwrap();
    assert_eq!(hit.status(), 200);
    assert_eq!(hit.headers()["x-cache"], "HIT");
    let create = client()
        .post(gw.url("/api/v1/agents"))
        .json(&json!({"name": "Reload", "slug": "reload", "source_type": "git", "git_repo_url": "https://example.invalid/r"}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), 201);
    assert_eq!(executed(&sim, "POST", "/api/v1/agents").await, 1);

    // Fixed: the next signal applies it.
    std::fs::write(&file, format!("{good}[retry]\nmax_attempts = 2\n")).unwrap();
    hangup(&gw);
    let shown = config_until(&gw, |c| c["version"] == 2).await;
    assert_eq!(shown["version"], 2, "{shown}");
    assert_eq!(shown["config"]["retry"]["max_attempts"], 2);
    assert_eq!(shown["last_reload"]["applied"], true);
    assert!(!gw.logs().join("\n").contains(UPSTREAM_KEY));
}
