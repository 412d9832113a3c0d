//! Managed files attached to agents.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::json;

use super::files::file_not_found;
use super::Seg;
use crate::error::{agent_not_found, detail, no_content, ok, Reply};
use crate::state::AgentFile;
use crate::util::{id, iso, now_ms};
use crate::validate::Body;
use crate::Shared;

/// `GET /agents/{slug}/files`.
pub(crate) async fn list(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
    let inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let files = inner
        .account
        .agent_files
        .get(&slug)
        .cloned()
        .unwrap_or_default();
    let total: u64 = files.iter().map(|f| f.size_bytes).sum();
    ok(json!({"files": files, "total_size_bytes": total}))
}

/// `POST /agents/{slug}/files {file_id, mount_path?, read_only?}`.
pub(crate) async fn attach(
    State(sim): State<Arc<Shared>>,
    Seg(slug): Seg<String>,
    body: Bytes,
) -> Reply {
    let mut body = Body::parse(&body)?;
    let file_id = body.str("file_id");
    let mount_path = body.opt_str("mount_path");
    let read_only = body.opt_bool("read_only").unwrap_or(true);
    body.done()?;
    let mut inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let file = inner
        .account
        .files
        .get(&file_id)
        .ok_or_else(file_not_found)?;
    let attached = AgentFile {
        id: id("af_"),
        file_id: file.file_id.clone(),
        filename: file.filename.clone(),
        mount_path: mount_path.unwrap_or_else(|| format!("/files/agent/{}", file.filename)),
        read_only,
        size_bytes: file.size_bytes,
        created_at: iso(now_ms()),
    };
    let list = inner.account.agent_files.entry(slug).or_default();
    if list.iter().any(|f| f.file_id == file_id) {
        return Err(detail(
            StatusCode::CONFLICT,
            "File already attached to this agent",
        ));
    }
    list.push(attached.clone());
    ok(json!(attached))
}

/// `DELETE /agents/{slug}/files/{file_id}`.
pub(crate) async fn detach(
    State(sim): State<Arc<Shared>>,
    Seg((slug, file_id)): Seg<(String, String)>,
) -> Reply {
    let mut inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let list = inner.account.agent_files.entry(slug).or_default();
    let before = list.len();
    list.retain(|f| f.file_id != file_id);
    if list.len() == before {
        return Err(detail(
            StatusCode::NOT_FOUND,
            "File not attached to this agent",
        ));
    }
    no_content()
}

/// `POST /agents/{slug}/files/sync`.
pub(crate) async fn sync(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
    if !sim.lock().account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    no_content()
}
