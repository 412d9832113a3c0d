//! Agent secrets: values are kept and never returned.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::json;

use super::Seg;
use crate::error::{agent_not_found, detail, no_content, ok, Reply};
use crate::state::Secret;
use crate::util::{iso, now_ms};
use crate::validate::Body;
use crate::Shared;

/// `GET /agents/{slug}/secrets`: keys only.
pub(crate) async fn list(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
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
    Seg(slug): Seg<String>,
    body: Bytes,
) -> Reply {
    let mut body = Body::parse(&body)?;
    let key = body.str("key");
    // The reference is silent on an empty key; refused (as pydantic's
    // `min_length=1` would) since `DELETE /secrets/{key}` could never name it.
    if body.value("key").is_some_and(|v| v.as_str() == Some("")) {
        body.push(crate::error::item(
            "string_too_short",
            &crate::validate::at("key"),
            "String should have at least 1 character",
            serde_json::Value::String(String::new()),
            Some(serde_json::json!({"min_length": 1})),
        ));
    }
    let value = body.str("value");
    body.done()?;
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
    Seg((slug, key)): Seg<(String, String)>,
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
