//! The no-leak test's harness: the gateway binary with every byte of its
//! output kept, and a recorder of every answer.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::binary::command;
use crate::support::client;

use super::*;
// ---------------------------------------------------------------------------
// The gateway binary, every byte of its stdout and stderr collected.

pub struct GatewayProc {
    pub child: Child,
    pub addr: SocketAddr,
    pub lines: Arc<Mutex<Vec<String>>>,
    pub pumps: Vec<std::thread::JoinHandle<()>>,
}

impl GatewayProc {
    /// Runs `serve --config FILE` with the canary as the upstream key and
    /// waits for the JSON "listening" line.
    pub async fn start(config: &Path) -> Self {
        let mut child = command()
            .args(["serve", "--config", config.to_str().unwrap()])
            // `command()` clears the other variables the gateway reads
            // (config, listen, upstream URL, RUST_LOG); the admin key is
            // replaced, not inherited.
            .env_remove("CASTARI_GATEWAY_AUTH_MODE")
            .env_remove("CASTARI_GATEWAY_ALLOW_OPEN_ON_NETWORK")
            .env("CASTARI_API_KEY", CANARY)
            .env("CASTARI_GATEWAY_ADMIN_KEY", ADMIN_KEY)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let pumps = vec![
            pump(child.stdout.take().unwrap(), "", lines.clone()),
            pump(child.stderr.take().unwrap(), "stderr: ", lines.clone()),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let found = lines.lock().unwrap().iter().find_map(|l| listening_addr(l));
            if let Some(addr) = found {
                break addr;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "gateway exited early ({status}): {:?}",
                    lines.lock().unwrap()
                );
            }
            assert!(Instant::now() < deadline, "gateway did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        Self {
            child,
            addr,
            lines,
            pumps,
        }
    }

    /// SIGTERM, wait for a graceful exit (so the log flushes), then every line.
    pub async fn stop(mut self) -> (Option<i32>, Vec<String>) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        let code = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        for pump in self.pumps.drain(..) {
            let _ = pump.join();
        }
        let lines = self.lines.lock().unwrap().clone();
        (code, lines)
    }
}

impl Drop for GatewayProc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies `stream` line by line (lossy: a bad byte must not stop the pump).
pub fn pump(
    stream: impl Read + Send + 'static,
    tag: &'static str,
    sink: Arc<Mutex<Vec<String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end_matches(['\r', '\n']);
                    sink.lock().unwrap().push(format!("{tag}{text}"));
                }
            }
        }
    })
}

pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["message"] != "castari-gateway listening" {
        return None;
    }
    v["addr"].as_str()?.parse().ok()
}

pub fn config_text(upstream: &str, db: &Path) -> String {
    let db = serde_json::to_string(db.to_str().unwrap()).unwrap();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body_bytes = {MAX_BODY}
body_idle_timeout_ms = 500
shutdown_grace_ms = 3000

[upstream]
url = "{upstream}"
connect_timeout_ms = 1000
crud_timeout_ms = 1000
long_timeout_ms = 3000
invoke_timeout_ms = 3000
download_idle_timeout_ms = 1000

[telemetry]
log_format = "json"
log_level = "debug"
access_log = true

[shaper]
crud_limit = "10000/60s"
invoke_limit = "10000/60s"

[auth]
mode = "keys"
db_path = {db}
ledger_flush_ms = 50
invoke_reserve_usd = "0.0001"
"#
    )
}

// ---------------------------------------------------------------------------
// Send and record: every answer's status line, headers and body bytes.

pub struct Exchange {
    pub label: String,
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// A local key as issued.
#[derive(Clone)]
pub struct Key {
    pub name: String,
    pub token: String,
    pub id: String,
}

/// A secret and the one answer allowed to show it.
pub struct Issued {
    pub name: String,
    pub secret: String,
    pub exchange: usize,
}

pub struct Recorder {
    pub base: String,
    pub sim: String,
    pub log: Vec<Exchange>,
    pub issued: Vec<Issued>,
}

impl Recorder {
    pub fn req(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let request = client().request(method, format!("{}{path}", self.base));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends `request` and keeps everything that came back.
    pub async fn record(&mut self, label: String, request: RequestBuilder) -> (u16, Value) {
        let (status, head, body) = match request.send().await {
            Err(error) => (0, format!("client error: {error}\r\n"), Vec::new()),
            Ok(mut response) => {
                let status = response.status().as_u16();
                let mut head = format!("{:?} {}\r\n", response.version(), response.status());
                for (name, value) in response.headers() {
                    let value = String::from_utf8_lossy(value.as_bytes());
                    let _ = write!(head, "{name}: {value}\r\n");
                }
                let mut body = Vec::new();
                loop {
                    match response.chunk().await {
                        Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                        Ok(None) => break,
                        Err(_) => {
                            head.push_str("x-test-note: the body ended with an error\r\n");
                            break;
                        }
                    }
                }
                (status, head, body)
            }
        };
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        self.log.push(Exchange {
            label,
            status,
            head,
            body,
        });
        (status, value)
    }

    /// `method path` with `token` as Bearer (labelled `who`) and an
    /// optional JSON body.
    pub async fn call(
        &mut self,
        who: &str,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let label = format!("{method} {path} as {who}");
        let mut request = self.req(method, path, token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.record(label, request).await
    }

    /// `call` with a local key.
    pub async fn with(
        &mut self,
        key: &Key,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        self.call(&key.name, Some(&key.token), method, path, body)
            .await
    }

    /// Like [`with`](Self::with), but the answer must be a success.
    pub async fn ok(
        &mut self,
        key: &Key,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Value {
        let (status, value) = self.with(key, method.clone(), path, body).await;
        assert!(
            (200..400).contains(&status),
            "{method} {path} as {}: {status} {value}",
            key.name
        );
        value
    }

    /// Writes `request` on a fresh connection and records the raw answer.
    pub async fn raw(&mut self, label: &str, request: &[u8]) -> u16 {
        let addr = self.base.trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        let split = find(&out, b"\r\n\r\n").map_or(out.len(), |i| i + 4);
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        self.log.push(Exchange {
            label: format!("raw {label}"),
            status,
            head,
            body: out[split..].to_vec(),
        });
        status
    }

    /// Keeps the secret of the token in the last answer (`key`); only that
    /// answer may show it.
    pub fn issue(&mut self, name: &str, answer: &Value) -> Key {
        let token = answer["key"].as_str().unwrap().to_string();
        let id = answer["info"]["id"].as_str().unwrap().to_string();
        let secret = token
            .strip_prefix("cgw_")
            .and_then(|rest| rest.split_once('_'))
            .map(|(_, secret)| secret.to_string())
            .unwrap_or_else(|| panic!("not a local key token: {name}"));
        assert!(secret.len() >= 32, "{name}: a short secret");
        self.issued.push(Issued {
            name: name.to_string(),
            secret,
            exchange: self.log.len() - 1,
        });
        Key {
            name: name.to_string(),
            token,
            id,
        }
    }

    /// `POST /admin/keys` with the admin key.
    pub async fn create_key(&mut self, spec: Value) -> Key {
        let name = spec["name"].as_str().unwrap().to_string();
        let (status, answer) = self
            .call(
                "admin key",
                Some(ADMIN_KEY),
                Method::POST,
                "/admin/keys",
                Some(spec),
            )
            .await;
        assert_eq!(status, 201, "create {name}: {answer}");
        self.issue(&name, &answer)
    }

    /// `POST /admin/keys/{id}/rotate` with the admin key.
    pub async fn rotate(&mut self, key: &Key, grace_secs: u64) -> Key {
        let path = format!("/admin/keys/{}/rotate", key.id);
        let body = json!({ "grace_secs": grace_secs });
        let (status, answer) = self
            .call(
                "admin key",
                Some(ADMIN_KEY),
                Method::POST,
                &path,
                Some(body),
            )
            .await;
        assert_eq!(status, 200, "rotate {}: {answer}", key.name);
        self.issue(&format!("{} (rotated)", key.name), &answer)
    }

    /// Replaces the simulator's fault knobs.
    pub async fn faults(&self, faults: Value) {
        let response = client()
            .post(format!("{}/_sim/faults", self.sim))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "faults: {}",
            response.status()
        );
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A short piece of `hay` around a match, on one line.
pub fn excerpt(hay: &[u8], at: usize, len: usize) -> String {
    let start = at.saturating_sub(60);
    let end = (at + len + 60).min(hay.len());
    String::from_utf8_lossy(&hay[start..end]).replace(['\r', '\n'], " ")
}

pub fn count(statuses: &[u16], wanted: impl Fn(u16) -> bool) -> usize {
    statuses.iter().filter(|s| wanted(**s)).count()
}
