//! Redis health and cluster events, as metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of an event count.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// `write` or `pause`.
    pub kind: &'static str,
    /// `sent`, `applied`, or `unacknowledged` (a write whose response
    /// went out before every replica confirmed it).
    pub outcome: &'static str,
}

/// Handles to the cluster metrics. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ClusterMetrics {
    up: Gauge,
    lost: Counter,
    events: Family<EventLabels, Counter>,
}

impl ClusterMetrics {
    /// Registers these handles in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cluster_redis_up",
            "1 while Redis answers (budgets shared); 0 while this replica shapes to its local share",
            self.up.clone(),
        );
        registry.register(
            "cluster_redis_lost",
            "Times this replica lost Redis",
            self.lost.clone(),
        );
        registry.register(
            "cluster_events",
            "Cluster events (cache invalidations, budget pauses) by kind and outcome",
            self.events.clone(),
        );
    }

    pub(super) fn set_up(&self, up: bool) {
        self.up.set(i64::from(up));
    }

    pub(super) fn lost(&self) {
        self.lost.inc();
        self.up.set(0);
    }

    pub(super) fn event(&self, kind: &'static str, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels { kind, outcome })
            .inc();
    }
}
