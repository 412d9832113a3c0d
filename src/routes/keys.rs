//! `/admin/keys` and `/admin/usage`: the key broker's admin API.
//!
//! Every call needs the admin key (`CASTARI_GATEWAY_ADMIN_KEY` or
//! `auth.admin_key_file`) or a local key with the `admin` role, as
//! `Authorization: Bearer ...`. Changes reach the request path at once: the
//! key ring rereads the store when its generation moves (in cluster mode,
//! every replica's ring, before the change is answered).
//!
//! | call | does |
//! |---|---|
//! | `GET /admin/keys` | every key, never a secret or hash |
//! | `POST /admin/keys` | creates a key; the token is in this answer only |
//! | `DELETE /admin/keys/{id}` | revokes at once |
//! | `POST /admin/keys/{id}/rotate` | new secret; the old one works for `grace_secs` |
//! | `GET /admin/usage?key=&days=&format=csv` | the ledger, JSON or CSV |

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde::Deserialize;

use crate::error::error_response;
use crate::keys::backend::KeyBackend;
use crate::keys::model::KeyInfo;
use crate::keys::ops::{self, NewKey, OpsError};
use crate::keys::{clock, model::Origin};
use crate::state::AppState;

use super::reply::{json_body, no_store};

/// Largest admin request body.
const MAX_BODY: usize = 16 << 10;

/// `GET /admin/keys`.
pub async fn list(State(state): State<AppState>, request: Request) -> Response {
    if let Some(denied) = deny(&state, request.headers()).await {
        return denied;
    }
    let keys: Vec<KeyInfo> = (state.broker.ring().all().iter())
        .map(|k| KeyInfo::from(&k.record))
        .collect();
    no_store(axum::Json(serde_json::json!({ "keys": keys })).into_response())
}

/// `POST /admin/keys` with a JSON [`NewKey`].
pub async fn create(State(state): State<AppState>, request: Request) -> Response {
    if let Some(denied) = deny(&state, request.headers()).await {
        return denied;
    }
    let new: NewKey = match json_body(request.into_body(), MAX_BODY).await {
        Ok(new) => new,
        Err(response) => return response,
    };
    let upstreams: Vec<String> = state
        .credentials
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    let names: Vec<&str> = upstreams.iter().map(String::as_str).collect();
    let result = match backend(&state) {
        Ok(backend) => ops::create(backend, &new, &names, clock::now_unix()).await,
        Err(error) => Err(error),
    };
    // Whatever the outcome: a change may have been made.
    state.broker.ring().changed_here();
    match result {
        Ok(issued) => {
            tracing::info!(key = %issued.info.id, role = %issued.info.role, "local key created");
            let body = serde_json::json!({ "key": issued.token(), "info": issued.info });
            no_store((StatusCode::CREATED, axum::Json(body)).into_response())
        }
        Err(error) => failure(&error),
    }
}

/// `DELETE /admin/keys/{id}`.
pub async fn revoke(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    match key_id(&state, request.headers(), id).await {
        Ok(id) => revoke_id(&state, &id).await,
        Err(refused) => *refused,
    }
}

/// Revokes key `id` for a caller known to be an admin: `DELETE
/// /admin/keys/{id}` and the operator page's action.
pub(super) async fn revoke_id(state: &AppState, id: &str) -> Response {
    if let Some(conflict) = declared(state, id) {
        return conflict;
    }
    let result = match backend(state) {
        Ok(backend) => ops::revoke(backend, id, clock::now_unix()).await,
        Err(error) => Err(error),
    };
    // Whatever the outcome: a change may have been made.
    state.broker.ring().changed_here();
    match result {
        Ok(info) => {
            tracing::info!(key = %info.id, "local key revoked");
            no_store(axum::Json(serde_json::json!({ "revoked": info })).into_response())
        }
        Err(error) => failure(&error),
    }
}

/// Body of `POST /admin/keys/{id}/rotate`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    grace_secs: Option<u64>,
}

/// `POST /admin/keys/{id}/rotate` with an optional `{"grace_secs": N}`.
pub async fn rotate(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Response {
    let id = match key_id(&state, request.headers(), id).await {
        Ok(id) => id,
        Err(refused) => return *refused,
    };
    if let Some(conflict) = declared(&state, &id) {
        return conflict;
    }
    let empty = axum::body::HttpBody::size_hint(request.body()).upper() == Some(0);
    let body: RotateBody = if empty {
        RotateBody::default()
    } else {
        match json_body(request.into_body(), MAX_BODY).await {
            Ok(body) => body,
            Err(response) => return response,
        }
    };
    let grace = body.grace_secs.unwrap_or(state.broker.rotate_grace_secs());
    let result = match backend(&state) {
        Ok(backend) => ops::rotate(backend, &id, grace, clock::now_unix()).await,
        Err(error) => Err(error),
    };
    // Whatever the outcome: a change may have been made.
    state.broker.ring().changed_here();
    match result {
        Ok(issued) => {
            tracing::info!(key = %issued.info.id, grace_secs = grace, "local key rotated");
            let body = serde_json::json!({ "key": issued.token(), "info": issued.info });
            no_store(axum::Json(body).into_response())
        }
        Err(error) => failure(&error),
    }
}

/// Query of `GET /admin/usage`.
#[derive(Debug, Deserialize)]
pub struct UsageQuery {
    key: Option<String>,
    days: Option<u32>,
    format: Option<String>,
}

/// `GET /admin/usage?key=&days=30&format=json|csv`.
pub async fn usage(State(state): State<AppState>, request: Request) -> Response {
    if let Some(denied) = deny(&state, request.headers()).await {
        return denied;
    }
    // Parsed here, after the admin check, so a bad query gets a
    // Castari-shaped 400 (axum's own rejection is plain text).
    let Ok(Query(query)) = Query::<UsageQuery>::try_from_uri(request.uri()) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The query could not be read: GET /admin/usage takes key (a key id), days (a whole \
             number) and format (json or csv); correct it and send it again",
        );
    };
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "The format query parameter must be json or csv; correct it and send it again",
            )
        }
    };
    let days = query.days.unwrap_or(30).clamp(1, 3_660);
    state.broker.ledger().flush().await;
    let result = match backend(&state) {
        Ok(backend) => ops::usage(backend, query.key.as_deref(), days, clock::now_unix()).await,
        Err(error) => Err(error),
    };
    match result {
        Ok(report) if csv => {
            let mut response = report.to_csv().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/csv; charset=utf-8"),
            );
            no_store(response)
        }
        Ok(report) => no_store(axum::Json(report).into_response()),
        Err(error) => failure(&error),
    }
}

/// 401 unless the request carries the admin key or an admin-role key.
async fn deny(state: &AppState, headers: &http::HeaderMap) -> Option<Response> {
    // By the store as of now: a key revoked a moment ago is refused here too.
    if state.broker.refresh_keys().await.is_err() {
        // Logged by the broker.
        return Some(store_unavailable());
    }
    if state.broker.is_admin(headers) {
        return None;
    }
    Some(error_response(
        StatusCode::UNAUTHORIZED,
        "admin_key_required",
        "This endpoint needs the gateway's admin key (or a key with the admin role) as \
         Authorization: Bearer; the operator sets the admin key with CASTARI_GATEWAY_ADMIN_KEY \
         or auth.admin_key_file",
    ))
}

/// The `{id}` of a key route, once the caller is known to be an admin.
async fn key_id(
    state: &AppState,
    headers: &http::HeaderMap,
    id: Result<Path<String>, PathRejection>,
) -> Result<String, Box<Response>> {
    if let Some(denied) = deny(state, headers).await {
        return Err(Box::new(denied));
    }
    let Ok(Path(id)) = id else {
        return Err(Box::new(error_response(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The key id in the path could not be read; use an id as GET /admin/keys lists it",
        )));
    };
    Ok(id)
}

/// 409 for a key declared in the config file.
fn declared(state: &AppState, id: &str) -> Option<Response> {
    let is_declared = (state.broker.ring().all().iter())
        .any(|k| k.record.id == id && k.record.origin == Origin::Config);
    is_declared.then(|| failure(&OpsError::Declared(id.to_string())))
}

fn backend(state: &AppState) -> Result<&dyn KeyBackend, OpsError> {
    match state.broker.backend() {
        Some(backend) => Ok(backend.as_ref()),
        None => Err(OpsError::Invalid {
            field: NO_STORE,
            message: "this gateway has no key store (open mode without auth.db_path)".into(),
        }),
    }
}

/// The field a missing key store is reported under.
const NO_STORE: &str = "auth.db_path";

fn failure(error: &OpsError) -> Response {
    let (status, code, detail) = match error {
        OpsError::Invalid {
            field: NO_STORE,
            message,
        } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key_request",
            format!(
                "The gateway cannot manage keys or show usage: {message}; set auth.db_path and \
                 restart it"
            ),
        ),
        OpsError::Invalid { field, message } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_key_request",
            format!(
                "The request's {field} is invalid: {message}; correct it and send the request \
                 again"
            ),
        ),
        // The id came from the path unchecked: not echoed.
        OpsError::NotFound(_) => (
            StatusCode::NOT_FOUND,
            "key_not_found",
            "No key has the id in the path; GET /admin/keys lists the ids".to_string(),
        ),
        // Only a declared key's id (checked against the table) gets here.
        OpsError::Declared(id) => (
            StatusCode::CONFLICT,
            "key_declared_in_config",
            format!(
                "Key {id:?} is declared in the config file ([[auth.keys]]), so it cannot be \
                 changed here; change or remove it there and reload"
            ),
        ),
        OpsError::Store(_) | OpsError::Random(_) => {
            tracing::error!(%error, "key store operation failed");
            return store_unavailable();
        }
    };
    error_response(status, code, &detail)
}

/// 503 `key_store_unavailable`, with no detail of the cause.
fn store_unavailable() -> Response {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "key_store_unavailable",
        "The gateway's key store could not be read or written; try again shortly, and see the \
         gateway's log if it persists",
    )
}
