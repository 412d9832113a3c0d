//! Small pieces the local endpoints share: reading a small JSON body and
//! marking an answer not to be stored.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt;

use crate::error::error_response;

/// `body` as JSON of at most `max` bytes, or the Castari-shaped refusal
/// (413 `payload_too_large`, 422 `invalid_body`).
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(
    body: axum::body::Body,
    max: usize,
) -> Result<T, Response> {
    let limited = http_body_util::Limited::new(body, max);
    let bytes = limited.collect().await.map_err(|_| {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            &format!(
                "The request body is larger than the {} KiB this endpoint takes; send a smaller \
                 body",
                max >> 10
            ),
        )
    })?;
    serde_json::from_slice(&bytes.to_bytes()).map_err(|e| {
        error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            &format!(
                "The request body is not the JSON this endpoint takes ({e}); correct it (the \
                 README's Endpoints table lists the fields) and send it again"
            ),
        )
    })
}

/// `response` with `Cache-Control: no-store`: it carries admin data.
pub(super) fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
