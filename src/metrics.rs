//! Prometheus metrics, one registry per gateway instance (so tests can run
//! many gateways in one process), rendered as text by `GET /metrics`.
//!
//! Labels are low-cardinality on purpose: route class, normalised method,
//! status code, error code. Never paths, keys or ids.

use std::hash::Hash;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::counters::CounterSlots;

/// Labels of `castari_gateway_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route class (`crud`, `long`, `invoke`, `download`, `local`).
    pub class: &'static str,
    /// HTTP method, `OTHER` for non-standard ones.
    pub method: &'static str,
    /// Response status code.
    pub status: u16,
    /// Gateway error code, empty when the response came from the upstream.
    pub code: &'static str,
}

/// Labels of the upstream latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// Route class.
    pub class: &'static str,
}

/// The route class labels (`RouteClass::as_str`), for [`CounterSlots`].
const CLASSES: [&str; 5] = ["crud", "long", "invoke", "download", "local"];
/// The method labels, in [`method_index`] order.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
];

fn index_of(labels: &[&str], label: &str) -> Option<usize> {
    labels.iter().position(|l| *l == label)
}

/// The slot of a 200 the upstream answered; other answers have none.
fn ok_slot(labels: &RequestLabels) -> Option<usize> {
    if labels.status != 200 || !labels.code.is_empty() {
        return None;
    }
    Some(index_of(&CLASSES, labels.class)? * METHODS.len() + index_of(&METHODS, labels.method)?)
}

/// Upper bounds (seconds) of the upstream latency buckets: from a cached
/// sub-millisecond answer to a 10-minute agent run.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    660.0,
];

/// A histogram of a family per route class, made in the family on first
/// use (so classes never seen stay out of `/metrics`).
type ClassSlots = [std::sync::OnceLock<Histogram>; CLASSES.len()];

/// Observes `value` in `family`'s histogram for `class`, through its slot.
fn observe(
    family: &Family<ClassLabels, Histogram>,
    slots: &ClassSlots,
    class: &'static str,
    value: Duration,
) {
    let seconds = value.as_secs_f64();
    let slot = CLASSES.iter().position(|c| *c == class);
    match slot.and_then(|i| slots.get(i)) {
        Some(slot) => slot
            .get_or_init(|| family.get_or_create(&ClassLabels { class }).clone())
            .observe(seconds),
        None => family
            .get_or_create(&ClassLabels { class })
            .observe(seconds),
    }
}

/// Upper bounds (seconds) of the overhead buckets: the gateway's own time
/// per request, from a cache hit's tens of microseconds up.
const OVERHEAD_BUCKETS: [f64; 14] = [
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

/// The gateway's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    /// `requests` answered 200 by the upstream, by class and method.
    answered_ok: CounterSlots,
    upstream_latency: Family<ClassLabels, Histogram>,
    /// `upstream_latency` by class index: no label hashing per request.
    upstream_latency_slots: ClassSlots,
    overhead: Family<ClassLabels, Histogram>,
    /// `overhead` by class index.
    overhead_slots: ClassSlots,
    in_flight: Gauge,
    connections_open: Gauge,
    connections_rejected: Counter,
    shaper: crate::shaper::ShaperMetrics,
    cache: crate::cache::CacheMetrics,
    retry: crate::upstream::retry::RetryMetrics,
    breaker: crate::upstream::breaker::BreakerMetrics,
    reload: crate::config_status::metrics::ReloadMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(None)
    }
}

impl Metrics {
    /// Creates and registers every metric (with `cluster`, the cluster's too).
    pub fn new(cluster: Option<&crate::cluster::ClusterMetrics>) -> Self {
        let mut registry = Registry::with_prefix("castari_gateway");
        if let Some(cluster) = cluster {
            cluster.register(&mut registry);
        }
        let requests = Family::<RequestLabels, Counter>::default();
        let upstream_latency = Family::<ClassLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(LATENCY_BUCKETS)) as fn() -> Histogram,
        );
        let overhead = Family::<ClassLabels, Histogram>::new_with_constructor(
            (|| Histogram::new(OVERHEAD_BUCKETS)) as fn() -> Histogram,
        );
        registry.register(
            "overhead_seconds",
            "The gateway's own time per request: from arrival to response headers, less the time \
             waiting for the upstream (every attempt, retry backoff, a shared fetch) and queued \
             for the budget",
            overhead.clone(),
        );
        let in_flight = Gauge::default();
        let connections_open = Gauge::default();
        let connections_rejected = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by route class, method, status and gateway error code",
            requests.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time from sending a request upstream to its response headers",
            upstream_latency.clone(),
        );
        registry.register(
            "in_flight_requests",
            "Requests received and not yet answered",
            in_flight.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open",
            connections_open.clone(),
        );
        registry.register(
            "connections_rejected",
            "Client connections closed at once because server.max_connections was reached",
            connections_rejected.clone(),
        );
        let shaper = crate::shaper::ShaperMetrics::register(&mut registry);
        let cache = crate::cache::CacheMetrics::register(&mut registry);
        let retry = crate::upstream::retry::RetryMetrics::register(&mut registry);
        let breaker = crate::upstream::breaker::BreakerMetrics::register(&mut registry);
        let reload = crate::config_status::metrics::ReloadMetrics::register(&mut registry);
        Self {
            reload,
            registry,
            retry,
            breaker,
            shaper,
            cache,
            requests,
            answered_ok: CounterSlots::new(CLASSES.len() * METHODS.len()),
            upstream_latency,
            upstream_latency_slots: Default::default(),
            overhead,
            overhead_slots: Default::default(),
            in_flight,
            connections_open,
            connections_rejected,
        }
    }

    /// Counts one answered request.
    pub fn request(&self, labels: RequestLabels) {
        let slot = ok_slot(&labels);
        match slot.and_then(|i| self.answered_ok.get(i, &self.requests, || labels.clone())) {
            Some(counter) => counter.inc(),
            None => self.requests.get_or_create(&labels).inc(),
        };
    }

    /// Records one upstream exchange's time to headers.
    pub fn upstream_latency(&self, class: &'static str, latency: Duration) {
        observe(
            &self.upstream_latency,
            &self.upstream_latency_slots,
            class,
            latency,
        );
    }

    /// Records one request's overhead (`castari_gateway_overhead_seconds`).
    pub fn overhead(&self, class: &'static str, overhead: Duration) {
        observe(&self.overhead, &self.overhead_slots, class, overhead);
    }

    /// The in-flight request gauge.
    pub fn in_flight(&self) -> &Gauge {
        &self.in_flight
    }

    /// The open connection gauge.
    pub fn connections_open(&self) -> &Gauge {
        &self.connections_open
    }

    /// Counts a connection refused at the connection cap.
    pub fn connection_rejected(&self) {
        self.connections_rejected.inc();
    }

    /// The circuit breaker's metric handles.
    pub fn breaker(&self) -> &crate::upstream::breaker::BreakerMetrics {
        &self.breaker
    }

    /// The reload metric handles.
    pub fn reload(&self) -> &crate::config_status::metrics::ReloadMetrics {
        &self.reload
    }

    /// The retry metric handles.
    pub fn retry(&self) -> &crate::upstream::retry::RetryMetrics {
        &self.retry
    }

    /// The shaper's metric handles.
    pub fn shaper(&self) -> &crate::shaper::ShaperMetrics {
        &self.shaper
    }

    /// The cache's metric handles.
    pub fn cache(&self) -> &crate::cache::CacheMetrics {
        &self.cache
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// A method as a bounded label value.
pub fn method_label(method: &http::Method) -> &'static str {
    METHODS[method_index(method)]
}

fn method_index(method: &http::Method) -> usize {
    match *method {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::PUT => 2,
        http::Method::PATCH => 3,
        http::Method::DELETE => 4,
        http::Method::HEAD => 5,
        http::Method::OPTIONS => 6,
        _ => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::RouteClass;

    #[test]
    fn slot_labels_match_the_labels_counted() {
        for class in [
            RouteClass::Crud,
            RouteClass::Long,
            RouteClass::Invoke,
            RouteClass::Download,
            RouteClass::Local,
        ] {
            assert!(CLASSES.contains(&class.as_str()), "{class:?}");
        }
        let other = http::Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(method_label(&other), "OTHER");
        assert_eq!(method_label(&http::Method::DELETE), "DELETE");
        let labels = |status, code| RequestLabels {
            class: "crud",
            method: "GET",
            status,
            code,
        };
        assert_eq!(ok_slot(&labels(200, "")), Some(0));
        assert_eq!(ok_slot(&labels(404, "")), None);
        assert_eq!(ok_slot(&labels(200, "x")), None);
    }

    #[test]
    fn renders_requests_latency_and_gauges() {
        let m = Metrics::new(None);
        m.request(RequestLabels {
            class: "crud",
            method: "GET",
            status: 200,
            code: "",
        });
        m.upstream_latency("crud", Duration::from_millis(3));
        m.in_flight().inc();
        let text = m.render();
        assert!(text.contains(
            "castari_gateway_requests_total{class=\"crud\",method=\"GET\",status=\"200\",code=\"\"} 1"
        ), "{text}");
        assert!(
            text.contains(
                "castari_gateway_upstream_latency_seconds_bucket{le=\"0.005\",class=\"crud\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("castari_gateway_in_flight_requests 1"),
            "{text}"
        );
    }
}
