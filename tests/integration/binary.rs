//! The `castari-gateway` binary as a user runs it: exit codes, config errors,
//! healthcheck, graceful shutdown on SIGTERM.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_castari-gateway");

/// A command for the binary with a clean, known environment.
pub fn command() -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "CASTARI_API_KEY",
        "CASTARI_GATEWAY_CONFIG",
        "CASTARI_GATEWAY_LISTEN",
        "CASTARI_UPSTREAM_URL",
        "CASTARI_GATEWAY_AUTH_MODE",
        "CASTARI_GATEWAY_ALLOW_OPEN_ON_NETWORK",
        "CASTARI_GATEWAY_ADMIN_KEY",
        "CASTARI_GATEWAY_REDIS_URL",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command.stdin(Stdio::null());
    command
}

/// A gateway process; killed on drop. Its stdout (the log) is collected.
pub struct GatewayProcess {
    pub child: Child,
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl GatewayProcess {
    /// Starts `serve` in front of `upstream` on an ephemeral port and waits
    /// for its "listening" line.
    pub fn start(upstream: &str) -> Self {
        Self::start_with(upstream, &[])
    }

    /// Like [`start`](Self::start), with extra environment variables.
    pub fn start_with(upstream: &str, env: &[(&str, &str)]) -> Self {
        Self::spawn(upstream, &[], env)
    }

    /// Like [`start`](Self::start), with `--config file`.
    pub fn start_with_config(upstream: &str, file: &std::path::Path) -> Self {
        Self::spawn(upstream, &["--config", file.to_str().unwrap()], &[])
    }

    /// Like [`start_with_config`](Self::start_with_config), with extra
    /// environment variables.
    pub fn start_with_config_env(
        upstream: &str,
        file: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(upstream, &["--config", file.to_str().unwrap()], env)
    }

    fn spawn(upstream: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = command()
            .args(["serve", "--listen", "127.0.0.1:0", "--upstream", upstream])
            .args(args)
            .envs(env.iter().copied())
            .env("CASTARI_API_KEY", UPSTREAM_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(20);
        let collected = Arc::new(Mutex::new(Vec::new()));
        let addr = loop {
            assert!(Instant::now() < deadline, "gateway did not start");
            let line = lines.next().expect("gateway exited early").unwrap();
            collected.lock().unwrap().push(line.clone());
            if let Some(rest) = line.split("addr=").nth(1) {
                let addr = rest.trim_matches(|c: char| c == '"' || c.is_whitespace());
                let addr = addr
                    .split(|c: char| c == '"' || c.is_whitespace())
                    .next()
                    .unwrap();
                break addr.parse().unwrap();
            }
        };
        let sink = collected.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            addr,
            lines: collected,
        }
    }

    /// Every log line written so far.
    pub fn logs(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("castari-gw-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_config_stops_startup_with_one_line_and_exit_78() {
    let path = temp_file("bad.toml", "[server]\nmax_connections = 0\n");
    let output = command()
        .args(["serve", "--config", path.to_str().unwrap()])
        .env("CASTARI_API_KEY", UPSTREAM_KEY)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("server.max_connections"), "{stderr}");

    let unknown = temp_file("unknown.toml", "[upstream]\nurll = \"http://x\"\n");
    let output = command()
        .args(["check-config", "--config", unknown.to_str().unwrap()])
        .env("CASTARI_API_KEY", UPSTREAM_KEY)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&output.stderr).contains("upstream.urll"));
}

#[test]
fn missing_upstream_key_exits_78_naming_the_field() {
    let output = command().args(["serve"]).output().unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("upstream.api_key_file"), "{stderr}");
    assert!(stderr.contains("CASTARI_API_KEY"), "{stderr}");
}

#[test]
fn check_config_accepts_the_shipped_example() {
    let output = command()
        .args(["check-config", "--config", "config/gateway.toml"])
        .env("CASTARI_API_KEY", UPSTREAM_KEY)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.contains(UPSTREAM_KEY));
}

#[tokio::test]
async fn healthcheck_subcommand_probes_a_running_gateway() {
    let sim = sim().await;
    let gw = GatewayProcess::start(&sim.url());
    let ok = command()
        .args(["healthcheck", "--url", &gw.url("/healthz")])
        .output()
        .unwrap();
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let down = command()
        .args([
            "healthcheck",
            "--url",
            &format!("http://127.0.0.1:{port}/healthz"),
        ])
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));

    let via_env = command()
        .args(["healthcheck"])
        .env("CASTARI_GATEWAY_LISTEN", gw.addr.to_string())
        .output()
        .unwrap();
    assert_eq!(via_env.status.code(), Some(0), "{via_env:?}");
}

#[tokio::test]
async fn sigterm_lets_in_flight_requests_finish() {
    let sim = sim_with(|c| c.invoke_latency_ms = 1_500).await;
    let mut gw = GatewayProcess::start(&sim.url());
    let c = client();
    let agent: serde_json::Value = c
        .post(gw.url("/api/v1/agents"))
        .json(&serde_json::json!({"name": "Drain", "source_type": "git", "git_repo_url": "https://example.invalid/r"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slug = agent["slug"].as_str().unwrap().to_string();
    let deployed = c
        .post(gw.url(&format!("/api/v1/agents/{slug}/deploy")))
        .send()
        .await
        .unwrap();
    assert!(deployed.status().is_success());

    let invoke_url = gw.url(&format!("/api/v1/agents/{slug}/invoke"));
    let in_flight = tokio::spawn(async move {
        client()
            .post(invoke_url)
            .json(&serde_json::json!({"prompt": "slow one"}))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    let killed = Command::new("kill")
        .args(["-TERM", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    let response = in_flight
        .await
        .unwrap()
        .expect("in-flight request completed");
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "completed");

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = gw.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "gateway did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0));
    assert!(client().get(gw.url("/healthz")).send().await.is_err());
    let logs = gw.logs().join("\n");
    assert!(
        !logs.contains(UPSTREAM_KEY),
        "the upstream key reached the log"
    );
}

#[tokio::test]
async fn sighup_reloads_the_file_and_the_log_level() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, "[telemetry]\nlog_level = \"info\"\n").unwrap();
    let gw = GatewayProcess::start_with_config(&sim.url(), &file);
    assert_eq!(get_status(&gw.url("/api/v1/usage")).await, 200);
    let shown = get_json(&gw.url("/admin/config")).await;
    assert_eq!(shown["version"], 1);
    assert!(shown["last_reload"].is_null());

    std::fs::write(
        &file,
        "[telemetry]\nlog_level = \"debug\"\n[retry]\nmax_attempts = 2\n",
    )
    .unwrap();
    let sent = Command::new("kill")
        .args(["-HUP", &gw.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let reloaded = eventually(Duration::from_secs(10), || {
        gw.logs()
            .iter()
            .any(|l| l.contains("configuration reloaded") && l.contains("version=2"))
    })
    .await;
    assert!(reloaded, "{:?}", gw.logs());
    let shown = get_json(&gw.url("/admin/config")).await;
    assert_eq!(shown["version"], 2);
    assert_eq!(shown["last_reload"]["trigger"], "signal");
    assert_eq!(shown["config"]["retry"]["max_attempts"], 2);
    assert_eq!(shown["config"]["telemetry"]["log_level"], "debug");
    assert!(
        !gw.logs().iter().any(|l| l.contains("DEBUG")),
        "nothing at debug level before"
    );
    let usage = client()
        .get(gw.url("/api/v1/usage"))
        .header("cache-control", "no-store")
        .send()
        .await
        .unwrap();
    assert_eq!(usage.status(), 200);
    let debug = eventually(Duration::from_secs(5), || {
        gw.logs().iter().any(|l| l.contains("DEBUG"))
    })
    .await;
    assert!(debug, "the new log level applies: {:?}", gw.logs());
    assert!(!gw.logs().join("\n").contains(UPSTREAM_KEY));
}

#[tokio::test]
async fn one_access_line_per_request_without_secrets() {
    let sim = sim().await;
    let gw = GatewayProcess::start_with(&sim.url(), &[("RUST_LOG", "debug")]);
    let c = client();
    let response = c
        .post(gw.url("/api/v1/agents/nope/secrets"))
        .bearer_auth(LOCAL_KEY)
        .header("x-request-id", "access-line-1")
        .json(&serde_json::json!({"key": "K", "value": "secret-value-xyz"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let ok = eventually(Duration::from_secs(5), || {
        gw.logs().iter().any(|l| l.contains("access-line-1"))
    })
    .await;
    assert!(ok, "no access line: {:?}", gw.logs());
    let logs = gw.logs();
    let access: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("access-line-1"))
        .collect();
    assert_eq!(access.len(), 1, "{access:?}");
    let line = access[0];
    for field in [
        "POST",
        "/api/v1/agents/nope/secrets",
        "crud",
        "404",
        "latency_ms",
        "upstream_ms",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    let all = logs.join("\n");
    for secret in [UPSTREAM_KEY, LOCAL_KEY, "secret-value-xyz"] {
        assert!(!all.contains(secret), "{secret} reached the log");
    }
}

/// Reads lines from a child's stdout until one contains `marker`.
fn read_until(lines: &mut impl Iterator<Item = std::io::Result<String>>, marker: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no line with {marker:?}");
        let line = lines.next().expect("process exited early").unwrap();
        if line.contains(marker) {
            return line;
        }
    }
}

#[tokio::test]
async fn demo_serves_the_simulator_through_the_gateway_without_a_client_key() {
    let mut child = command()
        .args(["demo", "--listen", "127.0.0.1:0", "--deploy-delay-ms", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = read_until(&mut lines, "gateway    http://");
    let base = line.split_whitespace().last().unwrap().to_string();
    let banner: Vec<String> = (0..12)
        .filter_map(|_| lines.next().and_then(Result::ok))
        .collect();
    assert!(
        banner
            .iter()
            .any(|l| l.contains(&format!("CASTARI_API_URL={base}"))),
        "{banner:?}"
    );
    assert!(banner.iter().any(|l| l.contains("curl")), "{banner:?}");

    let c = client();
    let created = c
        .post(format!("{base}/api/v1/agents"))
        .json(&serde_json::json!({"name": "Demo Agent", "source_type": "git", "git_repo_url": "https://github.com/castari/demo"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert!(c
        .post(format!("{base}/api/v1/agents/demo-agent/deploy"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    let invoked: serde_json::Value = c
        .post(format!("{base}/api/v1/agents/demo-agent/invoke"))
        .json(&serde_json::json!({"prompt": "hello"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(invoked["response_content"], "Echo: hello");
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sim_subcommand_serves_on_the_given_address() {
    let mut child = command()
        .args([
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "cast_k",
            "--crud-limit",
            "1/60s",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = read_until(&mut lines, "castari-sim listening on ");
    let base = line.rsplit(' ').next().unwrap().to_string();
    let c = client();
    assert_eq!(
        c.get(format!("{base}/api/v1/agents"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(format!("{base}/api/v1/agents"))
            .bearer_auth("cast_k")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{base}/api/v1/agents"))
            .bearer_auth("cast_k")
            .send()
            .await
            .unwrap()
            .status(),
        429
    );
    let _ = child.kill();
    let _ = child.wait();

    let bad = command()
        .args(["sim", "--crud-limit", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2), "clap rejects the flag");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("nonsense"));
}
