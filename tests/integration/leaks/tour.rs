//! Every route of the API reference, for the no-leak test.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::client;

use super::harness::*;
use super::*;

/// Every route of the API reference (§7), legacy and audit-only ones and
/// an unknown one included, as `key` (admin role).
pub async fn tour(t: &mut Recorder, key: &Key) {
    use Method as M;
    let s = |v: &Value, k: &str| {
        v[k].as_str()
            .unwrap_or_else(|| panic!("no {k} in {v}"))
            .to_string()
    };

    // 7.1 Account and API keys.
    t.ok(key, M::GET, "/api/v1/auth/me", None).await;
    let created = t
        .ok(
            key,
            M::POST,
            "/api/v1/api-keys",
            Some(json!({"name": "ci"})),
        )
        .await;
    t.ok(key, M::GET, "/api/v1/api-keys", None).await;
    let path = format!("/api/v1/api-keys/{}", s(&created["api_key"], "id"));
    t.ok(key, M::DELETE, &path, None).await;
    t.ok(key, M::POST, "/api/v1/auth/api-key", None).await;
    // The legacy revoke of the key in use would revoke the gateway's own:
    // refused in every mode (`credentials.rs`), and its answer is checked
    // for leaks like every other.
    let (status, _) = t.with(key, M::DELETE, "/api/v1/auth/api-key", None).await;
    assert_eq!(status, 403);
    t.with(key, M::GET, "/api/v1/auth/device", None).await;

    // 7.2 Agents, deploy and invoke.
    let agent = t
        .ok(key, M::POST, "/api/v1/agents", Some(json!({"name": "Demo Tour", "slug": "demo-tour", "source_type": "git", "git_repo_url": "https://example.invalid/r"})))
        .await;
    let a = format!("/api/v1/agents/{}", s(&agent, "slug"));
    t.ok(key, M::GET, "/api/v1/agents?limit=10&offset=0", None)
        .await;
    t.ok(key, M::GET, &a, None).await;
    t.ok(
        key,
        M::PATCH,
        &a,
        Some(json!({"description": "tour", "timeout_seconds": 300})),
    )
    .await;
    t.ok(key, M::POST, &format!("{a}/deploy"), None).await;
    t.ok(key, M::POST, &format!("{a}/redeploy"), None).await;
    let tarball = reqwest::multipart::Part::bytes(vec![0x1f, 0x8b, 8, 0, 0, 0])
        .file_name("code.tar.gz")
        .mime_str("application/gzip")
        .unwrap();
    let path = format!("{a}/upload-code?auto_deploy=true");
    let request = t
        .req(M::POST, &path, Some(&key.token))
        .multipart(reqwest::multipart::Form::new().part("file", tarball));
    t.record(format!("POST {path} as {}", key.name), request)
        .await;
    t.ok(
        key,
        M::POST,
        &format!("{a}/invoke"),
        Some(json!({"prompt": "hello", "session_id": "sess-tour"})),
    )
    .await;
    // The same, with the key in X-API-Key and a cookie holding it too.
    let path = format!("{a}/invoke");
    let request = t
        .req(M::POST, &path, None)
        .header("x-api-key", &key.token)
        .header("cookie", format!("session={}", key.token))
        .json(&json!({"prompt": "again"}));
    t.record(format!("POST {path} with X-API-Key"), request)
        .await;
    t.with(
        key,
        M::POST,
        &format!("{a}/stream"),
        Some(json!({"prompt": "s"})),
    )
    .await;

    // 7.3 Secrets, sessions, invocation history.
    t.ok(
        key,
        M::POST,
        &format!("{a}/secrets"),
        Some(json!({"key": "TOUR_SECRET", "value": SECRET_VALUE})),
    )
    .await;
    t.ok(key, M::GET, &format!("{a}/secrets"), None).await;
    t.ok(key, M::DELETE, &format!("{a}/secrets/TOUR_SECRET"), None)
        .await;
    t.ok(key, M::GET, &format!("{a}/sessions"), None).await;
    t.ok(
        key,
        M::GET,
        &format!("{a}/invocations?status=completed&limit=5&offset=0"),
        None,
    )
    .await;
    t.ok(key, M::DELETE, &format!("{a}/sessions/sess-tour"), None)
        .await;
    t.with(key, M::GET, "/api/v1/invocations/inv_1", None).await;

    // 7.4 Usage.
    t.ok(key, M::GET, "/api/v1/usage?days=7", None).await;
    t.ok(key, M::GET, "/api/v1/usage/daily?days=7", None).await;

    // 7.5 Buckets, 7.6 mounts.
    let bucket = t
        .ok(key, M::POST, "/api/v1/buckets", Some(json!({"name": "Data", "slug": "data", "provider": "s3", "bucket_name": "my-data", "region": "us-east-1"})))
        .await;
    let b = format!("/api/v1/buckets/{}", s(&bucket, "slug"));
    t.ok(key, M::GET, "/api/v1/buckets?limit=20&offset=0", None)
        .await;
    t.ok(key, M::GET, &b, None).await;
    t.ok(key, M::PATCH, &b, Some(json!({"region": "eu-west-1"})))
        .await;
    t.ok(
        key,
        M::POST,
        &format!("{b}/credentials"),
        Some(json!({"access_key_id": "AKIATOUR", "secret_access_key": SECRET_VALUE})),
    )
    .await;
    t.ok(key, M::POST, &format!("{b}/test"), None).await;
    for kind in ["upload-url", "download-url"] {
        t.ok(
            key,
            M::POST,
            &format!("{b}/{kind}"),
            Some(json!({"path": "in/x.txt", "expires_in": 600})),
        )
        .await;
    }
    t.ok(key, M::GET, &format!("{b}/files?prefix=in/"), None)
        .await;
    let mount = t
        .ok(
            key,
            M::POST,
            &format!("{a}/mounts"),
            Some(json!({"bucket_slug": "data", "mount_path": "/data"})),
        )
        .await;
    let m = format!("{a}/mounts/{}", s(&mount, "id"));
    t.ok(key, M::GET, &format!("{a}/mounts"), None).await;
    t.ok(key, M::GET, &m, None).await;
    t.ok(key, M::PATCH, &m, Some(json!({"enabled": false})))
        .await;
    t.ok(key, M::POST, &format!("{a}/files/sync"), None).await;
    t.ok(key, M::DELETE, &m, None).await;
    t.ok(key, M::DELETE, &format!("{b}/credentials"), None)
        .await;
    t.ok(key, M::DELETE, &b, None).await;

    // 7.7 Managed files: direct upload, presigned flow, agent files.
    let part = reqwest::multipart::Part::bytes(b"hello file".to_vec())
        .file_name("hello.txt")
        .mime_str("text/plain")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .part("file", part)
        .text("description", "greeting")
        .text("tags", "a,b");
    let request = t
        .req(M::POST, "/api/v1/files", Some(&key.token))
        .multipart(form);
    let (status, file) = t
        .record(format!("POST /api/v1/files as {}", key.name), request)
        .await;
    assert_eq!(status, 200, "{file}");
    let file_id = s(&file, "file_id");
    let f = format!("/api/v1/files/{file_id}");
    t.ok(key, M::GET, "/api/v1/files?limit=50&offset=0", None)
        .await;
    t.ok(key, M::GET, "/api/v1/files/usage", None).await;
    t.ok(key, M::GET, &f, None).await;
    t.ok(
        key,
        M::PATCH,
        &f,
        Some(json!({"description": "hi", "tags": ["x"]})),
    )
    .await;
    t.ok(key, M::GET, &format!("{f}/download"), None).await;
    t.ok(key, M::GET, &format!("{f}/content"), None).await;
    let bytes = b"presigned bytes".to_vec();
    let presigned = t
        .ok(key, M::POST, "/api/v1/files/upload-url", Some(json!({"filename": "big.bin", "size_bytes": bytes.len(), "content_type": "application/octet-stream"})))
        .await;
    // Step 2 goes to the upload URL directly, not through the gateway.
    let mut put = client()
        .put(s(&presigned, "upload_url"))
        .body(bytes.clone());
    for (k, v) in presigned["upload_headers"].as_object().unwrap() {
        put = put.header(k, v.as_str().unwrap());
    }
    assert!(put.send().await.unwrap().status().is_success());
    let sha = {
        use sha2::Digest;
        sha2::Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    t.ok(
        key,
        M::POST,
        "/api/v1/files/confirm-upload",
        Some(json!({"file_id": s(&presigned, "file_id"), "sha256_hash": sha})),
    )
    .await;
    t.ok(
        key,
        M::POST,
        &format!("{a}/files"),
        Some(json!({"file_id": file_id})),
    )
    .await;
    t.ok(key, M::GET, &format!("{a}/files"), None).await;
    t.ok(key, M::DELETE, &format!("{a}/files/{file_id}"), None)
        .await;
    t.ok(key, M::DELETE, &f, None).await;

    // 7.8 Sandbox access (audit-only), an unknown route, a HEAD.
    t.with(
        key,
        M::POST,
        "/api/v1/sandbox/sbx_tour/access",
        Some(json!({})),
    )
    .await;
    t.with(
        key,
        M::PUT,
        "/api/v1/brand/new",
        Some(json!({"brand": "new"})),
    )
    .await;
    t.with(key, M::HEAD, "/api/v1/agents", None).await;

    // Stop (documented, SDK 0.4 form, legacy), delete.
    t.ok(key, M::DELETE, &format!("{a}/sandbox"), None).await;
    t.ok(key, M::POST, &format!("{a}/deploy"), None).await;
    t.ok(key, M::DELETE, "/api/v1/demo-tour/sandbox", None)
        .await;
    t.ok(key, M::POST, &format!("{a}/deploy"), None).await;
    t.ok(key, M::POST, &format!("{a}/stop"), None).await;
    t.ok(key, M::DELETE, &a, None).await;
    let (status, _) = t.with(key, M::GET, &a, None).await;
    assert_eq!(status, 404);
}
