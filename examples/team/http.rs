//! One simulated client's HTTP calls, and the record of every answer it got.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

/// How long a client waits for an answer (30 s, like the SDK's 300 s scaled
/// down 10x); a timeout counts as a 5xx.
pub(crate) const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Header carrying a unique id per request, so the simulator's log can be
/// merged across fetches without duplicates.
pub(crate) const REQ_HEADER: &str = "x-team-req";

/// The kinds of client in the mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Dashboard,
    Deployer,
    Bot,
    Reporter,
}

impl Class {
    pub(crate) const ALL: [Class; 4] = [
        Class::Dashboard,
        Class::Deployer,
        Class::Bot,
        Class::Reporter,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Class::Dashboard => "dashboard",
            Class::Deployer => "deployer",
            Class::Bot => "bot",
            Class::Reporter => "reporter",
        }
    }
}

/// Whether an answer came from a cache in front of the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cached {
    /// No cache header: the route is not cached (or no cache is there).
    Uncached,
    /// A cache header saying the upstream was asked (MISS, EXPIRED, BYPASS...).
    Miss,
    /// A fresh entry (`X-Cache: HIT`, nginx `HIT`).
    Hit,
    /// An entry past its TTL (`X-Cache: STALE`, nginx `STALE` or `UPDATING`).
    Stale,
}

impl Cached {
    fn from_headers(headers: &HeaderMap) -> Self {
        let value = headers
            .get("x-cache")
            .or_else(|| headers.get("x-cache-status"))
            .and_then(|v| v.to_str().ok());
        match value.map(str::to_ascii_uppercase).as_deref() {
            None | Some("") => Cached::Uncached,
            Some("HIT") => Cached::Hit,
            Some("STALE" | "UPDATING") => Cached::Stale,
            Some(_) => Cached::Miss,
        }
    }
}

/// One answered (or failed) request of a measured client.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) class: Class,
    /// Index of the client within its class.
    pub(crate) client: usize,
    /// HTTP status; 0 for a connection error or a timeout.
    pub(crate) status: u16,
    pub(crate) latency_ms: f64,
    pub(crate) cached: Cached,
    /// The `Age` header, seconds.
    pub(crate) age_s: Option<u64>,
}

/// Every record of the run, plus the request ids and the requests in flight.
#[derive(Default)]
pub(crate) struct Recorder {
    records: Mutex<Vec<Record>>,
    next_id: AtomicU64,
    in_flight: AtomicU64,
}

impl Recorder {
    pub(crate) fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Requests sent and never answered (left over when the run was cut).
    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    fn push(&self, record: Record) {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
}

/// What a call returned.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) body: Option<Value>,
}

impl Answer {
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A string field of a JSON object body.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.body.as_ref()?.get(name)?.as_str()
    }

    /// Castari's "Agent not active" refusal (400).
    pub(crate) fn not_active(&self) -> bool {
        self.status == 400 && self.field("detail") == Some("Agent not active")
    }
}

/// One client: its own connection pool and its own `Authorization`.
pub(crate) struct Caller {
    http: reqwest::Client,
    base: String,
    auth: String,
    /// `None` for the setup client, whose calls are not recorded.
    class: Option<Class>,
    client: usize,
    recorder: Arc<Recorder>,
}

impl Caller {
    pub(crate) fn new(
        base: &str,
        token: &str,
        class: Option<Class>,
        client: usize,
        recorder: Arc<Recorder>,
    ) -> reqwest::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .no_proxy()
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
            class,
            client,
            recorder,
        })
    }

    /// Sends one request and records its answer. Never retries.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: &[(&'static str, String)],
    ) -> Answer {
        let id = self.recorder.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("authorization", &self.auth)
            .header(REQ_HEADER, id.to_string())
            .header("accept", "application/json");
        for (name, value) in extra {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.recorder.in_flight.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let (status, cached, age_s, body) = match request.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                let cached = Cached::from_headers(response.headers());
                let age_s = response
                    .headers()
                    .get("age")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                match response.bytes().await {
                    Ok(bytes) => (status, cached, age_s, serde_json::from_slice(&bytes).ok()),
                    Err(_) => (0, Cached::Uncached, None, None),
                }
            }
            Err(_) => (0, Cached::Uncached, None, None),
        };
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.recorder.in_flight.fetch_sub(1, Ordering::Relaxed);
        if let Some(class) = self.class {
            self.recorder.push(Record {
                class,
                client: self.client,
                status,
                latency_ms,
                cached,
                age_s,
            });
        }
        Answer { status, body }
    }
}
