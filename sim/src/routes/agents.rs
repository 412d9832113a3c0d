//! Agents: CRUD, deploy/redeploy, upload-code, stop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::Seg;
use crate::error::{agent_not_found, detail, loc, missing, no_content, ok, unprocessable, Reply};
use crate::state::{Agent, USER_ID};
use crate::util::{id, iso, now_ms};
use crate::validate::int::{Bounds, BIGINT_MAX};
use crate::validate::query::Params;
use crate::validate::{form, slug, Body};
use crate::Shared;

/// `GET /agents`.
pub(crate) async fn list(
    State(sim): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let mut params = Params::new(&q);
    let page = params.page(20);
    params.done()?;
    let mut inner = sim.lock();
    let now = Instant::now();
    let total = inner.account.agents.len();
    let agents: Vec<Value> = inner
        .account
        .agents
        .values_mut()
        .skip(page.offset)
        .take(page.limit)
        .map(|a| {
            a.settle(now);
            json!(a)
        })
        .collect();
    Ok(page.reply("agents", agents, total))
}

/// `POST /agents`.
pub(crate) async fn create(State(sim): State<Arc<Shared>>, body: Bytes) -> Reply {
    let mut body = Body::parse(&body)?;
    let name = body.str("name");
    let given = slug::given(&mut body);
    let description = body.opt_str("description");
    let source_type = body
        .opt_choice("source_type", &["git", "local"])
        .unwrap_or_else(|| "git".into());
    let git_repo_url = body.opt_str("git_repo_url");
    body.done()?;
    let slug = match given {
        Some(slug) => slug,
        None => slug::derived(&mut body, &name),
    };
    body.done()?;
    let now = iso(now_ms());
    let agent = Agent {
        id: id("agt_"),
        user_id: USER_ID.into(),
        name,
        slug: slug.clone(),
        description,
        source_type,
        git_repo_url,
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
pub(crate) async fn get(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
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
    Seg(slug): Seg<String>,
    body: Bytes,
) -> Reply {
    let mut body = Body::parse(&body)?;
    let name = body.opt_str("name");
    let description = body.opt_str("description");
    let git_repo_url = body.opt_str("git_repo_url");
    let git_branch = body.opt_str("git_branch");
    let default_model = body.opt_str("default_model");
    // At least one turn; no documented maximum (BIGINT_MAX is a decision).
    let max_turns = body.opt_int("max_turns", Bounds::between(1, BIGINT_MAX));
    // Documented: at most 600 s.
    let timeout = body.opt_int("timeout_seconds", Bounds::between(1, 600));
    body.done()?;
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
    if body.sent("description") {
        agent.description = description;
    }
    if body.sent("git_repo_url") {
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
pub(crate) async fn delete(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
    if !sim.lock().account.delete_agent(&slug) {
        return Err(agent_not_found());
    }
    no_content()
}

/// `POST /agents/{slug}/deploy` and `/redeploy`.
pub(crate) async fn deploy(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
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
pub(crate) async fn stop(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
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
/// `file`, hashed chunk by chunk (never buffered whole). As in FastAPI,
/// the query and form are validated before the agent is looked up.
pub(crate) async fn upload_code(
    State(sim): State<Arc<Shared>>,
    Seg(slug): Seg<String>,
    Query(q): Query<HashMap<String, String>>,
    request: Request,
) -> Reply {
    let mut params = Params::new(&q);
    let auto_deploy = params.bool("auto_deploy", true);
    let mut issues = params.into_issues();
    let mut hash = None;
    let mut not_upload = None;
    if let Some(mut form) = form::open(request).await? {
        while let Some(mut field) = form.next_field().await.map_err(form::broken)? {
            if field.name() != Some("file") {
                continue;
            }
            if field.file_name().is_none() {
                not_upload = Some(field.text().await.map_err(form::broken)?);
                hash = None;
                continue;
            }
            let mut hasher = Sha256::new();
            while let Some(chunk) = field.chunk().await.map_err(form::broken)? {
                hasher.update(&chunk);
            }
            hash = Some(hex(&hasher.finalize()));
            not_upload = None;
        }
    }
    match (&hash, not_upload) {
        (Some(_), _) => {}
        (None, Some(text)) => issues.push(form::not_an_upload("file", text)),
        (None, None) => issues.push(missing(&loc(&["body", "file"]), Value::Null)),
    }
    let Some(source_hash) = hash.filter(|_| issues.is_empty()) else {
        return Err(unprocessable(issues));
    };
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
