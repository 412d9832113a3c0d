//! Hot reload in-process, through `POST /admin/config/reload` and the file
//! watch: what a reload changes, what it carries over, what it refuses.
//! (`SIGHUP` on the real binary is in `binary.rs`; a corrupt file on
//! `SIGHUP` in `faults.rs`.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::*;

/// A config file in a fresh directory (kept for the test's life).
struct ConfigFile {
    dir: tempfile::TempDir,
    path: PathBuf,
}

impl ConfigFile {
    fn new(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        Self { dir, path }
    }

    fn write(&self, text: &str) {
        std::fs::write(&self.path, text).unwrap();
    }

    fn sibling(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

const QUIET: &str = "[telemetry]\naccess_log = false\n";
const UNSHAPED: &str = "[shaper]\ncrud_limit = \"10000/60s\"\ninvoke_limit = \"10000/60s\"\n";

async fn start(sim: &castari_sim::Simulator, file: &Path) -> TestGateway {
    TestGateway::start_from_file(&sim.url(), file, &[("CASTARI_API_KEY", UPSTREAM_KEY)]).await
}

async fn reload(gw: &TestGateway) -> reqwest::Response {
    client()
        .post(gw.url("/admin/config/reload"))
        .send()
        .await
        .unwrap()
}

async fn reloaded(gw: &TestGateway) -> Value {
    let response = reload(gw).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn status(gw: &TestGateway) -> Value {
    get_json(&gw.url("/admin/config")).await
}

async fn upstream_count(sim: &castari_sim::Simulator, path: &str) -> usize {
    seen(sim).await.iter().filter(|r| r.path == path).count()
}

async fn get_usage(gw: &TestGateway) -> reqwest::Response {
    client().get(gw.url("/api/v1/usage")).send().await.unwrap()
}

#[tokio::test]
async fn new_limits_apply_at_once_and_sends_made_before_still_count() {
    let sim = sim().await;
    let shaped = |limit: &str| {
        format!(
            "{QUIET}[cache]\nenabled = false\n[shaper]\ncrud_limit = \"{limit}\"\ncrud_max_wait_ms = 100\n"
        )
    };
    let file = ConfigFile::new(&shaped("3/60s"));
    let gw = start(&sim, &file.path).await;
    for _ in 0..3 {
        assert_eq!(get_usage(&gw).await.status(), 200);
    }
    assert_eq!(get_usage(&gw).await.status(), 429, "over the old limit");

    file.write(&shaped("5/60s"));
    let attempt = reloaded(&gw).await;
    assert_eq!(attempt["applied"], true);
    assert_eq!(attempt["version"], 2);
    assert_eq!(attempt["trigger"], "admin");
    // The three sends of the last minute still count: two more, not five.
    assert_eq!(get_usage(&gw).await.status(), 200);
    assert_eq!(get_usage(&gw).await.status(), 200);
    assert_eq!(get_usage(&gw).await.status(), 429);
    assert_eq!(upstream_count(&sim, "/api/v1/usage").await, 5);

    let shown = status(&gw).await;
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["config"]["shaper"]["crud_limit"], "5/min");
    assert_eq!(shown["last_reload"]["applied"], true);
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(
        metrics.contains("castari_gateway_config_version 2"),
        "{metrics}"
    );
    assert!(metrics.contains("castari_gateway_config_reloads_total{outcome=\"applied\"} 1"));
}

#[tokio::test]
async fn an_invalid_file_is_refused_and_the_running_config_and_cache_stay() {
    let sim = sim().await;
    let good = format!("{QUIET}{UNSHAPED}[cache.ttl_secs]\nusage = 60\n");
    let file = ConfigFile::new(&good);
    let gw = start(&sim, &file.path).await;
    assert_eq!(get_usage(&gw).await.headers()["x-cache"], "MISS");
    assert_eq!(get_usage(&gw).await.headers()["x-cache"], "HIT");

    file.write(&format!("{good}[retry]\nmax_attempts = \"three\"\n"));
    let refused = reload(&gw).await;
    assert_eq!(refused.status(), 422);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "config_refused");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("retry.max_attempts"),
        "{body}"
    );
    let shown = status(&gw).await;
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["last_reload"]["applied"], false);
    assert!(shown["last_reload"]["error"]
        .as_str()
        .unwrap()
        .contains("retry.max_attempts"));
    assert_eq!(shown["config"]["retry"]["max_attempts"], 3);
    assert_eq!(
        get_usage(&gw).await.headers()["x-cache"],
        "HIT",
        "the old config and its cache still serve"
    );

    // Valid again: usage is no longer cached; the byte limit waits for a
    // restart and keeps its running value. The entry stored before the
    // reload is still there for routes that stay cached.
    file.write(&format!(
        "{QUIET}{UNSHAPED}[cache]\nmax_bytes = 1048576\n[cache.ttl_secs]\nusage = 0\n"
    ));
    let attempt = reloaded(&gw).await;
    assert_eq!(attempt["version"], 2);
    assert_eq!(
        attempt["pending_restart"],
        serde_json::json!(["cache.max_bytes"])
    );
    let shown = status(&gw).await;
    assert_eq!(
        shown["pending_restart"],
        serde_json::json!(["cache.max_bytes"])
    );
    assert_eq!(shown["config"]["cache"]["max_bytes"], 67_108_864);
    let before = upstream_count(&sim, "/api/v1/usage").await;
    let fresh = get_usage(&gw).await;
    assert_eq!(fresh.status(), 200);
    assert!(fresh.headers().get("x-cache").is_none());
    assert_eq!(upstream_count(&sim, "/api/v1/usage").await, before + 1);
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(metrics.contains("castari_gateway_config_reloads_total{outcome=\"refused\"} 1"));
}

const ROTATED_KEY: &str = "cast_rotated02_upstreamsecretkey";

async fn authorization_seen(sim: &castari_sim::Simulator) -> String {
    header(&last_seen(sim).await, "authorization")
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_rotated_key_file_is_used_after_a_reload_and_never_shown() {
    let sim = sim_with(|c| {
        c.api_keys.push(ROTATED_KEY.to_string());
        c.invoke_latency_ms = 600;
    })
    .await;
    let file = ConfigFile::new("");
    let key_file = file.sibling("castari_api_key");
    std::fs::write(&key_file, format!("{UPSTREAM_KEY}\n")).unwrap();
    file.write(&format!(
        "{QUIET}{UNSHAPED}[upstream]\napi_key_file = {key_file:?}\n"
    ));
    let gw = TestGateway::start_from_file(&sim.url(), &file.path, &[]).await;
    let me = gw.url("/api/v1/auth/me");
    let cached = |url: String| async move {
        let response = client().get(url).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.headers()["x-cache"].to_str().unwrap().to_string()
    };
    assert_eq!(cached(me.clone()).await, "MISS");
    assert_eq!(cached(me.clone()).await, "HIT");
    assert_eq!(
        authorization_seen(&sim).await,
        format!("Bearer {UPSTREAM_KEY}")
    );

    // Invocations in flight when the reload lands finish under the
    // version they started with.
    let slug = create_agent(&gw, "Rotating").await;
    deploy_agent(&gw, &slug).await;
    let mut in_flight = Vec::new();
    for i in 0..4 {
        let url = gw.url(&format!("/api/v1/agents/{slug}/invoke"));
        in_flight.push(tokio::spawn(async move {
            let body = serde_json::json!({ "prompt": format!("turn {i}") });
            client()
                .post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::write(&key_file, format!("{ROTATED_KEY}\n")).unwrap();
    let response = reload(&gw).await;
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    for task in in_flight {
        assert_eq!(task.await.unwrap(), 200);
    }
    let invoked = seen(&sim).await;
    let invoked: Vec<_> = invoked
        .iter()
        .filter(|r| r.path.ends_with("/invoke"))
        .collect();
    assert_eq!(invoked.len(), 4, "each invocation ran once");
    for request in invoked {
        assert_eq!(
            header(request, "authorization"),
            Some(format!("Bearer {UPSTREAM_KEY}").as_str())
        );
    }

    // What the old key fetched may belong to another account: not served.
    assert_eq!(cached(me.clone()).await, "MISS");
    assert_eq!(
        authorization_seen(&sim).await,
        format!("Bearer {ROTATED_KEY}")
    );
    let shown = get_text(&gw.url("/admin/config")).await;
    let metrics = get_text(&gw.url("/metrics")).await;
    for body in [&text, &shown, &metrics] {
        assert!(!body.contains(UPSTREAM_KEY) && !body.contains(ROTATED_KEY));
    }
    assert!(
        shown.contains("castari_api_key"),
        "the key file's path is shown"
    );
}

#[tokio::test]
async fn the_watch_reloads_when_a_key_file_changes() {
    let sim = sim_with(|c| c.api_keys.push(ROTATED_KEY.to_string())).await;
    let file = ConfigFile::new("");
    let key_file = file.sibling("castari_api_key");
    std::fs::write(&key_file, UPSTREAM_KEY).unwrap();
    file.write(&format!(
        "{QUIET}{UNSHAPED}[upstream]\napi_key_file = {key_file:?}\n[reload]\nwatch = true\nwatch_interval_ms = 100\n"
    ));
    let gw = TestGateway::start_from_file(&sim.url(), &file.path, &[]).await;
    assert_eq!(status(&gw).await["version"], 1);
    std::fs::write(&key_file, ROTATED_KEY).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let shown = status(&gw).await;
        if shown["version"] == 2 || tokio::time::Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(shown["version"], 2, "{shown}");
    assert_eq!(shown["last_reload"]["trigger"], "watch");
    assert_eq!(get_usage(&gw).await.status(), 200);
    assert_eq!(
        authorization_seen(&sim).await,
        format!("Bearer {ROTATED_KEY}")
    );
    // No change, no reload.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(status(&gw).await["version"], 2);
}

fn declared(id: &str, token: &str) -> String {
    let hash = castari_gateway::keys::token::hex(&castari_gateway::keys::token::hash(token));
    format!("[[auth.keys]]\nid = \"{id}\"\nname = \"{id}\"\nsha256 = \"{hash}\"\nrole = \"read\"\n")
}

#[tokio::test]
async fn declared_keys_come_and_go_with_a_reload() {
    let sim = sim().await;
    let a = "cgw_0000000000aa_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let b = "cgw_0000000000bb_0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let file = ConfigFile::new("");
    let db = file.sibling("keys.db");
    let keys = |declared: &str| {
        format!("{QUIET}{UNSHAPED}[auth]\nmode = \"keys\"\ndb_path = {db:?}\n{declared}")
    };
    file.write(&keys(&declared("0000000000aa", a)));
    let gw = start(&sim, &file.path).await;
    let as_key = |token: &'static str| {
        let url = gw.url("/api/v1/usage");
        async move {
            client()
                .get(url)
                .bearer_auth(token)
                .header("cache-control", "no-store")
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(as_key(a).await, 200);
    assert_eq!(as_key(b).await, 401);

    file.write(&keys(&declared("0000000000bb", b)));
    assert_eq!(reloaded(&gw).await["version"], 2);
    assert_eq!(as_key(b).await, 200, "the new key works at once");
    assert_eq!(as_key(a).await, 401, "the removed key is refused at once");
    assert_eq!(upstream_count(&sim, "/api/v1/usage").await, 2);
    let shown = get_text(&gw.url("/admin/config")).await;
    assert!(!shown.contains(&castari_gateway::keys::token::hex(
        &castari_gateway::keys::token::hash(b)
    )));
}

#[tokio::test]
async fn a_gateway_without_a_reloadable_config_says_so() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let response = reload(&gw).await;
    assert_eq!(response.status(), 409);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "reload_unavailable");
    let shown = status(&gw).await;
    assert_eq!(shown["version"], 1);
    assert_eq!(shown["reloadable"], false);
    assert!(!shown.to_string().contains(UPSTREAM_KEY));
    let wrong = client()
        .get(gw.url("/admin/config/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 405);
}
