//! `GET /openapi.json`: the OpenAPI 3.1 description of everything the
//! gateway answers (`assets/openapi.json`, compiled in). `tests/openapi.rs`
//! checks it against the gateway's router and the simulator's (the
//! reference's routes) and against the README's error codes; CI fuzzes the
//! gateway and the simulator with it (`scripts/conformance`).
//!
//! It describes routes, not this gateway's state: it needs no login, and it
//! holds no secret.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The description, as served.
pub const DESCRIPTION: &[u8] = include_bytes!("../../assets/openapi.json");

/// `GET /openapi.json`.
pub async fn description() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        DESCRIPTION,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_description_is_openapi_json_of_this_version() {
        let doc: serde_json::Value = serde_json::from_slice(DESCRIPTION).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
