//! One upstream budget: at most `max` sends in any window, exactly.
//!
//! A token bucket (governor's GCRA included) with a burst of `max` lets
//! nearly `2 * max` requests through one window: a full burst at its end and
//! the refill right after. The upstream counts arrivals in fixed or sliding
//! windows, so the gateway keeps the one model that is never wrong for
//! either: a log of the last `max` send times. A send is allowed when fewer
//! than `max` sends happened in the last `window + margin`; the margin covers
//! the time from leaving the gateway to arriving upstream. Any window of the
//! upstream's length then holds at most `max` arrivals, whichever way the
//! upstream counts.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The send log of one budget.
#[derive(Debug)]
pub struct Budget {
    max: usize,
    /// The upstream's window.
    window: Duration,
    /// Window plus safety margin.
    span: Duration,
    /// Send times (some may be placeholders for sends the upstream saw from
    /// elsewhere), ascending, all within the last `span`.
    sends: VecDeque<Instant>,
    /// No sends before this instant (the upstream answered 429).
    paused_until: Option<Instant>,
}

impl Budget {
    /// A budget of `max` sends per `window`, each send counting for
    /// `window + margin`.
    pub fn new(max: u32, window: Duration, margin: Duration) -> Self {
        Self {
            max: max.max(1) as usize,
            window,
            span: window + margin,
            // Grown as sends arrive: a huge limit must not reserve (and, as
            // the ring wraps, touch) memory for sends that never happen.
            sends: VecDeque::with_capacity((max as usize).min(1024)),
            paused_until: None,
        }
    }

    /// Takes new limits, keeping the log: only the newest `max` sends can
    /// decide when the next may leave, so a lowered limit keeps those and
    /// is exact at once; a new window or margin applies to the sends
    /// already made.
    pub fn reconfigure(&mut self, max: u32, window: Duration, margin: Duration, now: Instant) {
        self.max = max.max(1) as usize;
        self.window = window;
        self.span = window + margin;
        while self.sends.len() > self.max {
            self.sends.pop_front();
        }
        self.expire(now);
    }

    /// How long a send counts: the window plus the safety margin.
    pub fn span(&self) -> Duration {
        self.span
    }

    /// The configured count per window.
    pub fn max(&self) -> u32 {
        self.max as u32
    }

    fn expire(&mut self, now: Instant) {
        while self
            .sends
            .front()
            .is_some_and(|sent| *sent + self.span <= now)
        {
            self.sends.pop_front();
        }
        if self.paused_until.is_some_and(|until| until <= now) {
            self.paused_until = None;
        }
    }

    /// Sends counting now (a pause aside).
    pub fn counted(&mut self, now: Instant) -> usize {
        self.expire(now);
        self.sends.len()
    }

    /// Sends still allowed right now.
    pub fn remaining(&mut self, now: Instant) -> u32 {
        self.expire(now);
        if self.paused_until.is_some() {
            return 0;
        }
        (self.max - self.sends.len()) as u32
    }

    /// When the `k`-th send from now (0 = the next one) may leave, if nothing
    /// else changes. Sends repeat with period `span`: the slot freed by the
    /// `i`-th oldest send comes back `span` after it.
    pub fn nth_free_at(&mut self, k: usize, now: Instant) -> Instant {
        self.expire(now);
        let used = self.sends.len();
        let free_now = self.max - used;
        let at = if k < free_now {
            now
        } else {
            let m = k - free_now;
            let base = self.sends.get(m % self.max).copied().unwrap_or(now);
            let cycles = u32::try_from(m / self.max + 1).unwrap_or(u32::MAX);
            base + self.span.saturating_mul(cycles)
        };
        match self.paused_until {
            Some(until) if until > at => until,
            _ => at,
        }
    }

    /// Records a send at `now`; the caller checked `remaining` first.
    pub fn record(&mut self, now: Instant) {
        self.expire(now);
        if self.sends.len() == self.max {
            self.sends.pop_front();
        }
        self.sends.push_back(now);
    }

    /// Takes back the send recorded at `at` (it never left: its waiter was
    /// gone). The exact entry goes, not the newest: dropping a later one
    /// would free its slot too early.
    pub fn unrecord(&mut self, at: Instant) {
        if let Some(i) = self.sends.iter().rposition(|sent| *sent == at) {
            self.sends.remove(i);
        }
    }

    /// No sends before `until` (the upstream said 429).
    pub fn pause_until(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|current| current < until) {
            self.paused_until = Some(until);
        }
    }

    /// The upstream said `upstream_remaining` sends were left when it
    /// counted a request the gateway sent at `sent_at`. If the log holds
    /// fewer sends in the window before `sent_at` than the upstream counted,
    /// someone else spends the same account: the difference is added as
    /// sends dated `sent_at`, the latest they can have been made, so they
    /// free no later than the upstream's own. An answer to a request sent a
    /// window or more ago describes a window that is over and changes
    /// nothing: a long invocation's headers must not block slots now.
    /// Returns how many sends were added.
    pub fn follow_upstream(
        &mut self,
        upstream_remaining: u32,
        sent_at: Instant,
        now: Instant,
    ) -> u32 {
        self.expire(now);
        if sent_at + self.span <= now {
            return 0;
        }
        let counted = self.max.saturating_sub(upstream_remaining as usize);
        let margin = self.span.saturating_sub(self.window);
        let ours = self
            .sends
            .iter()
            // Sends up to a margin later may have arrived first.
            .filter(|sent| **sent <= sent_at + margin && **sent + self.window > sent_at)
            .count();
        let missing = counted.saturating_sub(ours);
        let at = self.sends.partition_point(|sent| *sent <= sent_at);
        for _ in 0..missing {
            self.sends.insert(at, sent_at);
        }
        while self.sends.len() > self.max {
            self.sends.pop_front();
        }
        u32::try_from(missing).unwrap_or(u32::MAX)
    }

    /// Counts `sends` more as made at `at` (other replicas' sends, as last
    /// known when Redis was lost), as far as room is left: they free no
    /// earlier than the real ones did. Returns how many were added.
    pub fn assume_sent(&mut self, sends: u64, at: Instant, now: Instant) -> u32 {
        self.expire(now);
        if at + self.span <= now {
            return 0;
        }
        let room = self.max - self.sends.len();
        let added = usize::try_from(sends).unwrap_or(usize::MAX).min(room);
        let pos = self.sends.partition_point(|sent| *sent <= at);
        for _ in 0..added {
            self.sends.insert(pos, at);
        }
        u32::try_from(added).unwrap_or(u32::MAX)
    }

    /// When the oldest send in the log stops counting (now if none), or the
    /// end of a pause if later.
    pub fn oldest_expiry(&mut self, now: Instant) -> Instant {
        self.expire(now);
        let at = self.sends.front().map_or(now, |sent| *sent + self.span);
        match self.paused_until {
            Some(until) if until > at => until,
            _ => at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(10);

    fn budget(max: u32) -> Budget {
        Budget::new(max, W, Duration::ZERO)
    }

    #[test]
    fn sends_assumed_at_a_loss_fill_only_the_room_left_and_free_with_their_time() {
        let mut b = budget(3);
        let t0 = Instant::now();
        b.record(t0);
        let at = t0 + Duration::from_secs(2);
        let now = t0 + Duration::from_secs(3);
        // Four others' sends known, room for two: both taken.
        assert_eq!(b.assume_sent(4, at, now), 2);
        assert_eq!(b.remaining(now), 0);
        // The own send frees first, then the assumed ones, at `at` + W.
        assert_eq!(b.remaining(t0 + W), 1);
        assert_eq!(b.nth_free_at(1, t0 + W), at + W);
        // Known sends a window old say nothing.
        let mut b = budget(3);
        assert_eq!(b.assume_sent(2, t0, t0 + W), 0);
        assert_eq!(b.remaining(t0 + W), 3);
    }

    #[test]
    fn never_more_than_max_in_any_window() {
        let mut b = budget(3);
        let t0 = Instant::now();
        let mut sent = Vec::new();
        let mut now = t0;
        // Try to send every 100 ms for a minute; keep only allowed sends.
        for _ in 0..600 {
            if b.remaining(now) > 0 {
                b.record(now);
                sent.push(now);
            }
            now += Duration::from_millis(100);
        }
        for (i, start) in sent.iter().enumerate() {
            let in_window = sent[i..].iter().filter(|t| **t < *start + W).count();
            assert!(in_window <= 3, "{in_window} sends in one window");
        }
        // And the budget was used: 3 per 10 s over 60 s.
        assert_eq!(sent.len(), 18);
    }

    #[test]
    fn a_new_limit_counts_the_sends_already_made() {
        let mut b = budget(5);
        let t0 = Instant::now();
        for i in 0..4 {
            b.record(t0 + Duration::from_secs(i));
        }
        let now = t0 + Duration::from_secs(4);
        // Lowered to 2: the log keeps the newest two, so the next send
        // waits for the third-oldest (t0 + 2 s) to leave the window.
        b.reconfigure(2, W, Duration::ZERO, now);
        assert_eq!(b.remaining(now), 0);
        assert_eq!(b.nth_free_at(0, now), t0 + Duration::from_secs(2) + W);
        // Raised to 6: the two sends still count, four are free.
        b.reconfigure(6, W, Duration::ZERO, now);
        assert_eq!(b.remaining(now), 4);
        // A shorter window applies to the sends already made.
        b.reconfigure(6, Duration::from_secs(1), Duration::ZERO, now);
        assert_eq!(b.remaining(now), 6);
    }

    #[test]
    fn predicts_the_kth_free_slot() {
        let mut b = budget(2);
        let t0 = Instant::now();
        assert_eq!(b.nth_free_at(0, t0), t0);
        assert_eq!(b.nth_free_at(1, t0), t0);
        assert_eq!(b.nth_free_at(2, t0), t0 + W);
        b.record(t0);
        let t1 = t0 + Duration::from_secs(1);
        b.record(t1);
        assert_eq!(b.remaining(t1), 0);
        assert_eq!(b.nth_free_at(0, t1), t0 + W);
        assert_eq!(b.nth_free_at(1, t1), t1 + W);
        assert_eq!(b.nth_free_at(2, t1), t0 + W * 2);
        assert_eq!(b.nth_free_at(5, t1), t1 + W * 3);
    }

    #[test]
    fn a_pause_holds_every_slot() {
        let mut b = budget(5);
        let t0 = Instant::now();
        b.pause_until(t0 + Duration::from_secs(3));
        assert_eq!(b.remaining(t0), 0);
        assert_eq!(b.nth_free_at(0, t0), t0 + Duration::from_secs(3));
        assert_eq!(b.remaining(t0 + Duration::from_secs(3)), 5);
    }

    #[test]
    fn follows_a_lower_upstream_count() {
        let mut b = budget(5);
        let t0 = Instant::now();
        b.record(t0);
        // The upstream counted 4 (this send and 3 others).
        assert_eq!(b.follow_upstream(1, t0, t0), 3);
        assert_eq!(b.remaining(t0), 1);
        // A higher upstream count never gives slots back.
        assert_eq!(b.follow_upstream(4, t0, t0), 0);
        assert_eq!(b.remaining(t0), 1);
        assert_eq!(b.remaining(t0 + W), 5);
    }

    #[test]
    fn an_answer_counts_as_of_its_send() {
        let mut b = budget(5);
        let t0 = Instant::now();
        // Five sends at t0: the upstream counted them all, and its answer
        // to the first arrives 8 s later (a slow invocation).
        for _ in 0..5 {
            b.record(t0);
        }
        let later = t0 + Duration::from_secs(8);
        assert_eq!(b.follow_upstream(0, t0, later), 0, "all five are ours");
        // Its window is over: nothing is added, the budget frees on time.
        let after = t0 + W + Duration::from_secs(1);
        assert_eq!(b.follow_upstream(0, t0, after), 0);
        assert_eq!(b.remaining(after), 5);
        // A send 2 s ago that the upstream counted with 2 others of
        // someone else: 2 added, dated at that send, freeing with it.
        let sent = after - Duration::from_secs(2);
        b.record(sent);
        assert_eq!(b.follow_upstream(2, sent, after), 2);
        assert_eq!(b.remaining(after), 2);
        assert_eq!(b.remaining(sent + W), 5);
    }

    #[test]
    fn unrecord_returns_that_exact_slot() {
        let mut b = budget(1);
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(1);
        b.record(t0);
        assert_eq!(b.remaining(t1), 0);
        b.unrecord(t1);
        assert_eq!(b.remaining(t1), 0, "only the exact send is taken back");
        b.unrecord(t0);
        assert_eq!(b.remaining(t1), 1);
    }
}
