//! The shaper's metrics: queue depth and wait, budget left, dispatches,
//! refusals by reason, upstream 429s. Labels are the lane, the upstream
//! credential's name and the reason only.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::Lane;

/// Labels: the lane.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LaneLabels {
    /// `crud` or `invoke`.
    pub lane: &'static str,
    /// The upstream credential's name.
    pub upstream: Arc<String>,
}

/// Labels: the lane and why a request was refused.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `crud` or `invoke`.
    pub lane: &'static str,
    /// The upstream credential's name.
    pub upstream: Arc<String>,
    /// `queue_full`, `wait_too_long`, `timed_out`, `draining`, `client_gone`.
    pub reason: &'static str,
}

/// Queue waits: from none to the 5-minute invocation default.
const WAIT_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Handles to the shaper's metric families (clones share the values).
#[derive(Clone, Debug)]
pub struct ShaperMetrics {
    depth: Family<LaneLabels, Gauge>,
    remaining: Family<LaneLabels, Gauge>,
    wait: Family<LaneLabels, Histogram>,
    dispatched: Family<LaneLabels, Counter>,
    refused: Family<RefusalLabels, Counter>,
    upstream_limited: Family<LaneLabels, Counter>,
    upstream: Arc<String>,
}

impl ShaperMetrics {
    /// Creates the families and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            depth: Family::default(),
            remaining: Family::default(),
            wait: Family::new_with_constructor(
                (|| Histogram::new(WAIT_BUCKETS)) as fn() -> Histogram,
            ),
            dispatched: Family::default(),
            refused: Family::default(),
            upstream_limited: Family::default(),
            upstream: Arc::new(crate::config::DEFAULT_CREDENTIAL.to_string()),
        };
        registry.register(
            "queue_depth",
            "Requests waiting for the upstream budget, by lane",
            metrics.depth.clone(),
        );
        registry.register(
            "budget_remaining",
            "Upstream sends the lane's budget allows right now",
            metrics.remaining.clone(),
        );
        registry.register(
            "queue_wait_seconds",
            "Time queued requests waited for the budget, by lane",
            metrics.wait.clone(),
        );
        registry.register(
            "dispatched",
            "Requests let through to the upstream by the shaper, by lane",
            metrics.dispatched.clone(),
        );
        registry.register(
            "refused",
            "Requests the shaper did not send, by lane and reason",
            metrics.refused.clone(),
        );
        registry.register(
            "upstream_rate_limited",
            "429 answers from the upstream (each pauses the budget)",
            metrics.upstream_limited.clone(),
        );
        metrics
    }

    /// The same families, labelled for the credential `name`.
    pub fn for_upstream(&self, name: &str) -> Self {
        Self {
            upstream: Arc::new(name.to_string()),
            ..self.clone()
        }
    }

    fn lane(&self, lane: Lane) -> LaneLabels {
        LaneLabels {
            lane: lane.as_str(),
            upstream: self.upstream.clone(),
        }
    }

    pub(super) fn set_state(&self, lane: Lane, depth: usize, remaining: u32) {
        let labels = self.lane(lane);
        self.depth
            .get_or_create(&labels)
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
        self.remaining
            .get_or_create(&labels)
            .set(i64::from(remaining));
    }

    pub(super) fn dispatched(&self, lane: Lane) {
        self.dispatched.get_or_create(&self.lane(lane)).inc();
    }

    pub(super) fn waited(&self, lane: Lane, waited: Duration) {
        self.wait
            .get_or_create(&self.lane(lane))
            .observe(waited.as_secs_f64());
    }

    pub(super) fn refused(&self, lane: Lane, reason: &'static str) {
        self.refused
            .get_or_create(&RefusalLabels {
                lane: lane.as_str(),
                upstream: self.upstream.clone(),
                reason,
            })
            .inc();
    }

    pub(super) fn upstream_limited(&self, lane: Lane) {
        self.upstream_limited.get_or_create(&self.lane(lane)).inc();
    }
}
