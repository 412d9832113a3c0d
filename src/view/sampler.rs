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
            self.last_seq = console.recent.next_seq().checked_sub(1);
            return;
        }
        snapshot.keys = super::keys::rows(state).await;
        if let Some(newest) = snapshot.recent.first() {
            self.last_seq = Some(newest.seq);
        }
        self.events(state, &snapshot);
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

    /// Publishes what changed since the last snapshot.
    fn events(&mut self, state: &AppState, snapshot: &Snapshot) {
        let console = &state.console;
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
                console.publish("queue", event.to_string());
            }
        }
        self.waiters = seen;
        let breaker = &snapshot.upstream.breaker;
        if let Some(before) = self.breaker.replace(breaker.clone()) {
            if before != *breaker {
                console.publish(
                    "breaker",
                    json!({ "from": before, "to": breaker }).to_string(),
                );
            }
        }
        if let Some(attempt) = &snapshot.last_reload {
            let key = (attempt.at, attempt.version, attempt.applied);
            if self.reload.replace(key) != Some(key) {
                console.publish("reload", json!(attempt).to_string());
            }
        }
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
