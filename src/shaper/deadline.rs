//! Deadlines: a request let into the queue is sent, not refused later.
//!
//! Each waiter carries the instant by which it must leave (when it arrived
//! plus its lane's longest wait, or what its `Prefer: wait=N` asked). The
//! queue is served in fair order (`queue.rs`), but fair order alone can
//! push an early waiter past its deadline: a newcomer from a quiet client
//! goes ahead of a busy client's backlog. So two rules hold the promise:
//!
//! - **Admission.** A newcomer is let in only if every waiter, the
//!   newcomer included, can still leave by its deadline when the free slots
//!   are handed out earliest deadline first. Otherwise it is refused at
//!   once, before it waited at all.
//! - **Dispatch.** A slot goes to the waiter whose fair turn it is, unless
//!   that would leave the others unable to make their deadlines; then it
//!   goes to the earliest deadline. Earliest-deadline-first meets every
//!   deadline whenever any order can, so a set that was admitted stays
//!   servable.
//!
//! Only the upstream can break this: a 429 that pauses the budget, or an
//! `X-RateLimit-Remaining` lower than the gateway's count (another client
//! of the account), moves slots later than predicted. Those are counted as
//! setbacks, and only a waiter that saw a setback while it waited may be
//! refused after waiting.

use std::collections::BTreeMap;
use std::time::Instant;

use super::queue::ClientId;

/// The deadlines of one lane's waiters, earliest first.
#[derive(Debug, Default)]
pub struct Deadlines(BTreeMap<(Instant, u64), ClientId>);

impl Deadlines {
    /// Adds waiter `id` of `client`, due at `at`.
    pub fn insert(&mut self, at: Instant, id: u64, client: ClientId) {
        self.0.insert((at, id), client);
    }

    /// Removes waiter `id`, due at `at`.
    pub fn remove(&mut self, at: Instant, id: u64) {
        self.0.remove(&(at, id));
    }

    /// Forgets every waiter (shutdown).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// The waiter due first: its deadline, id and client.
    pub fn earliest(&self) -> Option<(Instant, u64, &ClientId)> {
        self.0
            .iter()
            .next()
            .map(|((at, id), client)| (*at, *id, client))
    }

    /// Whether a newcomer due at `due` can be let in: it and every waiter
    /// can leave by their deadlines, the `k`-th (earliest deadline first)
    /// at `slot(k)`. A newcomer due no earlier than every waiter goes last
    /// in that order and moves no one, so only its own slot is checked;
    /// else the whole line is.
    pub fn admits(&self, due: Instant, mut slot: impl FnMut(usize) -> Instant) -> bool {
        match self.0.keys().next_back() {
            Some((latest, _)) if *latest > due => self.feasible(Some(due), None, 0, slot),
            _ => slot(self.0.len()) <= due,
        }
    }

    /// Whether every waiter can leave by its deadline when the slots go
    /// earliest deadline first: the `k`-th of them (counting from 0) leaves
    /// at `slot(first_slot + k)`. `skip` leaves one waiter out (the one
    /// about to be sent); `extra` adds a newcomer due at that instant.
    pub fn feasible(
        &self,
        extra: Option<Instant>,
        skip: Option<u64>,
        first_slot: usize,
        mut slot: impl FnMut(usize) -> Instant,
    ) -> bool {
        let mut extra = extra;
        let mut k = first_slot;
        for &(at, id) in self.0.keys() {
            if Some(id) == skip {
                continue;
            }
            if let Some(due) = extra.filter(|due| *due < at) {
                if slot(k) > due {
                    return false;
                }
                k += 1;
                extra = None;
            }
            if slot(k) > at {
                return false;
            }
            k += 1;
        }
        extra.is_none_or(|due| slot(k) <= due)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn feasible_when_each_slot_comes_by_its_deadline() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let c: ClientId = Arc::from("a");
        // Slots every second from t0 + 1 s.
        let slot = |k: usize| secs(t0, k as u64 + 1);
        d.insert(secs(t0, 1), 1, c.clone());
        d.insert(secs(t0, 3), 2, c.clone());
        assert!(d.feasible(None, None, 0, slot));
        // A newcomer due at 2 s fits between them (slots at 1, 2, 3).
        assert!(d.feasible(Some(secs(t0, 2)), None, 0, slot));
        // Two more due at 2 s do not: four waiters, the third slot is at 3 s.
        d.insert(secs(t0, 2), 3, c.clone());
        assert!(!d.feasible(Some(secs(t0, 2)), None, 0, slot));
        // Sending waiter 1 now (slot 0 used) leaves the rest feasible.
        assert!(d.feasible(None, Some(1), 1, |k| secs(t0, k as u64)));
    }

    #[test]
    fn a_newcomer_due_last_checks_only_its_own_slot() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        d.insert(secs(t0, 5), 1, Arc::from("a"));
        d.insert(secs(t0, 5), 2, Arc::from("a"));
        let mut asked = Vec::new();
        let slot = |k: usize| {
            asked.push(k);
            secs(t0, k as u64 + 1)
        };
        assert!(d.admits(secs(t0, 6), slot));
        assert_eq!(asked, [2]);
        // Due earlier than both: it goes first and pushes them back one slot.
        let tight = |k: usize| secs(t0, k as u64 + 4);
        assert!(
            !d.admits(secs(t0, 4), tight),
            "the second would leave at 6 s"
        );
        assert!(d.admits(secs(t0, 4), |k| secs(t0, k as u64 + 3)));
    }

    #[test]
    fn a_late_newcomer_goes_last() {
        let t0 = Instant::now();
        let mut d = Deadlines::default();
        let slot = |k: usize| secs(t0, k as u64);
        d.insert(secs(t0, 0), 1, Arc::from("a"));
        assert!(d.feasible(Some(secs(t0, 1)), None, 0, slot));
        assert!(!d.feasible(Some(secs(t0, 0)), None, 0, slot));
        assert_eq!(d.earliest().map(|(_, id, _)| id), Some(1));
        d.remove(secs(t0, 0), 1);
        assert!(d.earliest().is_none());
    }
}
