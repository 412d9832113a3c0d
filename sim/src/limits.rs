//! Per-key rate limits, fixed or sliding, and the "most admitted in any
//! window" statistic that proves a client never overran a limit.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{RateLimit, WindowKind};

/// A limit class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Class {
    /// Everything but invocations.
    Crud,
    /// `POST /agents/{slug}/invoke` and `/stream`.
    Invoke,
}

impl Class {
    /// Its name in stats.
    pub fn name(self) -> &'static str {
        match self {
            Self::Crud => "crud",
            Self::Invoke => "invoke",
        }
    }
}

/// What the `X-RateLimit-*` headers say.
#[derive(Clone, Copy, Debug)]
pub struct Verdict {
    /// Whether the request may proceed.
    pub admitted: bool,
    /// `X-RateLimit-Limit`.
    pub limit: u32,
    /// `X-RateLimit-Remaining`.
    pub remaining: u32,
    /// `X-RateLimit-Reset`, unix seconds.
    pub reset_unix: u64,
    /// Seconds until a request would be admitted (for `Retry-After`), ≥ 1.
    pub retry_after: u64,
}

#[derive(Debug, Default)]
struct Window {
    /// Fixed: start of the current window and its count.
    fixed_start: Option<Instant>,
    fixed_count: u32,
    /// Sliding: admission times within the last window.
    log: VecDeque<Instant>,
}

/// Per-class counters for `/_sim/stats`.
#[derive(Debug, Default, Clone)]
pub struct ClassCounters {
    /// Requests admitted.
    pub admitted: u64,
    /// 429s issued.
    pub limited: u64,
    /// Most admissions in any sliding window of the limit's length.
    pub max_in_window: u64,
}

/// All limiter state of one simulator.
#[derive(Debug)]
pub struct Limiter {
    kind: WindowKind,
    limits: HashMap<Class, RateLimit>,
    windows: HashMap<(String, Class), Window>,
    /// Admission times per key and class within the last window, for the max.
    recent: HashMap<(String, Class), VecDeque<Instant>>,
    counters: HashMap<Class, ClassCounters>,
}

impl Limiter {
    /// A limiter with these limits.
    pub fn new(kind: WindowKind, crud: RateLimit, invoke: RateLimit) -> Self {
        Self {
            kind,
            limits: HashMap::from([(Class::Crud, crud), (Class::Invoke, invoke)]),
            windows: HashMap::new(),
            recent: HashMap::new(),
            counters: HashMap::new(),
        }
    }

    /// The configured limit of a class.
    pub fn limit(&self, class: Class) -> RateLimit {
        self.limits[&class]
    }

    /// Counters of a class.
    pub fn counters(&self, class: Class) -> ClassCounters {
        self.counters.get(&class).cloned().unwrap_or_default()
    }

    /// Checks every class in `classes` for `key` and admits the request only
    /// if all have room. The verdict returned describes the last class.
    pub fn check(&mut self, key: &str, classes: &[Class], now: Instant) -> Verdict {
        let verdicts: Vec<Verdict> = classes.iter().map(|c| self.peek(key, *c, now)).collect();
        let admitted = verdicts.iter().all(|v| v.admitted);
        let mut shown = *verdicts.last().unwrap_or(&self.peek(key, Class::Crud, now));
        if admitted {
            for class in classes {
                self.admit(key, *class, now);
            }
            shown.remaining = shown.remaining.saturating_sub(1);
        } else {
            let blocked: Vec<&Verdict> = verdicts.iter().filter(|v| !v.admitted).collect();
            let worst = blocked
                .iter()
                .max_by_key(|v| v.retry_after)
                .copied()
                .copied();
            if let Some(worst) = worst {
                shown = worst;
            }
            for (class, verdict) in classes.iter().zip(&verdicts) {
                if !verdict.admitted {
                    self.counters.entry(*class).or_default().limited += 1;
                }
            }
        }
        shown.admitted = admitted;
        shown
    }

    /// What the headers say to a request that spends nothing: a full
    /// budget, resetting one window from now.
    pub fn untouched(&self, class: Class) -> Verdict {
        let limit = self.limits[&class];
        Verdict {
            admitted: false,
            limit: limit.max,
            remaining: limit.max,
            reset_unix: unix_after(limit.window),
            retry_after: ceil_secs(limit.window).max(1),
        }
    }

    fn peek(&mut self, key: &str, class: Class, now: Instant) -> Verdict {
        let limit = self.limits[&class];
        let kind = self.kind;
        let window = self.windows.entry((key.to_string(), class)).or_default();
        let (used, resets_at) = match kind {
            WindowKind::Fixed => {
                if let Some(start) = window.fixed_start {
                    if now >= start + limit.window {
                        window.fixed_start = None;
                        window.fixed_count = 0;
                    }
                }
                let resets = window
                    .fixed_start
                    .map_or(now + limit.window, |s| s + limit.window);
                (window.fixed_count, resets)
            }
            WindowKind::Sliding => {
                while window.log.front().is_some_and(|t| *t + limit.window <= now) {
                    window.log.pop_front();
                }
                let resets = window
                    .log
                    .front()
                    .map_or(now + limit.window, |t| *t + limit.window);
                (window.log.len() as u32, resets)
            }
        };
        let admitted = used < limit.max;
        let wait = resets_at.saturating_duration_since(now);
        Verdict {
            admitted,
            limit: limit.max,
            remaining: limit.max.saturating_sub(used),
            reset_unix: unix_after(wait),
            retry_after: ceil_secs(wait).max(1),
        }
    }

    fn admit(&mut self, key: &str, class: Class, now: Instant) {
        let limit = self.limits[&class];
        let window = self.windows.entry((key.to_string(), class)).or_default();
        match self.kind {
            WindowKind::Fixed => {
                window.fixed_start.get_or_insert(now);
                window.fixed_count += 1;
            }
            WindowKind::Sliding => window.log.push_back(now),
        }
        let recent = self.recent.entry((key.to_string(), class)).or_default();
        recent.push_back(now);
        while recent.front().is_some_and(|t| *t + limit.window <= now) {
            recent.pop_front();
        }
        let counters = self.counters.entry(class).or_default();
        counters.admitted += 1;
        counters.max_in_window = counters.max_in_window.max(recent.len() as u64);
    }
}

fn ceil_secs(d: Duration) -> u64 {
    let ms = d.as_millis() as u64;
    ms.div_ceil(1000)
}

fn unix_after(wait: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    ceil_secs(now + wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(kind: WindowKind) -> Limiter {
        let l = RateLimit::new(3, Duration::from_secs(10));
        Limiter::new(kind, l, RateLimit::new(1, Duration::from_secs(10)))
    }

    #[test]
    fn fixed_window_admits_max_then_resets_at_the_boundary() {
        let mut l = limiter(WindowKind::Fixed);
        let t0 = Instant::now();
        for i in 0..3 {
            let v = l.check("k", &[Class::Crud], t0 + Duration::from_secs(i));
            assert!(v.admitted);
            assert_eq!(v.remaining, 2 - i as u32);
        }
        let v = l.check("k", &[Class::Crud], t0 + Duration::from_secs(9));
        assert!(!v.admitted);
        assert_eq!(v.retry_after, 1);
        assert!(
            l.check("k", &[Class::Crud], t0 + Duration::from_secs(10))
                .admitted
        );
        assert!(l.check("other", &[Class::Crud], t0).admitted, "per key");
        // Fixed windows let 2x max through across a boundary.
        assert_eq!(l.counters(Class::Crud).max_in_window, 3);
        assert_eq!(l.counters(Class::Crud).limited, 1);
    }

    #[test]
    fn sliding_window_frees_slots_one_by_one() {
        let mut l = limiter(WindowKind::Sliding);
        let t0 = Instant::now();
        for i in 0..3 {
            assert!(
                l.check("k", &[Class::Crud], t0 + Duration::from_secs(i * 2))
                    .admitted
            );
        }
        assert!(
            !l.check("k", &[Class::Crud], t0 + Duration::from_millis(9_999))
                .admitted
        );
        assert!(
            l.check("k", &[Class::Crud], t0 + Duration::from_secs(10))
                .admitted
        );
        assert!(
            !l.check("k", &[Class::Crud], t0 + Duration::from_millis(11_999))
                .admitted
        );
        assert!(
            l.check("k", &[Class::Crud], t0 + Duration::from_secs(12))
                .admitted
        );
        assert_eq!(l.counters(Class::Crud).max_in_window, 3);
    }

    #[test]
    fn invocations_need_room_in_both_classes() {
        let mut l = limiter(WindowKind::Fixed);
        let t0 = Instant::now();
        assert!(l.check("k", &[Class::Crud, Class::Invoke], t0).admitted);
        let v = l.check("k", &[Class::Crud, Class::Invoke], t0);
        assert!(!v.admitted);
        assert_eq!(v.limit, 1, "headers describe the blocking class");
        assert_eq!(
            l.counters(Class::Crud).admitted,
            1,
            "a refused invoke spends nothing"
        );
    }
}
