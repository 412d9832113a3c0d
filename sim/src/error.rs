//! Castari's error dialect: `{"detail": "..."}`, and 422 in FastAPI's list
//! form with pydantic v2 items (`type`, `loc`, `msg`, `input`, `ctx`).
//!
//! The reference's docs example shows pydantic v1 wording; the backend is a
//! current FastAPI, so the simulator speaks pydantic v2 everywhere (one
//! dialect, not a mix).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

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

/// 400 for a body FastAPI could not read at all (broken multipart, bytes
/// that are not UTF-8 where JSON was expected).
pub fn unparsable_body() -> Response {
    detail(
        StatusCode::BAD_REQUEST,
        "There was an error parsing the body",
    )
}

/// 422 `{"detail": [items...]}`.
pub fn unprocessable(items: Vec<Value>) -> Response {
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Json(json!({ "detail": items })),
    )
        .into_response()
}

/// A location: `loc(&["body", "name"])`. Indices are added with
/// [`Loc::at`].
pub fn loc(parts: &[&str]) -> Loc {
    Loc(parts.iter().map(|p| json!(p)).collect())
}

/// Where a validation error is, e.g. `["body", "permission_rules", 0, "mode"]`.
#[derive(Clone, Debug)]
pub struct Loc(Vec<Value>);

impl Loc {
    /// This location plus a field name.
    pub fn key(&self, key: &str) -> Loc {
        let mut parts = self.0.clone();
        parts.push(json!(key));
        Loc(parts)
    }

    /// This location plus a list index.
    pub fn at(&self, index: usize) -> Loc {
        let mut parts = self.0.clone();
        parts.push(json!(index));
        Loc(parts)
    }
}

/// One pydantic v2 error item. `ctx` is left out when `None`.
pub fn item(
    kind: &str,
    at: &Loc,
    msg: impl Into<String>,
    input: Value,
    ctx: Option<Value>,
) -> Value {
    let mut v = json!({ "type": kind, "loc": at.0, "msg": msg.into(), "input": input });
    if let (Some(ctx), Value::Object(map)) = (ctx, &mut v) {
        map.insert("ctx".into(), ctx);
    }
    v
}

/// `missing`: `input` is the object the field is missing from (`null` for
/// a missing body or form field, as FastAPI sends).
pub fn missing(at: &Loc, input: Value) -> Value {
    item("missing", at, "Field required", input, None)
}

/// `string_type`.
pub fn not_a_string(at: &Loc, input: &Value) -> Value {
    item(
        "string_type",
        at,
        "Input should be a valid string",
        input.clone(),
        None,
    )
}

/// `enum`: `Input should be 'a', 'b' or 'c'`.
pub fn not_one_of(at: &Loc, input: &Value, allowed: &[&str]) -> Value {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("'{a}'")).collect();
    let expected = match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    };
    item(
        "enum",
        at,
        format!("Input should be {expected}"),
        input.clone(),
        Some(json!({ "expected": expected })),
    )
}

/// `value_error` from a custom validator: FastAPI renders the exception in
/// `ctx.error` as `{}`.
pub fn value_error(at: &Loc, input: &Value, message: &str) -> Value {
    item(
        "value_error",
        at,
        format!("Value error, {message}"),
        input.clone(),
        Some(json!({ "error": {} })),
    )
}

/// `200 OK` with a JSON body.
pub fn ok(value: Value) -> Reply {
    Ok(Json(value).into_response())
}

/// `204 No Content`.
pub fn no_content() -> Reply {
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_messages_read_like_pydantic() {
        let at = loc(&["body", "provider"]);
        let v = not_one_of(&at, &json!("x"), &["s3", "gcs", "r2"]);
        assert_eq!(v["msg"], "Input should be 's3', 'gcs' or 'r2'");
        assert_eq!(v["ctx"]["expected"], "'s3', 'gcs' or 'r2'");
        let v = not_one_of(&at.at(0), &json!(1), &["ro", "rw"]);
        assert_eq!(v["msg"], "Input should be 'ro' or 'rw'");
        assert_eq!(v["loc"], json!(["body", "provider", 0]));
    }
}
