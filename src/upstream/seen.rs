//! The upstream's own `X-RateLimit-*` view, kept for when shaping is off.
//!
//! With the shaper on, every `/api/v1` answer carries the shaper's view
//! (`routes/shaped.rs`). With it off, the upstream's headers pass through
//! on the answers it sent, but cache answers (the cache never stores
//! per-exchange headers) and the gateway's own errors had none, while the
//! reference sends them on every response. So each credential remembers the
//! last values the upstream sent on each lane, and the answers without them
//! get those: the upstream's own words, as fresh as the last exchange. Once
//! the window they describe is over, or before the upstream has said
//! anything, the configured budget stands in (`remaining` = the whole
//! budget, `reset` = one window from now).

use std::sync::Mutex;

use http::HeaderMap;

use super::headers::{set_rate_limit, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET};
use crate::config::Rate;
use crate::shaper::Lane;

/// One lane's last upstream view: limit, remaining, reset (Unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct View {
    limit: u64,
    remaining: u64,
    reset: u64,
}

/// The last `X-RateLimit-*` values the upstream sent, per lane.
#[derive(Debug, Default)]
pub struct SeenLimits {
    lanes: Mutex<[Option<View>; 2]>,
}

fn slot(lane: Lane) -> usize {
    match lane {
        Lane::Crud => 0,
        Lane::Invoke => 1,
    }
}

fn number(headers: &HeaderMap, name: &http::HeaderName) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn now_unix() -> u64 {
    crate::clock::since_epoch().as_secs()
}

impl SeenLimits {
    /// Keeps the upstream's view from an answer on `lane`, when it sent all
    /// three headers as numbers.
    pub fn record(&self, lane: Lane, headers: &HeaderMap) {
        // One lookup for an answer without them (most upstreams' but
        // Castari's): the first missing header ends it.
        let view = || {
            Some(View {
                limit: number(headers, &X_RATELIMIT_LIMIT)?,
                remaining: number(headers, &X_RATELIMIT_REMAINING)?,
                reset: number(headers, &X_RATELIMIT_RESET)?,
            })
        };
        let Some(view) = view() else {
            return;
        };
        if let Ok(mut lanes) = self.lanes.lock() {
            lanes[slot(lane)] = Some(view);
        }
    }

    /// Gives `headers` the three `X-RateLimit-*` values of `lane` when it
    /// has none: the last upstream view while its window lasts, else
    /// `budget` whole.
    pub fn stamp(&self, lane: Lane, budget: Rate, headers: &mut HeaderMap) {
        if headers.contains_key(X_RATELIMIT_LIMIT) {
            return;
        }
        let now = now_unix();
        let seen = self.lanes.lock().ok().and_then(|lanes| lanes[slot(lane)]);
        let view = match seen {
            Some(view) if view.reset >= now => view,
            _ => View {
                limit: u64::from(budget.max),
                remaining: u64::from(budget.max),
                reset: now + budget.window.as_secs().max(1),
            },
        };
        set_rate_limit(headers, view.limit, view.remaining, view.reset);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    const BUDGET: Rate = Rate::new(100, Duration::from_secs(60));

    fn view(headers: &HeaderMap) -> [u64; 3] {
        [
            &X_RATELIMIT_LIMIT,
            &X_RATELIMIT_REMAINING,
            &X_RATELIMIT_RESET,
        ]
        .map(|name| number(headers, name).unwrap())
    }

    #[test]
    fn the_budget_stands_in_until_the_upstream_speaks() {
        let seen = SeenLimits::default();
        let mut headers = HeaderMap::new();
        seen.stamp(Lane::Crud, BUDGET, &mut headers);
        let [limit, remaining, reset] = view(&headers);
        assert_eq!((limit, remaining), (100, 100));
        assert!(reset > now_unix() && reset <= now_unix() + 60);
    }

    #[test]
    fn the_last_upstream_view_is_stamped_per_lane_and_never_over_its_own() {
        let seen = SeenLimits::default();
        let reset = now_unix() + 30;
        let mut upstream = HeaderMap::new();
        upstream.insert(X_RATELIMIT_LIMIT, HeaderValue::from(10));
        upstream.insert(X_RATELIMIT_REMAINING, HeaderValue::from(3));
        upstream.insert(X_RATELIMIT_RESET, HeaderValue::from(reset));
        seen.record(Lane::Invoke, &upstream);

        let mut answer = HeaderMap::new();
        seen.stamp(Lane::Invoke, BUDGET, &mut answer);
        assert_eq!(view(&answer), [10, 3, reset]);
        let mut crud = HeaderMap::new();
        seen.stamp(Lane::Crud, BUDGET, &mut crud);
        assert_eq!(view(&crud)[..2], [100, 100]);

        // An answer that has its own headers keeps them.
        let mut own = upstream.clone();
        own.insert(X_RATELIMIT_REMAINING, HeaderValue::from(7));
        seen.stamp(Lane::Invoke, BUDGET, &mut own);
        assert_eq!(view(&own)[1], 7);
    }

    #[test]
    fn a_past_window_gives_way_to_the_budget() {
        let seen = SeenLimits::default();
        let mut upstream = HeaderMap::new();
        upstream.insert(X_RATELIMIT_LIMIT, HeaderValue::from(100));
        upstream.insert(X_RATELIMIT_REMAINING, HeaderValue::from(0));
        upstream.insert(X_RATELIMIT_RESET, HeaderValue::from(now_unix() - 5));
        seen.record(Lane::Crud, &upstream);
        let mut answer = HeaderMap::new();
        seen.stamp(Lane::Crud, BUDGET, &mut answer);
        assert_eq!(view(&answer)[..2], [100, 100]);
    }
}
