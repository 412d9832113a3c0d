//! `auth/me`, API keys (current and legacy), usage.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::json;

use super::Seg;
use crate::error::{detail, no_content, ok, Reply};
use crate::gate::Principal;
use crate::state::{ApiKey, USER_EMAIL, USER_ID};
use crate::util::{date, hex_token, id, iso, now_ms, usd};
use crate::validate::int::Bounds;
use crate::validate::query::Params;
use crate::validate::Body;
use crate::Shared;

/// `GET /auth/me`: the user, with the prefix of the key in use.
pub(crate) async fn me(Extension(Principal(key)): Extension<Principal>) -> Reply {
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

/// `POST /api-keys {name}`: the full key, once. The body is required
/// (`{}` takes the default name). Keys made here are not added to the
/// accepted keys (the simulator's `--api-key` list decides that).
pub(crate) async fn create_key(State(sim): State<Arc<Shared>>, body: Bytes) -> Reply {
    let mut body = Body::parse(&body)?;
    let name = body.opt_str("name");
    body.done()?;
    let (info, key) = new_key(name.unwrap_or_else(|| "Default".into()));
    sim.lock().account.api_keys.push(info.clone());
    ok(json!({ "api_key": info, "key": key }))
}

/// `DELETE /api-keys/{id}`: the key stops working.
pub(crate) async fn delete_key(State(sim): State<Arc<Shared>>, Seg(key_id): Seg<String>) -> Reply {
    let mut inner = sim.lock();
    let Some(i) = inner.account.api_keys.iter().position(|k| k.id == key_id) else {
        return Err(detail(StatusCode::NOT_FOUND, "API key not found"));
    };
    let removed = inner.account.api_keys.remove(i);
    inner.revoked.insert(removed.key);
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

/// Legacy `DELETE /auth/api-key`: revokes the key this request was made
/// with (empty answer). Every later request with it gets 401.
pub(crate) async fn legacy_revoke(
    State(sim): State<Arc<Shared>>,
    Extension(Principal(key)): Extension<Principal>,
) -> Reply {
    let mut inner = sim.lock();
    inner.account.api_keys.retain(|k| k.key != key);
    inner.revoked.insert(key);
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
        key: key.clone(),
    };
    (info, key)
}

/// `days`: 1..=365, default 30. The reference names the parameter [I] and
/// gives no range; the bounds are the simulator's.
fn days(q: &HashMap<String, String>) -> Result<u64, Response> {
    let mut params = Params::new(q);
    let days = params.int("days", 30, Bounds::between(1, 365));
    params.done()?;
    Ok(days.map_or(30, |d| d.saturating_u64()))
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
