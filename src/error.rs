//! The gateway's own errors and the one place that maps them to HTTP.
//!
//! Every response the gateway makes up (as opposed to one it relays from the
//! upstream) is Castari-shaped JSON, `{"detail": "...", "code": "..."}`, so
//! the SDK and CLI print `detail` as they do for upstream errors. Upstream
//! non-2xx responses never pass through here: they are relayed untouched.
//!
//! The SDK shows its users `detail` only, never `code`, so a detail says
//! what happened and what to do about it (the limit, the role, the setting
//! or header to change, when to retry), in one or two sentences, and ends
//! with its code as ` (code: snake_case_code)` so a person can look it up
//! in the README's error table. [`error_response`] appends that suffix, so
//! every gateway-made answer carries it; a detail written with the suffix
//! already is left as it is. Details never hold a request body, a secret
//! (the upstream key, the admin key, a local key's secret; a key id is
//! fine) or path bytes that were not checked.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::shaper::Lane;

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

/// An error on the request path. Its `Display` is the detail without the
/// ` (code: ...)` suffix; [`GatewayError::detail`] is the whole one.
#[derive(Clone, Debug, thiserror::Error)]
pub enum GatewayError {
    /// A path outside `/api/v1/` that is not a gateway endpoint.
    #[error(
        "Nothing is served at this path: the Castari API is under /api/v1/ (point \
         CASTARI_API_URL at the gateway's address, without a path), and the gateway's own \
         endpoints are listed in its README"
    )]
    NotFound,
    /// A gateway endpoint called with a method it does not take.
    #[error(
        "This gateway endpoint does not take this method; the response's Allow header lists \
         the methods it does"
    )]
    MethodNotAllowed,
    /// The request target (path and query) is longer than the gateway
    /// forwards.
    #[error(
        "The request's path and query are longer than the {limit} bytes the gateway forwards \
         (an upstream could not take them either), so it was not sent; shorten them"
    )]
    UriTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request target or path cannot be forwarded safely. The text
    /// says what is wrong with it.
    #[error("{0}; the gateway did not send the request upstream: correct it and send it again")]
    BadRequest(&'static str),
    /// The request body is larger than `server.max_body_bytes`.
    #[error(
        "The request body is larger than the {limit} bytes this gateway accepts \
         (server.max_body_bytes); send a smaller body, or ask the gateway's operator to raise \
         that limit"
    )]
    PayloadTooLarge {
        /// The configured limit in bytes.
        limit: u64,
    },
    /// A body the gateway must hold whole to check or order it is larger
    /// than it holds.
    #[error("The request body is larger than the {limit} bytes the gateway holds {held}")]
    HeldBodyTooLarge {
        /// The limit in bytes.
        limit: u64,
        /// Why the body is held, which limit applies and what to do, e.g.
        /// "for an invocation (shaper.replay_max_bytes); send ...".
        held: &'static str,
    },
    /// The client stopped sending its body for longer than the idle deadline.
    #[error(
        "The request body stopped arriving for longer than the gateway waits \
         (server.body_idle_timeout_ms), so the request was abandoned; send it again with the \
         whole body"
    )]
    RequestBodyTimeout,
    /// No connection to the upstream could be made.
    #[error(
        "The gateway could not connect to the Castari API, so the request was not sent; try \
         again shortly, and tell the gateway's operator (upstream.url) if it persists"
    )]
    UpstreamUnreachable,
    /// The upstream did not answer within the route class's timeout.
    #[error(
        "The Castari API did not answer within the gateway's timeout for this kind of request \
         (upstream.crud_timeout_ms, long_timeout_ms or invoke_timeout_ms); it may still have \
         run, so check before repeating a write"
    )]
    UpstreamTimeout,
    /// The upstream connection failed after it was made (reset, bad response).
    #[error(
        "The Castari API's answer did not arrive whole (the connection broke, or the answer \
         could not be read), so there is none to relay; the request may have run, so check \
         before repeating a write"
    )]
    UpstreamFailed,
    /// The shaper will not send the request: the upstream budget is spent
    /// for longer than the lane may wait, or its queue is full.
    #[error("{}", shaper_refusal(.code, .lane, .retry_after_secs))]
    RateLimited {
        /// `Retry-After`, whole seconds, at least 1.
        retry_after_secs: u64,
        /// `rate_limited`, `queue_full` or `queue_timeout`, set from the
        /// shaper's refusal by the `From` impl below.
        code: &'static str,
        /// The lane it was refused in.
        lane: Lane,
    },
    /// Shutdown began before the request could be sent; it never left.
    #[error(
        "The gateway is shutting down and this request's turn did not come before it \
         stopped; it was not sent upstream. Retry shortly"
    )]
    ShuttingDown,
    /// No local key, or one the gateway does not accept (keys mode).
    #[error("{detail}")]
    Unauthorized {
        /// `missing_api_key`, `invalid_api_key`, `key_revoked`, `key_expired`.
        code: &'static str,
        /// What happened and what to do, for the client.
        detail: &'static str,
    },
    /// The local key may not use this route or agent.
    #[error("{detail}")]
    Forbidden {
        /// Why, as a stable code (`role_forbids_route`, ...).
        code: &'static str,
        /// What happened and what to do; never a request body.
        detail: String,
    },
    /// The local key's own rate limit (`--rate`) is spent.
    #[error(
        "This key's own rate limit ({rate}) is spent, so the request was not sent. Try again \
         in {retry_after_secs} seconds, or ask the gateway's operator for a higher rate"
    )]
    KeyRateLimited {
        /// `Retry-After`, whole seconds, at least 1.
        retry_after_secs: u64,
        /// The key's rate, as written (`30/min`).
        rate: String,
    },
    /// The invocation could exceed the local key's budget for the period.
    #[error(
        "This key's budget of {limit} USD per {period} has no room for this invocation \
         ({spent} spent, {reserved} reserved by invocations in flight), so it was not sent. \
         Invoke again when the next UTC {period} begins, or ask the gateway's operator to raise \
         the key's budget"
    )]
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
    #[error(
        "The Castari API failed repeatedly, so the gateway's circuit breaker is open and did \
         not send this request. Try again in {retry_after_secs} seconds"
    )]
    CircuitOpen {
        /// `Retry-After`, whole seconds, at least 1.
        retry_after_secs: u64,
    },
    /// The key store (SQLite) could not be read or written.
    #[error(
        "The gateway's key store could not be read or written, so the request was not sent; \
         try again shortly, and tell the gateway's operator if it persists"
    )]
    StoreUnavailable,
    /// An unexpected failure inside the gateway. The client sees no cause;
    /// the cause goes to the log.
    #[error(
        "The gateway failed on this request (a bug; the cause is in its log); report it to \
         the gateway's operator with this response's X-Request-Id"
    )]
    Internal,
}

/// The detail of a shaper refusal: which lane, that the account's budget
/// is spent, and when to retry.
fn shaper_refusal(code: &str, lane: &Lane, retry_after_secs: &u64) -> String {
    let (name, setting) = match lane {
        Lane::Crud => ("CRUD", "crud"),
        Lane::Invoke => ("invocation", "invoke"),
    };
    let why = match code {
        "queue_full" => format!(
            "the account's {name} budget at Castari is spent and the gateway's {name} queue is \
             full (shaper.{setting}_queue_depth)"
        ),
        "queue_timeout" => format!(
            "Castari limited the account while this request waited in the gateway's {name} \
             queue, pushing its turn past its deadline; it did not run"
        ),
        _ => format!(
            "the account's {name} budget at Castari is spent for longer than this request may \
             wait (shaper.{setting}_max_wait_ms, or its own Prefer: wait=N header)"
        ),
    };
    format!("Rate limit exceeded: {why}. Try again in {retry_after_secs} seconds")
}

impl GatewayError {
    /// The HTTP status for this error. A test pins every mapping.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } | Self::HeldBodyTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
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
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UriTooLong { .. } => "uri_too_long",
            Self::BadRequest(_) => "bad_request",
            Self::PayloadTooLarge { .. } | Self::HeldBodyTooLarge { .. } => "payload_too_large",
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
            | Self::MethodNotAllowed
            | Self::UriTooLong { .. }
            | Self::BadRequest(_)
            | Self::PayloadTooLarge { .. }
            | Self::HeldBodyTooLarge { .. }
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

    /// The `detail` a client gets: what happened, what to do, and
    /// ` (code: ...)`.
    pub fn detail(&self) -> String {
        with_code(&self.to_string(), self.code())
    }
}

/// A wait as a `Retry-After` value: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// `detail` ending with ` (code: CODE)`, the convention of every
/// gateway-made detail (module docs): appended unless it is there already,
/// after dropping a trailing full stop.
pub fn with_code(detail: &str, code: &str) -> String {
    let suffix = format!(" (code: {code})");
    if detail.ends_with(&suffix) {
        return detail.to_string();
    }
    let detail = detail.trim_end();
    let detail = detail.strip_suffix('.').unwrap_or(detail);
    format!("{detail}{suffix}")
}

/// Builds a Castari-shaped JSON error response; `detail` gets the
/// ` (code: CODE)` suffix ([`with_code`]).
pub fn error_response(status: StatusCode, code: &str, detail: &str) -> Response {
    let detail = with_code(detail, code);
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
        let (retry_after, code, lane) = match refusal {
            Refusal::Draining => return Self::ShuttingDown,
            Refusal::WaitTooLong { retry_after, lane } => (retry_after, "rate_limited", lane),
            Refusal::QueueFull { retry_after, lane } => (retry_after, "queue_full", lane),
            Refusal::TimedOut { retry_after, lane } => (retry_after, "queue_timeout", lane),
        };
        Self::RateLimited {
            retry_after_secs: retry_after_secs(retry_after),
            code,
            lane,
        }
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let mut response = error_response(self.status(), self.code(), &self.to_string());
        if let Self::RateLimited {
            retry_after_secs, ..
        }
        | Self::KeyRateLimited {
            retry_after_secs, ..
        }
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
mod tests;
