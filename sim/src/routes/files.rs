//! Managed files: multipart upload, the presigned flow, metadata, quota.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::agents::hex;
use super::Seg;
use crate::error::{detail, loc, missing, no_content, ok, unprocessable, Reply};
use crate::state::File;
use crate::util::{hex_token, id, iso, now_ms};
use crate::validate::int::Bounds;
use crate::validate::query::Params;
use crate::validate::{form, Body};
use crate::Shared;

/// The free plan's storage quota.
const QUOTA_MB: u64 = 100;
const QUOTA_BYTES: u64 = QUOTA_MB * 1024 * 1024;

pub(crate) fn file_not_found() -> Response {
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
    let mut params = Params::new(&q);
    let page = params.page(20);
    let scope = params.choice("scope", &["user", "agent", "session"]);
    params.done()?;
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
    let scope_ok = scope.is_none_or(|s| s == "user");
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
        .skip(page.offset)
        .take(page.limit)
        .map(file_json)
        .collect();
    Ok(page.reply("files", files, total))
}

/// `POST /files`: multipart `file`, `description`, `tags` (comma-joined).
/// A body that is not multipart is an empty form (422 for `file`).
pub(crate) async fn upload(State(sim): State<Arc<Shared>>, request: Request) -> Reply {
    let (mut file, mut not_upload, mut description, mut tags) = (None, None, None, Vec::new());
    if let Some(mut form) = form::open(request).await? {
        while let Some(mut field) = form.next_field().await.map_err(form::broken)? {
            match field.name() {
                Some("file") if field.file_name().is_none() => {
                    not_upload = Some(field.text().await.map_err(form::broken)?);
                    file = None;
                }
                Some("file") => {
                    let filename = field.file_name().unwrap_or("upload").to_string();
                    let content_type = field.content_type().map(str::to_string);
                    let mut content = BytesMut::new();
                    while let Some(chunk) = field.chunk().await.map_err(form::broken)? {
                        if (content.len() + chunk.len()) as u64 > QUOTA_BYTES {
                            return Err(quota_exceeded());
                        }
                        content.extend_from_slice(&chunk);
                    }
                    file = Some(new_file(filename, content_type, content.freeze()));
                    not_upload = None;
                }
                Some("description") => {
                    description = Some(field.text().await.map_err(form::broken)?);
                }
                Some("tags") => {
                    let text = field.text().await.map_err(form::broken)?;
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
    }
    let Some(mut file) = file else {
        return Err(unprocessable(vec![match not_upload {
            Some(text) => form::not_an_upload("file", text),
            None => missing(&loc(&["body", "file"]), Value::Null),
        }]));
    };
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
    let mut body = Body::parse(&body)?;
    let filename = body.str("filename");
    // Not negative; no upper bound, so (as pydantic would) a size past 64
    // bits is accepted here and refused by the quota below.
    let size = body.int("size_bytes", Bounds::ge(0));
    let content_type = body.opt_str("content_type");
    let description = body.opt_str("description");
    let tags = body.opt_str_list("tags").unwrap_or_default();
    body.done()?;
    let mut inner = sim.lock();
    if inner.account.storage_bytes().saturating_add(size) > QUOTA_BYTES {
        return Err(quota_exceeded());
    }
    let mut file = new_file(filename, content_type.clone(), Bytes::new());
    file.size_bytes = size;
    file.sha256_hash = String::new();
    file.upload_status = "pending".into();
    file.description = description;
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

/// `POST /files/confirm-upload {file_id, sha256_hash}`.
pub(crate) async fn confirm(State(sim): State<Arc<Shared>>, body: Bytes) -> Reply {
    let mut body = Body::parse(&body)?;
    let file_id = body.str("file_id");
    let claimed = body.str("sha256_hash").to_lowercase();
    body.done()?;
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
pub(crate) async fn get(State(sim): State<Arc<Shared>>, Seg(file_id): Seg<String>) -> Reply {
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
    Seg(file_id): Seg<String>,
    body: Bytes,
) -> Reply {
    let mut body = Body::parse(&body)?;
    let description = body.opt_str("description");
    let tags = body.opt_str_list("tags");
    body.done()?;
    let mut inner = sim.lock();
    let file = inner
        .account
        .files
        .get_mut(&file_id)
        .ok_or_else(file_not_found)?;
    if body.sent("description") {
        file.description = description;
    }
    if let Some(tags) = tags {
        file.tags = tags;
    }
    file.updated_at = iso(now_ms());
    ok(file_json(file))
}

/// `DELETE /files/{id}`: also detaches it from every agent.
pub(crate) async fn delete(State(sim): State<Arc<Shared>>, Seg(file_id): Seg<String>) -> Reply {
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
