//! Dispatch: one task per lane hands each free slot to the waiter whose
//! fair turn it is, unless that would cost another waiter its deadline.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio::sync::Notify;

use super::queue::Entry;
use super::shared::HEARTBEAT;
use super::{Core, Inner, Lane, Refusal, Shaper, Waiter};

impl Shaper {
    /// The waiter to send now: the one whose fair turn it is, unless that
    /// would cost another waiter its deadline; then the earliest due.
    fn next_waiter(&self, core: &mut Core, lane: Lane, now: Instant) -> Option<Entry<Waiter>> {
        let (head, _) = core.queues[lane.index()].peek()?;
        let earliest = core.deadlines[lane.index()].earliest().map(|(_, id, _)| id);
        // The earliest due going first keeps earliest-deadline order.
        if earliest != Some(head) && !self.feasible(core, lane, None, Some(head), 1, now) {
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
            let held = core.leases[lane.index()].surrender();
            self.update_gauges(&mut core, now);
            drop(core);
            self.give_back(lane, held);
            return None;
        }
        let next = loop {
            if core.queues[lane.index()].is_empty() {
                break None;
            }
            let at = self.ready_at(&mut core, lane, 0, now);
            if core.shared_up && core.leases[lane.index()].held() == 0 {
                // Nothing held: look again at once, after reserving.
                break Some(now);
            }
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
}

/// How soon a dispatcher holding no slot for its waiters reserves again.
const RESERVE_AGAIN: std::time::Duration = std::time::Duration::from_millis(20);

/// One lane's dispatcher: sleeps until the next slot frees or work arrives.
pub(super) async fn dispatch(shaper: Weak<Inner>, wake: Arc<Notify>, lane: Lane) {
    loop {
        let Some(inner) = shaper.upgrade() else {
            return;
        };
        let shaper = Shaper(inner);
        let clustered = shaper.0.shared.is_some();
        let starved = shaper.sync_shared(lane).await;
        let mut next = shaper.dispatch_ready(lane);
        if next.is_none() {
            // Nobody waits now: slots held beyond need go back, and the
            // shared budget hears that this replica's demand is gone.
            shaper.sync_shared(lane).await;
        }
        drop(shaper);
        if starved {
            // It asked the shared budget and got nothing (an error answer,
            // Redis just lost): not again in a tight loop.
            next = next.map(|at| at.max(Instant::now() + RESERVE_AGAIN));
        }
        if clustered {
            // Waiters on far slots: their demand is told again in time.
            next = next.map(|at| at.min(Instant::now() + HEARTBEAT));
        }
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
