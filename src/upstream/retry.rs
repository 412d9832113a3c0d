//! Safe retries of failed upstream attempts (gateway-notes §5).
//!
//! A request is sent again only when sending it again cannot add a side
//! effect:
//!
//! - a connection that could not be made: nothing was sent, any route;
//! - on a route marked "safe" (reads, deletes, absolute PATCHes, upserts):
//!   a 502, 503 or 504 answer, or a connection broken before the answer.
//!
//! Invocations, creates, deploys, uploads and key minting are never sent
//! again once a byte may have reached the upstream. Timeouts are not
//! retried (the route's timeout already is the client's patience). Only
//! replayable bodies (held in memory) are retried. Backoff is exponential
//! with full jitter; a `Retry-After` up to `max_delay_ms` is honoured; a
//! budget (token bucket, `budget_ratio` per request) stops retry storms.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::response::Response;
use http::{header, Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::config::RetryConfig;
use crate::error::GatewayError;
pub use crate::route::Safety;

/// Retries always allowed before the ratio builds up a balance.
const BUDGET_RESERVE: f64 = 10.0;
/// The most retries the budget can hold.
const BUDGET_CAP: f64 = 100.0;

/// What one attempt came to.
#[derive(Clone, Copy, Debug)]
pub enum Attempt<'a> {
    /// The upstream answered.
    Answered(&'a Response),
    /// The gateway could not get an answer.
    Failed(&'a GatewayError),
}

/// Why an attempt is retried (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// No connection could be made.
    Connect,
    /// The connection broke before the answer.
    Broken,
    /// 502, 503 or 504.
    Status,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Broken => "broken",
            Self::Status => "status",
        }
    }
}

/// Labels: why a retry happened.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// Handles to the retry metrics (clones share the values).
#[derive(Clone, Debug, Default)]
pub struct RetryMetrics {
    retries: Family<ReasonLabels, Counter>,
    exhausted: Counter,
}

impl RetryMetrics {
    /// Creates the metrics and registers them.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "upstream_retries",
            "Upstream attempts sent again, by reason (connect, broken, status)",
            metrics.retries.clone(),
        );
        registry.register(
            "retry_budget_exhausted",
            "Retries not made because the retry budget was spent",
            metrics.exhausted.clone(),
        );
        metrics
    }
}

/// The retry policy, its budget and its metrics.
#[derive(Debug)]
pub struct Retrier {
    config: RetryConfig,
    /// The retry budget, shared with the retriers of later config versions.
    tokens: Arc<Mutex<f64>>,
    metrics: RetryMetrics,
    hasher: std::hash::RandomState,
    draws: std::sync::atomic::AtomicU64,
}

impl Retrier {
    /// A retrier for `config`.
    pub fn new(config: &RetryConfig, metrics: RetryMetrics) -> Self {
        Self {
            config: config.clone(),
            tokens: Arc::new(Mutex::new(BUDGET_RESERVE)),
            metrics,
            hasher: std::hash::RandomState::new(),
            draws: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The same retry budget under `config` (a reload).
    pub fn reconfigured(&self, config: &RetryConfig) -> Self {
        Self {
            config: config.clone(),
            tokens: self.tokens.clone(),
            metrics: self.metrics.clone(),
            hasher: std::hash::RandomState::new(),
            draws: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Notes an original request: the budget grows by `budget_ratio`.
    pub fn deposit(&self) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        *tokens = (*tokens + self.config.budget_ratio).min(BUDGET_CAP);
    }

    /// Whether attempt number `attempt` (1 = the first) should be followed
    /// by another, and after how long. `replayable`: the body can be sent
    /// again.
    pub fn next(
        &self,
        safety: Safety,
        attempt: u32,
        outcome: Attempt<'_>,
        replayable: bool,
    ) -> Option<Duration> {
        if !self.config.enabled || !replayable || attempt >= self.config.max_attempts {
            return None;
        }
        let (reason, retry_after) = match (outcome, safety) {
            (Attempt::Failed(GatewayError::UpstreamUnreachable), _) => (Reason::Connect, None),
            (Attempt::Failed(GatewayError::UpstreamFailed), Safety::Safe) => (Reason::Broken, None),
            (Attempt::Answered(response), Safety::Safe)
                if matches!(
                    response.status(),
                    StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ) =>
            {
                (Reason::Status, retry_after(response))
            }
            _ => return None,
        };
        let max = Duration::from_millis(self.config.max_delay_ms);
        if retry_after.is_some_and(|after| after > max) {
            return None;
        }
        if !self.withdraw() {
            self.metrics.exhausted.inc();
            return None;
        }
        self.metrics
            .retries
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
        let ceiling = Duration::from_millis(self.config.base_delay_ms)
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(max);
        Some(self.jitter(ceiling).max(retry_after.unwrap_or_default()))
    }

    /// [`next`](Self::next) for `result`, the outcome of the latest of
    /// `attempts`; a retry is counted in `attempts`.
    pub fn again(
        &self,
        safety: Safety,
        attempts: &mut Attempts,
        result: &Result<Response, GatewayError>,
        replayable: bool,
    ) -> Option<Duration> {
        let outcome = match result {
            Ok(response) => Attempt::Answered(response),
            Err(error) => Attempt::Failed(error),
        };
        let delay = self.next(safety, attempts.made, outcome, replayable)?;
        attempts.failed(result);
        Some(delay)
    }

    fn withdraw(&self) -> bool {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Uniform in `0..=ceiling` ("full jitter").
    fn jitter(&self, ceiling: Duration) -> Duration {
        use std::hash::BuildHasher;
        let n = self
            .draws
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let draw = self.hasher.hash_one(n);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(draw % ms.saturating_add(1))
    }
}

/// The attempts of one request so far.
#[derive(Debug)]
pub struct Attempts {
    /// Attempts made, the current one included.
    pub made: u32,
    /// Whether an earlier attempt may have reached the upstream.
    maybe_done: bool,
}

impl Default for Attempts {
    fn default() -> Self {
        Self {
            made: 1,
            maybe_done: false,
        }
    }
}

/// Header on answers that took more than one attempt: how many.
pub const ATTEMPTS_HEADER: &str = "x-gateway-attempts";

impl Attempts {
    /// Notes a failed attempt that will be retried.
    pub fn failed(&mut self, result: &Result<Response, GatewayError>) {
        self.maybe_done |= !matches!(result, Err(GatewayError::UpstreamUnreachable));
        self.made += 1;
    }

    /// The answer to give: marked with the attempt count when retried; a
    /// DELETE whose retry finds nothing (404) after an attempt that may
    /// have done it is reported done (204).
    pub fn finish(&self, method: &Method, response: Response) -> Response {
        if self.made == 1 {
            return response;
        }
        let mut response = if self.maybe_done
            && method == Method::DELETE
            && response.status() == StatusCode::NOT_FOUND
        {
            let mut done = Response::new(axum::body::Body::empty());
            *done.status_mut() = StatusCode::NO_CONTENT;
            done
        } else {
            response
        };
        response
            .headers_mut()
            .insert(ATTEMPTS_HEADER, http::HeaderValue::from(self.made));
        response
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by Castari).
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn safety(method: Method, path: &str) -> Safety {
        let segments: Vec<&str> = path.split('/').collect();
        Safety::of(&method, &segments)
    }

    #[test]
    fn only_the_safe_routes_of_the_table_are_safe() {
        use Method as M;
        for (method, path) in [
            (M::GET, "agents"),
            (M::GET, "files/f1/download"),
            (M::DELETE, "agents/a"),
            (M::DELETE, "api-keys/ak_1"),
            (M::PATCH, "agents/a"),
            (M::POST, "agents/a/secrets"),
            (M::POST, "buckets/b/credentials"),
            (M::POST, "files/confirm-upload"),
            (M::DELETE, "agents/a/sessions/s1"),
        ] {
            assert_eq!(
                safety(method.clone(), path),
                Safety::Safe,
                "{method} {path}"
            );
        }
        for (method, path) in [
            (M::POST, "agents/a/invoke"),
            (M::POST, "agents/a/stream"),
            (M::POST, "agents"),
            (M::POST, "agents/a/deploy"),
            (M::POST, "agents/a/upload-code"),
            (M::POST, "api-keys"),
            (M::POST, "files"),
            (M::POST, "files/upload-url"),
            (M::POST, "sandbox/s/access"),
            (M::POST, "agents/a/mounts"),
            (M::PUT, "brand/new"),
            (M::DELETE, "brand/new"),
        ] {
            assert_eq!(
                safety(method.clone(), path),
                Safety::Unsafe,
                "{method} {path}"
            );
        }
    }

    fn retrier(config: RetryConfig) -> Retrier {
        Retrier::new(&config, RetryMetrics::default())
    }

    fn answer(status: u16, retry_after: Option<&str>) -> Response {
        let mut response = Response::new(axum::body::Body::empty());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(after) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, after.parse().unwrap());
        }
        response
    }

    #[test]
    fn decides_by_safety_outcome_attempt_and_body() {
        let r = retrier(RetryConfig::default());
        let unreachable = GatewayError::UpstreamUnreachable;
        let broken = GatewayError::UpstreamFailed;
        let timeout = GatewayError::UpstreamTimeout;
        let s503 = answer(503, None);
        let s500 = answer(500, None);
        // Nothing was sent: any route.
        assert!(r
            .next(Safety::Unsafe, 1, Attempt::Failed(&unreachable), true)
            .is_some());
        // Maybe sent: safe routes only.
        assert!(r
            .next(Safety::Unsafe, 1, Attempt::Failed(&broken), true)
            .is_none());
        assert!(r
            .next(Safety::Safe, 1, Attempt::Failed(&broken), true)
            .is_some());
        assert!(r
            .next(Safety::Unsafe, 1, Attempt::Answered(&s503), true)
            .is_none());
        assert!(r
            .next(Safety::Safe, 1, Attempt::Answered(&s503), true)
            .is_some());
        // Never: timeouts, 500, a body that is gone, the last attempt.
        assert!(r
            .next(Safety::Safe, 1, Attempt::Failed(&timeout), true)
            .is_none());
        assert!(r
            .next(Safety::Safe, 1, Attempt::Answered(&s500), true)
            .is_none());
        assert!(r
            .next(Safety::Safe, 1, Attempt::Answered(&s503), false)
            .is_none());
        assert!(r
            .next(Safety::Safe, 3, Attempt::Answered(&s503), true)
            .is_none());
    }

    #[test]
    fn backoff_is_jittered_capped_and_honours_retry_after() {
        let r = retrier(RetryConfig {
            max_attempts: 10,
            ..RetryConfig::default()
        });
        let s503 = answer(503, None);
        for attempt in 1..6 {
            let delay = r
                .next(Safety::Safe, attempt, Attempt::Answered(&s503), true)
                .unwrap();
            assert!(
                delay <= Duration::from_millis(250 << (attempt - 1)).min(Duration::from_secs(5))
            );
        }
        let after = answer(503, Some("2"));
        let delay = r
            .next(Safety::Safe, 1, Attempt::Answered(&after), true)
            .unwrap();
        assert!(delay >= Duration::from_secs(2));
        let too_long = answer(503, Some("60"));
        assert!(r
            .next(Safety::Safe, 1, Attempt::Answered(&too_long), true)
            .is_none());
    }

    #[test]
    fn a_delete_that_finds_nothing_after_an_unknown_outcome_is_done() {
        let mut attempts = Attempts::default();
        assert_eq!(
            attempts.finish(&Method::DELETE, answer(404, None)).status(),
            404
        );
        attempts.failed(&Err(GatewayError::UpstreamFailed));
        let done = attempts.finish(&Method::DELETE, answer(404, None));
        assert_eq!(done.status(), 204);
        assert_eq!(done.headers()[ATTEMPTS_HEADER], "2");
        assert_eq!(
            attempts.finish(&Method::GET, answer(404, None)).status(),
            404
        );
        // After refused connections only, nothing was done: 404 stands.
        let mut refused = Attempts::default();
        refused.failed(&Err(GatewayError::UpstreamUnreachable));
        assert_eq!(
            refused.finish(&Method::DELETE, answer(404, None)).status(),
            404
        );
    }

    #[test]
    fn the_budget_allows_about_a_fifth_of_requests_to_be_retried() {
        let r = retrier(RetryConfig::default());
        let s502 = answer(502, None);
        let mut retried = 0;
        for _ in 0..1_000 {
            r.deposit();
            if r.next(Safety::Safe, 1, Attempt::Answered(&s502), true)
                .is_some()
            {
                retried += 1;
            }
        }
        // 10 in reserve plus 0.2 per request.
        assert!((200..=211).contains(&retried), "{retried}");
        assert_eq!(r.metrics.exhausted.get() as usize, 1_000 - retried);
    }
}
