//! Mounts: buckets put into agent sandboxes.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{json, Value};

use super::buckets::bucket_not_found;
use super::Seg;
use crate::error::{
    agent_not_found, detail, item, missing, no_content, not_a_string, not_one_of, ok, value_error,
    Reply,
};
use crate::state::{Account, Mount};
use crate::util::{id, iso, now_ms};
use crate::validate::int::{Bounds, BIGINT_MAX};
use crate::validate::{at, not_a_list, Body};
use crate::Shared;

/// Modes of a `PermissionRule`.
const MODES: [&str; 2] = ["ro", "rw"];

/// `permission_rules`: a list of `PermissionRule {path: string, mode:
/// "ro"|"rw"}`, both fields required (reference §8). Each bad item is its
/// own 422 item; valid rules are stored as `{path, mode}` only (pydantic
/// drops unknown keys). `None` when absent or `null`.
fn permission_rules(body: &mut Body) -> Option<Vec<Value>> {
    let value = body.value("permission_rules")?.clone();
    let list_at = at("permission_rules");
    let Value::Array(items) = value else {
        body.push(not_a_list(&list_at, &value));
        return None;
    };
    let mut rules = Vec::new();
    for (i, rule) in items.iter().enumerate() {
        let rule_at = list_at.at(i);
        let Value::Object(fields) = rule else {
            body.push(item(
                "model_attributes_type",
                &rule_at,
                "Input should be a valid dictionary or object to extract fields from",
                rule.clone(),
                None,
            ));
            continue;
        };
        let path = match fields.get("path") {
            None => {
                body.push(missing(&rule_at.key("path"), rule.clone()));
                None
            }
            Some(Value::String(p)) => Some(p.clone()),
            Some(other) => {
                body.push(not_a_string(&rule_at.key("path"), other));
                None
            }
        };
        let mode = match fields.get("mode") {
            None => {
                body.push(missing(&rule_at.key("mode"), rule.clone()));
                None
            }
            Some(Value::String(m)) if MODES.contains(&m.as_str()) => Some(m.clone()),
            Some(other) => {
                body.push(not_one_of(&rule_at.key("mode"), other, &MODES));
                None
            }
        };
        if let (Some(path), Some(mode)) = (path, mode) {
            rules.push(json!({ "path": path, "mode": mode }));
        }
    }
    Some(rules)
}

/// `mount_path` must be absolute (the CLI checks it; the simulator too).
fn mount_path(body: &mut Body, required: bool) -> Option<String> {
    let path = if required {
        let is_str = matches!(body.value("mount_path"), Some(Value::String(_)));
        let path = body.str("mount_path");
        is_str.then_some(path)
    } else {
        body.opt_str("mount_path")
    };
    match path {
        Some(p) if !p.starts_with('/') => {
            body.push(value_error(
                &at("mount_path"),
                &json!(p),
                "mount_path must start with '/'",
            ));
            None
        }
        other => other,
    }
}

/// Cache TTL: not negative; no documented maximum (BIGINT_MAX is a
/// decision, the largest value the backend can store).
const TTL: Bounds = Bounds::between(0, BIGINT_MAX);

fn mount_json(account: &Account, m: &Mount) -> Value {
    let agent_id = account.agents.get(&m.agent_slug).map(|a| a.id.clone());
    let bucket = account.buckets.get(&m.bucket_slug);
    json!({
        "id": m.id, "bucket_id": bucket.map(|b| b.id.clone()), "agent_id": agent_id,
        "bucket": bucket, "mount_path": m.mount_path, "source_prefix": m.source_prefix,
        "permission_rules": m.permission_rules, "cache_enabled": m.cache_enabled,
        "cache_ttl_seconds": m.cache_ttl_seconds, "enabled": m.enabled,
        "created_at": m.created_at, "updated_at": m.updated_at,
    })
}

/// `GET /agents/{slug}/mounts`.
pub(crate) async fn list(State(sim): State<Arc<Shared>>, Seg(slug): Seg<String>) -> Reply {
    let inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    let list: Vec<Value> = inner
        .account
        .mounts
        .iter()
        .filter(|m| m.agent_slug == slug)
        .map(|m| mount_json(&inner.account, m))
        .collect();
    ok(json!({ "mounts": list }))
}

/// `POST /agents/{slug}/mounts`.
pub(crate) async fn create(
    State(sim): State<Arc<Shared>>,
    Seg(slug): Seg<String>,
    body: Bytes,
) -> Reply {
    let mut body = Body::parse(&body)?;
    let bucket_slug = body.str("bucket_slug");
    let mount_path = mount_path(&mut body, true);
    let source_prefix = body.opt_str("source_prefix");
    let permission_rules = permission_rules(&mut body);
    let cache_enabled = body.opt_bool("cache_enabled");
    let cache_ttl_seconds = body.opt_int("cache_ttl_seconds", TTL);
    body.done()?;
    let now = iso(now_ms());
    let mount = Mount {
        id: id("mnt_"),
        bucket_slug: bucket_slug.clone(),
        agent_slug: slug.clone(),
        mount_path: mount_path.unwrap_or_default(),
        source_prefix: source_prefix.unwrap_or_default(),
        permission_rules: Value::Array(permission_rules.unwrap_or_default()),
        cache_enabled: cache_enabled.unwrap_or(true),
        cache_ttl_seconds: cache_ttl_seconds.unwrap_or(300),
        enabled: true,
        created_at: now.clone(),
        updated_at: now,
    };
    let mut inner = sim.lock();
    if !inner.account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    if !inner.account.buckets.contains_key(&bucket_slug) {
        return Err(bucket_not_found());
    }
    let value = mount_json(&inner.account, &mount);
    inner.account.mounts.push(mount);
    ok(value)
}

fn find<'a>(account: &'a mut Account, slug: &str, id: &str) -> Result<&'a mut Mount, Response> {
    if !account.agents.contains_key(slug) {
        return Err(agent_not_found());
    }
    account
        .mounts
        .iter_mut()
        .find(|m| m.agent_slug == slug && m.id == id)
        .ok_or_else(|| detail(StatusCode::NOT_FOUND, "Mount not found"))
}

/// `GET /agents/{slug}/mounts/{id}`.
pub(crate) async fn get(
    State(sim): State<Arc<Shared>>,
    Seg((slug, mount)): Seg<(String, String)>,
) -> Reply {
    let mut inner = sim.lock();
    let m = find(&mut inner.account, &slug, &mount)?.clone();
    ok(mount_json(&inner.account, &m))
}

/// `PATCH /agents/{slug}/mounts/{id}`: `null` leaves a field as it is.
pub(crate) async fn patch(
    State(sim): State<Arc<Shared>>,
    Seg((slug, mount)): Seg<(String, String)>,
    body: Bytes,
) -> Reply {
    let mut body = Body::parse(&body)?;
    let mount_path = mount_path(&mut body, false);
    let source_prefix = body.opt_str("source_prefix");
    let permission_rules = permission_rules(&mut body);
    let cache_enabled = body.opt_bool("cache_enabled");
    let cache_ttl = body.opt_int("cache_ttl_seconds", TTL);
    let enabled = body.opt_bool("enabled");
    body.done()?;
    let mut inner = sim.lock();
    let m = find(&mut inner.account, &slug, &mount)?;
    if let Some(v) = mount_path {
        m.mount_path = v;
    }
    if let Some(v) = source_prefix {
        m.source_prefix = v;
    }
    if let Some(v) = permission_rules {
        m.permission_rules = Value::Array(v);
    }
    if let Some(v) = cache_enabled {
        m.cache_enabled = v;
    }
    if let Some(v) = cache_ttl {
        m.cache_ttl_seconds = v;
    }
    if let Some(v) = enabled {
        m.enabled = v;
    }
    m.updated_at = iso(now_ms());
    let m = m.clone();
    ok(mount_json(&inner.account, &m))
}

/// `DELETE /agents/{slug}/mounts/{id}`.
pub(crate) async fn delete(
    State(sim): State<Arc<Shared>>,
    Seg((slug, mount)): Seg<(String, String)>,
) -> Reply {
    let mut inner = sim.lock();
    find(&mut inner.account, &slug, &mount)?;
    inner
        .account
        .mounts
        .retain(|m| !(m.agent_slug == slug && m.id == mount));
    no_content()
}
