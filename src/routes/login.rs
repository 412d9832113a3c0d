//! The operator page's login: `GET /ui/session` (does the page need one),
//! `POST /ui/login` (the admin key, or an admin-role key, for a session
//! cookie) and `POST /ui/logout`.
//!
//! The cookie is `HttpOnly; SameSite=Strict; Path=/` with `Max-Age` from
//! `ui.session_ttl_secs` (`Secure` with `ui.secure_cookie`); it holds a
//! random token, and the gateway keeps only its hash. Failed or not, each
//! login counts against the client address's limit
//! (`console::session::ATTEMPTS_PER_MINUTE`). The key is never logged.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::config::AuthMode;
use crate::console::session::{ATTEMPTS_PER_MINUTE, COOKIE};
use crate::error::error_response;
use crate::state::AppState;
use crate::types::Peer;

use super::gate;
use super::reply::{json_body, no_store};

/// Largest login body.
const MAX_BODY: usize = 4 << 10;

/// `GET /ui/session`: whether this client must log in, and is.
pub async fn session(State(state): State<AppState>, request: Request) -> Response {
    if let Err(off) = gate::enabled(&state) {
        return off.into_response();
    }
    let (request, _) = request.into_parts();
    let authenticated = match gate::session_token(&request.headers) {
        Some(token) => gate::session_valid(&state, token).await,
        None => false,
    };
    let mode = state.broker.mode();
    let body = serde_json::json!({
        "authenticated": authenticated,
        "login_required": gate::login_required(&state, &request),
        "mode": if mode == AuthMode::Keys { "keys" } else { "open" },
        "can_login": state.config.admin_key.is_some() || mode == AuthMode::Keys,
    });
    no_store(axum::Json(body).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    key: String,
}

/// `POST /ui/login` with `{"key": "..."}`: 204 and the session cookie, 401
/// `login_failed`, 429 `login_rate_limited`.
pub async fn login(State(state): State<AppState>, request: Request) -> Response {
    if let Err(off) = gate::enabled(&state) {
        return off.into_response();
    }
    let (request, body) = request.into_parts();
    if let Err(refused) = gate::same_origin(&request.headers) {
        return refused.into_response();
    }
    let client = request
        .extensions
        .get::<Peer>()
        .map_or(std::net::IpAddr::from([0, 0, 0, 0]), |p| p.remote.ip());
    if let Err(wait) = state.console.sessions.attempt(client) {
        let mut refused = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            "login_rate_limited",
            &format!(
                "More than {ATTEMPTS_PER_MINUTE} logins came from this address within a minute; \
                 try again in {} seconds",
                wait.as_secs().max(1)
            ),
        );
        refused.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return refused.into_response();
    }
    let login: Login = match json_body(body, MAX_BODY).await {
        Ok(login) => login,
        Err(refused) => return refused,
    };
    if state.broker.refresh_keys().await.is_err() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "key_store_unavailable",
            "The gateway's key store could not be read, so the key was not checked; try again \
             shortly",
        );
    }
    let Some(principal) = state.broker.admin_principal(login.key.trim()) else {
        tracing::warn!(%client, "operator page: login refused (not an admin key)");
        return error_response(
            StatusCode::UNAUTHORIZED,
            "login_failed",
            "That key is not the admin key or a key with the admin role; log in with one of \
             those (the gateway's operator holds them)",
        );
    };
    tracing::info!(%client, who = ?principal, "operator page: logged in");
    let ttl = Duration::from_secs(state.config.ui.session_ttl_secs);
    let Some(token) = state.console.sessions.open(principal, ttl) else {
        return crate::error::GatewayError::Internal.into_response();
    };
    let cookie = format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        ttl.as_secs(),
        secure_flag(&state)
    );
    with_cookie(&cookie)
}

/// `POST /ui/logout`: ends the session and clears the cookie.
pub async fn logout(State(state): State<AppState>, request: Request) -> Response {
    if let Err(off) = gate::enabled(&state) {
        return off.into_response();
    }
    let (request, _) = request.into_parts();
    if let Err(refused) = gate::same_origin(&request.headers) {
        return refused.into_response();
    }
    if let Some(token) = gate::session_token(&request.headers) {
        state.console.sessions.close(token);
    }
    let cookie = format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        secure_flag(&state)
    );
    with_cookie(&cookie)
}

fn secure_flag(state: &AppState) -> &'static str {
    if state.config.ui.secure_cookie {
        "; Secure"
    } else {
        ""
    }
}

fn with_cookie(cookie: &str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    no_store(response)
}
