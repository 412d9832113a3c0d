//! `auth/me`, API keys (current and legacy), usage.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use bytes::Bytes;
use serde_json::json;

use crate::error::{detail, invalid, no_content, object, ok, optional, Reply};
use crate::state::{ApiKey, USER_EMAIL, USER_ID};
use crate::util::{date, hex_token, id, iso, now_ms, usd};
use crate::Shared;

/// `GET /auth/me`: the user, with the prefix of the key in use.
pub(crate) async fn me(headers: HeaderMap) -> Reply {
    let key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let prefix = key
        .starts_with("cast_")
        .then(|| key.chars().take(13).collect::<String>());
    ok(json!({
        "id": USER_ID,
        "email": USER_EMAIL,
        "api_key_prefix": prefix,
        "created_at": "2026-01-01T00:00:00.000Z",
    }))
}

/// `GET /api-keys`: never the full keys.
pub(crate) async fn list_keys(State(sim): State<Arc<Shared>>) -> Reply {
    ok(json!({ "api_keys": sim.lock().account.api_keys }))
}

/// `POST /api-keys {name}`: the full key, once. Keys made here are not added
/// to the accepted keys (the simulator's `--api-key` list decides that).
pub(crate) async fn create_key(State(sim): State<Arc<Shared>>, body: Bytes) -> Reply {
    let body = object(&body, true)?;
    let name = optional(&body, "name")?.unwrap_or_else(|| "Default".into());
    let (info, key) = new_key(name);
    sim.lock().account.api_keys.push(info.clone());
    ok(json!({ "api_key": info, "key": key }))
}

/// `DELETE /api-keys/{id}`.
pub(crate) async fn delete_key(
    State(sim): State<Arc<Shared>>,
    Path(key_id): Path<String>,
) -> Reply {
    let mut inner = sim.lock();
    let before = inner.account.api_keys.len();
    inner.account.api_keys.retain(|k| k.id != key_id);
    if inner.account.api_keys.len() == before {
        return Err(detail(StatusCode::NOT_FOUND, "API key not found"));
    }
    no_content()
}

/// Legacy `POST /auth/api-key`: 400 when the user already has a key.
pub(crate) async fn legacy_create(State(sim): State<Arc<Shared>>) -> Reply {
    let mut inner = sim.lock();
    if !inner.account.api_keys.is_empty() {
        return Err(detail(StatusCode::BAD_REQUEST, "API key already exists"));
    }
    let (info, key) = new_key("Default".into());
    let prefix = info.prefix.clone();
    inner.account.api_keys.push(info);
    ok(json!({ "api_key": key, "prefix": prefix }))
}

/// Legacy `DELETE /auth/api-key`: revokes "the" key.
pub(crate) async fn legacy_revoke(State(sim): State<Arc<Shared>>) -> Reply {
    let mut inner = sim.lock();
    if inner.account.api_keys.is_empty() {
        return Err(detail(StatusCode::NOT_FOUND, "No API key"));
    }
    inner.account.api_keys.remove(0);
    no_content()
}

fn new_key(name: String) -> (ApiKey, String) {
    let middle = hex_token(4);
    let key = format!("cast_{middle}_{}", hex_token(16));
    let info = ApiKey {
        id: id("ak_"),
        name,
        prefix: format!("cast_{middle}"),
        created_at: iso(now_ms()),
        last_used_at: None,
    };
    (info, key)
}

fn days(q: &HashMap<String, String>) -> Result<u64, axum::response::Response> {
    match q.get("days") {
        None => Ok(30),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .ok_or_else(|| {
                invalid(
                    &["query", "days"],
                    "ensure this value is between 1 and 365",
                    "value_error.number",
                )
            }),
    }
}

/// `GET /usage?days=N`: totals over the recorded invocations.
pub(crate) async fn usage(
    State(sim): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let days = days(&q)?;
    let end = now_ms();
    let start = end.saturating_sub(days * 86_400_000);
    let inner = sim.lock();
    let recent = inner
        .account
        .invocations
        .iter()
        .filter(|i| i.created_ms >= start);
    let (mut n, mut input, mut output, mut cost) = (0u64, 0u64, 0u64, 0u64);
    for i in recent {
        n += 1;
        input += i.input_tokens;
        output += i.output_tokens;
        cost += i.cost_micros;
    }
    ok(json!({
        "total_invocations": n,
        "total_input_tokens": input,
        "total_output_tokens": output,
        "total_cost_usd": usd(cost),
        "period_start": iso(start),
        "period_end": iso(end),
    }))
}

/// `GET /usage/daily?days=N`: one row per day with invocations.
pub(crate) async fn daily(
    State(sim): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let days = days(&q)?;
    let start = now_ms().saturating_sub(days * 86_400_000);
    let inner = sim.lock();
    let mut rows: BTreeMap<String, (u64, u64, u64, u64)> = BTreeMap::new();
    for i in inner
        .account
        .invocations
        .iter()
        .filter(|i| i.created_ms >= start)
    {
        let row = rows.entry(date(i.created_ms)).or_default();
        row.0 += 1;
        row.1 += i.input_tokens;
        row.2 += i.output_tokens;
        row.3 += i.cost_micros;
    }
    let daily: Vec<_> = rows
        .into_iter()
        .map(|(d, (n, i, o, c))| json!({"date": d, "invocation_count": n, "input_tokens": i, "output_tokens": o, "cost_usd": usd(c)}))
        .collect();
    ok(json!({ "daily_usage": daily, "total_days": days }))
}
