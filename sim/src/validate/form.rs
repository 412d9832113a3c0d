//! Multipart bodies as Starlette and FastAPI read them:
//!
//! - a body that is not `multipart/form-data` is an empty form, so the
//!   required `file` field is `missing` (422);
//! - `multipart/form-data` without a boundary is 400
//!   `Missing boundary in multipart.`;
//! - a multipart body that does not parse is 400
//!   `There was an error parsing the body`;
//! - a `file` part without a filename is a plain string, which FastAPI's
//!   `UploadFile` refuses with a `value_error` (422).

use axum::extract::multipart::MultipartError;
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::Value;

use crate::error::{detail, loc, unparsable_body, value_error};

/// The form of a multipart route, or `None` for a body that is not
/// multipart (an empty form).
pub async fn open(request: Request) -> Result<Option<Multipart>, Response> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut params = content_type.split(';').map(str::trim);
    let essence = params.next().unwrap_or("");
    if !essence.eq_ignore_ascii_case("multipart/form-data") {
        return Ok(None);
    }
    let has_boundary = params.any(|p| {
        p.split_once('=')
            .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("boundary") && !v.trim().is_empty())
    });
    if !has_boundary {
        return Err(detail(
            StatusCode::BAD_REQUEST,
            "Missing boundary in multipart.",
        ));
    }
    Multipart::from_request(request, &())
        .await
        .map(Some)
        .map_err(|_| unparsable_body())
}

/// A multipart stream error: FastAPI's 400.
pub fn broken(_: MultipartError) -> Response {
    unparsable_body()
}

/// The 422 item for a `file` field sent without a filename.
pub fn not_an_upload(field: &str, text: String) -> Value {
    value_error(
        &loc(&["body", field]),
        &Value::String(text),
        "Expected UploadFile, received: <class 'str'>",
    )
}
