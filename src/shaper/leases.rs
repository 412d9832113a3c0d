//! Cluster mode: slots of the shared budget ([`crate::cluster::budget`])
//! held by this replica until one of its waiters uses them.
//!
//! The dispatcher keeps one slot reserved for each client waiting here
//! (more clients, more slots): every replica's reservations queue in one
//! calendar in Redis, so each client gets about one turn per round of the
//! calendar, whichever replica it talks to. Slots beyond those held are
//! predicted from how far ahead the cluster has booked. A held slot whose
//! waiter left goes to the next waiter, or back to Redis when none waits.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::cluster::budget::Spec;
use crate::cluster::Grant;

/// A reserved slot.
#[derive(Clone, Debug)]
pub(super) struct Lease {
    /// When it may be used.
    pub(super) at: Instant,
    /// Its id in the shared log.
    pub(super) id: String,
    /// Its time in the shared log (Redis ms).
    pub(super) at_ms: i64,
    /// Granted by the shared budget (not a send made on the local share).
    pub(super) shared: bool,
}

/// The slots of one lane held by this replica, and its sends still
/// counting.
#[derive(Debug, Default)]
pub(super) struct Leases {
    held: VecDeque<Lease>,
    /// Own sends of the last span, newest last: written back after Redis
    /// was lost, or given back as a slot when the waiter left.
    sent: VecDeque<Lease>,
    /// The expected gap between this replica's next slots beyond `held`.
    spacing: Duration,
    /// Redis time (ms) at a local instant.
    clock: Option<(Instant, i64)>,
    /// Sends counting in the shared log at the last grant.
    counted: u64,
    /// Slots booked ahead in the shared log at the last grant, and when
    /// that grant came.
    ahead: u64,
    granted_at: Option<Instant>,
    /// The budget's limit at the last grant.
    limit: u32,
    /// How late a held slot may still be used: half the safety margin. A
    /// later one counts in the shared log from a time too early for the
    /// upstream's window; it is given back instead.
    tolerance: Duration,
    /// Held slots found too late to use, to give back.
    stale: Vec<String>,
    paused_until: Option<Instant>,
    /// The shared budget's epoch whose write-back is done.
    pub(super) epoch: u64,
    /// Until then, reservations leave room for other replicas' sends not
    /// yet written back (Redis just came back).
    pub(super) cautious_until: Option<Instant>,
    /// Clients waiting here as the shared budget last heard (this
    /// replica's demand, which sizes its share of slots free now).
    pub(super) posted_clients: usize,
    /// When the shared budget last heard it.
    pub(super) posted_at: Option<Instant>,
    next_tag: u64,
}

impl Leases {
    /// Slots held (some may lie in the future).
    pub(super) fn held(&self) -> usize {
        self.held.len()
    }

    /// A tag for ids of the next reservation: `{replica}:{lane}:{n}:`.
    pub(super) fn tag(&mut self, replica: &str, lane: &str) -> String {
        self.next_tag += 1;
        format!("{replica}:{lane}:{}:", self.next_tag)
    }

    /// Takes a grant received at `received`, of the budget `spec`.
    pub(super) fn granted(&mut self, grant: Grant, received: Instant, spec: &Spec) {
        let (span, max) = (spec.span, spec.max);
        self.clock = Some((received, grant.now_ms));
        self.counted = grant.counted;
        self.ahead = grant.ahead;
        self.granted_at = Some(received);
        self.limit = max;
        self.tolerance = span.saturating_sub(spec.window) / 2;
        for (id, at_ms) in grant.slots {
            let at = self.instant(at_ms, received);
            let pos = self.held.partition_point(|l| l.at <= at);
            self.held.insert(
                pos,
                Lease {
                    at,
                    id,
                    at_ms,
                    shared: true,
                },
            );
        }
        // The cluster sends `max` per `span` when saturated; this
        // replica gets its held share of the slots booked ahead.
        let ahead = u32::try_from(grant.ahead).unwrap_or(u32::MAX).max(1);
        let mine = u32::try_from(self.held.len()).unwrap_or(u32::MAX).max(1);
        let per_slot = span / max.max(1);
        self.spacing = if grant.ahead == 0 {
            Duration::from_millis(1)
        } else {
            (per_slot * ahead / mine).max(Duration::from_millis(1))
        };
    }

    fn instant(&self, at_ms: i64, fallback: Instant) -> Instant {
        let Some((base, base_ms)) = self.clock else {
            return fallback;
        };
        let delta = at_ms - base_ms;
        let magnitude = Duration::from_millis(delta.unsigned_abs());
        if delta >= 0 {
            base + magnitude
        } else {
            base.checked_sub(magnitude).unwrap_or(base)
        }
    }

    /// Redis time (ms) at `at`: by the clock of the last grant, else the
    /// host's wall clock.
    pub(super) fn ms_at(&self, at: Instant) -> i64 {
        match self.clock {
            Some((base, base_ms)) if at >= base => {
                base_ms + i64::try_from(at.duration_since(base).as_millis()).unwrap_or(0)
            }
            Some((base, base_ms)) => {
                base_ms - i64::try_from(base.duration_since(at).as_millis()).unwrap_or(0)
            }
            None => {
                let wall = crate::clock::since_epoch();
                let ago = Instant::now().saturating_duration_since(at);
                i64::try_from(wall.saturating_sub(ago).as_millis()).unwrap_or(0)
            }
        }
    }

    /// When the `k`-th next send may leave: a held slot, else a
    /// prediction (never now: only a held slot sends).
    pub(super) fn nth_free_at(&mut self, k: usize, now: Instant) -> Instant {
        self.set_aside_stale(now);
        let at = match self.held.get(k) {
            Some(lease) => lease.at.max(now),
            None => {
                let last = self.held.back().map_or(now, |l| l.at.max(now));
                let beyond = u32::try_from(k - self.held.len() + 1).unwrap_or(u32::MAX);
                last + self.spacing.max(Duration::from_millis(1)) * beyond
            }
        };
        match self.paused_until {
            Some(until) if until > at => until,
            _ => at,
        }
    }

    /// Uses the first held slot for a send at `now`; false if none is due.
    /// Slots too late to use are set aside to give back.
    pub(super) fn take(&mut self, now: Instant) -> bool {
        if self.paused_until.is_some_and(|until| until > now) {
            return false;
        }
        self.set_aside_stale(now);
        match self.held.front() {
            Some(lease) if lease.at <= now => {
                if let Some(lease) = self.held.pop_front() {
                    self.sent.push_back(Lease { at: now, ..lease });
                }
                true
            }
            _ => false,
        }
    }

    /// Sets aside held slots too late to use (to give back): they must
    /// never look due.
    fn set_aside_stale(&mut self, now: Instant) {
        while self
            .held
            .front()
            .is_some_and(|lease| lease.at + self.tolerance < now)
        {
            if let Some(lease) = self.held.pop_front() {
                self.stale.push(lease.id);
            }
        }
    }

    /// Records a send made without a slot (Redis lost: on the local
    /// share), to be written back.
    pub(super) fn sent_locally(&mut self, id: String, now: Instant) {
        let at_ms = self.ms_at(now);
        self.sent.push_back(Lease {
            at: now,
            id,
            at_ms,
            shared: false,
        });
    }

    /// The send at `at` never left: a slot the shared budget granted is
    /// held again (first); a send on the local share is forgotten.
    pub(super) fn unsent(&mut self, at: Instant) {
        if let Some(i) = self.sent.iter().rposition(|l| l.at == at) {
            if let Some(lease) = self.sent.remove(i).filter(|l| l.shared) {
                self.held.push_front(lease);
            }
        }
    }

    /// Held slots found too late to use since the last call.
    pub(super) fn take_stale(&mut self) -> Vec<String> {
        std::mem::take(&mut self.stale)
    }

    /// Drops sends that no longer count.
    pub(super) fn expire(&mut self, span: Duration, now: Instant) {
        while self.sent.front().is_some_and(|l| l.at + span <= now) {
            self.sent.pop_front();
        }
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }

    /// Gives up every held slot; returns their ids (for Redis).
    pub(super) fn surrender(&mut self) -> Vec<String> {
        self.held.drain(..).map(|l| l.id).collect()
    }

    /// Gives up held slots beyond the first `keep`.
    pub(super) fn surrender_beyond(&mut self, keep: usize) -> Vec<String> {
        if self.held.len() <= keep {
            return Vec::new();
        }
        self.held.drain(keep..).map(|l| l.id).collect()
    }

    /// Own sends still counting, for a write-back: (id, Redis ms).
    pub(super) fn recent(&self) -> Vec<(String, i64)> {
        self.sent.iter().map(|l| (l.id.clone(), l.at_ms)).collect()
    }

    /// No sends before `until`.
    pub(super) fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|current| current < until) {
            self.paused_until = Some(until);
        }
    }

    /// What the last grant said the whole cluster had spent of this lane's
    /// budget, bookings ahead included, and when; `None` before any grant
    /// or once a span has passed since (it says nothing about now).
    pub(super) fn last_known(&self, span: Duration, now: Instant) -> Option<(u64, Instant)> {
        let at = self.granted_at.filter(|at| *at + span > now)?;
        Some((self.counted + self.ahead, at))
    }

    /// Sends still allowed in the shared log at the last grant.
    pub(super) fn remaining(&self) -> u32 {
        u32::try_from(u64::from(self.limit).saturating_sub(self.counted)).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 per second, a 200 ms margin: slots may be used up to 100 ms late.
    fn spec() -> Spec {
        Spec {
            name: "crud",
            max: 10,
            window: Duration::from_millis(800),
            span: Duration::from_secs(1),
        }
    }

    fn grant(now_ms: i64, slots: &[(&str, i64)], ahead: u64) -> Grant {
        Grant {
            now_ms,
            slots: slots.iter().map(|(id, at)| (id.to_string(), *at)).collect(),
            ahead,
            counted: 0,
        }
    }

    #[test]
    fn only_a_held_slot_sends() {
        let mut leases = Leases::default();
        let t0 = Instant::now();
        assert!(leases.nth_free_at(0, t0) > t0, "no slot held: not now");
        assert!(!leases.take(t0));
        leases.granted(
            grant(1_000, &[("a1", 1_000), ("a2", 1_500)], 0),
            t0,
            &spec(),
        );
        assert_eq!(leases.nth_free_at(0, t0), t0);
        assert_eq!(leases.nth_free_at(1, t0), t0 + Duration::from_millis(500));
        assert!(leases.take(t0));
        assert!(!leases.take(t0), "the second slot is 500 ms away");
        assert!(leases.take(t0 + Duration::from_millis(500)));
        assert_eq!(leases.recent().len(), 2);
    }

    #[test]
    fn a_slot_whose_waiter_left_is_held_again() {
        let mut leases = Leases::default();
        let t0 = Instant::now();
        leases.granted(grant(5, &[("a1", 5)], 1), t0, &spec());
        assert!(leases.take(t0));
        leases.unsent(t0);
        assert_eq!(leases.held(), 1);
        assert_eq!(leases.surrender(), vec!["a1".to_string()]);
    }

    #[test]
    fn a_pause_holds_held_slots() {
        let mut leases = Leases::default();
        let t0 = Instant::now();
        leases.granted(grant(5, &[("a1", 5)], 1), t0, &spec());
        leases.pause_until(t0 + Duration::from_secs(2));
        assert!(!leases.take(t0));
        assert_eq!(leases.nth_free_at(0, t0), t0 + Duration::from_secs(2));
    }

    #[test]
    fn predictions_follow_the_calendar() {
        let mut leases = Leases::default();
        let t0 = Instant::now();
        // 10 per second, 20 booked ahead, one held here: the next slot
        // of this replica comes about 20 slots (2 s) after the last.
        leases.granted(grant(0, &[("a1", 100)], 20), t0, &spec());
        let next = leases.nth_free_at(1, t0);
        assert_eq!(
            next,
            t0 + Duration::from_millis(100) + Duration::from_secs(2)
        );
    }

    #[test]
    fn a_slot_too_late_to_use_is_given_back() {
        let mut leases = Leases::default();
        let t0 = Instant::now();
        leases.granted(grant(5, &[("a1", 5), ("a2", 5)], 0), t0, &spec());
        assert!(
            leases.take(t0 + Duration::from_millis(100)),
            "within the tolerance"
        );
        assert!(!leases.take(t0 + Duration::from_millis(101)), "past it");
        assert_eq!(leases.take_stale(), vec!["a2".to_string()]);
        assert_eq!(leases.held(), 0);
    }

    #[test]
    fn a_send_on_the_local_share_never_becomes_a_slot() {
        let mut leases = Leases::default();
        let t0 = Instant::now();
        leases.sent_locally("local-1".into(), t0);
        leases.unsent(t0);
        assert_eq!(leases.held(), 0);
        assert!(leases.recent().is_empty());
    }
}
