//! Request validation answers as FastAPI with pydantic v2 does: one 422
//! `{"detail": [items]}` listing every problem, JSON for every error.
//! Mount rules (S1), slugs (S2), multipart (S3); more in `bodies.rs`.

use super::*;

/// Sends `body` as is, with `content_type` when given.
pub(crate) async fn raw(
    sim: &Simulator,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: &'static [u8],
) -> (StatusCode, reqwest::header::HeaderMap, String) {
    let mut request = client()
        .request(method, format!("{}/api/v1{path}", sim.url()))
        .bearer_auth(KEY)
        .body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

pub(crate) fn types(body: &Value) -> Vec<&str> {
    body["detail"]
        .as_array()
        .unwrap_or_else(|| panic!("list form: {body}"))
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect()
}

pub(crate) async fn bucket(sim: &Simulator, slug: &str) {
    let (s, _, b) = call(
        sim,
        Method::POST,
        "/buckets",
        Some(json!({"name": "B", "slug": slug, "provider": "s3", "bucket_name": "raw"})),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

/// S1: every permission rule is a `{path, mode: "ro"|"rw"}`.
#[tokio::test]
async fn permission_rules_are_validated_item_by_item() {
    let sim = sim().await;
    active_agent(&sim, "Mounter").await;
    bucket(&sim, "data").await;
    let bad = json!({"bucket_slug": "data", "mount_path": "/data", "permission_rules": [
        {"path": "/", "mode": "ro"}, "rw", {"mode": "rw"}, {"path": 1, "mode": "x"}
    ]});
    let (s, _, b) = call(&sim, Method::POST, "/agents/mounter/mounts", Some(bad)).await;
    assert_eq!(s, 422);
    assert_eq!(
        types(&b),
        ["model_attributes_type", "missing", "string_type", "enum"]
    );
    assert_eq!(
        b["detail"][0]["loc"],
        json!(["body", "permission_rules", 1])
    );
    assert_eq!(
        b["detail"][1],
        json!({"type": "missing", "loc": ["body", "permission_rules", 2, "path"],
               "msg": "Field required", "input": {"mode": "rw"}})
    );
    assert_eq!(b["detail"][3]["msg"], "Input should be 'ro' or 'rw'");
    let (s, _, b) = call(
        &sim,
        Method::POST,
        "/agents/mounter/mounts",
        Some(json!({"bucket_slug": "data", "mount_path": "/d", "permission_rules": "ro"})),
    )
    .await;
    assert_eq!((s.as_u16(), types(&b)), (422, vec!["list_type"]));
    let (_, _, none) = call(&sim, Method::GET, "/agents/mounter/mounts", None).await;
    assert_eq!(none, json!({"mounts": []}), "nothing was created");

    // Valid rules are stored as {path, mode}; extra keys go.
    let good = json!({"bucket_slug": "data", "mount_path": "/data",
        "permission_rules": [{"path": "/", "mode": "ro", "junk": 1}]});
    let (s, _, m) = call(&sim, Method::POST, "/agents/mounter/mounts", Some(good)).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["permission_rules"], json!([{"path": "/", "mode": "ro"}]));
    let path = format!("/agents/mounter/mounts/{}", m["id"].as_str().unwrap());
    let (s, _, b) = call(
        &sim,
        Method::PATCH,
        &path,
        Some(json!({"permission_rules": [{"path": "/"}], "mount_path": "rel"})),
    )
    .await;
    assert_eq!(
        (s.as_u16(), types(&b)),
        (422, vec!["value_error", "missing"])
    );
    let (_, _, unchanged) = call(&sim, Method::GET, &path, None).await;
    assert_eq!(unchanged["permission_rules"], m["permission_rules"]);
    let (s, _, p) = call(
        &sim,
        Method::PATCH,
        &path,
        Some(json!({"permission_rules": [{"path": "/out", "mode": "rw"}]})),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        p["permission_rules"],
        json!([{"path": "/out", "mode": "rw"}])
    );
}

/// S2: bucket (and agent) slugs must be addressable.
#[tokio::test]
async fn slugs_must_be_canonical_and_non_empty() {
    let sim = sim().await;
    let post = |slug: Value, name: &str| {
        let mut body = json!({"name": name, "provider": "s3", "bucket_name": "b"});
        if !slug.is_null() {
            body["slug"] = slug;
        }
        call(&sim, Method::POST, "/buckets", Some(body))
    };
    let (s, _, b) = post(json!("Ab*"), "x").await;
    assert_eq!(
        (s.as_u16(), types(&b)),
        (422, vec!["string_pattern_mismatch"])
    );
    assert_eq!(b["detail"][0]["loc"], json!(["body", "slug"]));
    let (s, _, b) = post(json!("a".repeat(101)), "x").await;
    assert_eq!((s.as_u16(), types(&b)), (422, vec!["string_too_long"]));
    assert_eq!(b["detail"][0]["ctx"], json!({"max_length": 100}));
    let (s, _, b) = post(json!(""), "x").await;
    assert_eq!(
        (s.as_u16(), types(&b)),
        (422, vec!["string_pattern_mismatch"])
    );
    let (s, _, b) = post(Value::Null, "!!").await;
    assert_eq!((s.as_u16(), types(&b)), (422, vec!["value_error"]));
    assert_eq!(b["detail"][0]["loc"], json!(["body", "name"]));
    let (s, _, b) = post(json!("a".repeat(100)), "x").await;
    assert_eq!(s, 200, "{b}");
    let (s, _, b) = post(Value::Null, "Big Data!").await;
    assert_eq!((s.as_u16(), b["slug"].as_str()), (200, Some("big-data")));
    let (_, _, list) = call(&sim, Method::GET, "/buckets", None).await;
    assert_eq!(list["meta"]["total"], 2, "no unaddressable bucket was made");

    let (s, _, b) = call(&sim, Method::POST, "/agents", Some(json!({"name": "!!"}))).await;
    assert_eq!((s.as_u16(), types(&b)), (422, vec!["value_error"]));
}

/// S3: multipart routes answer JSON whatever the body.
#[tokio::test]
async fn multipart_errors_are_json() {
    let sim = sim().await;
    agent(&sim, json!({"name": "Coder", "source_type": "local"})).await;
    let missing_file = json!({"detail": [{"type": "missing", "loc": ["body", "file"],
        "msg": "Field required", "input": null}]});
    for path in ["/files", "/agents/coder/upload-code"] {
        for ct in [None, Some("text/plain"), Some("application/json")] {
            let (s, h, text) = raw(&sim, Method::POST, path, ct, b"x").await;
            assert_eq!(s, 422, "{path} {ct:?}");
            assert_eq!(h["content-type"], "application/json");
            assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), missing_file);
        }
        let (s, h, text) = raw(&sim, Method::POST, path, Some("multipart/form-data"), b"x").await;
        assert_eq!(
            (s.as_u16(), h["content-type"].to_str().unwrap()),
            (400, "application/json")
        );
        assert_eq!(text, r#"{"detail":"Missing boundary in multipart."}"#);
        let (s, h, text) = raw(
            &sim,
            Method::POST,
            path,
            Some("multipart/form-data; boundary=XYZ"),
            b"--XYZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\nabc",
        )
        .await;
        assert_eq!(
            (s.as_u16(), h["content-type"].to_str().unwrap()),
            (400, "application/json"),
            "{text}"
        );
        assert_eq!(text, r#"{"detail":"There was an error parsing the body"}"#);
        // A `file` part without a filename is a string, not an upload.
        let form = reqwest::multipart::Form::new().text("file", "just text");
        let r = client()
            .post(format!("{}/api/v1{path}", sim.url()))
            .bearer_auth(KEY)
            .multipart(form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        let b: Value = r.json().await.unwrap();
        assert_eq!(types(&b), ["value_error"]);
        assert_eq!(b["detail"][0]["input"], "just text");
    }
    // Validation comes before the agent lookup, as in FastAPI.
    let (s, _, _) = raw(&sim, Method::POST, "/agents/nobody/upload-code", None, b"").await;
    assert_eq!(s, 422);
    let (s, _, text) = raw(
        &sim,
        Method::POST,
        "/agents/coder/upload-code?auto_deploy=maybe",
        None,
        b"",
    )
    .await;
    let b: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (s.as_u16(), types(&b)),
        (422, vec!["bool_parsing", "missing"])
    );
}
