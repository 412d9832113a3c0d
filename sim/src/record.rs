//! What the simulator saw: the request log and the stats of `/_sim/*`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One request as received.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Raw path, still percent-encoded.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// Every header, in order, Authorization included.
    pub headers: Vec<(String, String)>,
    /// Body length: `Content-Length` when sent, else the bytes read.
    pub body_len: u64,
    /// Arrival time, Unix milliseconds.
    pub received_at_ms: u64,
    /// The status answered; 0 when the connection was dropped.
    pub status: u16,
}

/// `/_sim/stats`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    /// `/api/v1` requests received.
    pub total: u64,
    /// Requests per route template, e.g. `GET /api/v1/agents/{slug}`.
    pub routes: BTreeMap<String, u64>,
    /// Per limit class: `crud`, `invoke`.
    pub classes: BTreeMap<String, ClassStats>,
    /// 401s answered.
    pub unauthorized: u64,
}

/// Counters of one limit class.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ClassStats {
    /// Requests admitted per window.
    pub limit: u32,
    /// Window length in milliseconds.
    pub window_ms: u64,
    /// Requests admitted.
    pub admitted: u64,
    /// 429s issued.
    pub limited: u64,
    /// Most admissions in any sliding window of `window_ms`, per key,
    /// whatever the window kind.
    pub max_in_window: u64,
}

/// Most requests kept in the log.
pub const LOG_CAPACITY: usize = 10_000;
