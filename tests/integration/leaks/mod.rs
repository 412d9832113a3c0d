//! No leaks (issue #4): every upstream route and every error path, through
//! the real binary in keys mode with debug JSON logs and the access log on,
//! with a canary upstream key. The canary must appear in no response byte,
//! log line, metric or admin page; a local key's secret only in the one
//! answer that issued it; secret values sent upstream in no log line and no
//! response; and the upstream must see the canary and never a local key.

mod harness;
mod tour;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::support::{header, seen, sim_with};

use harness::*;
use tour::tour;

/// The upstream key: distinctive, so that any copy of it is found.
pub const CANARY: &str = "cast_CANARY_9f8e7d6c5b4a_upstream";
/// The gateway's admin key (`CASTARI_GATEWAY_ADMIN_KEY`).
pub const ADMIN_KEY: &str = "admin_CANARY_5e4d3c2b1a09_gatewayadmin";
/// A secret value clients send upstream (agent secret, bucket credentials).
pub const SECRET_VALUE: &str = "SECRETVALUE_CANARY_7781";
/// `server.max_body_bytes` of this gateway.
pub const MAX_BODY: usize = 64 * 1024;

// ---------------------------------------------------------------------------

#[tokio::test]
async fn no_secret_reaches_a_response_a_log_line_a_metric_or_an_admin_page() {
    let started = Instant::now();
    let sim = sim_with(|s| s.api_keys = vec![CANARY.to_string()]).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let db = dir.path().join("keys.db");
    std::fs::write(&config, config_text(&sim.url(), &db)).unwrap();
    let gw = GatewayProc::start(&config).await;
    let mut t = Recorder {
        base: format!("http://{}", gw.addr),
        sim: sim.url(),
        log: Vec::new(),
        issued: Vec::new(),
    };
    use Method as M;

    // --- Local keys, through the admin API.
    let ops = t.create_key(json!({"name": "ops", "role": "admin"})).await;
    let reader = t.create_key(json!({"name": "dash", "role": "read"})).await;
    let bot = t
        .create_key(json!({
            "name": "bot", "role": "invoke", "agents": ["demo-*"],
            "rate": "3/min", "budget_usd": "0.0002/day"
        }))
        .await;
    let ci = t
        .create_key(json!({"name": "ci", "role": "deploy", "agents": ["demo-*"]}))
        .await;
    let brief = t
        .create_key(json!({"name": "brief", "role": "read", "expires": "2s"}))
        .await;
    let brief_issued = Instant::now();
    let long = t
        .create_key(json!({"name": "long", "role": "read", "expires": "30d"}))
        .await;
    let doomed = t
        .create_key(json!({"name": "doomed", "role": "read"}))
        .await;

    // --- Agents the error paths use.
    for slug in ["demo-a", "prod-x"] {
        t.ok(
            &ops,
            M::POST,
            "/api/v1/agents",
            Some(json!({"name": slug, "slug": slug, "source_type": "git", "git_repo_url": "https://example.invalid/r"})),
        )
        .await;
        t.ok(
            &ops,
            M::POST,
            &format!("/api/v1/agents/{slug}/deploy"),
            None,
        )
        .await;
    }
    for key in [&brief, &long, &doomed, &reader] {
        t.ok(key, M::GET, "/api/v1/usage", None).await;
    }

    // --- Every route of the reference (§7), as the admin-role key.
    tour(&mut t, &ops).await;

    // --- Secret values: they go upstream, never into a log or an answer.
    t.ok(
        &ops,
        M::POST,
        "/api/v1/agents/demo-a/secrets",
        Some(json!({"key": "OPENAI_API_KEY", "value": SECRET_VALUE})),
    )
    .await;
    t.ok(&ops, M::GET, "/api/v1/agents/demo-a/secrets", None)
        .await;
    t.ok(
        &ops,
        M::POST,
        "/api/v1/buckets",
        Some(json!({"name": "Leak", "slug": "leak-b", "provider": "s3", "bucket_name": "leak", "region": "us-east-1"})),
    )
    .await;
    t.ok(
        &ops,
        M::POST,
        "/api/v1/buckets/leak-b/credentials",
        Some(json!({"access_key_id": "AKIALEAKTEST", "secret_access_key": SECRET_VALUE})),
    )
    .await;

    // --- 401: no key, forged keys, the upstream and admin keys as client keys.
    t.call("nobody", None, M::GET, "/api/v1/agents", None).await;
    let forged = format!("{}0", &ops.token[..ops.token.len() - 1]);
    let forged = if forged == ops.token {
        format!("{}1", &ops.token[..ops.token.len() - 1])
    } else {
        forged
    };
    t.call("forged ops", Some(&forged), M::GET, "/api/v1/usage", None)
        .await;
    t.call(
        "unknown id",
        Some("cgw_nosuchkey_0123456789abcdef0123456789abcdef"),
        M::GET,
        "/api/v1/agents",
        None,
    )
    .await;
    t.call("garbage", Some("not-a-key"), M::GET, "/api/v1/agents", None)
        .await;
    t.call("the canary", Some(CANARY), M::GET, "/api/v1/auth/me", None)
        .await;
    t.call(
        "the admin key",
        Some(ADMIN_KEY),
        M::POST,
        "/api/v1/agents/demo-a/secrets",
        Some(json!({"key": "K", "value": SECRET_VALUE})),
    )
    .await;
    let (status, _) = t
        .call(
            "forged ops",
            Some(&forged),
            M::POST,
            "/api/v1/buckets/leak-b/credentials",
            Some(json!({"secret_access_key": SECRET_VALUE})),
        )
        .await;
    assert_eq!(status, 401);

    // --- 401: revoked.
    let path = format!("/admin/keys/{}", doomed.id);
    let (status, _) = t
        .call("admin key", Some(ADMIN_KEY), M::DELETE, &path, None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = t.with(&doomed, M::GET, "/api/v1/agents", None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("key_revoked")));

    // --- Rotation: without grace the old secret is refused at once; with
    // grace both work.
    let reader2 = t.rotate(&reader, 0).await;
    let (status, _) = t.with(&reader, M::GET, "/api/v1/usage", None).await;
    assert_eq!(status, 401, "the pre-rotation secret");
    t.ok(&reader2, M::GET, "/api/v1/usage/daily", None).await;
    let ci2 = t.rotate(&ci, 3600).await;
    t.ok(&ci, M::GET, "/api/v1/agents/demo-a", None).await;
    t.ok(&ci2, M::GET, "/api/v1/agents/demo-a/sessions", None)
        .await;

    // --- 403: role, agent scope, admin-only routes.
    let denials = [
        (&reader2, M::POST, "/api/v1/agents/demo-a/invoke"),
        (&reader2, M::DELETE, "/api/v1/agents/demo-a"),
        (&bot, M::GET, "/api/v1/agents/prod-x"),
        (&bot, M::POST, "/api/v1/agents/prod-x/invoke"),
        (&bot, M::POST, "/api/v1/agents/demo-a/deploy"),
        (&ci2, M::POST, "/api/v1/agents/demo-a/invoke"),
        (&reader2, M::GET, "/api/v1/api-keys"),
        (&bot, M::POST, "/api/v1/api-keys"),
        (&ci2, M::DELETE, "/api/v1/auth/api-key"),
        (&bot, M::POST, "/api/v1/sandbox/sbx_1/access"),
    ];
    for (key, method, path) in denials {
        let (status, body) = t
            .with(key, method.clone(), path, Some(json!({"prompt": "x"})))
            .await;
        assert_eq!(status, 403, "{method} {path} as {}: {body}", key.name);
    }
    // A scoped create must name an allowed slug; a scoped list is filtered.
    let (status, _) = t
        .with(
            &ci2,
            M::POST,
            "/api/v1/agents",
            Some(json!({"name": "y", "slug": "prod-y", "source_type": "git"})),
        )
        .await;
    assert_eq!(status, 403);
    let list = t.ok(&ci2, M::GET, "/api/v1/agents", None).await;
    assert!(!list.to_string().contains("prod-x"), "{list}");

    // --- 402 then 429: the bot's budget (0.0002/day; a run costs 0.000171
    // and a run is refused once the spent sum reaches the budget, so the
    // third trips it), then its own rate (3/min). The denials above spent
    // none of its rate.
    let mut bot_statuses = Vec::new();
    for _ in 0..5 {
        let (status, _) = t
            .with(
                &bot,
                M::POST,
                "/api/v1/agents/demo-a/invoke",
                Some(json!({"prompt": "hi"})),
            )
            .await;
        bot_statuses.push(status);
        if status == 429 {
            break;
        }
    }
    assert!(
        bot_statuses.contains(&402) && bot_statuses.contains(&429),
        "{bot_statuses:?}"
    );

    // --- 400, 404, 405, 408, 413: refused by the gateway itself.
    let bearer = format!("Authorization: Bearer {}\r\n", ops.token);
    let status = t
        .raw(
            "dot segments",
            format!("GET /api/v1/agents/%2e%2e/api-keys HTTP/1.1\r\nHost: gw\r\n{bearer}Connection: close\r\n\r\n").as_bytes(),
        )
        .await;
    assert_eq!(status, 400);
    t.raw(
        "absolute form",
        format!("GET http://evil.example/api/v1/agents HTTP/1.1\r\nHost: evil.example\r\n{bearer}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    t.raw(
        "bad content-length",
        format!("POST /api/v1/agents HTTP/1.1\r\nHost: gw\r\n{bearer}Content-Length: abc\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    t.raw(
        "stalled body",
        format!("POST /api/v1/agents/demo-a/secrets HTTP/1.1\r\nHost: gw\r\n{bearer}Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"key\":\"K\",\"value\":\"{SECRET_VALUE}").as_bytes(),
    )
    .await;
    t.with(&ops, M::GET, "/api/v1/agents/a%2Fb", None).await;
    t.with(&ops, M::GET, "/api/v2/agents", None).await;
    t.with(&ops, M::GET, "/nope", None).await;
    t.call("nobody", None, M::GET, "/admin/nope", None).await;
    t.call("nobody", None, M::POST, "/healthz", None).await;
    let big = format!(
        "{{\"key\":\"K\",\"value\":\"{}\"}}",
        SECRET_VALUE.repeat(MAX_BODY / SECRET_VALUE.len() + 10)
    );
    let request = t
        .req(M::POST, "/api/v1/agents/demo-a/secrets", Some(&ops.token))
        .header("content-type", "application/json")
        .body(big.clone());
    let (status, _) = t.record("413 declared".into(), request).await;
    assert_eq!(status, 413);
    let chunks = futures_util::stream::iter(
        big.into_bytes()
            .chunks(4096)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let request = t
        .req(M::POST, "/api/v1/agents/demo-a/secrets", Some(&ops.token))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks));
    t.record("413 chunked".into(), request).await;

    // --- Upstream failures, from the simulator's fault knobs.
    t.faults(json!({"fail_next": 1, "error_statuses": [503]}))
        .await;
    t.with(
        &ops,
        M::GET,
        "/api/v1/agents/demo-a/invocations?limit=3",
        None,
    )
    .await;
    t.faults(json!({"fail_next": 1, "error_statuses": [500]}))
        .await;
    t.with(
        &ops,
        M::POST,
        "/api/v1/agents/demo-a/invoke",
        Some(json!({"prompt": "fault"})),
    )
    .await;
    t.faults(json!({"fail_next": 1, "error_statuses": [502]}))
        .await;
    let request = t
        .req(M::GET, "/api/v1/auth/me", Some(&ops.token))
        .header("cache-control", "no-cache");
    t.record("GET /api/v1/auth/me no-cache, upstream 502".into(), request)
        .await;
    t.faults(json!({"fail_next": 1, "error_statuses": [429]}))
        .await;
    t.with(&ops, M::GET, "/api/v1/usage/daily?days=4", None)
        .await;
    t.faults(json!({"drop_next": 1})).await;
    t.with(&ops, M::GET, "/api/v1/usage/daily?days=2", None)
        .await;
    t.faults(json!({"latency_ms": 1500, "path_prefix": "/api/v1/buckets"}))
        .await;
    let (status, _) = t
        .with(&ops, M::POST, "/api/v1/buckets/leak-b/test", None)
        .await;
    assert_eq!(status, 504, "crud_timeout_ms is 1000");
    t.faults(json!({"stall_next": 1, "stall_ms": 1500})).await;
    t.with(&ops, M::GET, "/api/v1/files/file_nope/download", None)
        .await;
    t.faults(json!({})).await;

    // --- The admin API refused, and misused.
    for (who, token) in [
        ("nobody", None),
        ("dash (read)", Some(reader2.token.as_str())),
        ("forged ops", Some(forged.as_str())),
        ("the canary", Some(CANARY)),
    ] {
        let (status, _) = t.call(who, token, M::GET, "/admin/keys", None).await;
        assert_eq!(status, 401, "GET /admin/keys as {who}");
    }
    t.call("nobody", None, M::GET, "/admin/usage", None).await;
    t.call(
        "nobody",
        None,
        M::POST,
        "/admin/keys",
        Some(json!({"name": "x", "role": "admin"})),
    )
    .await;
    let path = format!("/admin/keys/{}/rotate", ops.id);
    t.with(&bot, M::POST, &path, None).await;
    let path = format!("/admin/keys/{}", ops.id);
    t.with(&reader2, M::DELETE, &path, None).await;
    for bad in [
        json!({"name": "x", "role": "superuser"}),
        json!({"name": "", "role": "read"}),
        json!({"name": "x", "role": "read", "upstream": "nope"}),
        json!({"name": "x", "role": "read", "expires": "soon"}),
        json!({"name": "x", "role": "read", "agents": ["bad glob ["]}),
        json!({"name": "x", "role": "read", "budget_usd": "lots"}),
        json!({"name": "x", "role": "read", "colour": "red"}),
    ] {
        let (status, _) = t
            .call(
                "admin key",
                Some(ADMIN_KEY),
                M::POST,
                "/admin/keys",
                Some(bad.clone()),
            )
            .await;
        assert_eq!(status, 422, "{bad}");
    }
    let request = t
        .req(M::POST, "/admin/keys", Some(ADMIN_KEY))
        .header("content-type", "application/json")
        .body("{not json");
    t.record("POST /admin/keys broken JSON".into(), request)
        .await;
    t.call(
        "admin key",
        Some(ADMIN_KEY),
        M::POST,
        "/admin/keys/nosuchkey/rotate",
        None,
    )
    .await;
    t.call(
        "admin key",
        Some(ADMIN_KEY),
        M::DELETE,
        "/admin/keys/nosuchkey",
        None,
    )
    .await;
    t.call(
        "admin key",
        Some(ADMIN_KEY),
        M::GET,
        "/admin/usage?format=xml",
        None,
    )
    .await;
    t.with(&ops, M::GET, "/admin/keys", None).await;
    let path = format!("/admin/usage?key={}", bot.id);
    t.with(&ops, M::GET, &path, None).await;
    t.call("nobody", None, M::GET, "/admin/queue?upstream=nope", None)
        .await;
    t.call(
        "nobody",
        None,
        M::DELETE,
        "/admin/cache?prefix=/api/v1/agents/demo-tour",
        None,
    )
    .await;

    // --- 401: expired.
    let wait = Duration::from_millis(2_200).saturating_sub(brief_issued.elapsed());
    tokio::time::sleep(wait).await;
    let (status, body) = t.with(&brief, M::GET, "/api/v1/usage", None).await;
    assert_eq!((status, body["code"].as_str()), (401, Some("key_expired")));
    t.ok(&long, M::GET, "/api/v1/usage", None).await;

    // --- What the upstream saw, then an unreachable upstream.
    let upstream_seen = seen(&sim).await;
    sim.shutdown().await;
    t.with(&ops, M::POST, "/api/v1/agents/demo-a/files/sync", None)
        .await;
    t.with(
        &ops,
        M::GET,
        "/api/v1/agents/demo-a/invocations?limit=9",
        None,
    )
    .await;

    // --- A reload: its answer, its log line and the config page it
    // updates are pages like the others.
    let (status, _) = t
        .call("nobody", None, M::POST, "/admin/config/reload", None)
        .await;
    assert_eq!(status, 200, "the same file reloads");

    // --- The gateway's own pages, last, so they show everything above.
    let mut pages = Vec::new();
    for (who, token, path) in [
        ("nobody", None, "/metrics"),
        ("nobody", None, "/readyz"),
        ("nobody", None, "/healthz"),
        ("nobody", None, "/admin/cache"),
        ("nobody", None, "/admin/queue"),
        ("admin key", Some(ADMIN_KEY), "/admin/keys"),
        ("admin key", Some(ADMIN_KEY), "/admin/usage"),
        ("admin key", Some(ADMIN_KEY), "/admin/usage?format=csv"),
        (
            "admin key",
            Some(ADMIN_KEY),
            "/admin/usage?days=1&format=json",
        ),
        ("nobody", None, "/admin/config"),
    ] {
        let (status, _) = t.call(who, token, M::GET, path, None).await;
        pages.push((path, status, t.log.len() - 1));
    }
    let (code, logs) = gw.stop().await;
    let elapsed = started.elapsed();

    // =======================================================================
    // Sanity: the test really exercised the gateway.
    let statuses: Vec<u16> = t.log.iter().map(|e| e.status).collect();
    let broken: Vec<&str> = (t.log.iter())
        .filter(|e| e.status == 0)
        .map(|e| e.label.as_str())
        .collect();
    assert!(broken.is_empty(), "no HTTP answer for: {broken:?}");
    assert!(t.log.len() >= 70, "only {} exchanges", t.log.len());
    for wanted in [400, 401, 402, 403, 404, 405, 408, 413, 422, 429, 502, 504] {
        assert!(statuses.contains(&wanted), "no {wanted} among the answers");
    }
    assert!(count(&statuses, |s| s >= 500) >= 4, "{statuses:?}");
    assert!(count(&statuses, |s| (200..300).contains(&s)) >= 50);
    for (path, status, _) in &pages {
        // `/readyz` may say 503 now: the upstream is gone.
        if *path != "/readyz" {
            assert_eq!(*status, 200, "{path}");
        }
    }
    let metrics = &t.log[pages[0].2];
    assert!(
        find(&metrics.body, b"castari_gateway_requests_total").is_some(),
        "metrics page"
    );
    let keys_page = &t.log[pages[5].2];
    assert!(
        find(&keys_page.body, bot.id.as_bytes()).is_some(),
        "keys page"
    );
    let config_page = &t.log[pages[pages.len() - 1].2];
    assert!(
        find(&config_page.body, b"\"version\":2").is_some(),
        "config page"
    );
    let usage_page = &t.log[pages[6].2];
    assert!(
        find(&usage_page.body, bot.id.as_bytes()).is_some(),
        "usage page"
    );
    assert_eq!(code, Some(0), "graceful exit after SIGTERM");
    assert!(logs.len() >= 50, "only {} log lines", logs.len());
    let access = logs
        .iter()
        .filter(|l| l.contains("\"target\":\"access\""))
        .count();
    assert!(access >= 70, "only {access} access lines");
    // The access line's cache field is the X-Cache the client saw.
    for cache in ["HIT", "MISS"] {
        let field = format!("\"cache\":\"{cache}\"");
        assert!(
            logs.iter()
                .any(|l| l.contains("\"target\":\"access\"") && l.contains(&field)),
            "no access line with {field}"
        );
    }
    assert!(
        logs.iter().any(|l| l.contains("\"level\":\"DEBUG\"")),
        "debug logging is on"
    );
    assert!(
        upstream_seen.len() >= 60,
        "upstream saw {}",
        upstream_seen.len()
    );

    // =======================================================================
    // No leaks.
    let mut needles: Vec<(String, &str, Option<usize>)> = vec![
        ("the upstream key".into(), CANARY, None),
        ("the admin key".into(), ADMIN_KEY, None),
        ("a secret value".into(), SECRET_VALUE, None),
    ];
    for issued in &t.issued {
        needles.push((
            format!("the secret of local key {}", issued.name),
            &issued.secret,
            Some(issued.exchange),
        ));
    }
    let mut leaks = Vec::new();
    for (i, exchange) in t.log.iter().enumerate() {
        for (what, needle, allowed) in &needles {
            if *allowed == Some(i) {
                continue;
            }
            for (part, bytes) in [
                ("headers", exchange.head.as_bytes()),
                ("body", &exchange.body),
            ] {
                if let Some(at) = find(bytes, needle.as_bytes()) {
                    leaks.push(format!(
                        "{what} in the {part} of answer #{i} ({}, {}): …{}…",
                        exchange.label,
                        exchange.status,
                        excerpt(bytes, at, needle.len())
                    ));
                }
            }
        }
    }
    for (n, line) in logs.iter().enumerate() {
        for (what, needle, _) in &needles {
            if let Some(at) = find(line.as_bytes(), needle.as_bytes()) {
                leaks.push(format!(
                    "{what} in log line {n}: …{}…",
                    excerpt(line.as_bytes(), at, needle.len())
                ));
            }
        }
    }
    // Each issuing answer does show its token (the check above is not blind).
    for issued in &t.issued {
        let answer = &t.log[issued.exchange];
        assert!(find(&answer.body, issued.secret.as_bytes()).is_some());
    }

    // The upstream saw the canary on every request, and no local credential.
    let bearer = format!("Bearer {CANARY}");
    for (n, request) in upstream_seen.iter().enumerate() {
        let at = format!(
            "upstream request #{n} ({} {})",
            request.method, request.path
        );
        if header(request, "authorization") != Some(bearer.as_str()) {
            leaks.push(format!("{at}: Authorization is not the upstream key"));
        }
        for (name, value) in &request.headers {
            if name.eq_ignore_ascii_case("x-api-key") || name.eq_ignore_ascii_case("cookie") {
                leaks.push(format!(
                    "{at}: a client credential header {name} went upstream"
                ));
            }
            if value.contains("cgw_") || value.contains(ADMIN_KEY) {
                leaks.push(format!("{at}: a local credential in header {name}"));
            }
            for issued in &t.issued {
                if value.contains(&issued.secret) {
                    leaks.push(format!(
                        "{at}: the secret of {} in header {name}",
                        issued.name
                    ));
                }
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "{} leak(s):\n{}",
        leaks.len(),
        leaks
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "leaks: {} answers, {} log lines ({access} access), {} upstream requests, {} secrets tracked, {:.1} s",
        t.log.len(),
        logs.len(),
        upstream_seen.len(),
        t.issued.len(),
        elapsed.as_secs_f64()
    );
}
