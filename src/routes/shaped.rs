//! The shaped path: hold a replayable body, keep the turns of a session in
//! order, wait for the upstream budget, send, and absorb an upstream 429.
//!
//! Bodies up to `shaper.replay_max_bytes` (and every invocation body) are
//! read before queueing, so a request the upstream refuses with 429, which
//! means "not executed", can be sent again from the head of the queue
//! without the client seeing it. Larger bodies stream as before; if the
//! upstream refuses one of those with 429, the 429 reaches the client (with
//! the gateway's `X-RateLimit-*` view), since its bytes are gone.
//!
//! An invocation is sent from a task of its own: once it has left, a client
//! that hangs up does not abort it (the run goes on upstream and is billed
//! either way), and the session's next turn waits for its answer.
//!
//! A request may set its own longest wait with `Prefer: wait=N` (RFC 7240,
//! seconds): shorter than its lane's, or longer up to
//! `shaper.prefer_wait_max_ms`; its answer then carries
//! `Preference-Applied: wait=M` with the wait applied.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, request::Parts, HeaderValue};

use crate::body::{BodyError, Guarded, Verdict};
use crate::cache::flight::SendMark;
use crate::error::GatewayError;
use crate::route::RouteClass;
use crate::shaper::sessions::Turn;
use crate::shaper::{Lane, RateView, Shaper, Ticket};
use crate::state::AppState;
use crate::types::Peer;
use crate::upstream::headers::{
    reuse_rendered, X_API_KEY, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET,
};
use crate::upstream::path::ApiPath;
use crate::upstream::retry::{Attempts, Safety};
use crate::upstream::{BodyLimits, Outbound};

/// Header on responses that waited for the budget: milliseconds waited.
pub const QUEUE_WAIT_HEADER: &str = "x-gateway-queue-wait-ms";

/// RFC 7240's answer to a `Prefer` that was honoured.
const PREFERENCE_APPLIED: http::HeaderName = http::HeaderName::from_static("preference-applied");

/// Where a shaped request goes and with what.
pub(super) struct Target<'a> {
    pub path: &'a ApiPath,
    pub class: RouteClass,
    pub limits: BodyLimits,
    /// The upstream credential's `Authorization` value.
    pub authorization: &'a HeaderValue,
}

/// Sends one request through `shaper` (its upstream credential's).
pub(super) async fn forward(
    state: &AppState,
    shaper: &Shaper,
    parts: Parts,
    body: Body,
    to: Target<'_>,
) -> Result<Response, GatewayError> {
    let Target {
        path,
        class,
        limits,
        authorization,
    } = to;
    let lane = Lane::of(class);
    let replay_max = state.config.shaper.replay_max_bytes;
    let mut body = read_replayable(body, lane, replay_max, limits).await?;
    let agent: Option<Arc<str>> = path.agent().map(Arc::from);
    let mut turn = match (&body, &agent) {
        (Prepared::Bytes(bytes), Some(agent)) if lane == Lane::Invoke => match session_id(bytes) {
            Some(session) => Some(shaper.sessions().turn(agent, &session).await),
            None => None,
        },
        _ => None,
    };
    let url = path.to_upstream_url(state.upstream.base(), parts.uri.query());
    let applied = prefer_wait(&parts.headers).map(|asked| shaper.preferred_wait(lane, asked));
    let mut ticket = Ticket {
        lane,
        client: client_id(shaper, &parts),
        agent,
        retry: false,
        arrived: std::time::Instant::now(),
        max_wait: applied,
    };
    let mark = parts.extensions.get::<SendMark>().cloned();
    let mut waited = Duration::ZERO;
    let mut queued = false;
    let safety = Safety::of(&parts.method, path.segments());
    state.retrier.deposit();
    let mut attempts = Attempts::default();
    loop {
        // Fail fast while the upstream is down, before spending budget.
        state.breaker.admit()?;
        let admitted = shaper.admit(ticket.clone()).await?;
        waited += admitted.waited;
        queued |= admitted.queued;
        if let Some(mark) = &mark {
            mark.mark();
        }
        let outbound = Outbound {
            method: parts.method.clone(),
            url: url.clone(),
            headers: parts.headers.clone(),
            body: body.take(),
            class,
            authorization: authorization.clone(),
        };
        let (result, returned) = send(state, outbound, limits, lane, turn.take()).await;
        turn = returned;
        state.breaker.record(&result);
        if let Ok(response) = &result {
            let limited = shaper.observe(
                lane,
                response.status(),
                response.headers(),
                admitted.sent_at,
            );
            if limited && body.replayable() {
                ticket.retry = true;
                continue;
            }
        }
        let replayable = body.replayable();
        if let Some(delay) = state
            .retrier
            .again(safety, &mut attempts, &result, replayable)
        {
            drop(result);
            tokio::time::sleep(delay).await;
            ticket.retry = true;
            continue;
        }
        let response = attempts.finish(&parts.method, result?);
        let mut response = match turn {
            Some(turn) => hold_until_done(response, turn),
            None => response,
        };
        if queued {
            response.headers_mut().insert(
                QUEUE_WAIT_HEADER,
                HeaderValue::from(waited.as_millis() as u64),
            );
        }
        if let Some(applied) = applied {
            let value = format!("wait={}", applied.as_secs());
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().insert(PREFERENCE_APPLIED, value);
            }
        }
        return Ok(response);
    }
}

/// A request body: in memory (replayable) or still streaming.
enum Prepared {
    Bytes(Bytes),
    Stream(Option<Body>),
}

impl Prepared {
    fn replayable(&self) -> bool {
        matches!(self, Self::Bytes(_))
    }

    /// The body for one attempt.
    fn take(&mut self) -> Body {
        match self {
            Self::Bytes(bytes) => Body::from(bytes.clone()),
            Self::Stream(body) => body.take().unwrap_or_else(Body::empty),
        }
    }
}

/// Reads the body into memory when it is small enough to replay. An
/// invocation is always read (its `session_id` decides its place in line),
/// up to `replay_max` bytes.
async fn read_replayable(
    body: Body,
    lane: Lane,
    replay_max: u64,
    limits: BodyLimits,
) -> Result<Prepared, GatewayError> {
    if axum::body::HttpBody::is_end_stream(&body) {
        return Ok(Prepared::Bytes(Bytes::new()));
    }
    let hint = axum::body::HttpBody::size_hint(&body);
    let small = hint.upper().is_some_and(|upper| upper <= replay_max);
    if !small && lane != Lane::Invoke {
        return Ok(Prepared::Stream(Some(body)));
    }
    let limit = replay_max.min(limits.max_bytes);
    let verdict = Verdict::default();
    let mut stream = Guarded::new(body.into_data_stream(), limits.idle, limit, verdict);
    let mut buf = Vec::with_capacity(usize::try_from(hint.lower()).unwrap_or(0).min(1 << 20));
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => buf.extend_from_slice(&chunk),
            Err(BodyError::TooLarge) => return Err(GatewayError::PayloadTooLarge { limit }),
            Err(BodyError::Idle) => return Err(GatewayError::RequestBodyTimeout),
            Err(BodyError::Aborted) => {
                return Err(GatewayError::BadRequest("Request body ended early"))
            }
        }
    }
    Ok(Prepared::Bytes(Bytes::from(buf)))
}

/// The `wait` preference of a request (`Prefer: wait=10`, RFC 7240): a
/// whole number of seconds. Preferences the gateway does not know, and a
/// `wait` it cannot read, are ignored, as the RFC asks.
fn prefer_wait(headers: &http::HeaderMap) -> Option<Duration> {
    headers
        .get_all(PREFER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .find_map(|preference| {
            let preference = preference.split(';').next()?.trim();
            let (name, value) = preference.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            let secs: u64 = value.trim().trim_matches('"').parse().ok()?;
            Some(Duration::from_secs(secs))
        })
}

/// The `Prefer` request header (RFC 7240).
const PREFER: http::HeaderName = http::HeaderName::from_static("prefer");

/// The `session_id` of an invocation body, if it names one.
fn session_id(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Invoke {
        session_id: Option<String>,
    }
    serde_json::from_slice::<Invoke>(body)
        .ok()?
        .session_id
        .filter(|s| !s.is_empty())
}

/// Who a request is for fairness: its local key's id (keys mode), else a
/// fingerprint of the credential it sent, else its peer address.
fn client_id(shaper: &Shaper, parts: &Parts) -> Arc<str> {
    if let Some(super::proxy::CallerId(id)) = parts.extensions.get() {
        return Arc::from(format!("key:{id}"));
    }
    let credential = parts
        .headers
        .get(header::AUTHORIZATION)
        .or_else(|| parts.headers.get(X_API_KEY));
    if let Some(credential) = credential {
        return Arc::from(shaper.fingerprint(credential.as_bytes()));
    }
    match parts.extensions.get::<Peer>() {
        Some(peer) => Arc::from(format!("ip:{}", peer.remote.ip())),
        None => Arc::from("anonymous"),
    }
}

/// Sends one attempt. Invocations go from a task of their own, which owns
/// the session turn until the upstream answers.
async fn send(
    state: &AppState,
    outbound: Outbound,
    limits: BodyLimits,
    lane: Lane,
    turn: Option<Turn>,
) -> (Result<Response, GatewayError>, Option<Turn>) {
    if lane != Lane::Invoke {
        return (state.upstream.forward(outbound, limits).await, turn);
    }
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        let result = task_state.upstream.forward(outbound, limits).await;
        (result, turn)
    });
    match task.await {
        Ok(done) => done,
        Err(join_error) => {
            tracing::error!(%join_error, "invocation task failed");
            (Err(GatewayError::Internal), None)
        }
    }
}

/// Keeps `turn` until the response body is finished or dropped, so the
/// session's next turn (a streamed one included) waits for this one.
fn hold_until_done(response: Response, turn: Turn) -> Response {
    let (parts, body) = response.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &turn;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Replaces any upstream `X-RateLimit-*` with the gateway's view of `lane`:
/// one source per response, never a mix.
pub(super) fn stamp_view(shaper: &Shaper, lane: Lane, response: &mut Response) {
    let [limit, remaining, reset] = rendered(shaper.view(lane));
    let headers = response.headers_mut();
    // Constant names: a `&str` name is parsed again on every insert.
    headers.insert(X_RATELIMIT_LIMIT, limit);
    headers.insert(X_RATELIMIT_REMAINING, remaining);
    headers.insert(X_RATELIMIT_RESET, reset);
}

thread_local! {
    /// The last view rendered on this thread, and its header values.
    static RENDERED: RefCell<Option<(RateView, [HeaderValue; 3])>> = const { RefCell::new(None) };
}

/// The header values of `view`, shared while the view is the same.
fn rendered(view: RateView) -> [HeaderValue; 3] {
    reuse_rendered(&RENDERED, view, |view| {
        [
            HeaderValue::from(view.limit),
            HeaderValue::from(view.remaining),
            HeaderValue::from(view.reset_unix),
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> http::HeaderMap {
        let mut map = http::HeaderMap::new();
        for value in values {
            map.append(PREFER, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn reads_the_wait_preference() {
        let secs = |values: &[&str]| prefer_wait(&headers(values)).map(|d| d.as_secs());
        assert_eq!(secs(&["wait=10"]), Some(10));
        assert_eq!(secs(&["respond-async, WAIT = \"5\""]), Some(5));
        assert_eq!(secs(&["handling=lenient", "wait=7;x=y"]), Some(7));
        assert_eq!(secs(&["wait=soon", "return=minimal"]), None);
        assert_eq!(secs(&["wait=-1"]), None);
        assert_eq!(secs(&[]), None);
    }
}
