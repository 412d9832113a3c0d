//! Test harness: a simulator, a gateway in front of it, a client, and
//! helpers to read what the simulator saw.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use castari_gateway::config::Config;
use castari_gateway::types::Secret;
use castari_sim::{RecordedRequest, SimConfig, Simulator};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The upstream key the gateway holds in tests. It must never reach a client.
pub const UPSTREAM_KEY: &str = "cast_canary01_upstreamsecretkey";
/// A key a local tool might hold; it must never reach the upstream.
pub const LOCAL_KEY: &str = "local-tool-key-123";

/// A simulator accepting only [`UPSTREAM_KEY`], deploys synchronous, and
/// limits high enough that tests never trip them unless they mean to.
pub async fn sim() -> Simulator {
    sim_with(|_| {}).await
}

/// Like [`sim`], with changes.
pub async fn sim_with(tweak: impl FnOnce(&mut SimConfig)) -> Simulator {
    let mut config = SimConfig {
        api_keys: vec![UPSTREAM_KEY.to_string()],
        sync_deploy: true,
        crud_limit: "10000/60s".parse().unwrap(),
        invoke_limit: "10000/60s".parse().unwrap(),
        ..SimConfig::default()
    };
    tweak(&mut config);
    Simulator::start(config).await.unwrap()
}

/// Resolves when a test gateway is told to stop.
type Shutdown = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// A gateway running in this process.
pub struct TestGateway {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl TestGateway {
    /// Starts a gateway in front of `upstream` with the default config.
    pub async fn start(upstream: &str) -> Self {
        Self::start_with(upstream, |_| {}).await
    }

    /// Starts a gateway in front of `upstream`, after `tweak` edits the config.
    pub async fn start_with(upstream: &str, tweak: impl FnOnce(&mut Config)) -> Self {
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.upstream.url = url::Url::parse(upstream).unwrap();
        config.upstream_key = Some(Secret::new(UPSTREAM_KEY.to_string()));
        config.telemetry.access_log = false;
        // Like the simulator's: high enough that only shaping tests queue.
        config.shaper.crud_limit = "10000/60s".parse().unwrap();
        config.shaper.invoke_limit = "10000/60s".parse().unwrap();
        tweak(&mut config);
        let config = config.validate().unwrap();
        Self::spawn(config.server.listen, |listener, shutdown| async move {
            castari_gateway::run(config, listener, shutdown)
                .await
                .unwrap();
        })
        .await
    }

    /// Starts a gateway configured by the TOML `file` (read again on each
    /// reload, with `--listen 127.0.0.1:0 --upstream upstream` as flags and
    /// `env` as the environment), the way `castari-gateway serve` runs.
    pub async fn start_from_file(
        upstream: &str,
        file: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        let flags = castari_gateway::config::Flags {
            config: Some(file.to_path_buf()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            upstream: Some(url::Url::parse(upstream).unwrap()),
        };
        let env: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let load = move || castari_gateway::config::load(&flags, &env);
        let config = load().unwrap();
        let source = Some(file.to_path_buf());
        Self::spawn(config.server.listen, |listener, shutdown| async move {
            castari_gateway::run_reloadable(config, listener, shutdown, Box::new(load), source)
                .await
                .unwrap();
        })
        .await
    }

    /// Binds `listen` and runs `serve` on a task until [`stop`](Self::stop)
    /// or drop resolves its shutdown future.
    async fn spawn<F, Fut>(listen: SocketAddr, serve: F) -> Self
    where
        F: FnOnce(tokio::net::TcpListener, Shutdown) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async {
            let _ = rx.await;
        });
        let task = tokio::spawn(serve(listener, shutdown));
        Self {
            addr,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Signals shutdown and waits for the server to drain.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A plain client: no proxy, no redirects followed, short timeout.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// What the simulator saw, read over HTTP from `/_sim/requests`.
pub async fn seen(sim: &Simulator) -> Vec<RecordedRequest> {
    let body: Value = client()
        .get(format!("{}/_sim/requests", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    serde_json::from_value(body["requests"].clone()).unwrap()
}

/// GETs of exactly `path` (no query) the simulator answered.
pub async fn upstream_gets(sim: &Simulator, path: &str) -> usize {
    seen(sim)
        .await
        .iter()
        .filter(|r| r.method == "GET" && r.path == path)
        .count()
}

/// The last request the simulator saw.
pub async fn last_seen(sim: &Simulator) -> RecordedRequest {
    seen(sim).await.pop().expect("the simulator saw a request")
}

/// The value of header `name` in a recorded request.
pub fn header<'a>(request: &'a RecordedRequest, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Sends raw bytes on a fresh connection and returns everything read until
/// the server closes or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Deploys agent `slug` through `gw` (the simulator deploys at once).
pub async fn deploy_agent(gw: &TestGateway, slug: &str) {
    deploy_agent_at(&gw.url(""), slug).await;
}

/// Deploys agent `slug` through the gateway at `base` (`http://ADDR`).
pub async fn deploy_agent_at(base: &str, slug: &str) {
    let deploy = client()
        .post(format!("{base}/api/v1/agents/{slug}/deploy"))
        .send()
        .await
        .unwrap();
    assert!(
        deploy.status().is_success(),
        "deploy {slug}: {}",
        deploy.status()
    );
}

/// Polls `check` every 20 ms until it is true or `within` passes.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// Creates an agent through `gw` and returns its slug.
pub async fn create_agent(gw: &TestGateway, name: &str) -> String {
    create_agent_at(&gw.url(""), name).await
}

/// Creates an agent named `name` through the gateway at `base`
/// (`http://ADDR`) and returns its slug.
pub async fn create_agent_at(base: &str, name: &str) -> String {
    let response = client()
        .post(format!("{base}/api/v1/agents"))
        .json(&serde_json::json!({"name": name, "source_type": "git", "git_repo_url": "https://example.invalid/repo"}))
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "create agent: {}",
        response.status()
    );
    let agent: Value = response.json().await.unwrap();
    agent["slug"].as_str().unwrap().to_string()
}

/// `GET url`, the body as JSON.
pub async fn get_json(url: &str) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// `GET url`, the body as text (e.g. `/metrics`).
pub async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `GET url`, the status only.
pub async fn get_status(url: &str) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

/// Closed loops of `GET path`, interleaved so no client gets a head start: per client (its bearer token), `workers`
/// loops on its replica's URL, until `run_for`. Returns each client's
/// statuses.
pub async fn overload_many(
    clients: &[(&'static str, String, usize)],
    path: &str,
    run_for: Duration,
) -> HashMap<&'static str, Vec<u16>> {
    let results = Arc::new(Mutex::new(HashMap::new()));
    let stop = Instant::now() + run_for;
    let mut tasks = Vec::new();
    let most = clients.iter().map(|(_, _, w)| *w).max().unwrap_or(0);
    for round in 0..most {
        for (name, base, workers) in clients {
            if round >= *workers {
                continue;
            }
            let (url, results, name) = (format!("{base}{path}"), results.clone(), *name);
            tasks.push(tokio::spawn(async move {
                let c = client();
                loop {
                    let remaining = stop.saturating_duration_since(Instant::now());
                    if remaining.is_zero() {
                        break;
                    }
                    let sent = c.get(&url).bearer_auth(name).send();
                    let Ok(Ok(response)) = tokio::time::timeout(remaining, sent).await else {
                        break;
                    };
                    results
                        .lock()
                        .unwrap()
                        .entry(name)
                        .or_insert_with(Vec::new)
                        .push(response.status().as_u16());
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(results).unwrap().into_inner().unwrap()
}

pub fn jain(shares: &[f64]) -> f64 {
    let sum: f64 = shares.iter().sum();
    let squares: f64 = shares.iter().map(|x| x * x).sum();
    sum * sum / (shares.len() as f64 * squares)
}

/// Invokes with `{"prompt": "hi"}` at `url` as `token`; (status, body).
pub async fn invoke_hi(url: String, token: String) -> (u16, Value) {
    let response = client()
        .post(url)
        .bearer_auth(token)
        .json(&serde_json::json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json::<Value>().await.unwrap())
}
