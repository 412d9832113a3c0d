//! Agent secrets: values are kept and never returned.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::json;

use crate::error::{agent_not_found, detail, no_content, object, ok, required, Reply};
use crate::state::Secret;
use crate::util::{iso, now_ms};
use crate::Shared;

/// `GET /agents/{slug}/secrets`: keys only.
pub(crate) async fn list(State(sim): State<Arc<Shared>>, Path(slug): Path<String>) -> Reply {
    let inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let secrets: Vec<_> = inner
        .account
        .secrets
        .get(&slug)
        .into_iter()
        .flatten()
        .map(|(key, s)| json!({"key": key, "created_at": s.created_at}))
        .collect();
    ok(json!({ "secrets": secrets }))
}

/// `POST /agents/{slug}/secrets`: upsert, 204.
pub(crate) async fn upsert(
    State(sim): State<Arc<Shared>>,
    Path(slug): Path<String>,
    body: Bytes,
) -> Reply {
    let body = object(&body, false)?;
    let key = required(&body, "key")?;
    let value = required(&body, "value")?;
    let mut inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let secret = Secret {
        value,
        created_at: iso(now_ms()),
    };
    inner
        .account
        .secrets
        .entry(slug)
        .or_default()
        .insert(key, secret);
    no_content()
}

/// `DELETE /agents/{slug}/secrets/{key}`.
pub(crate) async fn delete(
    State(sim): State<Arc<Shared>>,
    Path((slug, key)): Path<(String, String)>,
) -> Reply {
    let mut inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let removed = inner
        .account
        .secrets
        .get_mut(&slug)
        .and_then(|s| s.remove(&key));
    if removed.is_none() {
        return Err(detail(StatusCode::NOT_FOUND, "Secret not found"));
    }
    no_content()
}
