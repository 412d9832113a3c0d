//! `/admin/*`: the gateway's own state, for operators.
//!
//! Until local keys with an admin role exist, admin endpoints answer only
//! clients connecting from a loopback address; anyone else gets 403. They
//! show key fingerprints, agent slugs and counts, never a credential.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::error_response;
use crate::state::AppState;
use crate::types::Peer;

/// `GET /admin/queue[?upstream=NAME]`: each lane's budget and its waiters
/// in dispatch order, for one upstream credential (`default` unless named).
pub async fn queue(State(state): State<AppState>, request: Request) -> Response {
    if let Some(denied) = deny_non_loopback(&request) {
        return denied;
    }
    let name = query_param(&request, "upstream");
    let name = name.as_deref().unwrap_or(crate::config::DEFAULT_CREDENTIAL);
    let Some(credential) = state.credentials.get(name) else {
        let names: Vec<String> = (state.credentials.iter())
            .map(|c| c.name().to_string())
            .collect();
        return error_response(
            StatusCode::NOT_FOUND,
            "unknown_upstream",
            &format!(
                "No upstream credential has the name given in ?upstream=; use one this gateway \
                 holds: {}",
                names.join(", ")
            ),
        );
    };
    match credential.shaper() {
        Some(shaper) => axum::Json(shaper.snapshot()).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            "shaper_disabled",
            "Rate shaping is off (shaper.enabled = false), so there is no queue to show; set \
             shaper.enabled = true to shape traffic and queue it",
        ),
    }
}

/// `GET /admin/cache`: sizes, counters, agents in motion, largest entries.
pub async fn cache_summary(State(state): State<AppState>, request: Request) -> Response {
    if let Some(denied) = deny_non_loopback(&request) {
        return denied;
    }
    match &state.cache {
        Some(cache) => axum::Json(cache.summary().await).into_response(),
        None => cache_disabled(),
    }
}

/// `DELETE /admin/cache[?prefix=/api/v1/agents/x]`: drops every entry, or
/// those at and below a path, for every credential. Fetches in flight are
/// dropped too: their answers are not stored.
pub async fn cache_purge(State(state): State<AppState>, request: Request) -> Response {
    if let Some(denied) = deny_non_loopback(&request) {
        return denied;
    }
    purge(&state, query_param(&request, "prefix")).await
}

/// Drops the entries at and below `prefix` (every entry when `None`): `DELETE
/// /admin/cache` and the operator page's action.
pub(super) async fn purge(state: &AppState, prefix: Option<String>) -> Response {
    let Some(cache) = &state.cache else {
        return cache_disabled();
    };
    let purged = match prefix.as_deref() {
        None => cache.purge(None).await,
        Some(prefix) => {
            let rest = prefix
                .strip_prefix("/api/v1")
                .unwrap_or(prefix)
                .trim_matches('/');
            if rest.is_empty() {
                cache.purge(None).await
            } else {
                let parts: Vec<&str> = rest.split('/').collect();
                cache.purge(Some(&parts)).await
            }
        }
    };
    axum::Json(serde_json::json!({ "purged": purged, "prefix": prefix })).into_response()
}

/// `GET /admin/config`: the configuration serving new requests (secrets
/// redacted), its version, settings waiting for a restart, and the last
/// reload attempt with its error if it was refused.
pub async fn config(State(state): State<AppState>, request: Request) -> Response {
    if let Some(denied) = deny_non_loopback(&request) {
        return denied;
    }
    let view = state.status.view(state.version, &state.config);
    let mut response = axum::Json(view).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// `POST /admin/config/reload`: reloads now, like `SIGHUP`, and answers
/// with the outcome: 200 and the attempt when applied, 422
/// `config_refused` naming the field when the running configuration stays.
pub async fn reload(State(state): State<AppState>, request: Request) -> Response {
    if let Some(denied) = deny_non_loopback(&request) {
        return denied;
    }
    reload_now(&state).await
}

/// Reloads now and answers with the outcome: `POST /admin/config/reload`
/// and the operator page's action.
pub(super) async fn reload_now(state: &AppState) -> Response {
    let Some(requests) = state.status.requests() else {
        return error_response(
            StatusCode::CONFLICT,
            "reload_unavailable",
            "This gateway was not started from a configuration it can reload (as under \
             castari-gateway demo); restart it with castari-gateway serve and a config file to \
             change its settings",
        );
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    let answer = match requests.try_send(tx) {
        Ok(()) => tokio::time::timeout(RELOAD_ANSWER, rx)
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    match answer {
        Some(attempt) if attempt.applied => axum::Json(attempt).into_response(),
        Some(attempt) => error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "config_refused",
            &format!(
                "Reload refused, so version {} keeps serving: {}. Fix the configuration and \
                 reload again",
                attempt.version,
                attempt.error.as_deref().unwrap_or("unknown error")
            ),
        ),
        None => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "reload_busy",
            "The reloader did not answer within 30 s; the reload may still apply, so read its \
             outcome in GET /admin/config (last_reload) before trying again",
        ),
    }
}

/// How long `POST /admin/config/reload` waits for the reloader.
const RELOAD_ANSWER: std::time::Duration = std::time::Duration::from_secs(30);

fn cache_disabled() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "cache_disabled",
        "The response cache is off (cache.enabled = false), so there is nothing to show or \
         purge; set cache.enabled = true to use it",
    )
}

fn deny_non_loopback(request: &Request) -> Option<Response> {
    let loopback = request
        .extensions()
        .get::<Peer>()
        .is_some_and(|peer| peer.remote.ip().is_loopback());
    (!loopback).then(|| {
        error_response(
            StatusCode::FORBIDDEN,
            "admin_loopback_only",
            "This admin endpoint answers only clients on the gateway's own host; call it there \
             through a loopback address (127.0.0.1, ::1 or localhost)",
        )
    })
}

/// The first value of query parameter `name`.
fn query_param(request: &Request, name: &str) -> Option<String> {
    request.uri().query().and_then(|query| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, value)| value.into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(addr: &str) -> Request {
        let mut request = Request::new(axum::body::Body::empty());
        let addr = addr.parse().unwrap();
        request.extensions_mut().insert(Peer {
            local: addr,
            remote: addr,
        });
        request
    }

    #[test]
    fn only_loopback_peers_pass() {
        assert!(deny_non_loopback(&from("127.0.0.1:5000")).is_none());
        assert!(deny_non_loopback(&from("[::1]:5000")).is_none());
        let denied = deny_non_loopback(&from("10.0.0.7:5000")).unwrap();
        assert_eq!(denied.status(), StatusCode::FORBIDDEN);
        let unknown = deny_non_loopback(&Request::new(axum::body::Body::empty())).unwrap();
        assert_eq!(unknown.status(), StatusCode::FORBIDDEN);
    }
}
