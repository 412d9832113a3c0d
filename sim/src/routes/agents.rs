//! Agents: CRUD, deploy/redeploy, upload-code, stop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::page;
use crate::error::{
    agent_not_found, detail, invalid, missing, no_content, object, ok, optional, optional_u64,
    required, Reply,
};
use crate::state::{Agent, USER_ID};
use crate::util::{id, iso, now_ms, slugify};
use crate::Shared;

/// `GET /agents`.
pub(crate) async fn list(
    State(sim): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let (limit, offset) = page(&q, 20)?;
    let mut inner = sim.lock();
    let now = Instant::now();
    let total = inner.account.agents.len();
    let agents: Vec<Value> = inner
        .account
        .agents
        .values_mut()
        .skip(offset)
        .take(limit)
        .map(|a| {
            a.settle(now);
            json!(a)
        })
        .collect();
    ok(json!({
        "agents": agents,
        "meta": {"total": total, "limit": limit, "offset": offset, "has_more": offset + limit < total},
    }))
}

/// `POST /agents`.
pub(crate) async fn create(State(sim): State<Arc<Shared>>, body: Bytes) -> Reply {
    let body = object(&body, false)?;
    let name = required(&body, "name")?;
    let slug = match optional(&body, "slug")? {
        Some(slug) => slug,
        None => slugify(&name),
    };
    if slug.is_empty() || slug != slugify(&slug) {
        return Err(invalid(
            &["body", "slug"],
            "slug must be lowercase letters, digits and hyphens",
            "value_error",
        ));
    }
    let source_type = optional(&body, "source_type")?.unwrap_or_else(|| "git".into());
    if source_type != "git" && source_type != "local" {
        return Err(invalid(
            &["body", "source_type"],
            "value is not a valid enumeration member; permitted: 'git', 'local'",
            "type_error.enum",
        ));
    }
    let now = iso(now_ms());
    let agent = Agent {
        id: id("agt_"),
        user_id: USER_ID.into(),
        name,
        slug: slug.clone(),
        description: optional(&body, "description")?,
        source_type,
        git_repo_url: optional(&body, "git_repo_url")?,
        git_branch: "main".into(),
        source_hash: None,
        default_model: "claude-sonnet-4-5-20250929".into(),
        max_turns: 10,
        timeout_seconds: 120,
        status: "draft".into(),
        status_message: None,
        sandbox_id: None,
        created_at: now.clone(),
        updated_at: now,
        ready_at: None,
    };
    let mut inner = sim.lock();
    if inner.account.agents.contains_key(&slug) {
        return Err(detail(
            StatusCode::CONFLICT,
            format!("Agent with slug '{slug}' already exists"),
        ));
    }
    let value = json!(agent);
    inner.account.agents.insert(slug, agent);
    Ok((StatusCode::CREATED, axum::Json(value)).into_response())
}

/// `GET /agents/{slug}`.
pub(crate) async fn get(State(sim): State<Arc<Shared>>, Path(slug): Path<String>) -> Reply {
    let mut inner = sim.lock();
    let agent = inner
        .account
        .agents
        .get_mut(&slug)
        .ok_or_else(agent_not_found)?;
    agent.settle(Instant::now());
    ok(json!(agent))
}

/// `PATCH /agents/{slug}`.
pub(crate) async fn patch(
    State(sim): State<Arc<Shared>>,
    Path(slug): Path<String>,
    body: Bytes,
) -> Reply {
    let body = object(&body, true)?;
    let name = optional(&body, "name")?;
    let description = optional(&body, "description")?;
    let git_repo_url = optional(&body, "git_repo_url")?;
    let git_branch = optional(&body, "git_branch")?;
    let default_model = optional(&body, "default_model")?;
    let max_turns = optional_u64(&body, "max_turns")?;
    let timeout = optional_u64(&body, "timeout_seconds")?;
    if timeout.is_some_and(|t| t == 0 || t > 600) {
        return Err(invalid(
            &["body", "timeout_seconds"],
            "ensure this value is between 1 and 600",
            "value_error.number",
        ));
    }
    let mut inner = sim.lock();
    let agent = inner
        .account
        .agents
        .get_mut(&slug)
        .ok_or_else(agent_not_found)?;
    agent.settle(Instant::now());
    if let Some(v) = name {
        agent.name = v;
    }
    if body.contains_key("description") {
        agent.description = description;
    }
    if body.contains_key("git_repo_url") {
        agent.git_repo_url = git_repo_url;
    }
    if let Some(v) = git_branch {
        agent.git_branch = v;
    }
    if let Some(v) = default_model {
        agent.default_model = v;
    }
    if let Some(v) = max_turns {
        agent.max_turns = v;
    }
    if let Some(v) = timeout {
        agent.timeout_seconds = v;
    }
    agent.updated_at = iso(now_ms());
    ok(json!(agent))
}

/// `DELETE /agents/{slug}`: 204, and its secrets, sessions, history, mounts
/// and file links go with it.
pub(crate) async fn delete(State(sim): State<Arc<Shared>>, Path(slug): Path<String>) -> Reply {
    if !sim.lock().account.delete_agent(&slug) {
        return Err(agent_not_found());
    }
    no_content()
}

/// `POST /agents/{slug}/deploy` and `/redeploy`.
pub(crate) async fn deploy(State(sim): State<Arc<Shared>>, Path(slug): Path<String>) -> Reply {
    let delay = deploy_delay(&sim);
    let mut inner = sim.lock();
    let agent = inner
        .account
        .agents
        .get_mut(&slug)
        .ok_or_else(agent_not_found)?;
    agent.deploy(delay, sim.config.sync_deploy, Instant::now());
    let value = json!(agent);
    inner.account.reset_sessions(&slug);
    ok(value)
}

/// `DELETE /agents/{slug}/sandbox` and legacy `POST /agents/{slug}/stop`.
pub(crate) async fn stop(State(sim): State<Arc<Shared>>, Path(slug): Path<String>) -> Reply {
    let mut inner = sim.lock();
    let agent = inner
        .account
        .agents
        .get_mut(&slug)
        .ok_or_else(agent_not_found)?;
    agent.status = "stopped".into();
    agent.status_message = None;
    agent.sandbox_id = None;
    agent.ready_at = None;
    agent.updated_at = iso(now_ms());
    let value = json!(agent);
    inner.account.reset_sessions(&slug);
    ok(value)
}

/// `POST /agents/{slug}/upload-code?auto_deploy=true`: multipart field
/// `file`, hashed chunk by chunk (never buffered whole).
pub(crate) async fn upload_code(
    State(sim): State<Arc<Shared>>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    mut form: Multipart,
) -> Reply {
    let auto_deploy = match q.get("auto_deploy").map(String::as_str) {
        None | Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        Some(_) => {
            return Err(invalid(
                &["query", "auto_deploy"],
                "value could not be parsed to a boolean",
                "type_error.bool",
            ))
        }
    };
    if !sim.lock().account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let mut hash = None;
    while let Some(mut field) = form.next_field().await.map_err(|e| {
        detail(
            StatusCode::BAD_REQUEST,
            format!("Invalid multipart body: {e}"),
        )
    })? {
        if field.name() != Some("file") {
            continue;
        }
        let mut hasher = Sha256::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| {
            detail(
                StatusCode::BAD_REQUEST,
                format!("Invalid multipart body: {e}"),
            )
        })? {
            hasher.update(&chunk);
        }
        hash = Some(hex(&hasher.finalize()));
    }
    let source_hash = hash.ok_or_else(|| missing(&["body", "file"]))?;
    let delay = deploy_delay(&sim);
    let mut inner = sim.lock();
    let agent = inner
        .account
        .agents
        .get_mut(&slug)
        .ok_or_else(agent_not_found)?;
    agent.source_hash = Some(source_hash.clone());
    agent.updated_at = iso(now_ms());
    let message = if auto_deploy {
        agent.deploy(delay, sim.config.sync_deploy, Instant::now());
        "Code uploaded; deployment started"
    } else {
        "Code uploaded"
    };
    let value = json!({
        "agent_id": agent.id,
        "source_hash": source_hash,
        "status": agent.status,
        "sandbox_id": agent.sandbox_id,
        "message": message,
    });
    if auto_deploy {
        inner.account.reset_sessions(&slug);
    }
    ok(value)
}

fn deploy_delay(sim: &Shared) -> Duration {
    let over = sim.lock().faults.deploy_delay_ms;
    Duration::from_millis(over.unwrap_or(sim.config.deploy_delay_ms))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
