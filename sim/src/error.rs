//! Castari's error dialect: `{"detail": "..."}`, and 422 in FastAPI's list form.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

/// A handler result: both sides are complete responses.
pub type Reply = Result<Response, Response>;

/// `{"detail": message}` with `status`.
pub fn detail(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "detail": message.into() }))).into_response()
}

/// 404 `Agent not found`.
pub fn agent_not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Agent not found")
}

/// 422 for a missing field at `loc`, e.g. `["body", "name"]`.
pub fn missing(loc: &[&str]) -> Response {
    invalid(loc, "field required", "value_error.missing")
}

/// 422 with one validation item.
pub fn invalid(loc: &[&str], msg: &str, kind: &str) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "detail": [{ "loc": loc, "msg": msg, "type": kind }] })),
    )
        .into_response()
}

/// Parses a JSON object body; an empty body is an empty object when
/// `optional`, else a 422.
pub fn object(body: &[u8], optional: bool) -> Result<Map<String, Value>, Response> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if optional {
            Ok(Map::new())
        } else {
            Err(missing(&["body"]))
        };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid(
            &["body"],
            "value is not a valid dict",
            "type_error.dict",
        )),
        Err(_) => Err(invalid(
            &["body"],
            "Expecting value",
            "value_error.jsondecode",
        )),
    }
}

/// A required string field.
pub fn required(map: &Map<String, Value>, field: &str) -> Result<String, Response> {
    match map.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Null) | None => Err(missing(&["body", field])),
        Some(_) => Err(invalid(
            &["body", field],
            "str type expected",
            "type_error.str",
        )),
    }
}

/// An optional string field (null and absent are the same).
pub fn optional(map: &Map<String, Value>, field: &str) -> Result<Option<String>, Response> {
    match map.get(field) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(invalid(
            &["body", field],
            "str type expected",
            "type_error.str",
        )),
    }
}

/// An optional non-negative integer field.
pub fn optional_u64(map: &Map<String, Value>, field: &str) -> Result<Option<u64>, Response> {
    match map.get(field) {
        Some(Value::Null) | None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            invalid(
                &["body", field],
                "value is not a valid integer",
                "type_error.integer",
            )
        }),
    }
}

/// An optional boolean field.
pub fn optional_bool(map: &Map<String, Value>, field: &str) -> Result<Option<bool>, Response> {
    match map.get(field) {
        Some(Value::Null) | None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(invalid(
            &["body", field],
            "value could not be parsed to a boolean",
            "type_error.bool",
        )),
    }
}

/// `200 OK` with a JSON body.
pub fn ok(value: Value) -> Reply {
    Ok(Json(value).into_response())
}

/// `204 No Content`.
pub fn no_content() -> Reply {
    Ok(StatusCode::NO_CONTENT.into_response())
}
