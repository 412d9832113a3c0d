//! The gateway's own errors and the one place that maps them to HTTP.
//!
//! Every response the gateway makes up (as opposed to one it relays from the
//! upstream) is Castari-shaped JSON, `{"detail": "...", "code": "..."}`, so
//! the SDK and CLI print `detail` as they do for upstream errors. Upstream
//! non-2xx responses never pass through here: they are relayed untouched.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Who caused an error. It decides the log level and, later, retry safety.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The client sent something the gateway will not forward.
    Client,
    /// The upstream could not be reached or did not answer in time.
    Upstream,
    /// The gateway itself failed.
    Gateway,
}

/// An error on the request path.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GatewayError {
    /// A path outside `/api/v1/` that is not a gateway endpoint.
    #[error("Not Found")]
    NotFound,
    /// The request target or path cannot be forwarded safely.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The request body is larger than `server.max_body_bytes`.
    #[error("Request body larger than {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: u64,
    },
    /// The client stopped sending its body for longer than the idle deadline.
    #[error("Request body not received in time")]
    RequestBodyTimeout,
    /// No connection to the upstream could be made.
    #[error("Upstream unreachable")]
    UpstreamUnreachable,
    /// The upstream did not answer within the route class's timeout.
    #[error("Upstream timed out")]
    UpstreamTimeout,
    /// The upstream connection failed after it was made (reset, bad response).
    #[error("Upstream request failed")]
    UpstreamFailed,
    /// The shaper will not send the request: the upstream budget is spent
    /// for longer than the lane may wait, or its queue is full.
    #[error("Rate limit exceeded. Try again in {retry_after_secs} seconds.")]
    RateLimited {
        /// `Retry-After`, whole seconds, at least 1.
        retry_after_secs: u64,
        /// `rate_limited`, `queue_full` or `queue_timeout`, set from the
        /// shaper's refusal by the `From` impl below.
        code: &'static str,
    },
    /// Shutdown began before the request could be sent; it never left.
    #[error("The gateway is shutting down; the request was not sent upstream. Retry shortly.")]
    ShuttingDown,
    /// No local key, or one the gateway does not accept (keys mode).
    #[error("{detail}")]
    Unauthorized {
        /// `missing_api_key`, `invalid_api_key`, `key_revoked`, `key_expired`.
        code: &'static str,
        /// One sentence for the client.
        detail: &'static str,
    },
    /// The local key may not use this route or agent.
    #[error("{detail}")]
    Forbidden {
        /// Why, as a stable code (`role_forbids_route`, ...).
        code: &'static str,
        /// One sentence for the client; never a request body.
        detail: String,
    },
    /// The local key's own rate limit (`--rate`) is spent.
    #[error("This key's rate limit is exceeded. Try again in {retry_after_secs} seconds.")]
    KeyRateLimited {
        /// `Retry-After`, whole seconds, at least 1.
        retry_after_secs: u64,
    },
    /// The invocation could exceed the local key's budget for the period.
    #[error("This key's budget of {limit} USD per {period} is spent ({spent} spent, {reserved} reserved by invocations in flight)")]
    BudgetExceeded {
        /// The budget, USD.
        limit: String,
        /// `day` or `month`.
        period: &'static str,
        /// Spent so far this period, USD.
        spent: String,
        /// Held by invocations still running, USD.
        reserved: String,
    },
    /// The circuit breaker is open: the upstream failed repeatedly and the
    /// request was not sent.
    #[error("The upstream is failing; the gateway is not sending requests for now. Retry in {retry_after_secs} seconds.")]
    CircuitOpen {
        /// `Retry-After`, whole seconds, at least 1.
        retry_after_secs: u64,
    },
    /// The key store (SQLite) could not be read or written.
    #[error("The gateway's key store is unavailable; the request was not sent")]
    StoreUnavailable,
    /// An unexpected failure inside the gateway. The client sees only
    /// "Internal error"; the cause goes to the log.
    #[error("Internal error")]
    Internal,
}

impl GatewayError {
    /// The HTTP status for this error. A test pins every mapping.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestBodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::UpstreamUnreachable | Self::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ShuttingDown | Self::StoreUnavailable | Self::CircuitOpen { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::KeyRateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::BudgetExceeded { .. } => StatusCode::PAYMENT_REQUIRED,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable, snake_case code: the `code` field of the body and a metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::BadRequest(_) => "bad_request",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RequestBodyTimeout => "request_body_timeout",
            Self::UpstreamUnreachable => "upstream_unreachable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamFailed => "upstream_failed",
            Self::RateLimited { code, .. } => code,
            Self::ShuttingDown => "shutting_down",
            Self::Unauthorized { code, .. } | Self::Forbidden { code, .. } => code,
            Self::KeyRateLimited { .. } => "key_rate_limited",
            Self::BudgetExceeded { .. } => "budget_exceeded",
            Self::StoreUnavailable => "key_store_unavailable",
            Self::CircuitOpen { .. } => "circuit_open",
            Self::Internal => "internal_error",
        }
    }

    /// Who failed.
    pub fn origin(&self) -> Origin {
        match self {
            Self::NotFound
            | Self::BadRequest(_)
            | Self::PayloadTooLarge { .. }
            | Self::RequestBodyTimeout
            | Self::RateLimited { .. }
            | Self::Unauthorized { .. }
            | Self::Forbidden { .. }
            | Self::KeyRateLimited { .. }
            | Self::BudgetExceeded { .. } => Origin::Client,
            Self::UpstreamUnreachable
            | Self::UpstreamTimeout
            | Self::UpstreamFailed
            | Self::CircuitOpen { .. } => Origin::Upstream,
            Self::Internal | Self::ShuttingDown | Self::StoreUnavailable => Origin::Gateway,
        }
    }
}

/// A wait as a `Retry-After` value: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Builds a Castari-shaped JSON error response.
pub fn error_response(status: StatusCode, code: &str, detail: &str) -> Response {
    let body = serde_json::json!({ "detail": detail, "code": code }).to_string();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The error code of a gateway-made response, kept in its extensions so the
/// access log and metrics can name it.
#[derive(Clone, Copy, Debug)]
pub struct ErrorCode(pub &'static str);

impl GatewayError {
    /// Whether the shaper refused to send it (the upstream budget), as
    /// opposed to the upstream or the request failing.
    pub fn is_budget_refusal(&self) -> bool {
        matches!(self, Self::RateLimited { .. })
    }
}

impl From<crate::shaper::Refusal> for GatewayError {
    fn from(refusal: crate::shaper::Refusal) -> Self {
        use crate::shaper::Refusal;
        let (retry_after, code) = match refusal {
            Refusal::Draining => return Self::ShuttingDown,
            Refusal::WaitTooLong { retry_after } => (retry_after, "rate_limited"),
            Refusal::QueueFull { retry_after } => (retry_after, "queue_full"),
            Refusal::TimedOut { retry_after } => (retry_after, "queue_timeout"),
        };
        Self::RateLimited {
            retry_after_secs: retry_after_secs(retry_after),
            code,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = error_response(self.status(), self.code(), &self.to_string());
        if let Self::RateLimited {
            retry_after_secs, ..
        }
        | Self::KeyRateLimited { retry_after_secs }
        | Self::CircuitOpen { retry_after_secs } = self
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
        }
        if let Self::Unauthorized { .. } = self {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"castari-gateway\""),
            );
        }
        response.extensions_mut().insert(ErrorCode(self.code()));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shaper::Refusal;
    use http_body_util::BodyExt;
    use std::time::Duration;

    #[test]
    fn every_error_maps_to_its_status_and_code() {
        let table = [
            (GatewayError::NotFound, 404, "not_found"),
            (GatewayError::BadRequest("x"), 400, "bad_request"),
            (
                GatewayError::PayloadTooLarge { limit: 1 },
                413,
                "payload_too_large",
            ),
            (
                GatewayError::RequestBodyTimeout,
                408,
                "request_body_timeout",
            ),
            (
                GatewayError::UpstreamUnreachable,
                502,
                "upstream_unreachable",
            ),
            (GatewayError::UpstreamTimeout, 504, "upstream_timeout"),
            (GatewayError::UpstreamFailed, 502, "upstream_failed"),
            (
                GatewayError::from(Refusal::WaitTooLong {
                    retry_after: Duration::from_millis(2_500),
                }),
                429,
                "rate_limited",
            ),
            (
                GatewayError::from(Refusal::QueueFull {
                    retry_after: Duration::from_millis(2_500),
                }),
                429,
                "queue_full",
            ),
            (
                GatewayError::from(Refusal::TimedOut {
                    retry_after: Duration::from_millis(2_500),
                }),
                429,
                "queue_timeout",
            ),
            (GatewayError::ShuttingDown, 503, "shutting_down"),
            (GatewayError::from(Refusal::Draining), 503, "shutting_down"),
            (
                GatewayError::Unauthorized {
                    code: "invalid_api_key",
                    detail: "x",
                },
                401,
                "invalid_api_key",
            ),
            (
                GatewayError::Forbidden {
                    code: "role_forbids_route",
                    detail: "x".into(),
                },
                403,
                "role_forbids_route",
            ),
            (
                GatewayError::KeyRateLimited {
                    retry_after_secs: 1,
                },
                429,
                "key_rate_limited",
            ),
            (
                GatewayError::BudgetExceeded {
                    limit: "1".into(),
                    period: "day",
                    spent: "1".into(),
                    reserved: "0".into(),
                },
                402,
                "budget_exceeded",
            ),
            (GatewayError::StoreUnavailable, 503, "key_store_unavailable"),
            (
                GatewayError::CircuitOpen {
                    retry_after_secs: 3,
                },
                503,
                "circuit_open",
            ),
            (GatewayError::Internal, 500, "internal_error"),
        ];
        for (error, status, code) in table {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.code(), code, "{error:?}");
        }
    }

    #[tokio::test]
    async fn body_is_castari_shaped() {
        let response = GatewayError::UpstreamTimeout.into_response();
        assert_eq!(response.status(), 504);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["detail"], "Upstream timed out");
        assert_eq!(json["code"], "upstream_timeout");
    }

    #[tokio::test]
    async fn rate_limited_carries_retry_after_and_castari_detail() {
        let response = GatewayError::from(Refusal::WaitTooLong {
            retry_after: Duration::from_millis(6_200),
        })
        .into_response();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json["detail"],
            "Rate limit exceeded. Try again in 7 seconds."
        );
    }
}
