//! Every route of the reference, through the gateway, in one realistic tour.
//! For each step: the client gets the simulator's answer, and the simulator
//! saw exactly the method, path and query the client sent, with the upstream
//! key and never the client's.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::*;

struct Tour {
    gw: TestGateway,
    sim: castari_sim::Simulator,
    steps: usize,
}

impl Tour {
    /// Sends one request through the gateway and checks what both sides saw.
    async fn step(
        &mut self,
        method: Method,
        path_and_query: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = client()
            .request(
                method.clone(),
                self.gw.url(&format!("/api/v1{path_and_query}")),
            )
            .bearer_auth(LOCAL_KEY);
        if method == Method::GET {
            // Every step must reach the upstream: a read right after the
            // write that returned it would otherwise be answered from the
            // cache (a create writes its agent through).
            request = request.header("cache-control", "no-cache");
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(
            !text.contains(UPSTREAM_KEY),
            "{path_and_query}: key in a response"
        );
        self.check_seen(&method, path_and_query).await;
        let value = serde_json::from_str(&text).unwrap_or(Value::Null);
        assert!(
            status.is_success() || status.is_redirection(),
            "{method} {path_and_query}: {status} {text}"
        );
        (status, value)
    }

    /// Sends a multipart request through the gateway.
    async fn multipart(&mut self, path_and_query: &str, form: reqwest::multipart::Form) -> Value {
        let response = client()
            .post(self.gw.url(&format!("/api/v1{path_and_query}")))
            .multipart(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(
            status.is_success(),
            "POST {path_and_query}: {status} {text}"
        );
        self.check_seen(&Method::POST, path_and_query).await;
        serde_json::from_str(&text).unwrap()
    }

    async fn check_seen(&mut self, method: &Method, path_and_query: &str) {
        self.steps += 1;
        let seen = seen(&self.sim).await;
        assert_eq!(
            seen.len(),
            self.steps,
            "one upstream request per step ({path_and_query})"
        );
        let last = seen.last().unwrap();
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        assert_eq!(last.method, method.as_str());
        assert_eq!(last.path, format!("/api/v1{path}"));
        assert_eq!(last.query.as_deref(), query);
        assert_eq!(
            header(last, "authorization"),
            Some(&*format!("Bearer {UPSTREAM_KEY}"))
        );
    }
}

fn s(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .to_string()
}

#[tokio::test]
async fn every_reference_route_passes_through() {
    let sim = sim().await;
    // The credential routes are part of the tour: open mode refuses them
    // by default (`credentials.rs`), and the legacy revoke of the key in
    // use comes last, since the simulator then refuses the gateway's key.
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.auth.open_mode_credential_routes = true;
        c.auth.allow_revoking_gateway_key = true;
    })
    .await;
    let mut t = Tour { gw, sim, steps: 0 };

    // Account and API keys.
    t.step(Method::GET, "/auth/me", None).await;
    let (_, created) = t
        .step(Method::POST, "/api-keys", Some(json!({"name": "ci"})))
        .await;
    let (_, keys) = t.step(Method::GET, "/api-keys", None).await;
    assert!(keys["api_keys"].is_array());
    t.step(
        Method::DELETE,
        &format!("/api-keys/{}", s(&created["api_key"], "id")),
        None,
    )
    .await;
    t.step(Method::POST, "/auth/api-key", None).await;

    // Agents, deploy, invoke.
    let (_, agent) = t
        .step(Method::POST, "/agents", Some(json!({"name": "Route Tour", "source_type": "git", "git_repo_url": "https://example.invalid/r"})))
        .await;
    assert_eq!(agent["status"], "draft");
    let slug = s(&agent, "slug");
    let a = format!("/agents/{slug}");
    let (_, list) = t.step(Method::GET, "/agents?limit=10&offset=0", None).await;
    assert_eq!(list["meta"]["limit"], 10);
    t.step(Method::GET, &a, None).await;
    t.step(
        Method::PATCH,
        &a,
        Some(json!({"description": "tour", "timeout_seconds": 300})),
    )
    .await;
    let (_, deployed) = t.step(Method::POST, &format!("{a}/deploy"), None).await;
    assert_eq!(deployed["status"], "active");
    t.step(Method::POST, &format!("{a}/redeploy"), None).await;
    let tarball = reqwest::multipart::Part::bytes(vec![0x1f, 0x8b, 8, 0, 0, 0])
        .file_name("code.tar.gz")
        .mime_str("application/gzip")
        .unwrap();
    let uploaded = t
        .multipart(
            &format!("{a}/upload-code?auto_deploy=true"),
            reqwest::multipart::Form::new().part("file", tarball),
        )
        .await;
    assert!(uploaded["source_hash"].is_string());
    let (_, inv) = t
        .step(
            Method::POST,
            &format!("{a}/invoke"),
            Some(json!({"prompt": "hello", "session_id": "sess-tour"})),
        )
        .await;
    assert_eq!(inv["session_id"], "sess-tour");
    assert_eq!(inv["status"], "completed");

    // Secrets, sessions, history, usage.
    t.step(
        Method::POST,
        &format!("{a}/secrets"),
        Some(json!({"key": "OPENAI_API_KEY", "value": "sk-secret"})),
    )
    .await;
    let (_, secrets) = t.step(Method::GET, &format!("{a}/secrets"), None).await;
    assert!(
        !secrets.to_string().contains("sk-secret"),
        "values never returned"
    );
    t.step(Method::DELETE, &format!("{a}/secrets/OPENAI_API_KEY"), None)
        .await;
    let (_, sessions) = t.step(Method::GET, &format!("{a}/sessions"), None).await;
    assert!(sessions["sessions"].is_array());
    t.step(
        Method::GET,
        &format!("{a}/invocations?status=completed&limit=5&offset=0"),
        None,
    )
    .await;
    t.step(Method::DELETE, &format!("{a}/sessions/sess-tour"), None)
        .await;
    t.step(Method::GET, "/usage?days=7", None).await;
    t.step(Method::GET, "/usage/daily?days=7", None).await;

    // Buckets and mounts.
    let (_, bucket) = t
        .step(Method::POST, "/buckets", Some(json!({"name": "Data", "slug": "data", "provider": "s3", "bucket_name": "my-data", "region": "us-east-1"})))
        .await;
    let b = format!("/buckets/{}", s(&bucket, "slug"));
    t.step(Method::GET, "/buckets?limit=20&offset=0", None)
        .await;
    t.step(Method::GET, &b, None).await;
    t.step(Method::PATCH, &b, Some(json!({"region": "eu-west-1"})))
        .await;
    t.step(
        Method::POST,
        &format!("{b}/credentials"),
        Some(json!({"access_key_id": "AKIA", "secret_access_key": "shh"})),
    )
    .await;
    t.step(Method::POST, &format!("{b}/test"), None).await;
    t.step(
        Method::POST,
        &format!("{b}/upload-url"),
        Some(json!({"path": "in/x.txt", "expires_in": 600})),
    )
    .await;
    t.step(
        Method::POST,
        &format!("{b}/download-url"),
        Some(json!({"path": "in/x.txt", "expires_in": 600})),
    )
    .await;
    t.step(Method::GET, &format!("{b}/files?prefix=in/"), None)
        .await;
    let (_, mount) = t
        .step(
            Method::POST,
            &format!("{a}/mounts"),
            Some(json!({"bucket_slug": "data", "mount_path": "/data"})),
        )
        .await;
    let m = format!("{a}/mounts/{}", s(&mount, "id"));
    t.step(Method::GET, &format!("{a}/mounts"), None).await;
    t.step(Method::GET, &m, None).await;
    t.step(Method::PATCH, &m, Some(json!({"enabled": false})))
        .await;
    t.step(Method::POST, &format!("{a}/files/sync"), None).await;
    t.step(Method::DELETE, &m, None).await;
    t.step(Method::DELETE, &format!("{b}/credentials"), None)
        .await;
    t.step(Method::DELETE, &b, None).await;

    // Managed files: direct upload, presigned flow, agent files.
    let part = reqwest::multipart::Part::bytes(b"hello file".to_vec())
        .file_name("hello.txt")
        .mime_str("text/plain")
        .unwrap();
    let form = reqwest::multipart::Form::new()
        .part("file", part)
        .text("description", "greeting")
        .text("tags", "a,b");
    let file = t.multipart("/files", form).await;
    let f = format!("/files/{}", s(&file, "file_id"));
    t.step(Method::GET, "/files?limit=50&offset=0", None).await;
    t.step(Method::GET, "/files/usage", None).await;
    t.step(Method::GET, &f, None).await;
    t.step(
        Method::PATCH,
        &f,
        Some(json!({"description": "hi", "tags": ["x"]})),
    )
    .await;
    let download = client()
        .get(t.gw.url(&format!("/api/v1{f}/download")))
        .send()
        .await
        .unwrap();
    t.check_seen(&Method::GET, &format!("{f}/download")).await;
    assert_eq!(download.status(), 200);
    assert_eq!(download.headers()["content-length"], "10");
    assert!(download.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(download.bytes().await.unwrap(), &b"hello file"[..]);
    let (status, _) = t.step(Method::GET, &format!("{f}/content"), None).await;
    assert!(
        status.is_redirection(),
        "redirect passed through, not followed"
    );

    let bytes = b"presigned bytes".to_vec();
    let (_, presigned) = t
        .step(Method::POST, "/files/upload-url", Some(json!({"filename": "big.bin", "size_bytes": bytes.len(), "content_type": "application/octet-stream"})))
        .await;
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
    let (_, confirmed) = t
        .step(
            Method::POST,
            "/files/confirm-upload",
            Some(json!({"file_id": s(&presigned, "file_id"), "sha256_hash": sha})),
        )
        .await;
    assert_eq!(confirmed["upload_status"], "confirmed");

    let (_, attached) = t
        .step(
            Method::POST,
            &format!("{a}/files"),
            Some(json!({"file_id": s(&file, "file_id")})),
        )
        .await;
    assert!(attached["mount_path"].is_string());
    t.step(Method::GET, &format!("{a}/files"), None).await;
    t.step(
        Method::DELETE,
        &format!("{a}/files/{}", s(&file, "file_id")),
        None,
    )
    .await;
    t.step(Method::DELETE, &f, None).await;

    // Stop (documented and legacy), delete.
    let (_, stopped) = t.step(Method::DELETE, &format!("{a}/sandbox"), None).await;
    assert_eq!(stopped["status"], "stopped");
    t.step(Method::POST, &format!("{a}/deploy"), None).await;
    t.step(Method::POST, &format!("{a}/stop"), None).await;
    let (status, _) = t.step(Method::DELETE, &a, None).await;
    assert_eq!(status, 204);
    let gone = client()
        .get(t.gw.url(&format!("/api/v1{a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    t.check_seen(&Method::GET, &a).await;

    // Last: the legacy revoke of the key in use (allowed here), after
    // which the upstream no longer takes the gateway's key.
    t.step(Method::DELETE, "/auth/api-key", None).await;
}
