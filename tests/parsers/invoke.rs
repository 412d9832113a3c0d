//! `invoke_body`: `POST /agents/{slug}/invoke` bodies, read for their
//! `session_id` (the private `routes::shaped::session_id`, through the
//! app).

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::gateway::{request, Gateway, INVOKE_REPLAY_MAX};
use crate::support::{
    ensure, inputs, long, mutated, object, run_corpus, run_fuzz, seed, JSON_DICT,
};

/// The session an invocation body names, as the upstream reads JSON
/// (FastAPI, and the simulator's `validate::Body`: a `serde_json::Value`):
/// `Some(Some(id))` for an object whose top-level `session_id` is a
/// non-empty string (the last one when the key is repeated), `Some(None)`
/// for any other JSON (an object naming none, or a value that is not an
/// object: the upstream refuses those, and no session is named). `None`
/// when `serde_json::Value` does not read it at all (not UTF-8, bad
/// syntax, a number out of range, too deep): the upstream refuses it or
/// reads it its own way, and either way the gateway may take a turn.
fn session_model(body: &[u8]) -> Option<Option<String>> {
    let text = std::str::from_utf8(body).ok()?;
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let session = value.get("session_id").and_then(|s| s.as_str());
    Some(session.filter(|s| !s.is_empty()).map(String::from))
}

/// `POST /api/v1/agents/demo/invoke` with `body`, as JSON.
fn invoke(body: &[u8]) -> http::Request<Body> {
    let mut invoke = request(
        Method::POST,
        "/api/v1/agents/demo/invoke",
        Bytes::copy_from_slice(body),
    );
    invoke.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    invoke
}

/// `POST /agents/demo/invoke` with any body: up to `replay_max_bytes` it
/// reaches the upstream byte for byte; it waits for a session turn exactly
/// when the upstream will read a session in it (the last `session_id` of
/// an object; none in a value that is not an object); over the limit, 413
/// and nothing is sent; no turn is left behind.
fn invoke_case(gateway: &Gateway, body: &[u8]) -> Result<String, String> {
    let answer = gateway.send(invoke(body))?;
    let sent = gateway.sent();
    if body.len() as u64 > INVOKE_REPLAY_MAX {
        ensure(answer.status == StatusCode::PAYLOAD_TOO_LARGE, || {
            format!("{} for a body over the limit", answer.status)
        })?;
        ensure(sent.is_empty(), || "sent over the limit".to_string())?;
    } else {
        ensure(answer.status == StatusCode::OK, || {
            format!("{} {:?}", answer.status, answer.body)
        })?;
        let [one] = sent.as_slice() else {
            return Err(format!("{} sends", sent.len()));
        };
        ensure(one.uri.ends_with("/api/v1/agents/demo/invoke"), || {
            format!("sent to {}", one.uri)
        })?;
        ensure(one.body == body, || {
            "the body changed on the way".to_string()
        })?;
        if let Some(session) = session_model(body) {
            let expected = usize::from(session.is_some());
            ensure(one.sessions == expected, || {
                format!(
                    "{} session turns while sending; the upstream reads session {session:?}",
                    one.sessions
                )
            })?;
        }
    }
    let left = gateway.sessions_active();
    ensure(left == 0, || format!("{left} session turns left behind"))?;
    Ok(answer.status.to_string())
}

/// Members of invocation bodies.
const INVOKE_MEMBERS: &[&str] = &[
    r#""prompt":"hi""#,
    r#""session_id":"s1""#,
    r#""session_id":"s2""#,
    r#""session_id":"""#,
    r#""session_id":null"#,
    r#""session_id":7"#,
    r#""session_id":["s1"]"#,
    r#""session\u005fid":"s3""#,
    r#""options":{"session_id":"inner"}"#,
    r#""stream":true"#,
    r#""max_tokens":1e999"#,
];

/// Values that are JSON but not an object.
const NOT_OBJECTS: &[&str] = &[
    r#""s1""#,
    r#"{"session_id":"s1"}"#,
    r#"["session_id","s1"]"#,
    "null",
    "7",
];

/// Long bodies, made here rather than committed.
fn long_inputs() -> Vec<(String, Vec<u8>)> {
    let limit = INVOKE_REPLAY_MAX as usize;
    let session = |len: usize| {
        let pad = len - r#"{"session_id":""}"#.len();
        format!(r#"{{"session_id":"{}"}}"#, "s".repeat(pad))
    };
    let mut many_keys = "{".to_string();
    for i in 0..2_000 {
        many_keys.push_str(&format!(r#""k{i}":{i},"#));
    }
    many_keys.push_str(r#""session_id":"last"}"#);
    vec![
        long("nested_arrays", "[".repeat(100_000)),
        long("nested_objects", r#"{"a":"#.repeat(50_000)),
        long("at_the_limit", session(limit)),
        long("over_the_limit", session(limit + 1)),
        long("many_keys", many_keys),
    ]
}

#[test]
fn invoke_body_corpus() {
    let gateway = Gateway::new(false);
    run_corpus(
        "invoke_body",
        inputs("invoke_body", long_inputs()),
        |body| invoke_case(&gateway, body),
    );
}

#[test]
fn invoke_body_fuzz() {
    let gateway = Gateway::new(false);
    let arrays = vec(select(NOT_OBJECTS), 0..3)
        .prop_map(|items| format!("[{}]", items.join(",")).into_bytes());
    let shaped = prop_oneof![
        4 => object(INVOKE_MEMBERS, 5),
        1 => arrays,
        1 => select(NOT_OBJECTS).prop_map(|v| v.as_bytes().to_vec()),
    ]
    .boxed();
    run_fuzz(
        "invoke_body",
        256,
        mutated("invoke_body", JSON_DICT, shaped),
        |body| invoke_case(&gateway, body),
    );
}

/// Fixed: with `session_id` twice the gateway named no session (the
/// upstream runs the last one), so the turn went unordered. Now it waits
/// for the last one's turn, and only for it.
#[test]
fn regression_invoke_last_session_id_wins() {
    let gateway = Gateway::new(false);
    let body = seed("invoke_body", "duplicate_session_id");
    assert_eq!(body, br#"{"session_id":"a","session_id":"b"}"#);
    let answer = gateway.send(invoke(&body)).unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let [sent] = gateway.sent().try_into().unwrap();
    assert_eq!(sent.sessions, 1, "one session turn while it is sent");

    // While `b` has a turn in flight, the body waits for it...
    let shaper = gateway.shaper();
    let held = gateway.rt.block_on(shaper.turn("demo", "b"));
    let waited = gateway.send_within(invoke(&body), Duration::from_millis(300));
    assert!(waited.is_err(), "answered during b's turn: {waited:?}");
    assert!(gateway.sent().is_empty(), "sent during b's turn");
    // ...and one whose last `session_id` is `a` does not.
    let other = br#"{"session_id":"b","session_id":"a"}"#;
    let answer = gateway.send(invoke(other)).unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let [sent] = gateway.sent().try_into().unwrap();
    assert_eq!(sent.sessions, 2, "b's turn and a's");
    // Once b's turn ends, the one left waiting (its client gone: it runs
    // in a task of its own) may go, in its own turn; no turn is left.
    drop(held);
    settle(&gateway);
    assert_eq!(gateway.sessions_active(), 0);
    for sent in gateway.sent().iter().filter(|sent| sent.body == body) {
        assert_eq!(sent.sessions, 1, "sent after b's turn, in b's");
    }
}

/// Runs `gateway`'s runtime until no session turn is active (at most 2 s):
/// invocations whose client hung up go on in tasks of their own.
fn settle(gateway: &Gateway) {
    gateway.rt.block_on(async {
        for _ in 0..200 {
            if gateway.sessions_active() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// Fixed: a body that is not an object named a session (`["s-1"]` was read
/// as `s-1`). Now it names none: it never waits for a session's turn.
#[test]
fn regression_invoke_non_object_names_no_session() {
    let gateway = Gateway::new(false);
    let shaper = gateway.shaper();
    let body = seed("invoke_body", "array_body");
    assert_eq!(body, br#"["s-1"]"#);
    let held = gateway.rt.block_on(shaper.turn("demo", "s-1"));
    for body in [&body[..], br#"[{"session_id":"s-1"}]"#, br#""s-1""#] {
        let answer = gateway
            .send_within(invoke(body), Duration::from_secs(2))
            .unwrap();
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        let [sent] = gateway.sent().try_into().unwrap();
        assert_eq!(sent.sessions, 1, "only the turn held here");
        assert_eq!(sent.body, body);
    }
    drop(held);
    assert_eq!(gateway.sessions_active(), 0);
}
