//! Moving bytes: the presigned upload target, downloads and the signed
//! blob URLs `/content` redirects to. `/_sim/*` answers like an object
//! store (plain text), not like the API.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::files::file_not_found;
use super::Seg;
use crate::error::{detail, Reply};
use crate::state::File;
use crate::Shared;

/// `PUT /_sim/uploads/{file_id}?sig=`: step 2 of the presigned flow.
pub(crate) async fn presigned_put(
    State(sim): State<Arc<Shared>>,
    Seg(file_id): Seg<String>,
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

/// `GET /files/{id}/download`: the bytes, with Content-Type and Content-Length.
pub(crate) async fn download(State(sim): State<Arc<Shared>>, Seg(file_id): Seg<String>) -> Reply {
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
pub(crate) async fn content(State(sim): State<Arc<Shared>>, Seg(file_id): Seg<String>) -> Reply {
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
    Seg(file_id): Seg<String>,
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
