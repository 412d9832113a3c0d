//! Invocations, their history, and sessions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{json, Value};

use super::Seg;
use crate::error::{agent_not_found, detail, no_content, ok, Reply};
use crate::state::{Invocation, Session};
use crate::util::{id, iso, now_ms, usd};
use crate::validate::query::Params;
use crate::validate::Body;
use crate::Shared;

/// A prompt containing this marker yields `status: "failed"`.
pub const FAIL_MARKER: &str = "[sim:fail]";

/// `POST /agents/{slug}/invoke`: 400 unless active; a deterministic
/// response, token counts and an exact decimal cost.
pub(crate) async fn invoke(
    State(sim): State<Arc<Shared>>,
    Seg(slug): Seg<String>,
    body: Bytes,
) -> Reply {
    let mut body = Body::parse(&body)?;
    let prompt = body.str("prompt");
    let session_id = body.opt_str("session_id");
    body.done()?;
    let (agent_id, sandbox_id) = {
        let mut inner = sim.lock();
        let agent = inner
            .account
            .agents
            .get_mut(&slug)
            .ok_or_else(agent_not_found)?;
        agent.settle(Instant::now());
        if agent.status != "active" {
            return Err(detail(StatusCode::BAD_REQUEST, "Agent not active"));
        }
        (agent.id.clone(), agent.sandbox_id.clone())
    };
    let started = Instant::now();
    if sim.config.invoke_latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(sim.config.invoke_latency_ms)).await;
    }
    let failed = prompt.contains(FAIL_MARKER);
    let response_content = if failed {
        String::new()
    } else {
        format!("Echo: {prompt}")
    };
    let input_tokens = 10 + prompt.split_whitespace().count() as u64 * 2;
    let output_tokens = if failed {
        0
    } else {
        5 + response_content.split_whitespace().count() as u64 * 2
    };
    // $3 per million input tokens, $15 per million output tokens.
    let cost_micros = input_tokens * 3 + output_tokens * 15;
    let duration_ms = started.elapsed().as_millis() as u64;
    let session_id = session_id.unwrap_or_else(|| id("sess_"));
    let invocation = Invocation {
        id: id("inv_"),
        agent_id: agent_id.clone(),
        slug: slug.clone(),
        session_id: session_id.clone(),
        prompt,
        response_content,
        input_tokens,
        output_tokens,
        cost_micros,
        duration_ms,
        status: if failed { "failed" } else { "completed" }.into(),
        created_ms: now_ms(),
    };
    let mut inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let now = iso(invocation.created_ms);
    let sessions = inner.account.sessions.entry(slug).or_default();
    match sessions.iter_mut().find(|s| s.id == session_id) {
        Some(session) => {
            session.last_invocation_at = Some(now);
            if session.sandbox_id.is_none() {
                session.sandbox_id = sandbox_id.clone();
            }
        }
        None => sessions.push(Session {
            id: session_id.clone(),
            agent_id,
            sandbox_id: sandbox_id.clone(),
            created_at: now.clone(),
            last_invocation_at: Some(now),
        }),
    }
    let value = json!({
        "invocation_id": invocation.id,
        "session_id": session_id,
        "sandbox_id": sandbox_id,
        "response_content": invocation.response_content,
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_cost_usd": usd(cost_micros),
        "duration_ms": duration_ms,
        "status": invocation.status,
    });
    inner.account.invocations.push(invocation);
    ok(value)
}

/// `GET /agents/{slug}/invocations?status=&limit=&offset=`, newest first.
pub(crate) async fn history(
    State(sim): State<Arc<Shared>>,
    Seg(slug): Seg<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let mut params = Params::new(&q);
    let status = params.choice("status", &["completed", "failed"]);
    let page = params.page(20);
    params.done()?;
    let inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let items: Vec<Value> = inner
        .account
        .invocations
        .iter()
        .rev()
        .filter(|i| i.slug == slug && status.as_ref().is_none_or(|s| *s == i.status))
        .skip(page.offset)
        .take(page.limit)
        .map(|i| {
            json!({
                "id": i.id, "agent_id": i.agent_id, "session_id": i.session_id,
                "prompt": i.prompt, "response_content": i.response_content,
                "input_tokens": i.input_tokens, "output_tokens": i.output_tokens,
                "total_cost_usd": usd(i.cost_micros), "duration_ms": i.duration_ms,
                "status": i.status, "created_at": iso(i.created_ms),
            })
        })
        .collect();
    ok(json!({ "invocations": items }))
}

/// `GET /agents/{slug}/sessions`.
pub(crate) async fn sessions(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
    let inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let sessions = inner
        .account
        .sessions
        .get(&slug)
        .cloned()
        .unwrap_or_default();
    ok(json!({ "sessions": sessions }))
}

/// `DELETE /agents/{slug}/sessions/{id}`.
pub(crate) async fn delete_session(
    State(sim): State<Arc<Shared>>,
    Seg((slug, session)): Seg<(String, String)>,
) -> Reply {
    let mut inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let sessions = inner.account.sessions.entry(slug).or_default();
    let before = sessions.len();
    sessions.retain(|s| s.id != session);
    if sessions.len() == before {
        return Err(detail(StatusCode::NOT_FOUND, "Session not found"));
    }
    no_content()
}
