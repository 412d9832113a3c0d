//! Storage buckets and the mounts that put them into agent sandboxes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{json, Value};

use super::page;
use crate::error::{
    agent_not_found, detail, invalid, missing, no_content, object, ok, optional, optional_bool,
    optional_u64, required, Reply,
};
use crate::state::{Account, Bucket, Mount, USER_ID};
use crate::util::{hex_token, id, iso, now_ms, slugify};
use crate::Shared;

fn bucket_not_found() -> axum::response::Response {
    detail(StatusCode::NOT_FOUND, "Bucket not found")
}

/// `GET /buckets`.
pub(crate) async fn list(
    State(sim): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let (limit, offset) = page(&q, 20)?;
    let inner = sim.lock();
    let total = inner.account.buckets.len();
    let buckets: Vec<&Bucket> = inner
        .account
        .buckets
        .values()
        .skip(offset)
        .take(limit)
        .collect();
    ok(json!({
        "buckets": buckets,
        "meta": {"total": total, "limit": limit, "offset": offset, "has_more": offset + limit < total},
    }))
}

/// `POST /buckets`.
pub(crate) async fn create(State(sim): State<Arc<Shared>>, body: Bytes) -> Reply {
    let body = object(&body, false)?;
    let name = required(&body, "name")?;
    let provider = required(&body, "provider")?;
    let bucket_name = required(&body, "bucket_name")?;
    if !matches!(provider.as_str(), "s3" | "gcs" | "r2") {
        return Err(invalid(
            &["body", "provider"],
            "value is not a valid enumeration member; permitted: 's3', 'gcs', 'r2'",
            "type_error.enum",
        ));
    }
    let endpoint_url = optional(&body, "endpoint_url")?;
    if provider == "r2" && endpoint_url.is_none() {
        return Err(missing(&["body", "endpoint_url"]));
    }
    let slug = optional(&body, "slug")?.unwrap_or_else(|| slugify(&name));
    let now = iso(now_ms());
    let bucket = Bucket {
        id: id("bkt_"),
        user_id: USER_ID.into(),
        name,
        slug: slug.clone(),
        provider,
        bucket_name,
        region: optional(&body, "region")?,
        endpoint_url,
        has_credentials: false,
        created_at: now.clone(),
        updated_at: now,
    };
    let mut inner = sim.lock();
    if inner.account.buckets.contains_key(&slug) {
        return Err(detail(
            StatusCode::CONFLICT,
            format!("Bucket with slug '{slug}' already exists"),
        ));
    }
    let value = json!(bucket);
    inner.account.buckets.insert(slug, bucket);
    ok(value)
}

/// `GET /buckets/{slug}`.
pub(crate) async fn get(State(sim): State<Arc<Shared>>, Path(slug): Path<String>) -> Reply {
    let inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get(&slug)
        .ok_or_else(bucket_not_found)?;
    ok(json!(bucket))
}

/// `PATCH /buckets/{slug}`.
pub(crate) async fn patch(
    State(sim): State<Arc<Shared>>,
    Path(slug): Path<String>,
    body: Bytes,
) -> Reply {
    let body = object(&body, true)?;
    let name = optional(&body, "name")?;
    let bucket_name = optional(&body, "bucket_name")?;
    let region = optional(&body, "region")?;
    let endpoint_url = optional(&body, "endpoint_url")?;
    let mut inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get_mut(&slug)
        .ok_or_else(bucket_not_found)?;
    if let Some(v) = name {
        bucket.name = v;
    }
    if let Some(v) = bucket_name {
        bucket.bucket_name = v;
    }
    if body.contains_key("region") {
        bucket.region = region;
    }
    if body.contains_key("endpoint_url") {
        bucket.endpoint_url = endpoint_url;
    }
    bucket.updated_at = iso(now_ms());
    ok(json!(bucket))
}

/// `DELETE /buckets/{slug}`: its mounts go too.
pub(crate) async fn delete(State(sim): State<Arc<Shared>>, Path(slug): Path<String>) -> Reply {
    let mut inner = sim.lock();
    inner
        .account
        .buckets
        .remove(&slug)
        .ok_or_else(bucket_not_found)?;
    inner.account.mounts.retain(|m| m.bucket_slug != slug);
    no_content()
}

/// `POST /buckets/{slug}/credentials`.
pub(crate) async fn set_credentials(
    State(sim): State<Arc<Shared>>,
    Path(slug): Path<String>,
    body: Bytes,
) -> Reply {
    let body = object(&body, false)?;
    let keys = optional(&body, "access_key_id")?.is_some()
        && optional(&body, "secret_access_key")?.is_some();
    let service_account = optional(&body, "service_account_json")?.is_some();
    if !keys && !service_account {
        return Err(missing(&["body", "access_key_id"]));
    }
    let mut inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get_mut(&slug)
        .ok_or_else(bucket_not_found)?;
    bucket.has_credentials = true;
    bucket.updated_at = iso(now_ms());
    no_content()
}

/// `DELETE /buckets/{slug}/credentials`.
pub(crate) async fn delete_credentials(
    State(sim): State<Arc<Shared>>,
    Path(slug): Path<String>,
) -> Reply {
    let mut inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get_mut(&slug)
        .ok_or_else(bucket_not_found)?;
    bucket.has_credentials = false;
    no_content()
}

/// `POST /buckets/{slug}/test`: succeeds when credentials are set.
pub(crate) async fn test(State(sim): State<Arc<Shared>>, Path(slug): Path<String>) -> Reply {
    let inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get(&slug)
        .ok_or_else(bucket_not_found)?;
    let (success, message) = if bucket.has_credentials {
        (true, "Connection successful")
    } else {
        (false, "No credentials configured")
    };
    ok(json!({"success": success, "message": message, "latency_ms": 42}))
}

/// `POST /buckets/{slug}/upload-url` and `/download-url`: a fake presigned URL
/// on the provider's host (never fetched).
pub(crate) async fn presign(
    State(sim): State<Arc<Shared>>,
    Path(slug): Path<String>,
    uri: axum::http::Uri,
    body: Bytes,
) -> Reply {
    let body = object(&body, false)?;
    let path = required(&body, "path")?;
    let expires_in = optional_u64(&body, "expires_in")?.unwrap_or(3600);
    let method = if uri.path().ends_with("/upload-url") {
        "PUT"
    } else {
        "GET"
    };
    let inner = sim.lock();
    let bucket = inner
        .account
        .buckets
        .get(&slug)
        .ok_or_else(bucket_not_found)?;
    let url = format!(
        "https://{}.s3.amazonaws.com/{}?X-Amz-Expires={expires_in}&X-Amz-Signature={}",
        bucket.bucket_name,
        path.trim_start_matches('/'),
        hex_token(16)
    );
    ok(json!({"url": url, "expires_at": iso(now_ms() + expires_in * 1000), "method": method}))
}

/// `GET /buckets/{slug}/files?prefix=`: the simulated bucket is empty.
pub(crate) async fn files(
    State(sim): State<Arc<Shared>>,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let inner = sim.lock();
    inner
        .account
        .buckets
        .get(&slug)
        .ok_or_else(bucket_not_found)?;
    ok(json!({"files": [], "prefix": q.get("prefix"), "truncated": false}))
}

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
pub(crate) async fn mounts(State(sim): State<Arc<Shared>>, Path(slug): Path<String>) -> Reply {
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
pub(crate) async fn create_mount(
    State(sim): State<Arc<Shared>>,
    Path(slug): Path<String>,
    body: Bytes,
) -> Reply {
    let body = object(&body, false)?;
    let bucket_slug = required(&body, "bucket_slug")?;
    let mount_path = required(&body, "mount_path")?;
    if !mount_path.starts_with('/') {
        return Err(invalid(
            &["body", "mount_path"],
            "mount_path must start with '/'",
            "value_error",
        ));
    }
    let now = iso(now_ms());
    let mount = Mount {
        id: id("mnt_"),
        bucket_slug: bucket_slug.clone(),
        agent_slug: slug.clone(),
        mount_path,
        source_prefix: optional(&body, "source_prefix")?.unwrap_or_default(),
        permission_rules: body
            .get("permission_rules")
            .cloned()
            .unwrap_or_else(|| json!([])),
        cache_enabled: optional_bool(&body, "cache_enabled")?.unwrap_or(true),
        cache_ttl_seconds: optional_u64(&body, "cache_ttl_seconds")?.unwrap_or(300),
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

fn find_mount<'a>(
    account: &'a mut Account,
    slug: &str,
    id: &str,
) -> Result<&'a mut Mount, axum::response::Response> {
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
pub(crate) async fn get_mount(
    State(sim): State<Arc<Shared>>,
    Path((slug, mount)): Path<(String, String)>,
) -> Reply {
    let mut inner = sim.lock();
    let m = find_mount(&mut inner.account, &slug, &mount)?.clone();
    ok(mount_json(&inner.account, &m))
}

/// `PATCH /agents/{slug}/mounts/{id}`.
pub(crate) async fn patch_mount(
    State(sim): State<Arc<Shared>>,
    Path((slug, mount)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    let body = object(&body, true)?;
    let mount_path = optional(&body, "mount_path")?;
    let source_prefix = optional(&body, "source_prefix")?;
    let cache_enabled = optional_bool(&body, "cache_enabled")?;
    let cache_ttl = optional_u64(&body, "cache_ttl_seconds")?;
    let enabled = optional_bool(&body, "enabled")?;
    let mut inner = sim.lock();
    let m = find_mount(&mut inner.account, &slug, &mount)?;
    if let Some(v) = mount_path {
        m.mount_path = v;
    }
    if let Some(v) = source_prefix {
        m.source_prefix = v;
    }
    if let Some(v) = body.get("permission_rules") {
        m.permission_rules = v.clone();
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
pub(crate) async fn delete_mount(
    State(sim): State<Arc<Shared>>,
    Path((slug, mount)): Path<(String, String)>,
) -> Reply {
    let mut inner = sim.lock();
    find_mount(&mut inner.account, &slug, &mount)?;
    inner
        .account
        .mounts
        .retain(|m| !(m.agent_slug == slug && m.id == mount));
    no_content()
}
