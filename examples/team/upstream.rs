//! What the upstream saw: the simulator's request log (`GET /_sim/requests`,
//! fetched several times during the run and merged, since it keeps only the
//! last 10,000 requests) and its counters (`GET /_sim/stats`), turned into
//! send windows, budget use and the order of session turns.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::http::REQ_HEADER;
use crate::roles::TURNS;

/// The simulator keeps this many requests in its log.
const SIM_LOG_CAPACITY: usize = 10_000;
/// Arrival times are whole milliseconds: a turn arriving this close to the
/// previous turn's answer is not counted as overlapping.
const CLOCK_SLACK_MS: u64 = 2;

/// One request as the simulator logged it.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    received_at_ms: u64,
    status: u16,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `POST /api/v1/agents/{slug}/invoke`: the invoke lane.
    fn is_invoke(&self) -> bool {
        self.method == "POST"
            && self.path.starts_with("/api/v1/agents/")
            && self.path.ends_with("/invoke")
    }

    /// Answered with something else than a 429: the upstream ran it and it
    /// spent budget.
    fn admitted(&self) -> bool {
        self.status != 429
    }
}

#[derive(Deserialize)]
struct Log {
    requests: Vec<Seen>,
}

/// The simulator's log, merged over several fetches.
pub(crate) struct SimLog {
    http: reqwest::Client,
    base: String,
    seen: Vec<Seen>,
    keys: HashSet<(String, u64, u16, String)>,
    /// A fetch found a full log none of whose entries was known: requests
    /// between two fetches may be missing.
    pub(crate) gap: bool,
}

impl SimLog {
    pub(crate) fn new(base: &str) -> reqwest::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder().no_proxy().build()?,
            base: base.trim_end_matches('/').to_string(),
            seen: Vec::new(),
            keys: HashSet::new(),
            gap: false,
        })
    }

    /// Fetches the log and adds the requests not seen yet, in log order.
    pub(crate) async fn merge(&mut self) -> reqwest::Result<()> {
        let log: Log = self
            .http
            .get(format!("{}/_sim/requests", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let known_before = !self.keys.is_empty();
        let mut overlap = false;
        let full = log.requests.len() >= SIM_LOG_CAPACITY;
        for seen in log.requests {
            let key = (
                seen.header(REQ_HEADER).unwrap_or("").to_string(),
                seen.received_at_ms,
                seen.status,
                format!("{} {}", seen.method, seen.path),
            );
            if self.keys.insert(key) {
                self.seen.push(seen);
            } else {
                overlap = true;
            }
        }
        if full && known_before && !overlap {
            self.gap = true;
        }
        Ok(())
    }

    /// `GET /_sim/stats` as it is.
    pub(crate) async fn stats(&self) -> reqwest::Result<Value> {
        self.http
            .get(format!("{}/_sim/stats", self.base))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    pub(crate) fn seen(&self) -> &[Seen] {
        &self.seen
    }
}

/// The limits the simulator enforces, read from its stats.
pub(crate) struct Limits {
    pub(crate) window_ms: u64,
    pub(crate) crud: u64,
    pub(crate) invoke: u64,
}

impl Limits {
    pub(crate) fn from_stats(stats: &Value) -> Option<Self> {
        let class = |name: &str, field: &str| stats.get("classes")?.get(name)?.get(field)?.as_u64();
        Some(Self {
            window_ms: class("crud", "window_ms")?,
            crud: class("crud", "limit")?,
            invoke: class("invoke", "limit")?,
        })
    }
}

/// Most arrival times (sorted) inside any half-open window of `window_ms`.
fn max_in_window(times: &[u64], window_ms: u64) -> usize {
    let mut first = 0;
    let mut best = 0;
    for (last, t) in times.iter().enumerate() {
        while t - times[first] >= window_ms {
            first += 1;
        }
        best = best.max(last + 1 - first);
    }
    best
}

/// Session turns as the upstream saw them: for each session with at least
/// two admitted turns, whether they arrived out of order and how many
/// turns arrived before the previous turn's answer (its arrival plus the
/// invoke latency when it ran, its arrival when it was refused).
fn sessions(seen: &[&Seen], invoke_latency_ms: u64) -> Value {
    let mut by_session: BTreeMap<&str, Vec<(u64, u64, u16)>> = BTreeMap::new();
    for s in seen.iter().filter(|s| s.is_invoke() && s.admitted()) {
        let (Some(session), Some(turn)) = (s.header("x-team-session"), s.header("x-team-turn"))
        else {
            continue;
        };
        let turn = turn.parse().unwrap_or(0);
        by_session
            .entry(session)
            .or_default()
            .push((s.received_at_ms, turn, s.status));
    }
    let (mut checked, mut reordered, mut pairs, mut overlapped, mut complete) = (0, 0, 0, 0, 0);
    for turns in by_session.values_mut() {
        turns.sort_by_key(|(at, _, _)| *at);
        if turns.len() as u64 == TURNS {
            complete += 1;
        }
        if turns.len() < 2 {
            continue;
        }
        checked += 1;
        if turns.windows(2).any(|w| w[1].1 <= w[0].1) {
            reordered += 1;
        }
        for w in turns.windows(2) {
            let (at, _, status) = w[0];
            let answered = if (200..300).contains(&status) {
                at + invoke_latency_ms
            } else {
                at
            };
            pairs += 1;
            if w[1].0 + CLOCK_SLACK_MS < answered {
                overlapped += 1;
            }
        }
    }
    json!({
        "sessions_upstream": by_session.len(),
        "sessions_all_turns_upstream": complete,
        "sessions_checked": checked,
        "sessions_reordered": reordered,
        "turn_pairs": pairs,
        "turn_pairs_overlapped": overlapped,
    })
}

/// Everything the table needs from the upstream's side. `start_ms..end_ms`
/// is the measured interval (setup excluded); windows are taken over the
/// whole log, setup included, since the limit applies to all of it.
pub(crate) fn analyse(
    log: &SimLog,
    stats: &Value,
    start_ms: u64,
    end_ms: u64,
    invoke_latency_ms: u64,
) -> Value {
    let mut all: Vec<&Seen> = log.seen().iter().collect();
    all.sort_by_key(|s| s.received_at_ms);
    let Some(limits) = Limits::from_stats(stats) else {
        return json!({ "error": "no limits in /_sim/stats" });
    };
    let lane = |invoke: bool, admitted_only: bool| -> Vec<u64> {
        all.iter()
            .filter(|s| s.is_invoke() == invoke && (!admitted_only || s.admitted()))
            .map(|s| s.received_at_ms)
            .collect()
    };
    let measured: Vec<&Seen> = all
        .iter()
        .copied()
        .filter(|s| (start_ms..end_ms).contains(&s.received_at_ms))
        .collect();
    let count = |f: &dyn Fn(&Seen) -> bool| measured.iter().filter(|s| f(s)).count();
    let windows = (end_ms - start_ms) as f64 / limits.window_ms as f64;
    // At the simulator (and by default at the gateway) an invocation
    // spends both budgets, so every admitted request spends CRUD budget.
    let crud_spent = count(&|s| s.admitted());
    let invoke_spent = count(&|s| s.is_invoke() && s.admitted());
    json!({
        "requests": measured.len(),
        "requests_incl_setup": all.len(),
        "status_429": count(&|s| s.status == 429),
        "invoke_requests": count(&|s| s.is_invoke()),
        "window_ms": limits.window_ms,
        "crud_limit": limits.crud,
        "invoke_limit": limits.invoke,
        "max_window_crud_lane": max_in_window(&lane(false, false), limits.window_ms),
        "max_window_invoke_lane": max_in_window(&lane(true, false), limits.window_ms),
        "max_window_crud_lane_admitted": max_in_window(&lane(false, true), limits.window_ms),
        "max_window_invoke_lane_admitted": max_in_window(&lane(true, true), limits.window_ms),
        "crud_budget_used_pct": 100.0 * crud_spent as f64 / (limits.crud as f64 * windows),
        "invoke_budget_used_pct": 100.0 * invoke_spent as f64 / (limits.invoke as f64 * windows),
        "crud_spent": crud_spent,
        "invoke_spent": invoke_spent,
        "sessions": sessions(&measured, invoke_latency_ms),
        "log_gap": log.gap,
        "sim_stats": stats,
    })
}

#[cfg(test)]
mod tests {
    use super::max_in_window;

    #[test]
    fn window_counts_half_open() {
        assert_eq!(max_in_window(&[], 6000), 0);
        assert_eq!(max_in_window(&[0, 5999, 6000], 6000), 2);
        assert_eq!(max_in_window(&[0, 1, 2, 10_000], 6000), 3);
    }
}
