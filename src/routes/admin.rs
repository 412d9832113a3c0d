//! `/admin/*`: the gateway's own state, for operators.
//!
//! Until local keys with an admin role exist, admin endpoints answer only
//! clients connecting from a loopback address; anyone else gets 403. They
//! show key fingerprints, agent slugs and counts, never a credential.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::error_response;
use crate::server::RemoteAddr;
use crate::state::AppState;

/// `GET /admin/queue`: each lane's budget and its waiters in dispatch order.
pub async fn queue(State(state): State<AppState>, request: Request) -> Response {
    if let Some(denied) = deny_non_loopback(&request) {
        return denied;
    }
    match &state.shaper {
        Some(shaper) => axum::Json(shaper.snapshot()).into_response(),
        None => error_response(
            StatusCode::NOT_FOUND,
            "shaper_disabled",
            "Rate shaping is off (shaper.enabled = false): there is no queue",
        ),
    }
}

fn deny_non_loopback(request: &Request) -> Option<Response> {
    let loopback = request
        .extensions()
        .get::<RemoteAddr>()
        .is_some_and(|peer| peer.0.ip().is_loopback());
    (!loopback).then(|| {
        error_response(
            StatusCode::FORBIDDEN,
            "admin_loopback_only",
            "Admin endpoints answer only clients on a loopback address",
        )
    })
}
