//! The picture the page, `/admin/snapshot` and `castari-gateway status`
//! show: plain data, serialized by the gateway and read back by `status`.

use serde::{Deserialize, Serialize};

/// Everything shown at one moment.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Snapshot {
    /// Unix milliseconds, the gateway's clock.
    pub at: u64,
    /// The configuration version serving new requests.
    pub version: u64,
    /// The last reload attempt, if any.
    pub last_reload: Option<LastReload>,
    /// `open` or `keys`.
    pub mode: String,
    /// Cluster mode: this replica's id.
    pub replica: Option<String>,
    /// Cluster mode: Redis and the replicas seen in the last seconds.
    pub cluster: Option<ClusterInfo>,
    /// The upstream's health as this gateway saw it.
    pub upstream: Upstream,
    /// Each upstream credential and its lanes.
    pub credentials: Vec<CredentialView>,
    /// The response cache; `None` when it is off.
    pub cache: Option<CacheView>,
    /// Keys mode: each local key's spending; `None` in open mode.
    pub keys: Option<Vec<KeyRow>>,
    /// The newest history point.
    pub point: Point,
    /// Requests answered since the last snapshot (or the newest 100),
    /// newest first.
    pub recent: Vec<Req>,
}

/// The last reload attempt.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LastReload {
    /// Unix seconds.
    pub at: i64,
    /// The version serving after it.
    pub version: u64,
    /// Whether it was applied.
    pub applied: bool,
    /// Why it was refused.
    pub error: Option<String>,
}

/// Cluster mode's state.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ClusterInfo {
    /// `up` or `lost`.
    pub redis: String,
    /// Replica ids that reported in the last seconds (this one included
    /// while Redis answers).
    pub replicas: Vec<String>,
}

/// The upstream's health.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Upstream {
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    /// Whether the upstream answered recently (`/readyz`).
    pub ready: bool,
    /// Upstream time over the recent answers.
    pub latency_ms: Latency,
    /// Outcomes of the recent answers.
    pub recent: Outcomes,
}

/// Upstream time percentiles, milliseconds.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Latency {
    /// Median; `None` without samples.
    pub p50: Option<f64>,
    /// 99th percentile; `None` without samples.
    pub p99: Option<f64>,
    /// Upstream answers they are read from.
    pub samples: usize,
}

/// What the recent upstream answers were.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Outcomes {
    /// Upstream answers kept (at most 1024).
    pub answers: usize,
    /// Of those, 5xx.
    pub errors: usize,
    /// Of those, 429.
    pub throttled: usize,
}

/// One upstream credential.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct CredentialView {
    /// Its name (`default` or `[upstream.credentials.NAME]`).
    pub name: String,
    /// Whether the shaper is on (else `lanes` is empty).
    pub shaping: bool,
    /// Sessions with a turn in flight or waiting.
    pub sessions_active: usize,
    /// CRUD and invoke.
    pub lanes: Vec<LaneView>,
}

/// One lane of a credential's budget.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LaneView {
    /// `crud` or `invoke`.
    pub lane: String,
    /// Sends per window.
    pub limit: u32,
    /// The window.
    pub window_ms: u64,
    /// Sends counted in the current window.
    pub used: u32,
    /// Sends the budget allows now.
    pub remaining: u32,
    /// Time until the next send may go; 0: now.
    pub next_free_ms: u64,
    /// Waiters now.
    pub depth: usize,
    /// Most waiters allowed.
    pub max_depth: usize,
    /// Longest wait allowed.
    pub max_wait_ms: u64,
    /// The waiters, next to leave first.
    pub waiting: Vec<Waiter>,
}

/// One waiter.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Waiter {
    /// 1 = next to leave.
    pub position: usize,
    /// The client: a key's name and id, or an address.
    pub client: String,
    /// The agent, when the route names one.
    pub agent: Option<String>,
    /// Time waited so far.
    pub waited_ms: u64,
}

/// The response cache.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct CacheView {
    /// Entries held.
    pub entries: u64,
    /// Bytes held.
    pub bytes: u64,
    /// `cache.max_bytes`.
    pub max_bytes: u64,
    /// Answers served from memory since start.
    pub hits: u64,
    /// Answers fetched upstream.
    pub misses: u64,
    /// Stale answers served.
    pub stale: u64,
    /// Misses that joined a fetch in flight.
    pub coalesced: u64,
    /// Hits over hits and misses since start; `None` before any.
    pub hit_ratio: Option<f64>,
    /// Upstream reads saved: hits, stale answers and coalesced misses.
    pub saved: u64,
    /// Agents the cache fetches fresh now (deploying, stopping, …).
    pub agents_in_motion: Vec<String>,
}

/// One local key's spending.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct KeyRow {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Whether it was revoked.
    pub revoked: bool,
    /// Today's (UTC) usage.
    pub today: Today,
    /// Its USD budget, if it has one.
    pub budget: Option<BudgetView>,
}

/// A key's usage today.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Today {
    /// Requests answered.
    pub requests: u64,
    /// Invocations billed.
    pub invocations: u64,
    /// USD, an exact decimal string.
    pub cost_usd: String,
}

/// A key's budget and its forecast.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct BudgetView {
    /// The limit, USD (exact decimal string).
    pub limit_usd: String,
    /// `day` or `month`.
    pub period: String,
    /// Spent this period, USD (exact decimal string).
    pub spent_usd: String,
    /// Spent over limit (for the bar; not for accounting).
    pub used_ratio: f64,
    /// The UTC day the budget runs out at this period's rate so far,
    /// `YYYY-MM-DD`; `None` when nothing is spent.
    pub runs_out: Option<String>,
}

/// One history point: a second of the fifteen-minute charts.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Point {
    /// Unix milliseconds.
    pub t: u64,
    /// Cache hits over lookups in the last second; `None` without any.
    pub hit_ratio: Option<f64>,
    /// Each lane's use and queue.
    pub lanes: Vec<LanePoint>,
}

/// One lane in a [`Point`].
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct LanePoint {
    /// The credential.
    pub credential: String,
    /// `crud` or `invoke`.
    pub lane: String,
    /// Sends in the window.
    pub used: u32,
    /// The window's limit.
    pub limit: u32,
    /// Waiters.
    pub depth: usize,
}

/// One answered request.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Req {
    /// Its place in the gateway's count.
    pub seq: u64,
    /// Unix milliseconds when it was answered.
    pub t: u64,
    /// The client: a key's name and id, or an address.
    pub client: String,
    /// The method.
    pub method: String,
    /// The route template (`/api/v1/agents/{slug}`): never an id or a query.
    pub route: String,
    /// The status.
    pub status: u16,
    /// `hit`, `miss`, `stale`, `bypass` or empty.
    pub cache: String,
    /// Time waited in the queue or on others.
    pub waited_ms: f64,
    /// Time the upstream took, when asked.
    pub upstream_ms: Option<f64>,
}
