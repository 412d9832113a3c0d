//! The stages of `/api/v1` tested alone, without sockets: the upstream hop
//! is a function ([`Hop::service`]) that counts what reaches it and answers
//! as a test says.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http::{Method, StatusCode};

use super::call::Call;
use super::forward::forward;
use super::proxy::proxy;
use crate::config::Config;
use crate::keys::broker::Broker;
use crate::route::Route;
use crate::state::AppState;
use crate::types::Secret;
use crate::upstream::path::ApiPath;
use crate::upstream::{BodyLimits, Hop, HopError, UpstreamClient};

/// What the stand-in upstream saw: method and path of each request.
type Seen = Arc<Mutex<Vec<(Method, String)>>>;

/// A state whose upstream answers each request with `answer(n)` (n: the
/// request's number, from 0), after `delay`.
fn state_with(
    tweak: impl FnOnce(&mut Config),
    delay: Duration,
    answer: impl Fn(usize) -> StatusCode + Send + Sync + 'static,
) -> (AppState, Seen) {
    let mut config = Config {
        upstream_key: Some(Secret::new("cast_test".to_string())),
        ..Config::default()
    };
    config.shaper.crud_limit = "10000/60s".parse().unwrap();
    config.shaper.invoke_limit = "10000/60s".parse().unwrap();
    config.retry.base_delay_ms = 1;
    tweak(&mut config);
    let config = config.validate().unwrap();
    let seen: Seen = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let log = seen.clone();
    let answer = Arc::new(answer);
    let hop = Hop::service(move |request: http::Request<Body>| {
        let n = count.fetch_add(1, Ordering::SeqCst);
        log.lock()
            .unwrap()
            .push((request.method().clone(), request.uri().path().to_string()));
        let answer = answer.clone();
        async move {
            tokio::time::sleep(delay).await;
            let status = answer(n);
            let mut response = Response::new(Body::from(r#"{"slug":"a","status":"active"}"#));
            *response.status_mut() = status;
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            response.headers_mut().insert(
                http::header::CONTENT_LENGTH,
                http::HeaderValue::from_static("30"),
            );
            Ok::<_, HopError>(response)
        }
    });
    let upstream = UpstreamClient::with_hop(&config.upstream, hop);
    let broker = Broker::open(&config, None).unwrap();
    (AppState::new(config, upstream, broker, None), seen)
}

fn call(state: &AppState, method: &Method, raw: &str) -> Call {
    let path = ApiPath::parse(raw).unwrap();
    let route = Route::read(method, path.decoded());
    Call {
        credential: state.credentials.default_credential().clone(),
        path,
        route,
        limits: BodyLimits {
            max_bytes: 1 << 20,
            idle: Duration::from_secs(5),
        },
        key_id: None,
        peer: None,
        mark: None,
        elsewhere: Default::default(),
    }
}

fn parts(method: Method, raw: &str) -> http::request::Parts {
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = raw.parse().unwrap();
    parts
}

/// Sends a whole request through every stage, as the app's frame does.
async fn through(state: &AppState, method: Method, raw: &str) -> Response {
    let request = http::Request::builder()
        .method(method)
        .uri(raw)
        .body(Body::empty())
        .unwrap();
    proxy(state, request, None).1.answer().await
}

#[tokio::test]
async fn a_safe_read_is_retried_after_a_503_and_an_invocation_is_not() {
    let (state, seen) = state_with(
        |_| {},
        Duration::ZERO,
        |n| {
            if n == 0 {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            }
        },
    );
    let get = call(&state, &Method::GET, "/api/v1/agents/a/secrets");
    let raw = "/api/v1/agents/a/secrets";
    let response = forward(&state, &get, parts(Method::GET, raw), Body::empty()).await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    assert_eq!(seen.lock().unwrap().len(), 2, "sent again");

    let (state, seen) = state_with(|_| {}, Duration::ZERO, |_| StatusCode::SERVICE_UNAVAILABLE);
    let raw = "/api/v1/agents/a/invoke";
    let invoke = call(&state, &Method::POST, raw);
    let response = forward(&state, &invoke, parts(Method::POST, raw), Body::empty()).await;
    assert_eq!(response.unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "an invocation is never sent twice"
    );
}

#[tokio::test]
async fn an_upstream_429_is_absorbed_and_sent_again() {
    let (state, seen) = state_with(
        |_| {},
        Duration::ZERO,
        |n| {
            if n == 0 {
                StatusCode::TOO_MANY_REQUESTS
            } else {
                StatusCode::OK
            }
        },
    );
    let raw = "/api/v1/agents/a/stop";
    let stop = call(&state, &Method::POST, raw);
    let response = forward(&state, &stop, parts(Method::POST, raw), Body::empty()).await;
    assert_eq!(
        response.unwrap().status(),
        StatusCode::OK,
        "the client never sees the 429"
    );
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn an_open_breaker_refuses_without_reaching_the_upstream() {
    let (state, seen) = state_with(
        |c| {
            c.breaker.failure_threshold = 2;
            c.retry.max_attempts = 1;
        },
        Duration::ZERO,
        |_| StatusCode::BAD_GATEWAY,
    );
    let raw = "/api/v1/agents";
    for _ in 0..2 {
        let get = call(&state, &Method::GET, raw);
        let _ = forward(&state, &get, parts(Method::GET, raw), Body::empty()).await;
    }
    let sent = seen.lock().unwrap().len();
    let get = call(&state, &Method::GET, raw);
    let refused = forward(&state, &get, parts(Method::GET, raw), Body::empty()).await;
    let Err(error) = refused else {
        panic!("not refused by the breaker");
    };
    assert_eq!(error.code(), "circuit_open");
    assert_eq!(seen.lock().unwrap().len(), sent, "nothing more was sent");
}

#[tokio::test]
async fn the_time_waited_upstream_is_counted() {
    let delay = Duration::from_millis(40);
    let (state, _) = state_with(|_| {}, delay, |_| StatusCode::OK);
    let raw = "/api/v1/usage";
    let get = call(&state, &Method::GET, raw);
    let response = forward(&state, &get, parts(Method::GET, raw), Body::empty())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let waited = get.elsewhere.total();
    assert!(waited >= delay, "{waited:?}");
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch_and_a_write_makes_the_next_read_fetch() {
    let (state, seen) = state_with(|_| {}, Duration::from_millis(30), |_| StatusCode::OK);
    let reads = (0..10).map(|_| through(&state, Method::GET, "/api/v1/agents/a/secrets"));
    for response in futures_util::future::join_all(reads).await {
        assert_eq!(response.status(), StatusCode::OK);
    }
    let gets = |seen: &Seen| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(m, _)| m == Method::GET)
            .count()
    };
    assert_eq!(gets(&seen), 1, "one fetch for ten readers");
    let hit = through(&state, Method::GET, "/api/v1/agents/a/secrets").await;
    assert_eq!(hit.headers()["x-cache"], "HIT");
    assert_eq!(gets(&seen), 1);

    let write = through(&state, Method::POST, "/api/v1/agents/a/secrets").await;
    assert_eq!(write.status(), StatusCode::OK);
    let after = through(&state, Method::GET, "/api/v1/agents/a/secrets").await;
    assert_eq!(after.headers()["x-cache"], "MISS");
    assert_eq!(gets(&seen), 2, "the write made the entry stale");
}

#[tokio::test]
async fn admission_refuses_before_any_stage_spends_anything() {
    let (state, seen) = state_with(|_| {}, Duration::ZERO, |_| StatusCode::OK);
    let response = through(&state, Method::GET, "/api/v1/agents/%2e%2e/x").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = through(&state, Method::GET, "/api/v2/agents").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn an_encoded_invocation_goes_in_the_invoke_lane() {
    let (state, seen) = state_with(
        |c| c.shaper.invoke_limit = "7/60s".parse().unwrap(),
        Duration::ZERO,
        |_| StatusCode::OK,
    );
    let response = through(&state, Method::POST, "/api/v1/agents/a/%69nvoke").await;
    assert_eq!(response.headers()["x-ratelimit-limit"], "7");
    assert_eq!(
        seen.lock().unwrap()[0].1,
        "/api/v1/agents/a/%69nvoke",
        "sent as written"
    );
}
