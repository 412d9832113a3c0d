//! The circuit breaker: after `failure_threshold` consecutive upstream
//! failures the gateway stops sending for `open_ms` and answers 503
//! `circuit_open` at once (cached entries are served stale meanwhile); then
//! one probe goes through: its success closes the circuit, its failure opens
//! it again. Failures are what says the upstream itself is in trouble:
//! refused or broken connections, timeouts, 502, 503 and 504. Any other
//! answer, 4xx and 500 included, shows the upstream is there.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::response::Response;
use http::StatusCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::config::BreakerConfig;
use crate::error::GatewayError;

/// The circuit's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    /// Requests flow; counting consecutive failures.
    Closed,
    /// Requests fail fast until the cool-down ends.
    Open,
    /// One probe is in flight; everything else fails fast.
    HalfOpen,
}

impl Circuit {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { since: Instant },
}

/// Handles to the breaker's metrics.
#[derive(Clone, Debug, Default)]
pub struct BreakerMetrics {
    state: Gauge,
    opened: Counter,
    rejected: Counter,
}

impl BreakerMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "circuit_state",
            "The upstream circuit: 0 closed, 1 half open, 2 open",
            metrics.state.clone(),
        );
        registry.register(
            "circuit_opened",
            "Times the circuit opened after consecutive upstream failures",
            metrics.opened.clone(),
        );
        registry.register(
            "circuit_rejected",
            "Requests answered 503 circuit_open without being sent",
            metrics.rejected.clone(),
        );
        metrics
    }
}

/// The breaker of the upstream.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    /// Shared with the breakers of later config versions (a reload keeps
    /// an open circuit open).
    state: Arc<Mutex<State>>,
    metrics: BreakerMetrics,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: &BreakerConfig, metrics: BreakerMetrics) -> Self {
        Self {
            config: config.clone(),
            state: Arc::new(Mutex::new(State::Closed { failures: 0 })),
            metrics,
        }
    }

    /// The same circuit under `config` (a reload).
    pub fn reconfigured(&self, config: &BreakerConfig) -> Self {
        Self {
            config: config.clone(),
            state: self.state.clone(),
            metrics: self.metrics.clone(),
        }
    }

    fn open_for(&self) -> Duration {
        Duration::from_millis(self.config.open_ms)
    }

    /// Lets a request be sent, or refuses it while the circuit is open
    /// (and while a probe is out).
    ///
    /// # Errors
    /// 503 `circuit_open` with `Retry-After`.
    pub fn admit(&self) -> Result<(), GatewayError> {
        if !self.config.enabled {
            return Ok(());
        }
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = match *state {
            State::Closed { .. } => return Ok(()),
            State::Open { until } if now >= until => {
                *state = State::HalfOpen { since: now };
                self.metrics.state.set(1);
                return Ok(());
            }
            // A probe that never reported (its client left before it was
            // sent) must not keep the circuit shut: after a cool-down,
            // another goes.
            State::HalfOpen { since } if now >= since + self.open_for() => {
                *state = State::HalfOpen { since: now };
                return Ok(());
            }
            State::Open { until } => until - now,
            State::HalfOpen { since } => (since + self.open_for()).saturating_duration_since(now),
        };
        self.metrics.rejected.inc();
        Err(GatewayError::CircuitOpen {
            retry_after_secs: crate::error::retry_after_secs(wait),
        })
    }

    /// Records what an attempt came to.
    pub fn record(&self, result: &Result<Response, GatewayError>) {
        if !self.config.enabled {
            return;
        }
        let failed = match result {
            Ok(response) => matches!(
                response.status(),
                StatusCode::BAD_GATEWAY
                    | StatusCode::SERVICE_UNAVAILABLE
                    | StatusCode::GATEWAY_TIMEOUT
            ),
            Err(error) => matches!(
                error,
                GatewayError::UpstreamUnreachable
                    | GatewayError::UpstreamFailed
                    | GatewayError::UpstreamTimeout
            ),
        };
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let next = match (&*state, failed) {
            (_, false) => State::Closed { failures: 0 },
            (State::Closed { failures }, true) if failures + 1 < self.config.failure_threshold => {
                State::Closed {
                    failures: failures + 1,
                }
            }
            // Already open: a late answer of a request sent before changes nothing.
            (State::Open { until }, true) => State::Open { until: *until },
            (State::Closed { .. } | State::HalfOpen { .. }, true) => {
                self.metrics.opened.inc();
                tracing::warn!(
                    open_ms = self.config.open_ms,
                    "upstream failing: circuit open, answering 503 circuit_open until a probe succeeds"
                );
                State::Open {
                    until: Instant::now() + self.open_for(),
                }
            }
        };
        if matches!(*state, State::Open { .. } | State::HalfOpen { .. })
            && matches!(next, State::Closed { .. })
        {
            tracing::info!("upstream answered: circuit closed");
        }
        self.metrics.state.set(match next {
            State::Closed { .. } => 0,
            State::HalfOpen { .. } => 1,
            State::Open { .. } => 2,
        });
        *state = next;
    }

    /// The circuit's state now.
    pub fn circuit(&self) -> Circuit {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match *state {
            State::Closed { .. } => Circuit::Closed,
            State::Open { until } if Instant::now() >= until => Circuit::HalfOpen,
            State::Open { .. } => Circuit::Open,
            State::HalfOpen { .. } => Circuit::HalfOpen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(threshold: u32, open_ms: u64) -> Breaker {
        let config = BreakerConfig {
            enabled: true,
            failure_threshold: threshold,
            open_ms,
        };
        Breaker::new(&config, BreakerMetrics::default())
    }

    fn status(code: u16) -> Result<Response, GatewayError> {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::from_u16(code).unwrap();
        Ok(response)
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let b = breaker(3, 60_000);
        for _ in 0..2 {
            b.record(&status(503));
        }
        b.record(&status(404));
        b.record(&status(500));
        b.record(&Err(GatewayError::UpstreamUnreachable));
        b.record(&Err(GatewayError::UpstreamTimeout));
        assert!(b.admit().is_ok(), "the 404 and 500 reset the count");
        b.record(&status(502));
        assert_eq!(b.circuit(), Circuit::Open);
        let refused = b.admit().unwrap_err();
        assert_eq!(refused.code(), "circuit_open");
        assert_eq!(refused.status(), 503);
        assert_eq!(b.metrics.opened.get(), 1);
    }

    #[test]
    fn one_probe_after_the_cool_down_closes_or_reopens() {
        let b = breaker(1, 30);
        b.record(&status(503));
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok(), "the probe");
        assert!(b.admit().is_err(), "only one probe at a time");
        b.record(&status(503));
        assert_eq!(b.circuit(), Circuit::Open, "a failed probe reopens");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok());
        b.record(&status(200));
        assert_eq!(b.circuit(), Circuit::Closed);
        assert!(b.admit().is_ok() && b.admit().is_ok());
    }

    #[test]
    fn a_lost_probe_does_not_keep_the_circuit_shut() {
        let b = breaker(1, 30);
        b.record(&Err(GatewayError::UpstreamFailed));
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok(), "a probe that never reports");
        assert!(b.admit().is_err());
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok(), "another probe after a cool-down");
    }
}
