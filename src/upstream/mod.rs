//! The upstream client: the pooled hop (`hop.rs`: hyper-util's client over
//! hyper-rustls) and the forwarding step.
//!
//! `forward` sends a checked request with the real key and streams both
//! bodies: the client's body through a [`Guarded`] size/idle guard, the
//! upstream's body back through an idle guard. Redirects are never followed
//! and system proxy variables are ignored; `upstream.proxy` is honoured.

pub mod breaker;
pub mod credential;
pub mod headers;
pub mod hop;
pub mod path;
pub mod retry;
pub mod seen;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method};

use crate::body::{BodyError, Guarded, Verdict};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;
use crate::route::RouteClass;
pub use hop::{BuildError, Hop, HopError, HopResponse};
use path::UpstreamBase;

/// Where a request's time went, for the access record and metrics: one
/// extension on the response (each extension is an allocation).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timing {
    /// Time from sending the request to the upstream's response headers,
    /// on an answer that came from the upstream (set by [`UpstreamClient`]'s
    /// send; the cache takes it off a fill, which it counts once).
    pub upstream: Option<Duration>,
    /// Time the request spent waiting on others rather than in the
    /// gateway's own work: for the upstream (every attempt, until its
    /// response headers), in the shaper's queue and for its session turn,
    /// in retry backoff, or on a fetch another request made. Counted by the
    /// stages that wait and set on the response (an error's too) by
    /// admission (`routes/proxy.rs`); the access record subtracts it to get
    /// the overhead.
    pub waited: Duration,
}

/// A request ready to go upstream.
pub struct Outbound {
    /// HTTP method, as received.
    pub method: Method,
    /// Full upstream URI, built from checked segments.
    pub uri: http::Uri,
    /// Client headers (the client's credentials are removed here).
    pub headers: HeaderMap,
    /// The client's body, streamed.
    pub body: Body,
    /// Which timeout applies.
    pub class: RouteClass,
    /// The upstream credential's `Authorization` value.
    pub authorization: HeaderValue,
}

/// Limits applied to the client's request body.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max_bytes: u64,
    /// Longest pause between chunks.
    pub idle: Duration,
}

/// The pooled upstream client. Credentials travel with each request
/// ([`Outbound::authorization`]).
#[derive(Debug)]
pub struct UpstreamClient {
    hop: Hop,
    base: UpstreamBase,
    config: UpstreamConfig,
}

impl UpstreamClient {
    /// Builds the client.
    ///
    /// # Errors
    /// The TLS backend or proxy setting cannot be initialised.
    pub fn new(config: &UpstreamConfig) -> Result<Self, BuildError> {
        Ok(Self::with_hop(config, Hop::new(config)?))
    }

    /// A client that sends through `hop` (a test's stand-in upstream).
    pub fn with_hop(config: &UpstreamConfig, hop: Hop) -> Self {
        Self {
            hop,
            base: UpstreamBase::new(&config.url),
            config: config.clone(),
        }
    }

    /// The configured upstream base URL.
    pub fn base(&self) -> &url::Url {
        self.base.url()
    }

    /// The base URL, prepared for building request URIs.
    pub fn prepared_base(&self) -> &UpstreamBase {
        &self.base
    }

    /// Sends `out` upstream and returns the upstream's response, streamed.
    ///
    /// # Errors
    /// 502 when the upstream cannot be reached or fails mid-exchange, 504 on
    /// timeout, 413/408 when the client's body broke its limits first.
    pub async fn forward(
        &self,
        out: Outbound,
        limits: BodyLimits,
    ) -> Result<Response, GatewayError> {
        let Outbound {
            method,
            uri,
            mut headers,
            body,
            class,
            authorization,
        } = out;
        headers::sanitize_request(&mut headers);
        headers.insert(http::header::AUTHORIZATION, authorization);

        let (body, verdict) = if axum::body::HttpBody::is_end_stream(&body) {
            (Body::empty(), Verdict::unread())
        } else {
            let verdict = Verdict::default();
            let guarded = Guarded::new(body, limits.idle, limits.max_bytes, verdict.clone());
            (Body::new(guarded), verdict)
        };
        let mut request = http::Request::new(body);
        *request.method_mut() = method;
        *request.uri_mut() = uri;
        *request.headers_mut() = headers;

        let started = Instant::now();
        let sent = tokio::time::timeout(self.timeout(class), self.hop.send(request)).await;
        let latency = started.elapsed();
        let upstream = match sent {
            Err(_) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(error)) => return Err(classify_send_error(&error, verdict.get(), limits)),
            Ok(Ok(response)) => response,
        };
        Ok(self.relay(upstream, latency))
    }

    fn relay(&self, upstream: HopResponse, latency: Duration) -> Response {
        let (mut parts, body) = upstream.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        let idle = Duration::from_millis(self.config.download_idle_timeout_ms);
        let body = Guarded::new(body, idle, u64::MAX, Verdict::unread());
        parts.extensions.insert(Timing {
            upstream: Some(latency),
            waited: Duration::ZERO,
        });
        Response::from_parts(parts, Body::new(body))
    }

    fn timeout(&self, class: RouteClass) -> Duration {
        let c = &self.config;
        Duration::from_millis(match class {
            RouteClass::Invoke => c.invoke_timeout_ms,
            RouteClass::Long => c.long_timeout_ms,
            RouteClass::Crud | RouteClass::Download | RouteClass::Local => c.crud_timeout_ms,
        })
    }
}

fn classify_send_error(
    error: &HopError,
    body: Option<BodyError>,
    limits: BodyLimits,
) -> GatewayError {
    match body {
        Some(BodyError::TooLarge) => {
            return GatewayError::PayloadTooLarge {
                limit: limits.max_bytes,
            }
        }
        Some(BodyError::Idle) => return GatewayError::RequestBodyTimeout,
        Some(BodyError::Aborted) | None => {}
    }
    // The cause chain, never the URL: a query string may carry a capability.
    let causes = causes(error);
    tracing::debug!(cause = %causes, "upstream request failed");
    let timed_out = chain(error).any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
    });
    match error {
        _ if timed_out => GatewayError::UpstreamTimeout,
        HopError::Connect(_) => GatewayError::UpstreamUnreachable,
        HopError::Exchange(_) => GatewayError::UpstreamFailed,
    }
}

/// `error` and its sources.
fn chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

/// The sources of `error`, for the debug log.
fn causes(error: &HopError) -> String {
    let mut out = String::new();
    for (i, cause) in chain(error).skip(1).enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&cause.to_string());
    }
    out
}
