//! Integers (S4), bucket credentials (S5), absent and broken bodies (S6),
//! validation before the quota (S8), undecodable paths.

use super::validation::{bucket, raw, types};
use super::*;

/// S4: integers in queries and bodies, with pydantic v2's messages.
#[tokio::test]
async fn integers_read_like_pydantic_v2() {
    let sim = sim().await;
    let (s, _, b) = call(&sim, Method::GET, "/agents?offset=-1&limit=-5", None).await;
    assert_eq!(s, 422);
    assert_eq!(
        b["detail"][0],
        json!({"type": "greater_than_equal", "loc": ["query", "limit"],
               "msg": "Input should be greater than or equal to 1", "input": "-5", "ctx": {"ge": 1}})
    );
    assert_eq!(
        b["detail"][1]["msg"],
        "Input should be greater than or equal to 0"
    );
    let (_, _, b) = call(&sim, Method::GET, "/buckets?limit=abc", None).await;
    assert_eq!(
        b["detail"][0]["msg"],
        "Input should be a valid integer, unable to parse string as an integer"
    );
    let huge = "123456789012345678901234567890";
    let (_, _, b) = call(&sim, Method::GET, &format!("/files?limit={huge}"), None).await;
    assert_eq!(
        (
            b["detail"][0]["type"].as_str(),
            b["detail"][0]["ctx"].clone()
        ),
        (Some("less_than_equal"), json!({"le": 100}))
    );
    // No upper bound on offset: accepted, an empty page, echoed exactly.
    agent(&sim, json!({"name": "One"})).await;
    let (s, _, text) = raw(
        &sim,
        Method::GET,
        &format!("/agents?offset={huge}"),
        None,
        b"",
    )
    .await;
    assert_eq!(s, 200);
    assert!(text.contains(&format!("\"offset\":{huge}")), "{text}");
    assert!(text.starts_with(r#"{"agents":[],"meta":{"has_more":false,"limit":20,"#));
    let (s, _, _) = call(
        &sim,
        Method::GET,
        &format!("/agents/one/invocations?offset={huge}"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    let (_, _, b) = call(&sim, Method::GET, "/usage?days=0", None).await;
    assert_eq!(b["detail"][0]["type"], "greater_than_equal");

    let (s, _, b) = call(
        &sim,
        Method::PATCH,
        "/agents/one",
        Some(json!({"timeout_seconds": -1, "max_turns": 2.5})),
    )
    .await;
    assert_eq!(s, 422);
    assert_eq!(types(&b), ["int_from_float", "greater_than_equal"]);
    let (s, _, b) = call(
        &sim,
        Method::PATCH,
        "/agents/one",
        Some(json!({"timeout_seconds": "601"})),
    )
    .await;
    assert_eq!((s.as_u16(), types(&b)), (422, vec!["less_than_equal"]));
    let (s, _, p) = call(
        &sim,
        Method::PATCH,
        "/agents/one",
        Some(json!({"timeout_seconds": "300", "max_turns": 4.0})),
    )
    .await;
    assert_eq!(
        (
            s.as_u16(),
            p["timeout_seconds"].as_u64(),
            p["max_turns"].as_u64()
        ),
        (200, Some(300), Some(4))
    );
    // A whole-number float is read correctly rounded, as Python's `json`
    // reads it; serde_json's default was a unit off in the last place for
    // this one, and it was refused as `int_from_float`.
    let (s, _, text) = raw(
        &sim,
        Method::PATCH,
        "/agents/one",
        Some("application/json"),
        br#"{"max_turns": 1876117744596165.0}"#,
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert!(text.contains(r#""max_turns":1876117744596165"#), "{text}");
}

/// S5: half a key pair names the missing half.
#[tokio::test]
async fn credentials_name_the_missing_field() {
    let sim = sim().await;
    bucket(&sim, "keys").await;
    let post = |body: Value| call(&sim, Method::POST, "/buckets/keys/credentials", Some(body));
    let (s, _, b) = post(json!({"access_key_id": "AKIA"})).await;
    assert_eq!(s, 422);
    assert_eq!(b["detail"].as_array().unwrap().len(), 1);
    assert_eq!(b["detail"][0]["loc"], json!(["body", "secret_access_key"]));
    assert_eq!(b["detail"][0]["type"], "missing");
    let (_, _, b) = post(json!({"secret_access_key": "S"})).await;
    assert_eq!(b["detail"][0]["loc"], json!(["body", "access_key_id"]));
    let (_, _, b) = post(json!({})).await;
    let locs: Vec<&Value> = b["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["loc"])
        .collect();
    assert_eq!(
        locs,
        [
            &json!(["body", "access_key_id"]),
            &json!(["body", "secret_access_key"])
        ]
    );
    let (s, _, _) = post(json!({"service_account_json": "{}"})).await;
    assert_eq!(s, 204);
}

/// S6: a required body that is absent is `missing` at `["body"]`.
#[tokio::test]
async fn bodiless_patches_and_key_creation_are_422() {
    let sim = sim().await;
    active_agent(&sim, "Patchy").await;
    bucket(&sim, "bk").await;
    let (_, _, m) = call(
        &sim,
        Method::POST,
        "/agents/patchy/mounts",
        Some(json!({"bucket_slug": "bk", "mount_path": "/m"})),
    )
    .await;
    let mount = format!("/agents/patchy/mounts/{}", m["id"].as_str().unwrap());
    let expected = json!({"detail": [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}]});
    for (method, path) in [
        (Method::PATCH, "/agents/patchy"),
        (Method::PATCH, "/buckets/bk"),
        (Method::PATCH, mount.as_str()),
        (Method::POST, "/api-keys"),
    ] {
        let (s, _, b) = call(&sim, method.clone(), path, None).await;
        assert_eq!((s.as_u16(), &b), (422, &expected), "{method} {path}");
        let (s, _, _) = call(&sim, method.clone(), path, Some(json!({}))).await;
        assert_eq!(s, 200, "{method} {path} with {{}}");
    }
    // Broken JSON and non-objects, FastAPI style.
    let (s, _, text) = raw(
        &sim,
        Method::PATCH,
        "/agents/patchy",
        Some("application/json"),
        b"{\"a\":",
    )
    .await;
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!((s.as_u16(), types(&b)), (422, vec!["json_invalid"]));
    assert_eq!(b["detail"][0]["msg"], "JSON decode error");
    let (s, _, b) = call(&sim, Method::PATCH, "/agents/patchy", Some(json!([1]))).await;
    assert_eq!(
        (s.as_u16(), types(&b)),
        (422, vec!["model_attributes_type"])
    );
}

/// S8: the body is validated before the quota is checked.
#[tokio::test]
async fn upload_url_validates_before_the_quota() {
    let sim = sim().await;
    let big = 200u64 * 1024 * 1024;
    let (s, _, b) = call(
        &sim,
        Method::POST,
        "/files/upload-url",
        Some(json!({"size_bytes": big})),
    )
    .await;
    assert_eq!((s.as_u16(), types(&b)), (422, vec!["missing"]));
    let (s, _, b) = call(
        &sim,
        Method::POST,
        "/files/upload-url",
        Some(json!({"filename": "f", "size_bytes": big, "tags": ["a", 1]})),
    )
    .await;
    assert_eq!((s.as_u16(), types(&b)), (422, vec!["string_type"]));
    assert_eq!(b["detail"][0]["loc"], json!(["body", "tags", 1]));
    let (s, _, b) = call(
        &sim,
        Method::POST,
        "/files/upload-url",
        Some(json!({"filename": "f", "size_bytes": -1})),
    )
    .await;
    assert_eq!((s.as_u16(), types(&b)), (422, vec!["greater_than_equal"]));
    let (s, _, _) = call(
        &sim,
        Method::POST,
        "/files/upload-url",
        Some(json!({"filename": "f", "size_bytes": big})),
    )
    .await;
    assert_eq!(s, 413);
    let (s, _, _) = raw(
        &sim,
        Method::POST,
        "/files/upload-url",
        Some("application/json"),
        br#"{"filename": "f", "size_bytes": 123456789012345678901234567890}"#,
    )
    .await;
    assert_eq!(s, 413, "no upper bound: accepted, then over the quota");
}

/// Other errors FastAPI would send as JSON: undecodable path segments
/// route and miss like any other id.
#[tokio::test]
async fn undecodable_paths_are_json_404s() {
    let sim = sim().await;
    let (s, h, b) = call(&sim, Method::GET, "/agents/%FF", None).await;
    assert_eq!((s.as_u16(), b), (404, json!({"detail": "Agent not found"})));
    assert!(h.contains_key("x-ratelimit-limit"));
}

/// A secret key must name something `DELETE /secrets/{key}` can address:
/// an empty one is refused (a decision: the reference is silent).
#[tokio::test]
async fn an_empty_secret_key_is_refused() {
    let sim = sim().await;
    agent(&sim, json!({"name": "Keys"})).await;
    let body = json!({"key": "", "value": "v"});
    let (s, _, b) = call(&sim, Method::POST, "/agents/keys/secrets", Some(body)).await;
    assert_eq!(s, 422, "{b}");
    assert_eq!(b["detail"][0]["type"], "string_too_short");
    assert_eq!(b["detail"][0]["loc"], json!(["body", "key"]));
    let body = json!({"key": "K", "value": ""});
    let (s, _, _) = call(&sim, Method::POST, "/agents/keys/secrets", Some(body)).await;
    assert!(s == 200 || s == 204);
}

/// Starlette routes a request to the first route whose path and method
/// both match: a method the static `/files/usage`, `/files/upload-url`,
/// `/files/confirm-upload` and `/agents/{slug}/files/sync` lack goes on to
/// the `{id}` route beside them, with the word as the id (a 404), not 405.
#[tokio::test]
async fn static_routes_fall_through_to_their_id_route() {
    let sim = sim().await;
    agent(&sim, json!({"name": "Syncer"})).await;
    let file = |s: StatusCode, b: Value| (s.as_u16(), b);
    for (method, path, body) in [
        (Method::GET, "/files/upload-url", None),
        (Method::GET, "/files/confirm-upload", None),
        (Method::PATCH, "/files/usage", Some(json!({"tags": ["a"]}))),
        (Method::PATCH, "/files/upload-url", Some(json!({}))),
        (Method::DELETE, "/files/usage", None),
        (Method::DELETE, "/files/confirm-upload", None),
    ] {
        let (s, _, b) = call(&sim, method.clone(), path, body).await;
        let not_found = (404, json!({"detail": "File not found"}));
        assert_eq!(file(s, b), not_found, "{method} {path}");
    }
    // The `{id}` route's own checks come first, as for any id.
    let (s, _, b) = call(&sim, Method::PATCH, "/files/usage", None).await;
    assert_eq!((s.as_u16(), types(&b)), (422, vec!["missing"]));
    let (s, _, b) = call(&sim, Method::DELETE, "/agents/syncer/files/sync", None).await;
    let detached = (s.as_u16(), b);
    let not_attached = json!({"detail": "File not attached to this agent"});
    assert_eq!(detached, (404, not_attached));
    // No route has the method: 405, and `Allow` names the fixed path's
    // own methods only (Starlette answers from the first route whose path
    // matched).
    for (method, path, allow) in [
        (Method::POST, "/files/usage", "GET,HEAD"),
        (Method::PUT, "/files/upload-url", "POST"),
        (Method::OPTIONS, "/files/confirm-upload", "POST"),
        (Method::PUT, "/agents/syncer/files/sync", "POST"),
    ] {
        let (s, h, b) = call(&sim, method.clone(), path, None).await;
        let allowed = h.get("allow").and_then(|v| v.to_str().ok());
        assert_eq!((s.as_u16(), allowed), (405, Some(allow)), "{method} {path}");
        assert_eq!(b, json!({"detail": "Method Not Allowed"}));
    }
}
