//! Cluster mode: how a shaper works with the shared budget. The lane's
//! dispatcher reserves slots before it hands them out, gives back those
//! nobody waits for, and writes its recent sends back when Redis returns
//! after a loss; an upstream 429 pauses every replica, and a lower
//! `X-RateLimit-Remaining` is followed in the shared log.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::cluster::budget::Spec;
use crate::cluster::events::{Event, Sink};
use crate::cluster::{Ask, Cluster, SharedBudget};

use super::sessions::Turn;
use super::{lane_limit, spends_of, Inner, Lane, Shaper};

/// How often a replica whose clients wait on held slots tells the shared
/// budget so: half the time its demand counts.
pub(super) const HEARTBEAT: Duration =
    Duration::from_millis(crate::cluster::budget::DEMAND_FRESH.as_millis() as u64 / 2);

/// Most slots one reservation asks for.
const MAX_BATCH: usize = 64;

/// What a clustered shaper shares, and with whom.
#[derive(Clone)]
pub struct Shared {
    budget: Arc<dyn SharedBudget>,
    cluster: Option<Cluster>,
    credential: Arc<str>,
    replica: Arc<str>,
    share: u32,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("credential", &self.credential)
            .field("share", &self.share)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The budget of upstream credential `credential` shared through
    /// `budget`, by replica `replica`, whose local share while the shared
    /// budget is lost is `1 / share` of each limit. With a `cluster`, this
    /// shaper applies the pauses other replicas publish, publishes its own,
    /// and keeps session turns in the cluster's line.
    pub fn new(
        budget: Arc<dyn SharedBudget>,
        cluster: Option<Cluster>,
        credential: &str,
        replica: &str,
        share: u32,
    ) -> Self {
        Self {
            budget,
            cluster,
            credential: credential.into(),
            replica: replica.into(),
            share: share.max(1),
        }
    }

    pub(super) fn share(&self) -> u32 {
        self.share
    }

    pub(super) fn replica(&self) -> &str {
        &self.replica
    }

    pub(super) fn is_up(&self) -> bool {
        self.budget.is_up()
    }
}

/// Applies other replicas' pauses of this credential's budgets.
struct PauseSink(Weak<Inner>);

impl Sink for PauseSink {
    fn apply(&self, event: &Event) {
        let Event::Pause {
            credential,
            lane,
            ms,
        } = event
        else {
            return;
        };
        let Some(inner) = self.0.upgrade() else {
            return;
        };
        let shaper = Shaper(inner);
        let Some(shared) = &shaper.0.shared else {
            return;
        };
        if **credential != *shared.credential {
            return;
        }
        let Some(lane) = Lane::ALL.into_iter().find(|l| l.as_str() == lane) else {
            return;
        };
        let now = Instant::now();
        let mut core = shaper.lock();
        let pause = Duration::from_millis(*ms).min(super::MAX_PAUSE);
        let given_up = shaper.pause_locally(&mut core, lane, now + pause);
        shaper.update_gauges(&mut core, now);
        drop(core);
        for (lane, ids) in given_up {
            shaper.give_back(lane, ids);
        }
    }

    fn resync(&self) {}
}

/// Puts a clustered shaper on its bus.
pub(super) fn register(inner: &Arc<Inner>) {
    let Some(cluster) = inner.shared.as_ref().and_then(|s| s.cluster.as_ref()) else {
        return;
    };
    let sink: Arc<dyn Sink> = Arc::new(PauseSink(Arc::downgrade(inner)));
    cluster.bus().register(Arc::downgrade(&sink));
    // The sink lives as long as the shaper.
    let _ = inner.sink.set(sink);
}

impl Shaper {
    /// The budgets `lane` spends, own first, as the shared budget sees
    /// them.
    fn specs(&self, lane: Lane) -> Vec<Spec> {
        let config = self.settings();
        let margin = Duration::from_millis(config.safety_margin_ms);
        spends_of(&config, lane)
            .iter()
            .map(|&b| {
                let budget_lane = if b == 0 { Lane::Crud } else { Lane::Invoke };
                let limit = lane_limit(&config, budget_lane);
                Spec {
                    name: budget_lane.as_str(),
                    max: limit.max,
                    window: limit.window,
                    span: limit.window + margin,
                }
            })
            .collect()
    }

    /// Before a dispatch, and once more when the queue empties: writes
    /// recent sends back if Redis came back, gives back slots nobody waits
    /// for, and reserves: every waiter a slot that is free now (up to this
    /// replica's share of the window while other replicas' clients wait),
    /// and when none is, one booked slot per client waiting here (what
    /// keeps the cluster fair). With nobody waiting, it tells the shared
    /// budget so, once. Returns true when it asked for slots and got none.
    pub(super) async fn sync_shared(&self, lane: Lane) -> bool {
        let Some(shared) = &self.0.shared else {
            return false;
        };
        if !shared.budget.is_up() {
            return false;
        }
        let mut specs = self.specs(lane);
        let Some(own) = specs.first().copied() else {
            return false;
        };
        let epoch = shared.budget.epoch();
        let i = lane.index();
        let (restore, surplus, want, fair, clients, tag) = {
            let now = Instant::now();
            let mut core = self.lock();
            let core = &mut *core;
            let queue = &core.queues[i];
            let (waiting, clients) = (queue.len(), queue.clients());
            let leases = &mut core.leases[i];
            leases.expire(own.span, now);
            let restore = (leases.epoch != epoch).then(|| leases.recent());
            if restore.is_some() && epoch > 1 {
                // Back after a loss: other replicas' sends on their local
                // share may not be written back yet. For one window, leave
                // room for them (at most their shares).
                leases.cautious_until = Some(now + own.span);
            }
            if leases.cautious_until.is_some_and(|until| until > now) {
                for spec in &mut specs {
                    let others = (shared.share - 1) * (spec.max / shared.share);
                    spec.max = spec.max.saturating_sub(others).max(1);
                }
            }
            // Slots held from before a loss may be gone from a restarted
            // Redis: give them up and reserve afresh.
            let mut surplus = if restore.is_some() {
                leases.surrender()
            } else {
                leases.surrender_beyond(waiting)
            };
            surplus.extend(leases.take_stale());
            let want = waiting.min(MAX_BATCH).saturating_sub(leases.held());
            let fair = waiting.min(clients.max(1)).saturating_sub(leases.held());
            // Nobody waits any more: say so once, so the others' shares
            // grow. Clients still waiting on held slots: say so again
            // before it stops counting.
            let heard = leases.posted_at.is_some_and(|at| now < at + HEARTBEAT);
            let report =
                want > 0 || (waiting == 0 && leases.posted_clients != 0) || (waiting > 0 && !heard);
            let clients = report.then_some(clients);
            let tag = leases.tag(&shared.replica, lane.as_str());
            (restore, surplus, want, fair, clients, tag)
        };
        if let Some(sends) = restore {
            if shared.budget.restore(&specs, sends).await.is_err() {
                return true;
            }
            self.lock().leases[i].epoch = epoch;
        }
        if !surplus.is_empty() {
            let _ = shared.budget.release(&specs, surplus).await;
        }
        let Some(clients) = clients else {
            return false;
        };
        let ask = Ask {
            n: want,
            fair,
            replica: &shared.replica,
            clients,
            tag: &tag,
        };
        let Ok(grant) = shared.budget.reserve(&specs, ask).await else {
            // The script may have run and its answer been lost: give back
            // whatever it booked under this call's tag (best effort).
            let ids = (1..=want).map(|j| format!("{tag}{j}")).collect();
            self.give_back(lane, ids);
            return true;
        };
        let now = Instant::now();
        let mut core = self.lock();
        core.leases[i].posted_clients = clients;
        core.leases[i].posted_at = Some(now);
        // A report alone (nothing asked) still brings the cluster's count.
        core.leases[i].granted(grant, now, &own);
        self.update_gauges(&mut core, now);
        want > 0 && core.leases[i].held() == 0
    }

    /// Waits for the turn of `session` on `agent`: in the cluster's line
    /// while Redis answers (turns through every replica in order), else in
    /// this replica's own.
    pub async fn turn(&self, agent: &str, session: &str) -> Turn {
        let cluster = self.0.shared.as_ref().and_then(|s| {
            let cluster = s.cluster.as_ref().filter(|c| c.is_up())?;
            Some((cluster, &s.credential))
        });
        if let Some((cluster, credential)) = cluster {
            if let Ok(turn) = cluster.turn(credential, agent, session).await {
                return self.sessions().shared(turn);
            }
        }
        self.sessions().turn(agent, session).await
    }

    /// Gives held slots back to the shared budget (shutdown).
    pub(super) fn give_back(&self, lane: Lane, ids: Vec<String>) {
        let Some(shared) = self.0.shared.clone() else {
            return;
        };
        if ids.is_empty() {
            return;
        }
        let specs = self.specs(lane);
        tokio::spawn(async move {
            let _ = shared.budget.release(&specs, ids).await;
        });
    }

    /// Tells the other replicas (and the shared budget) that the upstream
    /// asked for `pause`.
    pub(super) fn share_pause(&self, lane: Lane, pause: Duration) {
        let Some(shared) = self.0.shared.clone() else {
            return;
        };
        let specs = self.specs(lane);
        tokio::spawn(async move {
            if shared.budget.pause(&specs, pause).await.is_ok() {
                if let Some(cluster) = &shared.cluster {
                    let event = Event::Pause {
                        credential: shared.credential.to_string(),
                        lane: lane.as_str().to_string(),
                        ms: u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                    };
                    cluster.publish(event).await;
                }
            }
        });
    }

    /// Follows an upstream count above the shared log's.
    pub(super) fn share_follow(&self, lane: Lane, remaining: u32, sent_ms: i64) {
        let Some(shared) = self.0.shared.clone() else {
            return;
        };
        let Some(own) = self.specs(lane).first().copied() else {
            return;
        };
        let tag = self.lock().leases[lane.index()].tag(&shared.replica, "seen");
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            let Ok(added) = shared.budget.follow(own, remaining, sent_ms, &tag).await else {
                return;
            };
            if added > 0 {
                tracing::info!(
                    lane = lane.as_str(),
                    upstream_remaining = remaining,
                    added,
                    "upstream reports fewer requests left than the cluster counted; following it"
                );
                if let Some(inner) = weak.upgrade() {
                    Shaper(inner).lock().setbacks += 1;
                }
            }
        });
    }
}
