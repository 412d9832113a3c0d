//! Agent status awareness: which agents must be fetched fresh.
//!
//! An agent is *transitional* while the last status the gateway saw is not
//! one of `active`, `stopped`, `error`, `draft` (so `deploying`, legacy
//! `pending`, or anything new), and *settling* for `agent_settle_secs` after
//! a deploy, redeploy, upload-code, stop or PATCH went through the gateway.
//! Either way `GET /agents/{slug}` goes upstream, and while any agent of a
//! credential is in motion so does `GET /agents`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Statuses that change only through an action.
const SETTLED: [&str; 4] = ["active", "stopped", "error", "draft"];

#[derive(Debug, Default)]
struct Motion {
    transitional: bool,
    settling_until: Option<Instant>,
}

impl Motion {
    fn moving(&self, now: Instant) -> bool {
        self.transitional || self.settling_until.is_some_and(|until| now < until)
    }
}

/// An agent: its upstream credential and its slug.
type AgentId = (Arc<str>, Box<str>);

/// What the gateway knows about agents in motion, per upstream credential.
#[derive(Debug)]
pub struct AgentWatch {
    /// Milliseconds; changed by a config reload.
    settle_ms: AtomicU64,
    agents: Mutex<HashMap<AgentId, Motion>>,
}

/// An agent's slug and status, as any `Agent` body carries them.
#[derive(Debug, Deserialize)]
pub struct AgentStatus {
    /// The slug.
    pub slug: String,
    /// The status.
    pub status: String,
}

#[derive(Deserialize)]
struct AgentList {
    agents: Vec<AgentStatus>,
}

impl AgentWatch {
    /// Agents settle for `settle` after an action.
    pub fn new(settle: Duration) -> Self {
        Self {
            settle_ms: AtomicU64::new(settle.as_millis() as u64),
            agents: Mutex::new(HashMap::new()),
        }
    }

    /// Agents acted on from now on settle for `settle` (a config reload).
    pub fn set_settle(&self, settle: Duration) {
        self.settle_ms
            .store(settle.as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether `GET /agents/{slug}` must go upstream.
    pub fn must_fetch(&self, principal: &Arc<str>, slug: &str) -> bool {
        let agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents
            .get(&(principal.clone(), Box::from(slug)))
            .is_some_and(|m| m.moving(Instant::now()))
    }

    /// Whether `GET /agents` must go upstream: some agent is in motion.
    pub fn any_moving(&self, principal: &Arc<str>) -> bool {
        let now = Instant::now();
        let agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents
            .iter()
            .any(|((p, _), m)| p == principal && m.moving(now))
    }

    /// An action went through for `slug`: it settles from now.
    pub fn acted(&self, principal: &Arc<str>, slug: &str) {
        let now = Instant::now();
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents.retain(|_, m| m.moving(now));
        let motion = agents
            .entry((principal.clone(), Box::from(slug)))
            .or_default();
        let settle = Duration::from_millis(self.settle_ms.load(Ordering::Relaxed));
        motion.settling_until = Some(now + settle);
    }

    /// The agent is gone.
    pub fn forget(&self, principal: &Arc<str>, slug: &str) {
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents.remove(&(principal.clone(), Box::from(slug)));
    }

    /// Records the statuses in a 200 body of `GET /agents` or of anything
    /// that returns one `Agent`. Returns the single agent, if it was one.
    pub fn observe(&self, principal: &Arc<str>, body: &[u8]) -> Option<AgentStatus> {
        let (one, many) = match serde_json::from_slice::<AgentStatus>(body) {
            Ok(agent) => (true, vec![agent]),
            Err(_) => match serde_json::from_slice::<AgentList>(body) {
                Ok(list) => (false, list.agents),
                Err(_) => return None,
            },
        };
        let now = Instant::now();
        let mut agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        for agent in &many {
            let transitional = !SETTLED.contains(&agent.status.as_str());
            let key = (principal.clone(), Box::from(agent.slug.as_str()));
            match agents.get_mut(&key) {
                Some(motion) => motion.transitional = transitional,
                None if transitional => {
                    agents.insert(
                        key,
                        Motion {
                            transitional,
                            settling_until: None,
                        },
                    );
                }
                None => {}
            }
        }
        agents.retain(|_, m| m.moving(now));
        drop(agents);
        if one {
            many.into_iter().next()
        } else {
            None
        }
    }

    /// `(slug, transitional, settling seconds left)` of every agent in motion.
    pub fn snapshot(&self) -> Vec<(String, bool, u64)> {
        let now = Instant::now();
        let agents = self.agents.lock().unwrap_or_else(|e| e.into_inner());
        agents
            .iter()
            .filter(|(_, m)| m.moving(now))
            .map(|((_, slug), m)| {
                let left = m
                    .settling_until
                    .map_or(0, |u| u.saturating_duration_since(now).as_secs());
                (slug.to_string(), m.transitional, left)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploying_agents_and_recent_actions_are_fetched_fresh() {
        let watch = AgentWatch::new(Duration::from_secs(600));
        let p: Arc<str> = Arc::from("default");
        assert!(!watch.must_fetch(&p, "a"));
        watch.observe(&p, br#"{"slug":"a","status":"deploying","name":"A"}"#);
        assert!(watch.must_fetch(&p, "a"));
        assert!(watch.any_moving(&p));
        watch.observe(
            &p,
            br#"{"agents":[{"slug":"a","status":"active"}],"meta":{}}"#,
        );
        assert!(!watch.must_fetch(&p, "a"));
        watch.acted(&p, "b");
        assert!(watch.must_fetch(&p, "b"));
        assert!(!watch.any_moving(&Arc::from("other")));
        watch.forget(&p, "b");
        assert!(!watch.must_fetch(&p, "b"));
    }
}
