//! The middleware in front of every `/api/v1` route, in order: record the
//! request, apply faults, authenticate (configured keys, minus revoked
//! ones), rate-limit, then the handler; the response, 401s included, gets
//! `X-RateLimit-*` headers, any plain-text error becomes FastAPI's JSON,
//! and its status is recorded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use rand::Rng;

use crate::error::detail;
use crate::limits::{Class, Verdict};
use crate::record::{RecordedRequest, LOG_CAPACITY};
use crate::server::ConnToken;
use crate::util::now_ms;
use crate::Shared;

/// What the fault knobs decided for one request.
enum Fault {
    None,
    Error(StatusCode),
    Drop,
    Stall(Duration),
}

/// The `/api/v1` middleware.
pub(crate) async fn gate(State(sim): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if !path.starts_with("/api/") {
        return next.run(request).await;
    }
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "(unmatched)".to_string(), |m| m.as_str().to_string());
    let method = request.method().clone();
    let mut record = RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        query: request.uri().query().map(str::to_string),
        headers: request
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len: 0,
        received_at_ms: now_ms(),
        status: 0,
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let token = request.extensions().get::<ConnToken>().cloned();
    let counted = Arc::new(AtomicU64::new(0));
    let request = count_body(request, counted.clone());
    {
        let mut inner = sim.lock();
        inner.total += 1;
        *inner
            .routes
            .entry(format!("{method} {template}"))
            .or_default() += 1;
    }

    let (latency, fault) = decide_fault(&sim, &path);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = match fault {
        Fault::Drop => {
            finish(&sim, record, 0);
            if let Some(token) = token {
                token.0.cancel();
            }
            return std::future::pending().await;
        }
        Fault::Error(status) => detail(status, "Simulated upstream failure"),
        Fault::Stall(hold) => stalled(hold),
        Fault::None => authorize_and_run(&sim, &method, &template, request, next).await,
    };
    let response = tidy(response).await;
    record.body_len = declared.unwrap_or_else(|| counted.load(Ordering::Relaxed));
    finish(&sim, record, response.status().as_u16());
    response
}

/// The key a request was authenticated with, for handlers that act on
/// "the key in use" (`GET /auth/me`, `DELETE /auth/api-key`).
#[derive(Clone, Debug)]
pub(crate) struct Principal(pub(crate) String);

async fn authorize_and_run(
    sim: &Shared,
    method: &http::Method,
    template: &str,
    mut request: Request,
    next: Next,
) -> Response {
    let is_invoke = method == http::Method::POST
        && (template.ends_with("/invoke") || template.ends_with("/stream"));
    let classes: &[Class] = match (is_invoke, sim.config.invoke_counts_as_crud) {
        (true, true) => &[Class::Crud, Class::Invoke],
        (true, false) => &[Class::Invoke],
        (false, _) => &[Class::Crud],
    };
    let refused = |message: &str| {
        let mut inner = sim.lock();
        inner.unauthorized += 1;
        // The reference says every response carries X-RateLimit-*, and is
        // silent on what they say to an unknown key. A 401 spends nothing,
        // so they show the route's limit (CRUD, or the invocation limit on
        // invoke routes, as admitted requests there show) with the whole
        // budget remaining and a reset one window away.
        let verdict = inner
            .limiter
            .untouched(classes.last().copied().unwrap_or(Class::Crud));
        drop(inner);
        let mut response = detail(StatusCode::UNAUTHORIZED, message);
        rate_headers(&mut response, &verdict);
        response
    };
    let key = match bearer(&request) {
        Ok(key) => key,
        Err(message) => return refused(message),
    };
    let configured = sim.config.api_keys.is_empty() || sim.config.api_keys.contains(&key);
    if !configured || sim.lock().revoked.contains(&key) {
        return refused("Invalid API key");
    }
    let verdict = sim.lock().limiter.check(&key, classes, Instant::now());
    request.extensions_mut().insert(Principal(key));
    let mut response = if verdict.admitted {
        next.run(request).await
    } else {
        let mut r = detail(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "Rate limit exceeded. Try again in {} seconds.",
                verdict.retry_after
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(verdict.retry_after));
        r
    };
    rate_headers(&mut response, &verdict);
    response
}

fn rate_headers(response: &mut Response, verdict: &Verdict) {
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", HeaderValue::from(verdict.limit));
    headers.insert(
        "x-ratelimit-remaining",
        HeaderValue::from(verdict.remaining),
    );
    headers.insert("x-ratelimit-reset", HeaderValue::from(verdict.reset_unix));
}

fn bearer(request: &Request) -> Result<String, &'static str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or("Authentication required")?;
    let text = value.to_str().map_err(|_| "Invalid API key")?;
    let key = text
        .strip_prefix("Bearer ")
        .or_else(|| text.strip_prefix("bearer "))
        .ok_or("Invalid API key")?
        .trim();
    if key.is_empty() {
        return Err("Invalid API key");
    }
    Ok(key.to_string())
}

fn decide_fault(sim: &Shared, path: &str) -> (Duration, Fault) {
    let mut inner = sim.lock();
    let f = &mut inner.faults;
    if f.path_prefix
        .as_deref()
        .is_some_and(|p| !path.starts_with(p))
    {
        return (Duration::ZERO, Fault::None);
    }
    let mut rng = rand::rng();
    let jitter = if f.jitter_ms > 0 {
        rng.random_range(0..=f.jitter_ms)
    } else {
        0
    };
    let latency = Duration::from_millis(f.latency_ms + jitter);
    let statuses = if f.error_statuses.is_empty() {
        vec![500, 502, 503]
    } else {
        f.error_statuses.clone()
    };
    let status = |s: u16| StatusCode::from_u16(s).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let hold = Duration::from_millis(if f.stall_ms == 0 { 60_000 } else { f.stall_ms });
    let fault = if f.drop_next > 0 {
        f.drop_next -= 1;
        Fault::Drop
    } else if f.fail_next > 0 {
        f.fail_next -= 1;
        Fault::Error(status(if f.error_statuses.is_empty() {
            503
        } else {
            statuses[0]
        }))
    } else if f.stall_next > 0 {
        f.stall_next -= 1;
        Fault::Stall(hold)
    } else if f.drop_rate > 0.0 && rng.random_bool(f.drop_rate.clamp(0.0, 1.0)) {
        Fault::Drop
    } else if f.error_rate > 0.0 && rng.random_bool(f.error_rate.clamp(0.0, 1.0)) {
        Fault::Error(status(statuses[rng.random_range(0..statuses.len())]))
    } else if f.stall_rate > 0.0 && rng.random_bool(f.stall_rate.clamp(0.0, 1.0)) {
        Fault::Stall(hold)
    } else {
        Fault::None
    };
    (latency, fault)
}

/// 200 with headers promising 1 KiB, 100 bytes of it, then silence.
fn stalled(hold: Duration) -> Response {
    let head = Bytes::from(format!("{{\"detail\": \"{}", "x".repeat(88)));
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
        futures_util::stream::once(async move {
            tokio::time::sleep(hold).await;
            Err(std::io::Error::other("stalled response ends"))
        }),
    );
    let mut response = Response::new(Body::from_stream(stream));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1024"));
    response
}

/// FastAPI answers every error as JSON `{"detail": ...}`. axum does not
/// always: a wrong method is an empty 405, and extractor rejections are
/// `text/plain`. Those become JSON here, keeping the other headers
/// (`Allow`, `X-RateLimit-*`).
async fn tidy(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let plain = match content_type.as_deref() {
        None if status == StatusCode::METHOD_NOT_ALLOWED => false,
        Some(t) if t.starts_with("text/plain") => true,
        _ => return response,
    };
    let (parts, body) = response.into_parts();
    let message = if plain {
        let bytes = axum::body::to_bytes(body, 64 * 1024)
            .await
            .unwrap_or_default();
        String::from_utf8_lossy(&bytes).trim().to_string()
    } else {
        String::new()
    };
    let message = if message.is_empty() {
        status.canonical_reason().unwrap_or("Error").to_string()
    } else {
        message
    };
    let mut replaced = detail(status, message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            replaced.headers_mut().append(name.clone(), value.clone());
        }
    }
    replaced
}

fn count_body(request: Request, counter: Arc<AtomicU64>) -> Request {
    let (parts, body) = request.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        if let Ok(bytes) = &chunk {
            counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    Request::from_parts(parts, Body::from_stream(stream))
}

fn finish(sim: &Shared, mut record: RecordedRequest, status: u16) {
    record.status = status;
    let mut inner = sim.lock();
    if inner.log.len() >= LOG_CAPACITY {
        inner.log.pop_front();
    }
    inner.log.push_back(record);
}
