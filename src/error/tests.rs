//! Every error's status, code and detail.

use super::*;
use crate::keys::model::Role;
use crate::keys::ring::Refused;
use crate::keys::scope::{AgentGlobs, Denial};
use crate::shaper::Refusal;
use http_body_util::BodyExt;
use std::time::Duration;

/// Every variant's name: a new variant fails to compile here until it
/// is added, and then [`every_error`] must show it.
fn variant(error: &GatewayError) -> &'static str {
    match error {
        GatewayError::NotFound => "NotFound",
        GatewayError::MethodNotAllowed => "MethodNotAllowed",
        GatewayError::UriTooLong { .. } => "UriTooLong",
        GatewayError::BadRequest(_) => "BadRequest",
        GatewayError::PayloadTooLarge { .. } => "PayloadTooLarge",
        GatewayError::HeldBodyTooLarge { .. } => "HeldBodyTooLarge",
        GatewayError::RequestBodyTimeout => "RequestBodyTimeout",
        GatewayError::UpstreamUnreachable => "UpstreamUnreachable",
        GatewayError::UpstreamTimeout => "UpstreamTimeout",
        GatewayError::UpstreamFailed => "UpstreamFailed",
        GatewayError::RateLimited { .. } => "RateLimited",
        GatewayError::ShuttingDown => "ShuttingDown",
        GatewayError::Unauthorized { .. } => "Unauthorized",
        GatewayError::Forbidden { .. } => "Forbidden",
        GatewayError::KeyRateLimited { .. } => "KeyRateLimited",
        GatewayError::BudgetExceeded { .. } => "BudgetExceeded",
        GatewayError::CircuitOpen { .. } => "CircuitOpen",
        GatewayError::StoreUnavailable => "StoreUnavailable",
        GatewayError::Internal => "Internal",
    }
}

const VARIANTS: usize = 19;

/// Every denial of the key scope, the role one from every role that
/// can be refused.
fn every_denial() -> Vec<(Denial, &'static str)> {
    let scoped = AgentGlobs::parse(&["demo-*".to_string(), "prod-x".to_string()]).unwrap();
    let mut denials = vec![
        (Denial::Sensitive, "route_requires_admin"),
        (
            Denial::Agent {
                slug: "other".into(),
                allowed: scoped,
            },
            "agent_not_allowed",
        ),
        (Denial::AccountWide, "route_requires_unscoped_key"),
        (Denial::CreateSlug, "agent_slug_not_allowed"),
    ];
    for role in [Role::Read, Role::Invoke, Role::Deploy] {
        for would in [Role::Invoke, Role::Deploy, Role::Admin] {
            let denial = Denial::Role {
                role,
                would_allow: would,
            };
            denials.push((denial, "role_forbids_route"));
        }
    }
    denials
}

/// One or more of every variant, with its status and code; the
/// shaper's refusals in both lanes, every local-key refusal, every
/// denial.
fn every_error() -> Vec<(GatewayError, u16, &'static str)> {
    let wait = Duration::from_millis(2_500);
    let mut table = vec![
        (GatewayError::NotFound, 404, "not_found"),
        (GatewayError::MethodNotAllowed, 405, "method_not_allowed"),
        (
            GatewayError::UriTooLong { limit: 16_384 },
            414,
            "uri_too_long",
        ),
        (
            GatewayError::BadRequest("Path segment '.' or '..' is not allowed"),
            400,
            "bad_request",
        ),
        (
            GatewayError::PayloadTooLarge { limit: 1 },
            413,
            "payload_too_large",
        ),
        (
            GatewayError::HeldBodyTooLarge {
                limit: 1,
                held: "for an invocation (shaper.replay_max_bytes); send a smaller body",
            },
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
        (GatewayError::ShuttingDown, 503, "shutting_down"),
        (GatewayError::from(Refusal::Draining), 503, "shutting_down"),
        (
            GatewayError::KeyRateLimited {
                retry_after_secs: 1,
                rate: "30/min".into(),
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
    for lane in [Lane::Crud, Lane::Invoke] {
        let retry_after = wait;
        table.extend([
            (
                GatewayError::from(Refusal::WaitTooLong { retry_after, lane }),
                429,
                "rate_limited",
            ),
            (
                GatewayError::from(Refusal::QueueFull { retry_after, lane }),
                429,
                "queue_full",
            ),
            (
                GatewayError::from(Refusal::TimedOut { retry_after, lane }),
                429,
                "queue_timeout",
            ),
        ]);
    }
    for (refused, code) in [
        (Refused::Missing, "missing_api_key"),
        (Refused::Unknown, "invalid_api_key"),
        (Refused::Revoked, "key_revoked"),
        (Refused::Expired, "key_expired"),
    ] {
        table.push((GatewayError::from(refused), 401, code));
    }
    for (denial, code) in every_denial() {
        table.push((denial.forbidden(&http::Method::POST), 403, code));
    }
    table
}

#[test]
fn every_error_maps_to_its_status_and_code() {
    let table = every_error();
    let mut seen: Vec<&str> = table.iter().map(|(error, ..)| variant(error)).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(
        seen.len(),
        VARIANTS,
        "every variant is in the table: {seen:?}"
    );
    for (error, status, code) in table {
        assert_eq!(error.status().as_u16(), status, "{error:?}");
        assert_eq!(error.code(), code, "{error:?}");
    }
}

/// The SDK shows `detail` only: each says what happened and what to
/// do, in one or two sentences, and ends with its code.
#[test]
fn every_detail_is_whole_and_ends_with_its_code() {
    for (error, _, code) in every_error() {
        let detail = error.detail();
        let suffix = format!(" (code: {code})");
        let text = detail.strip_suffix(&suffix).unwrap_or_else(|| {
            panic!("{detail:?} does not end with {suffix:?}");
        });
        assert!(text.len() > 20, "{detail:?}");
        assert!(!text.contains("(code:"), "one code, at the end: {detail:?}");
        assert!(
            !text.ends_with('.'),
            "no full stop before the code: {detail:?}"
        );
        assert!(
            !detail.contains('{') && !detail.contains('}'),
            "a format leftover: {detail:?}"
        );
        assert!(
            !detail.contains("  ") && !detail.contains('\n'),
            "{detail:?}"
        );
        let sentences = text
            .match_indices(". ")
            .filter(|(at, _)| text[at + 2..].starts_with(char::is_uppercase))
            .count()
            + 1;
        assert!(sentences <= 2, "one or two sentences: {detail:?}");
        assert!(text.starts_with(char::is_uppercase), "{detail:?}");
    }
    for (denial, code) in every_denial() {
        let detail = denial.detail(&http::Method::POST);
        assert!(detail.ends_with(&format!(" (code: {code})")), "{detail:?}");
        assert!(!detail.contains('{') && !detail.contains('}'), "{detail:?}");
    }
}

#[test]
fn the_code_suffix_is_added_once() {
    assert_eq!(with_code("Gone.", "x_y"), "Gone (code: x_y)");
    assert_eq!(with_code("Gone (code: x_y)", "x_y"), "Gone (code: x_y)");
    assert_eq!(with_code("Gone ", "x_y"), "Gone (code: x_y)");
}

#[test]
fn shaper_refusals_name_the_lane_and_the_wait() {
    let refused = |lane| {
        GatewayError::from(Refusal::WaitTooLong {
            retry_after: Duration::from_millis(11_100),
            lane,
        })
        .detail()
    };
    let invoke = refused(Lane::Invoke);
    assert!(invoke.contains("invocation budget"), "{invoke}");
    assert!(invoke.contains("shaper.invoke_max_wait_ms"), "{invoke}");
    assert!(invoke.contains("Try again in 12 seconds"), "{invoke}");
    let crud = refused(Lane::Crud);
    assert!(crud.contains("CRUD budget"), "{crud}");
    assert!(crud.contains("shaper.crud_max_wait_ms"), "{crud}");
    let full = GatewayError::from(Refusal::QueueFull {
        retry_after: Duration::from_secs(1),
        lane: Lane::Invoke,
    })
    .detail();
    assert!(full.contains("shaper.invoke_queue_depth"), "{full}");
}

#[tokio::test]
async fn body_is_castari_shaped() {
    let response = GatewayError::UpstreamTimeout.into_response();
    assert_eq!(response.status(), 504);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["detail"], GatewayError::UpstreamTimeout.detail());
    assert!(json["detail"]
        .as_str()
        .unwrap()
        .ends_with(" (code: upstream_timeout)"));
    assert_eq!(json["code"], "upstream_timeout");
}

#[tokio::test]
async fn rate_limited_carries_retry_after_and_says_when() {
    let response = GatewayError::from(Refusal::WaitTooLong {
        retry_after: Duration::from_millis(6_200),
        lane: Lane::Crud,
    })
    .into_response();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let detail = json["detail"].as_str().unwrap();
    assert!(detail.starts_with("Rate limit exceeded: "), "{detail}");
    assert!(
        detail.ends_with(". Try again in 7 seconds (code: rate_limited)"),
        "{detail}"
    );
}
