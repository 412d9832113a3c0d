//! Agents in motion: whose status the cache must not hold for its TTL.
//!
//! An agent is *in motion* while the last status the gateway saw of it is
//! not one of `active`, `stopped`, `error`, `draft` (so `deploying`, legacy
//! `pending`, or anything new), or while an action that went through the
//! gateway (deploy, redeploy, upload-code, stop, PATCH) has not yet been
//! *seen to land*. Reads of an agent in motion, and of the agent list while
//! any agent of that credential is in motion, are coalesced fresh fetches
//! (`cache.motion_refresh_ms`) instead of cache hits.
//!
//! The evidence that an action landed (`docs/agent-motion.md`):
//! - **Deploy-like** (deploy, redeploy, upload-code): a status seen after
//!   the action that is transitional, then a fresh read that is settled; or
//!   a settled status carrying a `sandbox_id` or `updated_at` other than
//!   the last ones seen before the action (a sync deploy's own answer
//!   shows this); or, when the gateway saw none before, a fresh settled
//!   read that agrees with the action's own answer.
//! - **Plain** (stop, PATCH): one fresh read after the action.
//!
//! A read is *fresh* when its request left after the action's answer came
//! back. When no evidence comes, the action stops counting after
//! `cache.agent_settle_secs`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer};

/// Statuses that change only through an action.
const SETTLED: [&str; 4] = ["active", "stopped", "error", "draft"];

/// Agents whose last marks are remembered, at most; past it, agents seen
/// for the first time are not (their actions then land by the rule for
/// agents never seen before).
const MAX_KNOWN: usize = 10_000;

/// An agent: its upstream credential and its slug.
type AgentId = (Arc<str>, Box<str>);

/// What an action through the gateway does to an agent's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Deploy, redeploy, upload-code: the status goes through `deploying`.
    Deploy,
    /// Stop, PATCH: no transition is expected.
    Plain,
}

/// What tells one version of an agent from another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Marks {
    updated_at: Option<Box<str>>,
    /// `None`: the body did not say; `Some(None)`: no sandbox.
    sandbox_id: Option<Option<Box<str>>>,
}

impl Marks {
    /// Whether `self` and `other` disagree on a mark both carry.
    fn differs(&self, other: &Marks) -> bool {
        let updated = matches!((&self.updated_at, &other.updated_at), (Some(a), Some(b)) if a != b);
        let sandbox = matches!((&self.sandbox_id, &other.sandbox_id), (Some(a), Some(b)) if a != b);
        updated || sandbox
    }

    /// Whether `self` names a sandbox other than the one `before` had (a
    /// stop's answer, naming none, does not).
    fn new_sandbox(&self, before: &Marks) -> bool {
        matches!(
            (&self.sandbox_id, &before.sandbox_id),
            (Some(Some(new)), Some(old)) if old.as_deref() != Some(&**new)
        )
    }

    /// Whether they share a mark and agree on every mark both carry.
    fn agrees(&self, other: &Marks) -> bool {
        let shared = (self.updated_at.is_some() && other.updated_at.is_some())
            || (self.sandbox_id.is_some() && other.sandbox_id.is_some());
        shared && !self.differs(other)
    }
}

/// An action whose landing the gateway has not seen yet.
#[derive(Debug)]
struct Pending {
    action: Action,
    /// When the action's answer came back.
    acted: Instant,
    /// It stops counting then, evidence or not.
    until: Instant,
    seen_transition: bool,
    /// The marks last seen before the action.
    before: Option<Marks>,
    /// The marks of the action's own answer.
    answer: Option<Marks>,
    /// A stop or PATCH came after this deploy, before it was seen to land:
    /// a new `updated_at` (that action's doing) or an answer says nothing
    /// about the deploy; only a transition, or a new sandbox, does.
    after_plain: bool,
}

/// An agent in motion: its last seen status is not settled, or an action
/// on it has not been seen to land.
#[derive(Debug, Default)]
struct Motion {
    transitional: bool,
    pending: Option<Pending>,
}

impl Motion {
    fn moving(&self, now: Instant) -> bool {
        self.transitional || self.pending.as_ref().is_some_and(|p| now < p.until)
    }
}

/// What the gateway knows: the last marks of every agent it saw (bounded),
/// and the few agents in motion, apart, so that asking whether any agent
/// is in motion (every cached `GET /agents`) walks only those.
#[derive(Debug, Default)]
struct Table {
    marks: HashMap<AgentId, Marks>,
    motion: HashMap<AgentId, Motion>,
}

impl Table {
    /// Takes a status seen in the action's own answer (`answer`) or in a
    /// read whose request left at `sent`. Returns whether that ended the
    /// agent's motion.
    fn see(
        &mut self,
        id: AgentId,
        view: &AgentView,
        sent: Option<Instant>,
        answer: bool,
        now: Instant,
    ) -> bool {
        let settled = SETTLED.contains(&view.status.as_str());
        let marks = view.marks();
        let landed = match self.motion.get_mut(&id) {
            Some(motion) => {
                if let Some(pending) = &mut motion.pending {
                    let after = answer || sent.is_some_and(|sent| sent >= pending.acted);
                    if !after {
                        // It may show the agent as it was before the action.
                        return false;
                    }
                    if pending.lands(settled, &marks, answer) {
                        motion.pending = None;
                    }
                }
                motion.transitional = !settled;
                let still = motion.moving(now);
                if !still {
                    self.motion.remove(&id);
                }
                !still
            }
            None => {
                if !settled {
                    self.motion.insert(
                        id.clone(),
                        Motion {
                            transitional: true,
                            pending: None,
                        },
                    );
                }
                false
            }
        };
        if self.marks.len() < MAX_KNOWN || self.marks.contains_key(&id) {
            self.marks.insert(id, marks);
        }
        landed
    }

    /// Forgets actions past their bound and agents no longer in motion.
    fn expire(&mut self, now: Instant) {
        for motion in self.motion.values_mut() {
            if motion.pending.as_ref().is_some_and(|p| now >= p.until) {
                motion.pending = None;
            }
        }
        self.motion.retain(|_, motion| motion.moving(now));
    }
}

impl Pending {
    /// Whether a status seen after the action (`settled` or not, with
    /// `marks`; `answer`: in the action's own answer) shows it landed.
    fn lands(&mut self, settled: bool, marks: &Marks, answer: bool) -> bool {
        if answer {
            self.answer = Some(marks.clone());
        }
        let moved = self.before.as_ref().is_some_and(|b| {
            if self.after_plain {
                marks.new_sandbox(b)
            } else {
                marks.differs(b)
            }
        });
        if !settled {
            self.seen_transition = true;
            return false;
        }
        if answer {
            return self.action == Action::Deploy && moved;
        }
        let agrees = !self.after_plain
            && self.before.is_none()
            && self.answer.as_ref().is_some_and(|a| marks.agrees(a));
        self.action == Action::Plain || self.seen_transition || moved || agrees
    }
}

/// What the gateway knows about agents, per upstream credential.
#[derive(Debug)]
pub struct AgentWatch {
    /// Milliseconds; changed by a config reload.
    settle_ms: AtomicU64,
    table: Mutex<Table>,
}

/// An agent's slug and status, as any `Agent` body carries them.
#[derive(Debug, Deserialize)]
pub struct AgentStatus {
    /// The slug.
    pub slug: String,
    /// The status.
    pub status: String,
}

/// What an `Agent` (or an upload-code answer) says about its version.
#[derive(Debug, Deserialize)]
struct AgentView {
    #[serde(default)]
    slug: Option<String>,
    status: String,
    #[serde(default)]
    updated_at: Option<String>,
    #[serde(default, deserialize_with = "present")]
    sandbox_id: Option<Option<String>>,
}

impl AgentView {
    fn marks(&self) -> Marks {
        Marks {
            updated_at: self.updated_at.as_deref().map(Box::from),
            sandbox_id: self
                .sandbox_id
                .as_ref()
                .map(|id| id.as_deref().map(Box::from)),
        }
    }
}

/// A field that is present, `null` included (absent: the outer `None`).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct AgentList {
    agents: Vec<AgentView>,
}

/// What a read's body told the watch.
#[derive(Debug, Default)]
pub struct Observed {
    /// The agent, when the body was one `Agent`.
    pub one: Option<AgentStatus>,
    /// Slugs whose motion this read ended: their other cached views (the
    /// list, or the single agent) may still show them moving.
    pub landed: Vec<String>,
}

impl AgentWatch {
    /// An action stops counting `settle` after it went through, when no
    /// evidence of its landing came.
    pub fn new(settle: Duration) -> Self {
        Self {
            settle_ms: AtomicU64::new(settle.as_millis() as u64),
            table: Mutex::new(Table::default()),
        }
    }

    /// Actions from now on stop counting after `settle` (a config reload).
    pub fn set_settle(&self, settle: Duration) {
        self.settle_ms
            .store(settle.as_millis() as u64, Ordering::Relaxed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the agent `slug` is in motion.
    pub fn moving(&self, principal: &Arc<str>, slug: &str) -> bool {
        let table = self.lock();
        if table.motion.is_empty() {
            return false;
        }
        let now = Instant::now();
        table
            .motion
            .get(&(principal.clone(), Box::from(slug)))
            .is_some_and(|motion| motion.moving(now))
    }

    /// Whether any agent of `principal` is in motion (then `GET /agents`
    /// is too).
    pub fn any_moving(&self, principal: &Arc<str>) -> bool {
        let now = Instant::now();
        self.lock()
            .motion
            .iter()
            .any(|((p, _), motion)| p == principal && motion.moving(now))
    }

    /// An `action` on `slug` went through (its answer just came back, or
    /// its client left while it was in flight): the agent is in motion
    /// until the gateway sees it land.
    pub fn acted(&self, principal: &Arc<str>, slug: &str, action: Action) {
        let now = Instant::now();
        let settle = Duration::from_millis(self.settle_ms.load(Ordering::Relaxed));
        let id = (principal.clone(), Box::from(slug));
        let mut table = self.lock();
        table.expire(now);
        let before = table.marks.get(&id).cloned();
        let pending = &mut table.motion.entry(id).or_default().pending;
        if let Some(deploy) = pending
            .as_mut()
            .filter(|p| action == Action::Plain && p.action == Action::Deploy && now < p.until)
        {
            // A stop or PATCH while a deploy has not landed: the deploy's
            // evidence is still owed, by reads that leave after both.
            deploy.acted = now;
            deploy.until = now + settle;
            deploy.after_plain = true;
            return;
        }
        *pending = Some(Pending {
            action,
            acted: now,
            until: now + settle,
            seen_transition: false,
            before,
            answer: None,
            after_plain: false,
        });
    }

    /// The action on `slug` answered with `body` (an `Agent`, or an
    /// upload-code answer): its own word on the status.
    pub fn answered(&self, principal: &Arc<str>, slug: &str, body: &[u8]) {
        let Ok(view) = serde_json::from_slice::<AgentView>(body) else {
            return;
        };
        if view.slug.as_deref().is_some_and(|s| s != slug) {
            return;
        }
        let id = (principal.clone(), Box::from(slug));
        let mut table = self.lock();
        if table.motion.contains_key(&id) {
            table.see(id, &view, None, true, Instant::now());
        }
    }

    /// The agent is gone.
    pub fn forget(&self, principal: &Arc<str>, slug: &str) {
        let id = (principal.clone(), Box::from(slug));
        let mut table = self.lock();
        table.motion.remove(&id);
        table.marks.remove(&id);
    }

    /// Records the statuses in a 200 body of `GET /agents` or of anything
    /// that returns one `Agent`, read by a request that left at `sent`.
    pub fn observe(&self, principal: &Arc<str>, body: &[u8], sent: Option<Instant>) -> Observed {
        let (one, many) = match serde_json::from_slice::<AgentView>(body) {
            Ok(agent) => (true, vec![agent]),
            Err(_) => match serde_json::from_slice::<AgentList>(body) {
                Ok(list) => (false, list.agents),
                Err(_) => return Observed::default(),
            },
        };
        let now = Instant::now();
        let mut landed = Vec::new();
        let mut table = self.lock();
        table.expire(now);
        for agent in &many {
            let Some(slug) = agent.slug.as_deref() else {
                continue;
            };
            if table.see(
                (principal.clone(), Box::from(slug)),
                agent,
                sent,
                false,
                now,
            ) {
                landed.push(slug.to_string());
            }
        }
        drop(table);
        let one = one
            .then(|| many.into_iter().next())
            .flatten()
            .and_then(|agent| {
                Some(AgentStatus {
                    slug: agent.slug?,
                    status: agent.status,
                })
            });
        Observed { one, landed }
    }

    /// Every agent in motion, for `/admin/cache`.
    pub fn snapshot(&self) -> Vec<MotionView> {
        let now = Instant::now();
        self.lock()
            .motion
            .iter()
            .filter(|(_, motion)| motion.moving(now))
            .map(|((_, slug), motion)| MotionView {
                slug: slug.to_string(),
                transitional: motion.transitional,
                waiting_for: motion.pending.as_ref().map(|p| match p.action {
                    Action::Deploy if !p.seen_transition => "deploying or a new version",
                    Action::Deploy => "a settled status",
                    Action::Plain => "a fresh read",
                }),
                settling_secs: motion
                    .pending
                    .as_ref()
                    .map_or(0, |p| p.until.saturating_duration_since(now).as_secs()),
            })
            .collect()
    }
}

/// An agent in motion, as `/admin/cache` shows it.
#[derive(Debug, serde::Serialize)]
pub struct MotionView {
    /// The slug.
    pub slug: String,
    /// Its last seen status is not settled.
    pub transitional: bool,
    /// The evidence an action through the gateway still waits for.
    pub waiting_for: Option<&'static str>,
    /// Seconds until that action stops counting without it (0: none).
    pub settling_secs: u64,
}

#[cfg(test)]
mod tests;
