//! The one task that looks at the gateway for the views: once a second it
//! records a history point and, while a page or stream watches, builds one
//! snapshot for all of them and the events since the last one (queue joins
//! and leaves, breaker changes, reloads), found by comparing the two.
//!
//! Comparing once a second keeps the request path free of the views: a
//! wait shorter than a second may show in no event (the metrics count
//! every one).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::state::AppState;

use super::model::Snapshot;

/// How often the sampler looks.
pub const EVERY: Duration = Duration::from_secs(1);

/// The keys table (a read of the month's ledger) is read every this many
/// ticks while watched, and shown as last read in between.
const KEYS_EVERY: u64 = 5;

/// Starts the sampler over whatever version `current` returns each tick.
/// It runs until aborted.
pub fn spawn(
    current: impl Fn() -> AppState + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sampler = Sampler::default();
        loop {
            ticks.tick().await;
            sampler.tick(&current()).await;
        }
    })
}

/// What the last tick saw.
#[derive(Debug, Default)]
struct Sampler {
    ticks: u64,
    /// The newest request a published snapshot carried.
    last_seq: Option<u64>,
    /// Cache hits and misses at the last tick.
    lookups: Option<(u64, u64)>,
    /// Waiters at the last published snapshot.
    waiters: Vec<Seen>,
    breaker: Option<String>,
    reload: Option<(i64, u64, bool)>,
    /// The keys table as last read, and at which tick.
    keys: Option<(u64, Option<Vec<super::model::KeyRow>>)>,
}

/// A waiter, recognised across snapshots by where it waits, who it is and
/// when it came.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    credential: String,
    lane: String,
    client: String,
    agent: Option<String>,
    since_ms: u64,
}

/// Two sightings of a waiter may differ this much in their arrival time
/// (rounding of `waited_ms`).
const SAME_WAITER_MS: u64 = 50;

impl Sampler {
    async fn tick(&mut self, state: &AppState) {
        self.ticks += 1;
        let console = &state.console;
        let cluster = match &state.cluster {
            Some(cluster) => Some(super::replicas::info(cluster, true).await),
            None => None,
        };
        if self.ticks.is_multiple_of(60) {
            console.sessions.tidy();
        }
        let watched = console.watchers() > 0;
        let after = if watched {
            self.last_seq
        } else {
            Some(u64::MAX)
        };
        let mut snapshot = super::build::snapshot(state, after).await;
        snapshot.point.hit_ratio = self.hit_ratio(&snapshot);
        snapshot.cluster = cluster;
        if let Ok(point) = serde_json::to_string(&snapshot.point) {
            console.record_point(Arc::from(point));
        }
        if !watched {
            // Nothing to compare against when a page opens later.
            self.waiters.clear();
            self.keys = None;
            self.last_seq = console.recent.next_seq().checked_sub(1);
            return;
        }
        snapshot.keys = match &self.keys {
            Some((read_at, rows)) if self.ticks - read_at < KEYS_EVERY => rows.clone(),
            _ => {
                let rows = super::keys::rows(state).await;
                self.keys = Some((self.ticks, rows.clone()));
                rows
            }
        };
        if let Some(newest) = snapshot.recent.first() {
            self.last_seq = Some(newest.seq);
        }
        for (event, data) in self.events(&snapshot) {
            console.publish(event, data);
        }
        if let Ok(data) = serde_json::to_string(&snapshot) {
            console.publish("snapshot", data);
        }
    }

    /// Cache hits over lookups since the last tick.
    fn hit_ratio(&mut self, snapshot: &Snapshot) -> Option<f64> {
        let cache = snapshot.cache.as_ref()?;
        let now = (cache.hits, cache.misses);
        let before = self.lookups.replace(now)?;
        let hits = now.0.saturating_sub(before.0);
        let lookups = hits + now.1.saturating_sub(before.1);
        (lookups > 0).then(|| hits as f64 / lookups as f64)
    }

    /// What changed since the last snapshot, as events to publish.
    fn events(&mut self, snapshot: &Snapshot) -> Vec<(&'static str, String)> {
        let mut events = Vec::new();
        let seen = waiters(snapshot);
        for (kind, gone, there) in [
            ("leave", &self.waiters, &seen),
            ("join", &seen, &self.waiters),
        ] {
            for waiter in gone.iter().filter(|w| !there.iter().any(|t| same(w, t))) {
                let event = json!({
                    "kind": kind,
                    "credential": waiter.credential,
                    "lane": waiter.lane,
                    "client": waiter.client,
                    "agent": waiter.agent,
                    "waited_ms": snapshot.at.saturating_sub(waiter.since_ms),
                });
                events.push(("queue", event.to_string()));
            }
        }
        self.waiters = seen;
        let breaker = &snapshot.upstream.breaker;
        if let Some(before) = self.breaker.replace(breaker.clone()) {
            if before != *breaker {
                events.push((
                    "breaker",
                    json!({ "from": before, "to": breaker }).to_string(),
                ));
            }
        }
        if let Some(attempt) = &snapshot.last_reload {
            let key = (attempt.at, attempt.version, attempt.applied);
            if self.reload.replace(key) != Some(key) {
                events.push(("reload", json!(attempt).to_string()));
            }
        }
        events
    }
}

fn waiters(snapshot: &Snapshot) -> Vec<Seen> {
    let mut seen = Vec::new();
    for credential in &snapshot.credentials {
        for lane in &credential.lanes {
            for waiter in &lane.waiting {
                seen.push(Seen {
                    credential: credential.name.clone(),
                    lane: lane.lane.clone(),
                    client: waiter.client.clone(),
                    agent: waiter.agent.clone(),
                    since_ms: snapshot.at.saturating_sub(waiter.waited_ms),
                });
            }
        }
    }
    seen
}

fn same(a: &Seen, b: &Seen) -> bool {
    a.credential == b.credential
        && a.lane == b.lane
        && a.client == b.client
        && a.agent == b.agent
        && a.since_ms.abs_diff(b.since_ms) <= SAME_WAITER_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::model::{CredentialView, LaneView, LastReload, Waiter};

    fn at(t: u64, waiting: &[(&str, u64)], breaker: &str, reload: Option<u64>) -> Snapshot {
        let waiting = waiting
            .iter()
            .enumerate()
            .map(|(i, (client, waited_ms))| Waiter {
                position: i + 1,
                client: client.to_string(),
                agent: Some("bot".into()),
                waited_ms: *waited_ms,
            })
            .collect::<Vec<_>>();
        let mut snapshot = Snapshot {
            at: t,
            credentials: vec![CredentialView {
                name: "default".into(),
                shaping: true,
                sessions_active: 0,
                lanes: vec![LaneView {
                    lane: "invoke".into(),
                    limit: 1,
                    window_ms: 1000,
                    used: 1,
                    remaining: 0,
                    next_free_ms: 0,
                    depth: waiting.len(),
                    max_depth: 10,
                    max_wait_ms: 1000,
                    waiting,
                }],
            }],
            last_reload: reload.map(|version| LastReload {
                at: 5,
                version,
                applied: true,
                error: None,
            }),
            ..Snapshot::default()
        };
        snapshot.upstream.breaker = breaker.into();
        snapshot
    }

    fn kinds(events: &[(&'static str, String)]) -> Vec<String> {
        events
            .iter()
            .map(|(event, data)| {
                let data: serde_json::Value = serde_json::from_str(data).unwrap();
                match *event {
                    "queue" => format!(
                        "{} {}",
                        data["kind"].as_str().unwrap(),
                        data["client"].as_str().unwrap()
                    ),
                    other => other.to_string(),
                }
            })
            .collect()
    }

    #[test]
    fn joins_and_leaves_are_told_apart_from_waiters_that_stay() {
        let mut sampler = Sampler::default();
        let first = sampler.events(&at(10_000, &[("a", 500)], "closed", None));
        assert_eq!(kinds(&first), ["join a"]);
        // A second later: `a` still waits (a second more), `b` came, then `a` left.
        let second = sampler.events(&at(11_000, &[("a", 1_500), ("b", 200)], "closed", None));
        assert_eq!(kinds(&second), ["join b"]);
        let third = sampler.events(&at(12_000, &[("b", 1_201)], "closed", None));
        assert_eq!(kinds(&third), ["leave a"]);
        let left: serde_json::Value = serde_json::from_str(&third[0].1).unwrap();
        assert_eq!(
            left["waited_ms"], 2_500,
            "from its arrival to this snapshot"
        );
        // Another client with the same name that came later is a new waiter.
        let fourth = sampler.events(&at(13_000, &[("b", 100)], "closed", None));
        assert_eq!(kinds(&fourth), ["leave b", "join b"]);
    }

    #[test]
    fn breaker_changes_and_reloads_are_told_once() {
        let mut sampler = Sampler::default();
        assert!(
            sampler.events(&at(0, &[], "closed", Some(1))).len() == 1,
            "the first reload seen"
        );
        assert!(sampler
            .events(&at(1_000, &[], "closed", Some(1)))
            .is_empty());
        assert_eq!(
            kinds(&sampler.events(&at(2_000, &[], "open", Some(1)))),
            ["breaker"]
        );
        assert_eq!(
            kinds(&sampler.events(&at(3_000, &[], "open", Some(2)))),
            ["reload"]
        );
        assert!(sampler.events(&at(4_000, &[], "open", Some(2))).is_empty());
    }
}
