//! Builds the [`Snapshot`] from the gateway's own state: the shapers'
//! lanes and queues, the cache's counters, the breaker, the console's
//! recent requests, the reload history and (keys mode) the ledger.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::AuthMode;
use crate::console::recent::{Client, Record, ShortPath};
use crate::state::AppState;

use super::model::{
    CacheView, CredentialView, LanePoint, LaneView, LastReload, Latency, Outcomes, Point, Req,
    Snapshot, Upstream, Waiter,
};

/// The newest requests a snapshot carries at most.
pub const RECENT_SHOWN: usize = 100;

/// Key ids to names, for labels.
pub type Names = HashMap<Arc<str>, String>;

/// The snapshot of `state` now, with the requests after `after` (the
/// newest [`RECENT_SHOWN`] when `None`). `keys` and `cluster` come from the
/// sampler, which reads them on its own schedule.
pub async fn snapshot(state: &AppState, after: Option<u64>) -> Snapshot {
    let names = names(state);
    let clock = (std::time::Instant::now(), crate::clock::unix_ms());
    let credentials = credentials(state, &names);
    let cache = cache(state).await;
    let point = Point {
        t: clock.1,
        hit_ratio: None,
        lanes: points(&credentials),
    };
    Snapshot {
        at: point.t,
        version: state.version,
        last_reload: state.status.last_attempt().map(|a| LastReload {
            at: a.at,
            version: a.version,
            applied: a.applied,
            error: a.error,
        }),
        mode: match state.broker.mode() {
            AuthMode::Open => "open".into(),
            AuthMode::Keys => "keys".into(),
        },
        replica: state.cluster.as_ref().map(|c| c.replica().to_string()),
        cluster: None,
        upstream: upstream(state),
        credentials,
        cache,
        keys: None,
        point,
        recent: state
            .console
            .recent
            .since(after, RECENT_SHOWN)
            .into_iter()
            .map(|r| request(r, &names, clock))
            .collect(),
    }
}

/// Key ids to names, from the key table as loaded.
fn names(state: &AppState) -> Names {
    state
        .broker
        .ring()
        .all()
        .iter()
        .map(|key| (key.id.clone(), key.record.name.clone()))
        .collect()
}

fn credentials(state: &AppState, names: &Names) -> Vec<CredentialView> {
    state
        .credentials
        .iter()
        .map(|credential| {
            let Some(shaper) = credential.shaper() else {
                return CredentialView {
                    name: credential.name().to_string(),
                    shaping: false,
                    sessions_active: 0,
                    lanes: Vec::new(),
                };
            };
            let snapshot = shaper.snapshot();
            CredentialView {
                name: credential.name().to_string(),
                shaping: true,
                sessions_active: snapshot.sessions_active,
                lanes: snapshot
                    .lanes
                    .into_iter()
                    .map(|lane| LaneView {
                        lane: lane.lane.to_string(),
                        limit: lane.limit,
                        window_ms: lane.window_ms,
                        used: lane.limit.saturating_sub(lane.budget_remaining),
                        remaining: lane.budget_remaining,
                        next_free_ms: lane.next_free_ms,
                        depth: lane.depth,
                        max_depth: lane.max_depth,
                        max_wait_ms: lane.max_wait_ms,
                        waiting: lane
                            .waiting
                            .into_iter()
                            .map(|w| Waiter {
                                position: w.position,
                                client: queue_client(&w.client, names),
                                agent: w.agent,
                                waited_ms: w.waited_ms,
                            })
                            .collect(),
                    })
                    .collect(),
            }
        })
        .collect()
}

fn points(credentials: &[CredentialView]) -> Vec<LanePoint> {
    credentials
        .iter()
        .flat_map(|c| {
            c.lanes.iter().map(|lane| LanePoint {
                credential: c.name.clone(),
                lane: lane.lane.clone(),
                used: lane.used,
                limit: lane.limit,
                depth: lane.depth,
            })
        })
        .collect()
}

async fn cache(state: &AppState) -> Option<CacheView> {
    let cache = state.cache.as_ref()?;
    cache.refresh_gauges().await;
    let summary = cache.glance();
    let lookups = summary.hits + summary.misses;
    Some(CacheView {
        entries: summary.entries,
        bytes: summary.bytes,
        max_bytes: summary.max_bytes,
        hits: summary.hits,
        misses: summary.misses,
        stale: summary.stale,
        coalesced: summary.coalesced,
        hit_ratio: (lookups > 0).then(|| summary.hits as f64 / lookups as f64),
        saved: summary.hits + summary.stale + summary.coalesced,
        agents_in_motion: summary
            .agents_in_motion
            .into_iter()
            .map(|m| m.slug)
            .collect(),
    })
}

fn upstream(state: &AppState) -> Upstream {
    let answers = state.console.recent.upstream_answers();
    let mut times: Vec<Duration> = answers.iter().map(|(time, _)| *time).collect();
    times.sort_unstable();
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 100.0).round() / 100.0;
    Upstream {
        breaker: state.breaker.circuit().as_str().to_string(),
        ready: state.readiness.recently_ok(Duration::from_secs(30)),
        latency_ms: Latency {
            p50: percentile(&times, 50).map(ms),
            p99: percentile(&times, 99).map(ms),
            samples: times.len(),
        },
        recent: Outcomes {
            answers: answers.len(),
            errors: answers.iter().filter(|(_, s)| *s >= 500).count(),
            throttled: answers.iter().filter(|(_, s)| *s == 429).count(),
        },
    }
}

/// The nearest-rank percentile `p` of `sorted`.
fn percentile(sorted: &[Duration], p: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// `record` as shown; `clock` is an `Instant` and the Unix milliseconds
/// at the same moment, to turn the record's `Instant` into a time.
fn request(record: Record, names: &Names, clock: (std::time::Instant, u64)) -> Req {
    let ago = clock.0.saturating_duration_since(record.at).as_millis() as u64;
    Req {
        seq: record.seq,
        t: clock.1.saturating_sub(ago),
        client: match &record.client {
            Client::Key(id) => key_label(id, names),
            Client::Peer(ip) => format!("ip:{ip}"),
            Client::Unknown => "unknown".into(),
        },
        method: record.method.to_string(),
        route: route_of(&record.path),
        status: record.status,
        cache: record.cache.to_string(),
        waited_ms: record.waited.as_secs_f64() * 1000.0,
        upstream_ms: record.upstream.map(|u| u.as_secs_f64() * 1000.0),
    }
}

/// The route template of a kept path; a path cut short loses its partial
/// last segment and shows `/…` instead.
fn route_of(path: &ShortPath) -> String {
    if !path.is_cut() {
        return super::template::of(path.as_str());
    }
    let whole = path.as_str().rsplit_once('/').map_or("", |(head, _)| head);
    format!("{}/…", super::template::of(whole))
}

/// A queue's client label (`key:ID`, a fingerprint, `ip:ADDR`) as shown.
fn queue_client(client: &str, names: &Names) -> String {
    match client.strip_prefix("key:") {
        Some(id) => key_label(id, names),
        None => client.to_string(),
    }
}

fn key_label(id: &str, names: &Names) -> String {
    match names.get(id) {
        Some(name) => format!("{name} ({id})"),
        None => id.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let ms = |n: u64| Duration::from_millis(n);
        let times: Vec<Duration> = (1..=100).map(ms).collect();
        assert_eq!(percentile(&times, 50), Some(ms(50)));
        assert_eq!(percentile(&times, 99), Some(ms(99)));
        assert_eq!(percentile(&[ms(7)], 99), Some(ms(7)));
        assert_eq!(percentile(&[], 50), None);
    }

    #[test]
    fn a_long_path_shows_its_whole_segments() {
        let long = format!("/api/v1/agents/bot/sessions/{}", "s".repeat(200));
        assert_eq!(
            route_of(&ShortPath::new(&long)),
            "/api/v1/agents/{slug}/sessions/…"
        );
        let short = ShortPath::new("/api/v1/agents/bot");
        assert_eq!(route_of(&short), "/api/v1/agents/{slug}");
    }

    #[test]
    fn keys_are_shown_by_name_and_id_and_others_as_they_are() {
        let names: Names = [(Arc::from("key_a"), "ci-bot".to_string())].into();
        assert_eq!(queue_client("key:key_a", &names), "ci-bot (key_a)");
        assert_eq!(queue_client("key:key_gone", &names), "key_gone");
        assert_eq!(queue_client("ip:127.0.0.1", &names), "ip:127.0.0.1");
    }
}
