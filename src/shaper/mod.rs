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
//! request was sent. [`sessions`] keeps the turns of
//! one session in order.

pub mod budget;
pub mod deadline;
pub mod metrics;
pub mod queue;
pub mod sessions;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, StatusCode};
use serde::Serialize;
use tokio::sync::{oneshot, Notify};

use crate::config::ShaperConfig;
use crate::route::RouteClass;
use budget::Budget;
use deadline::Deadlines;
pub use metrics::ShaperMetrics;
use queue::{ClientId, Entry, FairQueue};
use sessions::Sessions;

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
    },
    /// The predicted wait is longer than the lane allows.
    WaitTooLong {
        /// When to try again.
        retry_after: Duration,
    },
    /// The upstream set the budget back while it waited (a 429, a lower
    /// `X-RateLimit-Remaining`) and its deadline passed.
    TimedOut {
        /// When to try again.
        retry_after: Duration,
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
    /// CRUD budget, invoke budget.
    budgets: [Budget; 2],
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
        let margin = Duration::from_millis(config.safety_margin_ms);
        let budget = |lane| {
            let limit = lane_limit(config, lane);
            Budget::new(limit.max, limit.window, margin)
        };
        let (crud, invoke) = (budget(Lane::Crud), budget(Lane::Invoke));
        let inner = Arc::new(Inner {
            config: RwLock::new(config.clone()),
            core: Mutex::new(Core {
                budgets: [crud, invoke],
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
        });
        for lane in Lane::ALL {
            let shaper = Arc::downgrade(&inner);
            let wake = inner.wake[lane.index()].clone();
            tokio::spawn(dispatch(shaper, wake, lane));
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
        self.0.core.lock().unwrap_or_else(PoisonError::into_inner)
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
        let now = Instant::now();
        let mut core = self.lock();
        for lane in Lane::ALL {
            let limit = lane_limit(config, lane);
            core.budgets[lane.index()].reconfigure(limit.max, limit.window, margin, now);
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
        match lane {
            Lane::Crud => &[0],
            Lane::Invoke if self.settings().invoke_counts_as_crud => &[1, 0],
            Lane::Invoke => &[1],
        }
    }

    /// When the `k`-th next send of `lane` may leave.
    fn ready_at(&self, core: &mut Core, lane: Lane, k: usize, now: Instant) -> Instant {
        self.spends(lane)
            .iter()
            .map(|&b| core.budgets[b].nth_free_at(k, now))
            .max()
            .unwrap_or(now)
    }

    fn record(&self, core: &mut Core, lane: Lane, at: Instant) {
        for &b in self.spends(lane) {
            core.budgets[b].record(at);
        }
    }

    fn unrecord(&self, core: &mut Core, lane: Lane, at: Instant) {
        for &b in self.spends(lane) {
            core.budgets[b].unrecord(at);
        }
    }

    /// Waits until `ticket` may be sent, or says why it will not be. A
    /// refusal comes at once, before any wait, except after a setback by
    /// the upstream ([`deadline`]).
    ///
    /// # Errors
    /// A [`Refusal`]: queue full, predicted wait too long, set back past
    /// its deadline, or shutting down.
    pub async fn admit(&self, ticket: Ticket) -> Result<Admitted, Refusal> {
        let lane = ticket.lane;
        let started = Instant::now();
        let (queued, rx) = match self.enqueue(&ticket, started) {
            Enqueued::Now => {
                self.0.metrics.dispatched(lane);
                return Ok(Admitted {
                    waited: Duration::ZERO,
                    queued: false,
                    sent_at: started,
                });
            }
            Enqueued::Refused(refusal) => {
                self.0.metrics.refused(lane, refusal.reason());
                return Err(refusal);
            }
            Enqueued::Waiting(queued, rx) => (queued, rx),
        };
        let mut wait = Wait {
            shaper: self,
            lane,
            queued,
            client: ticket.client,
            rx: Some(rx),
        };
        let outcome = wait.outcome().await;
        let waited = started.elapsed();
        match outcome {
            Ok(sent_at) => {
                self.0.metrics.dispatched(lane);
                self.0.metrics.waited(lane, waited);
                Ok(Admitted {
                    waited,
                    queued: true,
                    sent_at,
                })
            }
            Err(refusal) => {
                self.0.metrics.refused(lane, refusal.reason());
                Err(refusal)
            }
        }
    }

    /// Whether every waiter of `lane` (less `skip`, plus a newcomer due at
    /// `extra`) can leave by its deadline, the `k`-th of them at the
    /// `first_slot + k`-th free slot.
    fn feasible(
        &self,
        core: &mut Core,
        lane: Lane,
        extra: Option<Instant>,
        skip: Option<u64>,
        first_slot: usize,
        now: Instant,
    ) -> bool {
        let spends = self.spends(lane);
        let Core {
            budgets, deadlines, ..
        } = core;
        deadlines[lane.index()].feasible(extra, skip, first_slot, |k| {
            spends
                .iter()
                .map(|&b| budgets[b].nth_free_at(k, now))
                .max()
                .unwrap_or(now)
        })
    }

    fn enqueue(&self, ticket: &Ticket, now: Instant) -> Enqueued {
        let lane = ticket.lane;
        let mut core = self.lock();
        if core.drain_deadline.is_some_and(|d| d <= now) {
            return Enqueued::Refused(Refusal::Draining);
        }
        let queue = &core.queues[lane.index()];
        if queue.is_empty() && self.ready_at(&mut core, lane, 0, now) <= now {
            self.record(&mut core, lane, now);
            self.update_gauges(&mut core, now);
            return Enqueued::Now;
        }
        let queue = &core.queues[lane.index()];
        let (ahead, depth) = if ticket.retry {
            (0, queue.len())
        } else {
            (queue.ahead_of_new(&ticket.client), queue.len())
        };
        let at = self.ready_at(&mut core, lane, ahead, now);
        let predicted = at.saturating_duration_since(now);
        if !ticket.retry && depth >= self.depth_limit(lane) {
            return Enqueued::Refused(Refusal::QueueFull {
                retry_after: predicted,
            });
        }
        let max_wait = ticket.max_wait.unwrap_or_else(|| self.max_wait(lane));
        let deadline = ticket.arrived + max_wait;
        let waited_before = now.saturating_duration_since(ticket.arrived);
        let too_long = predicted > max_wait.saturating_sub(waited_before);
        if !ticket.retry
            && (too_long || !self.feasible(&mut core, lane, Some(deadline), None, 0, now))
        {
            // Either it would wait too long in its fair turn, or letting it
            // in would push someone already waiting past their deadline.
            let last = self.ready_at(&mut core, lane, depth, now);
            return Enqueued::Refused(Refusal::WaitTooLong {
                retry_after: predicted.max(last.saturating_duration_since(now)),
            });
        }
        if core.drain_deadline.is_some_and(|d| at > d) {
            return Enqueued::Refused(Refusal::Draining);
        }
        if ticket.retry && !self.feasible(&mut core, lane, Some(deadline), None, 0, now) {
            // A resend after an upstream 429 or failure goes first; if that
            // costs someone their deadline, the upstream caused it.
            core.setbacks += 1;
        }
        let (tx, rx) = oneshot::channel();
        core.next_id += 1;
        let id = core.next_id;
        let entry = Entry {
            id,
            client: ticket.client.clone(),
            item: Waiter {
                tx,
                enqueued: now,
                deadline,
                agent: ticket.agent.clone(),
            },
        };
        core.deadlines[lane.index()].insert(deadline, id, ticket.client.clone());
        let queue = &mut core.queues[lane.index()];
        if ticket.retry {
            queue.push_priority(entry);
        } else {
            queue.push(entry);
        }
        let queued = Queued {
            id,
            deadline,
            setbacks: core.setbacks,
        };
        self.update_gauges(&mut core, now);
        drop(core);
        self.0.wake[lane.index()].notify_one();
        Enqueued::Waiting(queued, rx)
    }

    /// The waiter to send now: the one whose fair turn it is, unless that
    /// would cost another waiter its deadline; then the earliest due.
    fn next_waiter(&self, core: &mut Core, lane: Lane, now: Instant) -> Option<Entry<Waiter>> {
        let (head, _) = core.queues[lane.index()].peek()?;
        if !self.feasible(core, lane, None, Some(head), 1, now) {
            let (_, id, client) = core.deadlines[lane.index()].earliest()?;
            let client = client.clone();
            if id != head {
                return core.queues[lane.index()].remove(id, &client);
            }
        }
        core.queues[lane.index()].pop()
    }

    /// Hands free slots of `lane` to waiters. Returns when the dispatcher
    /// should look again, or `None` when nothing waits.
    fn dispatch_ready(&self, lane: Lane) -> Option<Instant> {
        let mut core = self.lock();
        let now = Instant::now();
        if core.drain_deadline.is_some_and(|d| d <= now) {
            for entry in core.queues[lane.index()].drain() {
                let _ = entry.item.tx.send(Err(Refusal::Draining));
            }
            core.deadlines[lane.index()].clear();
            self.update_gauges(&mut core, now);
            return None;
        }
        let next = loop {
            if core.queues[lane.index()].is_empty() {
                break None;
            }
            let at = self.ready_at(&mut core, lane, 0, now);
            if at > now {
                break Some(at);
            }
            let Some(entry) = self.next_waiter(&mut core, lane, now) else {
                break None;
            };
            core.deadlines[lane.index()].remove(entry.item.deadline, entry.id);
            self.record(&mut core, lane, now);
            if entry.item.tx.send(Ok(now)).is_err() {
                // Its client left between the check and now: nothing is sent.
                self.unrecord(&mut core, lane, now);
            }
        };
        self.update_gauges(&mut core, now);
        match (next, core.drain_deadline) {
            (Some(at), Some(deadline)) => Some(at.min(deadline)),
            (None, Some(deadline)) if !core.queues[lane.index()].is_empty() => Some(deadline),
            (next, _) => next,
        }
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
            for &b in self.spends(lane) {
                core.budgets[b].pause_until(now + pause);
            }
            core.setbacks += 1;
        } else if let Some(remaining) = header_u64(headers, "x-ratelimit-remaining") {
            let remaining = u32::try_from(remaining).unwrap_or(u32::MAX);
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

    /// The gateway's `X-RateLimit-*` view of `lane`.
    pub fn view(&self, lane: Lane) -> RateView {
        let now = Instant::now();
        let mut core = self.lock();
        let waiting = core.queues[lane.index()].len();
        let free = self
            .spends(lane)
            .iter()
            .map(|&b| core.budgets[b].remaining(now))
            .min()
            .unwrap_or(0);
        let next_free = self.ready_at(&mut core, lane, 0, now);
        let reset = if free > 0 {
            core.budgets[lane.index()].oldest_expiry(now)
        } else {
            next_free
        };
        RateView {
            limit: core.budgets[lane.index()].max(),
            remaining: free.saturating_sub(u32::try_from(waiting).unwrap_or(u32::MAX)),
            reset_unix: unix_seconds_ceil(reset, now),
        }
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

    /// What `/admin/queue` shows.
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let mut lanes = Vec::new();
        for lane in Lane::ALL {
            let view = self.view(lane);
            let mut core = self.lock();
            let budget = &mut core.budgets[lane.index()];
            let remaining_now = budget.remaining(now);
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
        Snapshot {
            lanes,
            sessions_active: self.0.sessions.active(),
            draining: self.lock().drain_deadline.is_some(),
        }
    }

    fn update_gauges(&self, core: &mut Core, now: Instant) {
        for lane in Lane::ALL {
            let remaining = core.budgets[lane.index()].remaining(now);
            let depth = core.queues[lane.index()].len();
            self.0.metrics.set_state(lane, depth, remaining);
        }
    }
}

enum Enqueued {
    Now,
    Refused(Refusal),
    Waiting(Queued, oneshot::Receiver<Result<Instant, Refusal>>),
}

/// A waiter's place: its id, its deadline, and the setbacks counted when
/// it was let in.
#[derive(Clone, Copy)]
struct Queued {
    id: u64,
    deadline: Instant,
    setbacks: u64,
}

/// A queued request. Dropping it (the client went away) takes it out of the
/// queue, or, if its slot was handed over in the meantime, gives the slot
/// back: nothing was sent, so nothing is spent.
struct Wait<'a> {
    shaper: &'a Shaper,
    lane: Lane,
    queued: Queued,
    client: ClientId,
    rx: Option<oneshot::Receiver<Result<Instant, Refusal>>>,
}

impl Wait<'_> {
    /// The send time, or why not. Past its deadline (and a grace for the
    /// dispatcher's own lag) a waiter looks at the setbacks: none since it
    /// was let in means its slot is still coming, so it keeps waiting; one
    /// or more means the upstream moved the slots, and it is refused.
    async fn outcome(&mut self) -> Result<Instant, Refusal> {
        let mut check_at = tokio::time::Instant::from_std(self.queued.deadline + DEADLINE_GRACE);
        loop {
            let Some(rx) = self.rx.as_mut() else {
                return Err(Refusal::Draining);
            };
            match tokio::time::timeout_at(check_at, rx).await {
                Ok(Ok(outcome)) => {
                    self.rx = None;
                    return outcome;
                }
                // The dispatcher is gone: the shaper is being torn down.
                Ok(Err(_)) => {
                    self.rx = None;
                    return Err(Refusal::Draining);
                }
                Err(_) => {
                    if let Some(refused) = self.refuse_if_set_back() {
                        return refused;
                    }
                    check_at += DEADLINE_GRACE;
                }
            }
        }
    }

    /// Leaves the queue with [`Refusal::TimedOut`] if the upstream set the
    /// budget back since this waiter was let in; `None`: keep waiting.
    fn refuse_if_set_back(&mut self) -> Option<Result<Instant, Refusal>> {
        let shaper = self.shaper;
        let lane = self.lane;
        let mut core = shaper.lock();
        if core.setbacks == self.queued.setbacks {
            return None;
        }
        let removed = core.queues[lane.index()].remove(self.queued.id, &self.client);
        let now = Instant::now();
        let retry_after = shaper
            .ready_at(&mut core, lane, 0, now)
            .saturating_duration_since(now);
        if removed.is_some() {
            core.deadlines[lane.index()].remove(self.queued.deadline, self.queued.id);
            shaper.update_gauges(&mut core, now);
            self.rx = None;
            return Some(Err(Refusal::TimedOut { retry_after }));
        }
        drop(core);
        // Handed a slot just as it looked: take it.
        Some(match self.rx.take().map(|mut rx| rx.try_recv()) {
            Some(Ok(outcome)) => outcome,
            _ => Err(Refusal::TimedOut { retry_after }),
        })
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else {
            return;
        };
        let lane = self.lane.index();
        let mut core = self.shaper.lock();
        let mut freed = false;
        if core.queues[lane]
            .remove(self.queued.id, &self.client)
            .is_some()
        {
            core.deadlines[lane].remove(self.queued.deadline, self.queued.id);
        } else if let Ok(Ok(sent_at)) = rx.try_recv() {
            self.shaper.unrecord(&mut core, self.lane, sent_at);
            freed = true;
        }
        self.shaper.update_gauges(&mut core, Instant::now());
        drop(core);
        self.shaper.0.metrics.refused(self.lane, "client_gone");
        if freed {
            // A slot came back early: dispatchers asleep until a later one
            // should look again.
            for wake in &self.shaper.0.wake {
                wake.notify_one();
            }
        }
    }
}

/// One lane's dispatcher: sleeps until the next slot frees or work arrives.
async fn dispatch(shaper: Weak<Inner>, wake: Arc<Notify>, lane: Lane) {
    loop {
        let Some(inner) = shaper.upgrade() else {
            return;
        };
        let next = Shaper(inner).dispatch_ready(lane);
        match next {
            None => wake.notified().await,
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = wake.notified() => {}
                }
            }
        }
    }
}

/// How long the upstream asks us to hold off after a 429.
fn upstream_pause(headers: &HeaderMap) -> Duration {
    const DEFAULT: Duration = Duration::from_secs(1);
    if let Some(secs) = header_u64(headers, http::header::RETRY_AFTER.as_str()) {
        return Duration::from_secs(secs.max(1));
    }
    if let Some(reset) = header_u64(headers, "x-ratelimit-reset") {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        return Duration::from_secs(reset.saturating_sub(now).max(1));
    }
    DEFAULT
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn unix_seconds_ceil(at: Instant, now: Instant) -> u64 {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        + at.saturating_duration_since(now);
    unix.as_secs() + u64::from(unix.subsec_nanos() > 0)
}

fn lane_limit(config: &ShaperConfig, lane: Lane) -> crate::config::Rate {
    match lane {
        Lane::Crud => config.crud_limit,
        Lane::Invoke => config.invoke_limit,
    }
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

#[cfg(test)]
mod tests;
