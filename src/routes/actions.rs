//! The operator page's actions: `POST /ui/actions/{revoke,purge,reload}`.
//! Each needs what `gate::actor` asks (a session or the admin key, and a
//! same-origin request) and does what its `/admin/*` twin does.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::state::AppState;

use super::gate;
use super::reply::{json_body, no_store};

/// Largest action body.
const MAX_BODY: usize = 4 << 10;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    id: String,
}

/// `POST /ui/actions/revoke` with `{"id": "key_..."}`: like `DELETE
/// /admin/keys/{id}`.
pub async fn revoke(State(state): State<AppState>, request: Request) -> Response {
    let (request, body) = request.into_parts();
    if let Err(refused) = gate::actor(&state, &request).await {
        return refused.into_response();
    }
    match json_body::<Revoke>(body, MAX_BODY).await {
        Ok(body) => no_store(super::keys::revoke_id(&state, &body.id).await),
        Err(refused) => refused,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    #[serde(default)]
    prefix: String,
}

/// `POST /ui/actions/purge` with `{"prefix": "/api/v1/agents/x"}` (empty:
/// everything): like `DELETE /admin/cache?prefix=`.
pub async fn purge(State(state): State<AppState>, request: Request) -> Response {
    let (request, body) = request.into_parts();
    if let Err(refused) = gate::actor(&state, &request).await {
        return refused.into_response();
    }
    match json_body::<Purge>(body, MAX_BODY).await {
        Ok(body) => {
            let prefix = Some(body.prefix).filter(|p| !p.trim().is_empty());
            no_store(super::admin::purge(&state, prefix).await)
        }
        Err(refused) => refused,
    }
}

/// `POST /ui/actions/reload`: like `POST /admin/config/reload`.
pub async fn reload(State(state): State<AppState>, request: Request) -> Response {
    let (request, _) = request.into_parts();
    if let Err(refused) = gate::actor(&state, &request).await {
        return refused.into_response();
    }
    no_store(super::admin::reload_now(&state).await)
}
