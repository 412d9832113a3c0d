//! Rate shaping: the whole upstream budget, and never a request over it.
//!
//! Two budgets per upstream credential, CRUD and invoke ([`budget`]), each a
//! log of send times that holds exactly in any window. A request that finds
//! room and nobody waiting leaves at once (no task hop). Otherwise it joins
//! its lane's [`queue`] — fair across clients — unless the predicted wait is
//! longer than the lane allows or the queue is full, in which case it is
//! refused at once with the predicted wait as `Retry-After`. One dispatcher
//! task per lane wakes when the next slot frees and hands it to the next
//! waiter. A waiter that goes away (client disconnect) leaves the queue and
//! spends nothing. A request let into the queue is sent, never refused
//! after it waited ([`deadline`]), unless the upstream itself set the
//! budget back while it waited (a 429, a lower `X-RateLimit-Remaining`).
//!
//! The upstream has the last word: its 429 pauses the lane's budgets until
//! its `Retry-After`, and a `X-RateLimit-Remaining` lower than ours (another
//! client of the same account) is followed, as of the time the answered
//! request was sent. [`sessions`] keeps the turns of one session in order.
//!
//! In cluster mode ([`Shaper::clustered`]) the decision of when a send may
//! leave is made in Redis ([`crate::cluster::budget`]) across every
//! replica, and this replica's fair queue hands the slots it reserved to
//! its own waiters. While Redis is lost, the local budgets, sized to this
//! replica's share (`limit / cluster.expected_replicas`), decide.
//!
//! | file | concern |
//! |---|---|
//! | `budget.rs` | one budget: the send log, the k-th free slot, pauses |
//! | `queue.rs` | the fair queue (round-robin across clients) |
//! | `deadline.rs` | waiters' deadlines and the earliest-deadline check |
//! | `admit.rs` | admission (at once, or a place in the queue) and waiting |
//! | `dispatch.rs` | the per-lane task that hands out free slots |
//! | `leases.rs` | cluster mode: slots of the shared budget held by this replica |
//! | `shared.rs` | cluster mode: reserving, releasing, pausing in the shared budget |
//! | `view.rs` | `X-RateLimit-*` and `/admin/queue` |
//! | `sessions.rs` | one turn at a time per session |

mod admit;
pub mod budget;
pub mod deadline;
mod dispatch;
mod leases;
pub mod metrics;
pub mod queue;
pub mod sessions;
mod shared;
mod view;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use tokio::sync::{oneshot, Notify};

use crate::config::ShaperConfig;
use crate::route::RouteClass;
use budget::Budget;
use deadline::Deadlines;
use leases::Leases;
pub use metrics::ShaperMetrics;
use queue::{ClientId, FairQueue};
use sessions::Sessions;
pub use shared::Shared;
pub use view::{ClusterView, LaneSnapshot, Snapshot, Waiting};

/// The budget lane a request waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Everything but invocations.
    Crud,
    /// `POST /agents/{slug}/invoke` and `/stream`.
    Invoke,
}

impl Lane {
    /// The lane of a route class.
    pub fn of(class: RouteClass) -> Self {
        match class {
            RouteClass::Invoke => Self::Invoke,
            _ => Self::Crud,
        }
    }

    /// Its label in metrics and `/admin/queue`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crud => "crud",
            Self::Invoke => "invoke",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Crud => 0,
            Self::Invoke => 1,
        }
    }

    const ALL: [Lane; 2] = [Lane::Crud, Lane::Invoke];
}

/// What a request asks of the shaper.
#[derive(Clone, Debug)]
pub struct Ticket {
    /// Which budget.
    pub lane: Lane,
    /// Who asks, for fairness.
    pub client: ClientId,
    /// The agent slug, for `/admin/queue`.
    pub agent: Option<Arc<str>>,
    /// It was sent once and the upstream answered 429: it goes first.
    pub retry: bool,
    /// When the request first asked; the lane's longest wait counts from
    /// here, across retries.
    pub arrived: Instant,
    /// Its longest wait, when it asked for its own (`Prefer: wait=N`,
    /// through [`Shaper::preferred_wait`]); `None`: the lane's.
    pub max_wait: Option<Duration>,
}

/// A request may go upstream now.
#[derive(Clone, Copy, Debug)]
pub struct Admitted {
    /// Time spent waiting for the budget (zero when there was room).
    pub waited: Duration,
    /// Whether it waited in the queue at all.
    pub queued: bool,
    /// When its send was counted: what an upstream answer to it describes.
    pub sent_at: Instant,
}

/// Why a request will not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The lane's queue is at its depth limit.
    QueueFull {
        /// When to try again.
        retry_after: Duration,
        /// The lane refused in (its detail names it).
        lane: Lane,
    },
    /// The predicted wait is longer than the lane allows.
    WaitTooLong {
        /// When to try again.
        retry_after: Duration,
        /// The lane refused in.
        lane: Lane,
    },
    /// The upstream set the budget back while it waited (a 429, a lower
    /// `X-RateLimit-Remaining`) and its deadline passed.
    TimedOut {
        /// When to try again.
        retry_after: Duration,
        /// The lane refused in.
        lane: Lane,
    },
    /// The gateway is shutting down and the request was never sent.
    Draining,
}

impl Refusal {
    /// A label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Self::QueueFull { .. } => "queue_full",
            Self::WaitTooLong { .. } => "wait_too_long",
            Self::TimedOut { .. } => "timed_out",
            Self::Draining => "draining",
        }
    }
}

/// The gateway's view of a lane, for `X-RateLimit-*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateView {
    /// `X-RateLimit-Limit`.
    pub limit: u32,
    /// `X-RateLimit-Remaining`: sends allowed now, less those queued.
    pub remaining: u32,
    /// `X-RateLimit-Reset`: Unix seconds when the next slot frees.
    pub reset_unix: u64,
}

struct Waiter {
    /// Gets the send time, or why not.
    tx: oneshot::Sender<Result<Instant, Refusal>>,
    enqueued: Instant,
    /// By when it must leave.
    deadline: Instant,
    agent: Option<Arc<str>>,
}

struct Core {
    /// CRUD budget, invoke budget. In cluster mode: this replica's share,
    /// deciding only while Redis is lost.
    budgets: [Budget; 2],
    /// Cluster mode: slots of the shared budget held, per lane.
    leases: [Leases; 2],
    /// Cluster mode with Redis answering: the leases decide.
    shared_up: bool,
    queues: [FairQueue<Waiter>; 2],
    /// Every waiter's deadline, per lane.
    deadlines: [Deadlines; 2],
    next_id: u64,
    drain_deadline: Option<Instant>,
    /// Times the upstream (or a reload) moved slots later than predicted.
    setbacks: u64,
}

/// Past its deadline, a waiter gives the dispatcher this long (timer and
/// scheduling lag) before it checks whether a setback may refuse it.
const DEADLINE_GRACE: Duration = Duration::from_millis(250);

struct Inner {
    /// Replaced whole by [`Shaper::reconfigure`].
    config: RwLock<ShaperConfig>,
    core: Mutex<Core>,
    /// Wakes a lane's dispatcher: work arrived, or shutdown began.
    wake: [Arc<Notify>; 2],
    metrics: ShaperMetrics,
    sessions: Sessions,
    hasher: std::hash::RandomState,
    /// Cluster mode.
    shared: Option<Shared>,
    /// Cluster mode: applies other replicas' pauses (kept alive here).
    sink: std::sync::OnceLock<Arc<dyn crate::cluster::events::Sink>>,
}

/// The rate shaper of one upstream credential. Cheap to clone.
#[derive(Clone)]
pub struct Shaper(Arc<Inner>);

impl std::fmt::Debug for Shaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shaper")
            .field("config", &*self.settings())
            .finish_non_exhaustive()
    }
}

impl Shaper {
    /// A shaper with `config`'s budgets. Its dispatchers run on the current
    /// Tokio runtime, so this must be called inside one; they end when the
    /// last clone of the shaper is dropped.
    pub fn new(config: &ShaperConfig, metrics: ShaperMetrics) -> Self {
        Self::build(config, metrics, None)
    }

    /// A shaper whose budgets are shared with other replicas through
    /// `shared` (cluster mode). Like [`new`](Self::new), it must be called
    /// inside a Tokio runtime.
    pub fn clustered(config: &ShaperConfig, metrics: ShaperMetrics, shared: Shared) -> Self {
        Self::build(config, metrics, Some(shared))
    }

    fn build(config: &ShaperConfig, metrics: ShaperMetrics, shared: Option<Shared>) -> Self {
        let margin = Duration::from_millis(config.safety_margin_ms);
        let share = shared.as_ref().map_or(1, Shared::share);
        let budget = |lane| {
            let limit = lane_limit(config, lane);
            Budget::new((limit.max / share).max(1), limit.window, margin)
        };
        let (crud, invoke) = (budget(Lane::Crud), budget(Lane::Invoke));
        let inner = Arc::new(Inner {
            config: RwLock::new(config.clone()),
            core: Mutex::new(Core {
                budgets: [crud, invoke],
                leases: [Leases::default(), Leases::default()],
                shared_up: false,
                queues: [FairQueue::default(), FairQueue::default()],
                deadlines: [Deadlines::default(), Deadlines::default()],
                next_id: 0,
                drain_deadline: None,
                setbacks: 0,
            }),
            wake: [Arc::new(Notify::new()), Arc::new(Notify::new())],
            metrics,
            sessions: Sessions::default(),
            hasher: std::hash::RandomState::new(),
            shared,
            sink: std::sync::OnceLock::new(),
        });
        shared::register(&inner);
        for lane in Lane::ALL {
            let shaper = Arc::downgrade(&inner);
            let wake = inner.wake[lane.index()].clone();
            tokio::spawn(dispatch::dispatch(shaper, wake, lane));
        }
        let shaper = Self(inner);
        shaper.update_gauges(&mut shaper.lock(), Instant::now());
        shaper
    }

    /// The session-order locks.
    pub fn sessions(&self) -> &Sessions {
        &self.0.sessions
    }

    /// A stable, non-reversible label for a local credential, unique to
    /// this process: enough to tell clients apart, useless to anyone else.
    pub fn fingerprint(&self, credential: &[u8]) -> String {
        use std::hash::BuildHasher;
        format!("key:{:016x}", self.0.hasher.hash_one(credential))
    }

    fn lock(&self) -> MutexGuard<'_, Core> {
        let mut core = self.0.core.lock().unwrap_or_else(PoisonError::into_inner);
        let up = self.0.shared.as_ref().is_some_and(Shared::is_up);
        if core.shared_up && !up {
            Self::lost_shared(&mut core);
        }
        core.shared_up = up;
        core
    }

    /// Redis was just lost: from now this replica sends on its local share.
    /// Other replicas' sends in the window (what the last grant counted,
    /// bookings ahead included, less this replica's own) count in the local
    /// share too, so the first local sends do not overfill a window the
    /// cluster already spent.
    fn lost_shared(core: &mut Core) {
        let now = Instant::now();
        for lane in Lane::ALL {
            let i = lane.index();
            let span = core.budgets[i].span();
            let Some((known, at)) = core.leases[i].last_known(span, now) else {
                continue;
            };
            let own = core.budgets[i].counted(now) as u64;
            core.budgets[i].assume_sent(known.saturating_sub(own), at, now);
        }
    }

    fn settings(&self) -> RwLockReadGuard<'_, ShaperConfig> {
        self.0.config.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies new limits, queue depths and waits (a config reload). The
    /// send logs carry over, so sends made under the old limits still count
    /// against the new ones; waiters stay queued, in order, and keep the
    /// deadline they were given. The dispatchers look again at once: a
    /// raised limit lets waiters go now.
    pub fn reconfigure(&self, config: &ShaperConfig) {
        *self
            .0
            .config
            .write()
            .unwrap_or_else(PoisonError::into_inner) = config.clone();
        let margin = Duration::from_millis(config.safety_margin_ms);
        let share = self.0.shared.as_ref().map_or(1, Shared::share);
        let now = Instant::now();
        let mut core = self.lock();
        for lane in Lane::ALL {
            let limit = lane_limit(config, lane);
            let max = (limit.max / share).max(1);
            core.budgets[lane.index()].reconfigure(max, limit.window, margin, now);
        }
        // A lowered limit may move slots past what waiters were promised.
        core.setbacks += 1;
        self.update_gauges(&mut core, now);
        drop(core);
        for wake in &self.0.wake {
            wake.notify_one();
        }
    }

    fn max_wait(&self, lane: Lane) -> Duration {
        let config = self.settings();
        Duration::from_millis(match lane {
            Lane::Crud => config.crud_max_wait_ms,
            Lane::Invoke => config.invoke_max_wait_ms,
        })
    }

    /// The longest wait a request of `lane` gets when it asks for
    /// `preferred` (`Prefer: wait=N`): shorter than the lane's as asked,
    /// longer up to `shaper.prefer_wait_max_ms`.
    pub fn preferred_wait(&self, lane: Lane, preferred: Duration) -> Duration {
        let ceiling = Duration::from_millis(self.settings().prefer_wait_max_ms);
        preferred.min(ceiling.max(self.max_wait(lane)))
    }

    fn depth_limit(&self, lane: Lane) -> usize {
        let config = self.settings();
        match lane {
            Lane::Crud => config.crud_queue_depth,
            Lane::Invoke => config.invoke_queue_depth,
        }
    }

    /// The budgets a lane spends: its own, and for invocations the CRUD
    /// budget too unless configured otherwise.
    fn spends(&self, lane: Lane) -> &'static [usize] {
        spends_of(&self.settings(), lane)
    }

    /// When the `k`-th next send of `lane` may leave.
    fn ready_at(&self, core: &mut Core, lane: Lane, k: usize, now: Instant) -> Instant {
        core.free_at(self.spends(lane), lane, k, now)
    }

    /// Counts a send of `lane` at `at`; the caller saw `ready_at` due. In
    /// cluster mode it uses a held slot (or, Redis lost, is remembered to
    /// be written back); the local share counts it either way, so a
    /// replica that loses Redis starts its share with its recent sends.
    fn record(&self, core: &mut Core, lane: Lane, at: Instant) {
        for &b in self.spends(lane) {
            core.budgets[b].record(at);
        }
        if let Some(shared) = &self.0.shared {
            let leases = &mut core.leases[lane.index()];
            if !(core.shared_up && leases.take(at)) {
                let id = leases.tag(shared.replica(), "local");
                leases.sent_locally(id, at);
            }
        }
    }

    fn unrecord(&self, core: &mut Core, lane: Lane, at: Instant) {
        for &b in self.spends(lane) {
            core.budgets[b].unrecord(at);
        }
        core.leases[lane.index()].unsent(at);
    }

    /// Reads an upstream answer to a request of `lane`. A 429 pauses the
    /// lane's budgets until the upstream's `Retry-After` (or
    /// `X-RateLimit-Reset`) and returns true: the request was not executed
    /// and may be sent again. A `X-RateLimit-Remaining` lower than ours at
    /// `sent_at` (when the answered request's send was counted: the
    /// upstream counted it then, which for a long invocation is long ago)
    /// is followed.
    pub fn observe(
        &self,
        lane: Lane,
        status: StatusCode,
        headers: &HeaderMap,
        sent_at: Instant,
    ) -> bool {
        let now = Instant::now();
        let mut core = self.lock();
        let limited = status == StatusCode::TOO_MANY_REQUESTS;
        if limited {
            let pause = upstream_pause(headers);
            tracing::warn!(
                lane = lane.as_str(),
                pause_ms = pause.as_millis() as u64,
                "upstream answered 429; pausing the budget"
            );
            self.0.metrics.upstream_limited(lane);
            let given_up = self.pause_locally(&mut core, lane, now + pause);
            self.update_gauges(&mut core, now);
            drop(core);
            for (lane, ids) in given_up {
                self.give_back(lane, ids);
            }
            self.share_pause(lane, pause);
            return true;
        } else if let Some(remaining) = header_u64(headers, "x-ratelimit-remaining") {
            let remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
            if core.shared_up {
                let sent_ms = core.leases[lane.index()].ms_at(sent_at);
                drop(core);
                self.share_follow(lane, remaining, sent_ms);
                return false;
            }
            let own = lane.index();
            let added = core.budgets[own].follow_upstream(remaining, sent_at, now);
            if added > 0 {
                core.setbacks += 1;
                tracing::info!(
                    lane = lane.as_str(),
                    upstream_remaining = remaining,
                    "upstream reports fewer requests left than the gateway counted; following it"
                );
            }
        }
        self.update_gauges(&mut core, now);
        limited
    }

    /// Shutdown: keep dispatching until `deadline`, then refuse whatever
    /// still waits with [`Refusal::Draining`].
    pub fn drain(&self, deadline: Instant) {
        self.lock().drain_deadline = Some(deadline);
        for wake in &self.0.wake {
            wake.notify_one();
        }
    }

    /// Requests waiting in `lane` now.
    pub fn depth(&self, lane: Lane) -> usize {
        self.lock().queues[lane.index()].len()
    }

    /// No sends of `lane`, nor of any lane spending one of its budgets,
    /// before `until`. Slots held for those lanes are given up (their
    /// times would be stale by the end of the pause): returned per lane,
    /// to give back to the shared budget once the core is unlocked.
    fn pause_locally(
        &self,
        core: &mut Core,
        lane: Lane,
        until: Instant,
    ) -> Vec<(Lane, Vec<String>)> {
        let paused = self.spends(lane);
        for &b in paused {
            core.budgets[b].pause_until(until);
        }
        let mut given_up = Vec::new();
        for other in Lane::ALL {
            if self.spends(other).iter().any(|b| paused.contains(b)) {
                let leases = &mut core.leases[other.index()];
                leases.pause_until(until);
                given_up.push((other, leases.surrender()));
            }
        }
        core.setbacks += 1;
        given_up
    }

    fn update_gauges(&self, core: &mut Core, now: Instant) {
        for lane in Lane::ALL {
            let remaining = core.remaining(lane, now);
            let depth = core.queues[lane.index()].len();
            self.0.metrics.set_state(lane, depth, remaining);
        }
    }
}

impl Core {
    /// When the `k`-th next send of `lane` (spending `spends`) may leave:
    /// the held slots decide in cluster mode, else the local budgets.
    fn free_at(&mut self, spends: &[usize], lane: Lane, k: usize, now: Instant) -> Instant {
        if self.shared_up {
            return self.leases[lane.index()].nth_free_at(k, now);
        }
        spends
            .iter()
            .map(|&b| self.budgets[b].nth_free_at(k, now))
            .max()
            .unwrap_or(now)
    }

    /// Sends of `lane`'s own budget allowed now, as far as this replica
    /// knows.
    fn remaining(&mut self, lane: Lane, now: Instant) -> u32 {
        if !self.shared_up {
            return self.budgets[lane.index()].remaining(now);
        }
        self.leases[lane.index()].remaining()
    }
}

/// How long the upstream asks us to hold off after a 429.
fn upstream_pause(headers: &HeaderMap) -> Duration {
    upstream_pause_unbounded(headers).min(MAX_PAUSE)
}

/// The longest pause an upstream 429 can impose (a `Retry-After` of years
/// is a bug upstream, not a reason to stop for years).
const MAX_PAUSE: Duration = Duration::from_secs(3600);

fn upstream_pause_unbounded(headers: &HeaderMap) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(1);
    if let Some(secs) = header_u64(headers, http::header::RETRY_AFTER.as_str()) {
        return Duration::from_secs(secs.max(1));
    }
    if let Some(reset) = header_u64(headers, "x-ratelimit-reset") {
        let now = crate::clock::since_epoch().as_secs();
        return Duration::from_secs(reset.saturating_sub(now).max(1));
    }
    DEFAULT
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The budgets `lane` spends under `config`.
fn spends_of(config: &ShaperConfig, lane: Lane) -> &'static [usize] {
    match lane {
        Lane::Crud => &[0],
        Lane::Invoke if config.invoke_counts_as_crud => &[1, 0],
        Lane::Invoke => &[1],
    }
}

fn lane_limit(config: &ShaperConfig, lane: Lane) -> crate::config::Rate {
    match lane {
        Lane::Crud => config.crud_limit,
        Lane::Invoke => config.invoke_limit,
    }
}

#[cfg(test)]
mod tests;
