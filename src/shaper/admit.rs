//! Admission: a request is let into its lane's queue only if every waiter
//! still makes its deadline ([`super::deadline`]), or it is refused at
//! once; a waiter that is let in waits for its slot, and leaves the queue
//! (spending nothing) if its client goes away.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::queue::{ClientId, Entry};
use super::{Admitted, Core, Lane, Refusal, Shaper, Ticket, Waiter, DEADLINE_GRACE};

impl Shaper {
    /// Waits until `ticket` may be sent, or says why it will not be. A
    /// refusal comes at once, before any wait, except after a setback by
    /// the upstream ([`deadline`](super::deadline)).
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

    /// Whether a newcomer of `lane` due at `deadline` keeps every waiter's
    /// deadline ([`Deadlines::admits`](super::deadline::Deadlines::admits)).
    fn admits(&self, core: &mut Core, lane: Lane, deadline: Instant, now: Instant) -> bool {
        let spends = self.spends(lane);
        let deadlines = std::mem::take(&mut core.deadlines[lane.index()]);
        let admits = deadlines.admits(deadline, |k| core.free_at(spends, lane, k, now));
        core.deadlines[lane.index()] = deadlines;
        admits
    }

    /// Whether every waiter of `lane` (less `skip`, plus a newcomer due at
    /// `extra`) can leave by its deadline, the `k`-th of them at the
    /// `first_slot + k`-th free slot.
    pub(super) fn feasible(
        &self,
        core: &mut Core,
        lane: Lane,
        extra: Option<Instant>,
        skip: Option<u64>,
        first_slot: usize,
        now: Instant,
    ) -> bool {
        let spends = self.spends(lane);
        let deadlines = std::mem::take(&mut core.deadlines[lane.index()]);
        let feasible = deadlines.feasible(extra, skip, first_slot, |k| {
            core.free_at(spends, lane, k, now)
        });
        core.deadlines[lane.index()] = deadlines;
        feasible
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
                lane,
            });
        }
        let max_wait = ticket.max_wait.unwrap_or_else(|| self.max_wait(lane));
        let deadline = ticket.arrived + max_wait;
        let waited_before = now.saturating_duration_since(ticket.arrived);
        let too_long = predicted > max_wait.saturating_sub(waited_before);
        if !ticket.retry && (too_long || !self.admits(&mut core, lane, deadline, now)) {
            // Either it would wait too long in its fair turn, or letting it
            // in would push someone already waiting past their deadline.
            let last = self.ready_at(&mut core, lane, depth, now);
            return Enqueued::Refused(Refusal::WaitTooLong {
                retry_after: predicted.max(last.saturating_duration_since(now)),
                lane,
            });
        }
        if core.drain_deadline.is_some_and(|d| at > d) {
            return Enqueued::Refused(Refusal::Draining);
        }
        if ticket.retry && too_long {
            // Sent once, and the upstream's 429 (or failure) pushed its next
            // chance past its deadline: the one late refusal there is.
            return Enqueued::Refused(Refusal::TimedOut {
                retry_after: predicted,
                lane,
            });
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
            if shaper.0.shared.is_some() {
                // A slot held for it may now be surplus.
                shaper.0.wake[lane.index()].notify_one();
            }
            return Some(Err(Refusal::TimedOut { retry_after, lane }));
        }
        drop(core);
        // Handed a slot just as it looked: take it.
        Some(match self.rx.take().map(|mut rx| rx.try_recv()) {
            Some(Ok(outcome)) => outcome,
            _ => Err(Refusal::TimedOut { retry_after, lane }),
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
        if freed || self.shaper.0.shared.is_some() {
            // A slot came back early: dispatchers asleep until a later one
            // should look again.
            for wake in &self.shaper.0.wake {
                wake.notify_one();
            }
        }
    }
}
