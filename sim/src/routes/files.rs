//! Managed files: multipart upload, the presigned flow, metadata, download,
//! quota, and files attached to agents.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::agents::hex;
use super::page;
use crate::error::{
    agent_not_found, detail, invalid, missing, no_content, object, ok, optional, optional_bool,
    optional_u64, required, Reply,
};
use crate::state::{AgentFile, File};
use crate::util::{hex_token, id, iso, now_ms};
use crate::Shared;

/// The free plan's storage quota.
const QUOTA_MB: u64 = 100;
const QUOTA_BYTES: u64 = QUOTA_MB * 1024 * 1024;

fn file_not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "File not found")
}

fn file_json(f: &File) -> Value {
    json!({
        "id": f.id, "file_id": f.file_id, "filename": f.filename, "content_type": f.content_type,
        "size_bytes": f.size_bytes, "sha256_hash": f.sha256_hash, "scope": "user", "scope_id": null,
        "description": f.description, "tags": f.tags, "upload_status": f.upload_status,
        "created_at": f.created_at, "updated_at": f.updated_at,
    })
}

fn new_file(filename: String, content_type: Option<String>, content: Bytes) -> File {
    let now = iso(now_ms());
    File {
        id: id("mf_"),
        file_id: id("file_"),
        filename,
        content_type,
        size_bytes: content.len() as u64,
        sha256_hash: hex(&Sha256::digest(&content)),
        description: None,
        tags: Vec::new(),
        upload_status: "confirmed".into(),
        created_at: now.clone(),
        updated_at: now,
        content,
        upload_sig: None,
        download_sig: hex_token(16),
    }
}

/// `GET /files?limit&offset&scope&tags&search`.
pub(crate) async fn list(
    State(sim): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Reply {
    let (limit, offset) = page(&q, 20)?;
    if q.get("scope")
        .is_some_and(|s| !matches!(s.as_str(), "user" | "agent" | "session"))
    {
        return Err(invalid(
            &["query", "scope"],
            "value is not a valid enumeration member; permitted: 'user', 'agent', 'session'",
            "type_error.enum",
        ));
    }
    let tags: Vec<&str> = q
        .get("tags")
        .map(|t| {
            t.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let search = q.get("search").map(|s| s.to_lowercase());
    let scope_ok = q.get("scope").is_none_or(|s| s == "user");
    let inner = sim.lock();
    let matching: Vec<&File> = inner
        .account
        .files
        .values()
        .filter(|f| scope_ok && tags.iter().all(|t| f.tags.iter().any(|ft| ft == t)))
        .filter(|f| {
            search.as_ref().is_none_or(|s| {
                f.filename.to_lowercase().contains(s)
                    || f.description
                        .as_ref()
                        .is_some_and(|d| d.to_lowercase().contains(s))
            })
        })
        .collect();
    let total = matching.len();
    let files: Vec<Value> = matching
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(file_json)
        .collect();
    ok(
        json!({"files": files, "meta": {"total": total, "limit": limit, "offset": offset, "has_more": offset + limit < total}}),
    )
}

/// `POST /files`: multipart `file`, `description`, `tags` (comma-joined).
pub(crate) async fn upload(State(sim): State<Arc<Shared>>, mut form: Multipart) -> Reply {
    let bad = |e: axum::extract::multipart::MultipartError| {
        detail(
            StatusCode::BAD_REQUEST,
            format!("Invalid multipart body: {e}"),
        )
    };
    let (mut file, mut description, mut tags) = (None, None, Vec::new());
    while let Some(mut field) = form.next_field().await.map_err(bad)? {
        match field.name() {
            Some("file") => {
                let filename = field.file_name().unwrap_or("upload").to_string();
                let content_type = field.content_type().map(str::to_string);
                let mut content = BytesMut::new();
                while let Some(chunk) = field.chunk().await.map_err(bad)? {
                    if (content.len() + chunk.len()) as u64 > QUOTA_BYTES {
                        return Err(quota_exceeded());
                    }
                    content.extend_from_slice(&chunk);
                }
                file = Some(new_file(filename, content_type, content.freeze()));
            }
            Some("description") => description = Some(field.text().await.map_err(bad)?),
            Some("tags") => {
                let text = field.text().await.map_err(bad)?;
                tags = text
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_string)
                    .collect();
            }
            _ => {}
        }
    }
    let mut file = file.ok_or_else(|| missing(&["body", "file"]))?;
    file.description = description;
    file.tags = tags;
    let mut inner = sim.lock();
    if inner.account.storage_bytes() + file.size_bytes > QUOTA_BYTES {
        return Err(quota_exceeded());
    }
    let value = json!({
        "file_id": file.file_id, "filename": file.filename, "content_type": file.content_type,
        "size_bytes": file.size_bytes, "sha256_hash": file.sha256_hash, "created_at": file.created_at,
    });
    inner.account.files.insert(file.file_id.clone(), file);
    ok(value)
}

fn quota_exceeded() -> Response {
    detail(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Storage quota exceeded ({QUOTA_MB} MB)"),
    )
}

/// `GET /files/usage`.
pub(crate) async fn usage(State(sim): State<Arc<Shared>>) -> Reply {
    let inner = sim.lock();
    let total_files = inner
        .account
        .files
        .values()
        .filter(|f| f.upload_status == "confirmed")
        .count();
    let bytes = inner.account.storage_bytes();
    let mb = bytes as f64 / 1_048_576.0;
    ok(json!({
        "total_files": total_files, "total_bytes": bytes, "total_mb": (mb * 100.0).round() / 100.0,
        "limit_mb": QUOTA_MB, "usage_percent": (mb / QUOTA_MB as f64 * 10_000.0).round() / 100.0,
    }))
}

/// `POST /files/upload-url`: a pending file and an upload URL served by the
/// simulator itself.
pub(crate) async fn upload_url(State(sim): State<Arc<Shared>>, body: Bytes) -> Reply {
    let body = object(&body, false)?;
    let filename = required(&body, "filename")?;
    let size =
        optional_u64(&body, "size_bytes")?.ok_or_else(|| missing(&["body", "size_bytes"]))?;
    let content_type = optional(&body, "content_type")?;
    let tags: Vec<String> = body
        .get("tags")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut inner = sim.lock();
    if inner.account.storage_bytes() + size > QUOTA_BYTES {
        return Err(quota_exceeded());
    }
    let mut file = new_file(filename, content_type.clone(), Bytes::new());
    file.size_bytes = size;
    file.sha256_hash = String::new();
    file.upload_status = "pending".into();
    file.description = optional(&body, "description")?;
    file.tags = tags;
    let sig = hex_token(16);
    file.upload_sig = Some(sig.clone());
    let url = format!("{}/_sim/uploads/{}?sig={sig}", sim.base_url, file.file_id);
    let headers =
        json!({"Content-Type": content_type.unwrap_or_else(|| "application/octet-stream".into())});
    let value = json!({
        "file_id": file.file_id, "upload_url": url, "upload_method": "PUT",
        "upload_headers": headers, "expires_at": iso(now_ms() + 3_600_000),
    });
    inner.account.files.insert(file.file_id.clone(), file);
    ok(value)
}

/// `PUT /_sim/uploads/{file_id}?sig=`: step 2 of the presigned flow.
pub(crate) async fn presigned_put(
    State(sim): State<Arc<Shared>>,
    Path(file_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let mut inner = sim.lock();
    let Some(file) = inner.account.files.get_mut(&file_id) else {
        return (StatusCode::NOT_FOUND, "NoSuchUpload").into_response();
    };
    if file.upload_sig.is_none() || file.upload_sig.as_ref() != q.get("sig") {
        return (StatusCode::FORBIDDEN, "SignatureDoesNotMatch").into_response();
    }
    file.content = body;
    StatusCode::OK.into_response()
}

/// `POST /files/confirm-upload {file_id, sha256_hash}`.
pub(crate) async fn confirm(State(sim): State<Arc<Shared>>, body: Bytes) -> Reply {
    let body = object(&body, false)?;
    let file_id = required(&body, "file_id")?;
    let claimed = required(&body, "sha256_hash")?.to_lowercase();
    let mut inner = sim.lock();
    let file = inner
        .account
        .files
        .get_mut(&file_id)
        .ok_or_else(file_not_found)?;
    if file.upload_status == "confirmed" {
        if file.sha256_hash == claimed {
            return ok(file_json(file));
        }
        return Err(detail(StatusCode::BAD_REQUEST, "SHA-256 mismatch"));
    }
    if file.content.is_empty() && file.size_bytes > 0 {
        return Err(detail(
            StatusCode::BAD_REQUEST,
            "No data uploaded for this file",
        ));
    }
    let actual = hex(&Sha256::digest(&file.content));
    if actual != claimed {
        return Err(detail(StatusCode::BAD_REQUEST, "SHA-256 mismatch"));
    }
    file.sha256_hash = actual;
    file.size_bytes = file.content.len() as u64;
    file.upload_status = "confirmed".into();
    file.upload_sig = None;
    file.updated_at = iso(now_ms());
    ok(file_json(file))
}

/// `GET /files/{id}`.
pub(crate) async fn get(State(sim): State<Arc<Shared>>, Path(file_id): Path<String>) -> Reply {
    let inner = sim.lock();
    ok(file_json(
        inner
            .account
            .files
            .get(&file_id)
            .ok_or_else(file_not_found)?,
    ))
}

/// `PATCH /files/{id} {description?, tags?}`.
pub(crate) async fn patch(
    State(sim): State<Arc<Shared>>,
    Path(file_id): Path<String>,
    body: Bytes,
) -> Reply {
    let body = object(&body, true)?;
    let description = optional(&body, "description")?;
    let tags = match body.get("tags") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect::<Vec<_>>(),
        ),
        Some(_) => {
            return Err(invalid(
                &["body", "tags"],
                "value is not a valid list",
                "type_error.list",
            ))
        }
    };
    let mut inner = sim.lock();
    let file = inner
        .account
        .files
        .get_mut(&file_id)
        .ok_or_else(file_not_found)?;
    if body.contains_key("description") {
        file.description = description;
    }
    if let Some(tags) = tags {
        file.tags = tags;
    }
    file.updated_at = iso(now_ms());
    ok(file_json(file))
}

/// `DELETE /files/{id}`: also detaches it from every agent.
pub(crate) async fn delete(State(sim): State<Arc<Shared>>, Path(file_id): Path<String>) -> Reply {
    let mut inner = sim.lock();
    inner
        .account
        .files
        .remove(&file_id)
        .ok_or_else(file_not_found)?;
    for list in inner.account.agent_files.values_mut() {
        list.retain(|f| f.file_id != file_id);
    }
    no_content()
}

/// `GET /files/{id}/download`: the bytes, with Content-Type and Content-Length.
pub(crate) async fn download(State(sim): State<Arc<Shared>>, Path(file_id): Path<String>) -> Reply {
    let inner = sim.lock();
    let file = inner
        .account
        .files
        .get(&file_id)
        .ok_or_else(file_not_found)?;
    if file.upload_status != "confirmed" {
        return Err(detail(StatusCode::NOT_FOUND, "File not found"));
    }
    Ok(bytes_response(file))
}

/// `GET /files/{id}/content`: a redirect to a signed blob URL.
pub(crate) async fn content(State(sim): State<Arc<Shared>>, Path(file_id): Path<String>) -> Reply {
    let inner = sim.lock();
    let file = inner
        .account
        .files
        .get(&file_id)
        .ok_or_else(file_not_found)?;
    let location = format!(
        "{}/_sim/blobs/{}?sig={}",
        sim.base_url, file.file_id, file.download_sig
    );
    let mut response = StatusCode::FOUND.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    Ok(response)
}

/// `GET /_sim/blobs/{id}?sig=`: where `/content` redirects.
pub(crate) async fn blob(
    State(sim): State<Arc<Shared>>,
    Path(file_id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let inner = sim.lock();
    match inner.account.files.get(&file_id) {
        Some(file) if q.get("sig") == Some(&file.download_sig) => bytes_response(file),
        Some(_) => (StatusCode::FORBIDDEN, "SignatureDoesNotMatch").into_response(),
        None => (StatusCode::NOT_FOUND, "NoSuchKey").into_response(),
    }
}

fn bytes_response(file: &File) -> Response {
    let mut response = Response::new(Body::from(file.content.clone()));
    let h = response.headers_mut();
    let ct = file
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&ct).unwrap_or(HeaderValue::from_static("application/octet-stream")),
    );
    h.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(file.content.len()),
    );
    let disposition = format!(
        "attachment; filename=\"{}\"",
        file.filename.replace('"', "")
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}

/// `GET /agents/{slug}/files`.
pub(crate) async fn agent_files(State(sim): State<Arc<Shared>>, Path(slug): Path<String>) -> Reply {
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
    Path(slug): Path<String>,
    body: Bytes,
) -> Reply {
    let body = object(&body, false)?;
    let file_id = required(&body, "file_id")?;
    let mount_path = optional(&body, "mount_path")?;
    let read_only = optional_bool(&body, "read_only")?.unwrap_or(true);
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
    Path((slug, file_id)): Path<(String, String)>,
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
pub(crate) async fn sync(State(sim): State<Arc<Shared>>, Path(slug): Path<String>) -> Reply {
    if !sim.lock().account.agents.contains_key(&slug) {
        return Err(agent_not_found());
    }
    no_content()
}
