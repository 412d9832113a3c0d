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
    parse(&bytes.to_bytes()).map_err(|problem| {
        error_response(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            &format!(
                "The request body is not the JSON this endpoint takes ({problem}); correct it \
                 (the README's Endpoints table lists the fields) and send it again"
            ),
        )
    })
}

/// `bytes` as one JSON value of type `T`, or what is wrong with it, led by
/// the field it is in (`rate: "1/9000h": the window must be ...`) when the
/// problem is inside one.
fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut json).map_err(|error| {
        let field = error.path().to_string();
        match field.as_str() {
            "." => error.into_inner().to_string(),
            _ => format!("{field}: {}", error.into_inner()),
        }
    })?;
    // Nothing but whitespace after the value, as `from_slice` checks.
    json.end().map_err(|error| error.to_string())?;
    Ok(value)
}

/// `response` with `Cache-Control: no-store`: it carries admin data.
pub(super) fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Create {
        #[allow(dead_code)]
        rate: Option<crate::config::Rate>,
    }

    #[test]
    fn a_problem_inside_a_field_names_the_field() {
        let error = parse::<Create>(br#"{"rate": "1/9000h"}"#).unwrap_err();
        assert!(
            error.starts_with(r#"rate: "1/9000h": the window must be at most a year"#),
            "{error}"
        );
        let error = parse::<Create>(br#"{"rote": 1}"#).unwrap_err();
        assert!(error.starts_with("rote: unknown field `rote`"), "{error}");
        let error = parse::<Create>(br#"{"rate": null} x"#).unwrap_err();
        assert!(error.starts_with("trailing characters"), "{error}");
        assert!(parse::<Create>(br#" {"rate": "5/min"} "#).is_ok());
    }
}
