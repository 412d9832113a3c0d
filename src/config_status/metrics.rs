//! Reload metrics: the configuration version in effect and reload outcomes.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The outcome label of `config_reloads`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `applied` or `refused`.
    pub outcome: &'static str,
}

/// Handles to the reload metrics.
#[derive(Clone, Debug, Default)]
pub struct ReloadMetrics {
    version: Gauge,
    reloads: Family<OutcomeLabels, Counter>,
}

impl ReloadMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "config_version",
            "The configuration version serving new requests: 1 at startup, one more per applied reload",
            metrics.version.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads, by outcome (applied or refused)",
            metrics.reloads.clone(),
        );
        metrics
    }

    /// A version is now serving.
    pub fn applied(&self, version: u64) {
        self.version.set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// Counts one reload attempt.
    pub fn attempted(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "refused" };
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }
}
