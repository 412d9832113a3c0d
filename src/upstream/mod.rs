//! The upstream client: one pooled reqwest client and the forwarding step.
//!
//! `forward` sends a checked request with the real key and streams both
//! bodies: the client's body through a [`Guarded`] size/idle guard, the
//! upstream's body back through an idle guard. Redirects are never followed
//! and system proxy variables are ignored unless `upstream.proxy` is set.

pub mod breaker;
pub mod credential;
pub mod headers;
pub mod path;
pub mod retry;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, Method};

use crate::body::{BodyError, Guarded, Verdict};
use crate::config::UpstreamConfig;
use crate::error::GatewayError;
use crate::route::RouteClass;

/// Time from sending the request to the upstream's response headers,
/// attached to responses for the access log and metrics.
#[derive(Clone, Copy, Debug)]
pub struct UpstreamLatency(pub Duration);

/// A request ready to go upstream.
pub struct Outbound {
    /// HTTP method, as received.
    pub method: Method,
    /// Full upstream URL, built from checked segments.
    pub url: url::Url,
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
    client: reqwest::Client,
    base: url::Url,
    config: UpstreamConfig,
}

impl UpstreamClient {
    /// Builds the client.
    ///
    /// # Errors
    /// The TLS backend or proxy setting cannot be initialised.
    pub fn new(config: &UpstreamConfig) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .pool_idle_timeout(Duration::from_millis(config.pool_idle_timeout_ms))
            .pool_max_idle_per_host(config.pool_max_idle)
            .tcp_nodelay(true)
            .no_proxy();
        if let Some(proxy) = &config.proxy {
            builder = builder.proxy(reqwest::Proxy::all(proxy.as_str())?);
        }
        Ok(Self {
            client: builder.build()?,
            base: config.url.clone(),
            config: config.clone(),
        })
    }

    /// The configured upstream base URL.
    pub fn base(&self) -> &url::Url {
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
            url,
            mut headers,
            body,
            class,
            authorization,
        } = out;
        headers::sanitize_request(&mut headers);
        headers.insert(http::header::AUTHORIZATION, authorization);

        let verdict = Verdict::default();
        // A `Request` rather than the builder: `RequestBuilder::headers`
        // inserts the map's headers one by one into an empty one.
        let mut request = reqwest::Request::new(method, url);
        *request.headers_mut() = headers;
        if !axum::body::HttpBody::is_end_stream(&body) {
            let stream = Guarded::new(
                body.into_data_stream(),
                limits.idle,
                limits.max_bytes,
                verdict.clone(),
            );
            *request.body_mut() = Some(reqwest::Body::wrap_stream(stream));
        }

        let started = Instant::now();
        let sent = tokio::time::timeout(self.timeout(class), self.client.execute(request)).await;
        let latency = started.elapsed();
        let upstream = match sent {
            Err(_) => return Err(GatewayError::UpstreamTimeout),
            Ok(Err(error)) => return Err(classify_send_error(&error, verdict.get(), limits)),
            Ok(Ok(response)) => response,
        };
        Ok(self.relay(upstream, latency))
    }

    fn relay(&self, upstream: reqwest::Response, latency: Duration) -> Response {
        let (mut parts, body) = http::Response::from(upstream).into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        let idle = Duration::from_millis(self.config.download_idle_timeout_ms);
        let body = Guarded::new(
            http_body_util::BodyExt::into_data_stream(body),
            idle,
            u64::MAX,
            Verdict::default(),
        );
        parts.extensions.insert(UpstreamLatency(latency));
        Response::from_parts(parts, Body::from_stream(body))
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
    error: &reqwest::Error,
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
    let cause = std::error::Error::source(error).map(ToString::to_string);
    tracing::debug!(
        cause = cause.as_deref().unwrap_or("unknown"),
        "upstream request failed"
    );
    if error.is_timeout() {
        GatewayError::UpstreamTimeout
    } else if error.is_connect() {
        GatewayError::UpstreamUnreachable
    } else {
        GatewayError::UpstreamFailed
    }
}
