//! What the shaper shows: the `X-RateLimit-*` view of a lane and the
//! `/admin/queue` snapshot.

use std::time::Instant;

use serde::Serialize;

use super::{lane_limit, Core, Lane, RateView, Shaper};

impl Shaper {
    /// The gateway's `X-RateLimit-*` view of `lane`.
    pub fn view(&self, lane: Lane) -> RateView {
        self.view_locked(&mut self.lock(), lane, Instant::now()).0
    }

    /// [`view`](Self::view) under a lock already held, with the instant
    /// the lane's next send may go.
    fn view_locked(&self, core: &mut Core, lane: Lane, now: Instant) -> (RateView, Instant) {
        let waiting = core.queues[lane.index()].len();
        let free = if core.shared_up {
            core.remaining(lane, now)
        } else {
            self.spends(lane)
                .iter()
                .map(|&b| core.budgets[b].remaining(now))
                .min()
                .unwrap_or(0)
        };
        let next_free = self.ready_at(core, lane, 0, now);
        let reset = if core.shared_up {
            next_free
        } else if free > 0 {
            core.budgets[lane.index()].oldest_expiry(now)
        } else {
            next_free
        };
        let view = RateView {
            limit: lane_limit(&self.settings(), lane).max,
            remaining: free.saturating_sub(u32::try_from(waiting).unwrap_or(u32::MAX)),
            reset_unix: unix_seconds_ceil(reset, now),
        };
        (view, next_free)
    }

    /// What `/admin/queue` shows.
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let mut lanes = Vec::new();
        for lane in Lane::ALL {
            let mut core = self.lock();
            let (view, next_free) = self.view_locked(&mut core, lane, now);
            let remaining_now = core.remaining(lane, now);
            let limit = lane_limit(&self.settings(), lane);
            let waiting = core.queues[lane.index()]
                .in_order()
                .into_iter()
                .enumerate()
                .map(|(i, entry)| Waiting {
                    position: i + 1,
                    client: entry.client.to_string(),
                    agent: entry.item.agent.as_deref().map(str::to_string),
                    waited_ms: now
                        .saturating_duration_since(entry.item.enqueued)
                        .as_millis() as u64,
                })
                .collect();
            lanes.push(LaneSnapshot {
                lane: lane.as_str(),
                next_free_ms: next_free.saturating_duration_since(now).as_millis() as u64,
                limit: limit.max,
                window_ms: limit.window.as_millis() as u64,
                budget_remaining: remaining_now,
                rate_limit_view: view.remaining,
                max_wait_ms: self.max_wait(lane).as_millis() as u64,
                max_depth: self.depth_limit(lane),
                depth: core.queues[lane.index()].len(),
                waiting,
            });
        }
        let cluster = self.0.shared.as_ref().map(|shared| {
            let core = self.lock();
            ClusterView {
                replica: shared.replica().to_string(),
                shared: core.shared_up,
                held: Lane::ALL.map(|lane| core.leases[lane.index()].held()),
            }
        });
        Snapshot {
            lanes,
            sessions_active: self.0.sessions.active(),
            draining: self.lock().drain_deadline.is_some(),
            cluster,
        }
    }
}

fn unix_seconds_ceil(at: Instant, now: Instant) -> u64 {
    let unix = crate::clock::since_epoch() + at.saturating_duration_since(now);
    unix.as_secs() + u64::from(unix.subsec_nanos() > 0)
}

/// `GET /admin/queue`.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    /// One entry per lane.
    pub lanes: Vec<LaneSnapshot>,
    /// Sessions with a turn in flight or waiting.
    pub sessions_active: usize,
    /// Whether shutdown has begun.
    pub draining: bool,
    /// Cluster mode: how this replica takes part; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterView>,
}

/// This replica in the cluster, in [`Snapshot`]. Its lanes' queues are its
/// own; `budget_remaining` is the shared log's count at the last grant.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// This process's id in the cluster (random per start).
    pub replica: String,
    /// Whether the shared budget decides now (Redis answering); false: the
    /// local share does.
    pub shared: bool,
    /// Slots of the shared budget held for waiters here, CRUD and invoke.
    pub held: [usize; 2],
}

/// One lane in [`Snapshot`].
#[derive(Debug, Serialize)]
pub struct LaneSnapshot {
    /// `crud` or `invoke`.
    pub lane: &'static str,
    /// Sends per window.
    pub limit: u32,
    /// Window length.
    pub window_ms: u64,
    /// Sends the lane's own budget allows right now.
    pub budget_remaining: u32,
    /// `X-RateLimit-Remaining` as clients see it (less those queued).
    pub rate_limit_view: u32,
    /// Time until the lane's next send may go; 0: now.
    pub next_free_ms: u64,
    /// Longest wait allowed.
    pub max_wait_ms: u64,
    /// Most waiters allowed.
    pub max_depth: usize,
    /// Waiters now.
    pub depth: usize,
    /// Waiters in the order they will leave.
    pub waiting: Vec<Waiting>,
}

/// One waiter in [`LaneSnapshot`].
#[derive(Debug, Serialize)]
pub struct Waiting {
    /// 1 = next to leave.
    pub position: usize,
    /// Client label (a key fingerprint or a peer address).
    pub client: String,
    /// Agent slug, when the route names one.
    pub agent: Option<String>,
    /// Time in the queue so far.
    pub waited_ms: u64,
}
