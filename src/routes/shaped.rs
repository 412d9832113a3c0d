//! What shaping adds to a request's way upstream (the loop itself is
//! `forward.rs`): a replayable body held, the session turn, the fair-queue
//! identity, `Prefer: wait`, and the gateway's `X-RateLimit-*` view.
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

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{header, HeaderValue};
use http_body_util::BodyExt;

use super::call::Call;
use crate::body::{BodyError, Guarded, Verdict};
use crate::error::GatewayError;
use crate::shaper::sessions::Turn;
use crate::shaper::{Lane, Shaper};
use crate::upstream::headers::{set_rate_limit, PREFERENCE_APPLIED, X_API_KEY};
use crate::upstream::BodyLimits;

/// Header on responses that waited for the budget: milliseconds waited.
pub use crate::upstream::headers::QUEUE_WAIT as QUEUE_WAIT_HEADER;

/// The session turn an invocation waits for, when its body names a
/// `session_id`: the turns of one session go in order.
pub(super) async fn turn(
    shaper: &Shaper,
    agent: &Arc<str>,
    session: Option<String>,
) -> Option<Turn> {
    Some(shaper.turn(agent, &session?).await)
}

/// The wait a request's `Prefer: wait=N` gets in `lane`, if it asked.
pub(super) fn applied_wait(
    shaper: &Shaper,
    lane: Lane,
    headers: &http::HeaderMap,
) -> Option<Duration> {
    prefer_wait(headers).map(|asked| shaper.preferred_wait(lane, asked))
}

/// Says which wait a `Prefer: wait` got (RFC 7240).
pub(super) fn preference_applied(response: &mut Response, applied: Duration) {
    let value = format!("wait={}", applied.as_secs());
    if let Ok(value) = HeaderValue::from_str(&value) {
        response.headers_mut().insert(PREFERENCE_APPLIED, value);
    }
}

/// A request body: in memory (replayable) or still streaming.
pub(super) enum Prepared {
    /// Held whole: it can be sent again.
    Bytes(Bytes),
    /// Streaming through, once.
    Stream(Option<Body>),
}

impl Prepared {
    /// A body as it comes, unread: replayable only when it is empty.
    pub(super) fn unread(body: Body) -> Self {
        if axum::body::HttpBody::is_end_stream(&body) {
            Self::Bytes(Bytes::new())
        } else {
            Self::Stream(Some(body))
        }
    }

    /// The `session_id` a held invocation body names.
    pub(super) fn session(&self) -> Option<String> {
        match self {
            Self::Bytes(bytes) => session_id(bytes),
            Self::Stream(_) => None,
        }
    }

    /// Whether the body can be sent again.
    pub(super) fn replayable(&self) -> bool {
        matches!(self, Self::Bytes(_))
    }

    /// The body for one attempt.
    pub(super) fn take(&mut self) -> Body {
        match self {
            Self::Bytes(bytes) => Body::from(bytes.clone()),
            Self::Stream(body) => body.take().unwrap_or_else(Body::empty),
        }
    }
}

/// Reads the body into memory when it is small enough to replay. An
/// invocation is always read (its `session_id` decides its place in line),
/// up to `replay_max` bytes.
pub(super) async fn read_replayable(
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
    let mut stream = Guarded::new(body, limits.idle, limit, verdict).into_data_stream();
    let mut buf = Vec::with_capacity(usize::try_from(hint.lower()).unwrap_or(0).min(1 << 20));
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(chunk) => buf.extend_from_slice(&chunk),
            Err(BodyError::TooLarge) if limit < limits.max_bytes => {
                return Err(GatewayError::HeldBodyTooLarge {
                    limit,
                    held: "in memory so an upstream 429 can be retried unseen \
                           (shaper.replay_max_bytes; every invocation body is held); send a \
                           smaller body, or ask the gateway's operator to raise that setting",
                })
            }
            Err(BodyError::TooLarge) => return Err(GatewayError::PayloadTooLarge { limit }),
            Err(BodyError::Idle) => return Err(GatewayError::RequestBodyTimeout),
            Err(BodyError::Aborted) => {
                return Err(GatewayError::BadRequest(
                    "The request body ended before all of it arrived",
                ))
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

/// The `session_id` of an invocation body, if it names one: read as the
/// upstream (Python's `json`) reads it, from an object only, the last of
/// duplicated keys winning, so a body naming two sessions still takes the
/// turn of the one that runs.
fn session_id(body: &[u8]) -> Option<String> {
    struct LastSession(Option<String>);
    impl<'de> serde::Deserialize<'de> for LastSession {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_map(LastSession(None))
        }
    }
    impl<'de> serde::de::Visitor<'de> for LastSession {
        type Value = LastSession;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
            let mut last = None;
            while let Some(key) = map.next_key::<String>()? {
                if key == "session_id" {
                    last = match map.next_value::<serde_json::Value>()? {
                        serde_json::Value::String(id) => Some(id),
                        _ => None,
                    };
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(LastSession(last))
        }
    }
    serde_json::from_slice::<LastSession>(body)
        .ok()?
        .0
        .filter(|s| !s.is_empty())
}

/// Who a request is for fairness: its local key's id (keys mode), else a
/// fingerprint of the credential it sent, else its peer address.
pub(super) fn client_id(shaper: &Shaper, call: &Call, headers: &http::HeaderMap) -> Arc<str> {
    if let Some(id) = &call.key_id {
        return Arc::from(format!("key:{id}"));
    }
    let credential = headers
        .get(header::AUTHORIZATION)
        .or_else(|| headers.get(X_API_KEY));
    if let Some(credential) = credential {
        return Arc::from(shaper.fingerprint(credential.as_bytes()));
    }
    match call.peer {
        Some(peer) => Arc::from(format!("ip:{}", peer.remote.ip())),
        None => Arc::from("anonymous"),
    }
}

/// Keeps `turn` until the response body is finished or dropped, so the
/// session's next turn (a streamed one included) waits for this one.
pub(super) fn hold_until_done(response: Response, turn: Turn) -> Response {
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
    let view = shaper.view(lane);
    set_rate_limit(
        response.headers_mut(),
        u64::from(view.limit),
        u64::from(view.remaining),
        view.reset_unix,
    );
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
    fn reads_the_session_as_the_upstream_does() {
        let read = |body: &str| session_id(body.as_bytes());
        assert_eq!(
            read(r#"{"prompt":"hi","session_id":"s-1"}"#).as_deref(),
            Some("s-1")
        );
        assert_eq!(
            read(r#"{"session_id":"a","session_id":"b"}"#).as_deref(),
            Some("b")
        );
        assert_eq!(read(r#"{"session_id":"a","session_id":null}"#), None);
        assert_eq!(read(r#"{"session_id":{"x":[1]},"prompt":"p"}"#), None);
        assert_eq!(read(r#"["s-1"]"#), None);
        assert_eq!(read(r#"{"session_id":""}"#), None);
        assert_eq!(read("not json"), None);
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
