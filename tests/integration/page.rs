//! The operator page's server side (issue #18) over real sockets: the
//! files and their headers, the event stream following real traffic and
//! the queue, login sessions, actions, and that no secret reaches any of
//! it. The page itself runs in a real browser in `browser.rs`.

use std::time::{Duration, Instant};

use castari_gateway::config::Config;
use serde_json::{json, Value};

use crate::keys::{get, Broker, ADMIN_KEY};
use crate::support::*;

/// An open `/admin/events` stream.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    /// Opens the stream with `request`'s auth; panics unless it is a 200
    /// event stream.
    pub async fn open(request: reqwest::RequestBuilder) -> Self {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "events refused");
        assert_eq!(
            response.headers()["content-type"],
            "text/event-stream",
            "an event stream"
        );
        assert_eq!(response.headers()["cache-control"], "no-store");
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next event (name, data), or `None` when the stream ended or
    /// `within` passed.
    pub async fn next(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(name) = line.strip_prefix("event: ") {
                        event = name.to_string();
                    } else if let Some(more) = line.strip_prefix("data: ") {
                        data.push_str(more);
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return Some((event, serde_json::from_str(&data).unwrap()));
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk()).await;
            match chunk {
                Ok(Ok(Some(bytes))) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                _ => return None,
            }
        }
    }

    /// Whether the stream ends within its next five messages (those
    /// already on their way are read first).
    pub async fn ends(&mut self) -> bool {
        for _ in 0..5 {
            if self.next(Duration::from_secs(3)).await.is_none() {
                return true;
            }
        }
        false
    }

    /// The first event within `within` that `wanted` accepts.
    pub async fn until(
        &mut self,
        within: Duration,
        mut wanted: impl FnMut(&str, &Value) -> bool,
    ) -> Option<(String, Value)> {
        let deadline = Instant::now() + within;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let (event, data) = self.next(left).await?;
            if wanted(&event, &data) {
                return Some((event, data));
            }
        }
        None
    }
}

/// The lane `name` (`crud`, `invoke`) of the default credential.
pub fn lane<'a>(snapshot: &'a Value, name: &str) -> &'a Value {
    snapshot["credentials"][0]["lanes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["lane"] == name)
        .unwrap()
}

#[tokio::test]
async fn the_page_is_compiled_in_with_a_strict_policy_and_no_data() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let mut total = 0;
    for (path, kind) in [
        ("/", "text/html"),
        ("/ui", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/favicon.svg", "image/svg+xml"),
    ] {
        let response = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers().clone();
        assert!(headers["content-type"].to_str().unwrap().starts_with(kind));
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert!(csp.contains("frame-ancestors 'none'"));
        assert_eq!(headers["x-content-type-options"], "nosniff");
        let body = response.bytes().await.unwrap();
        if path != "/ui" {
            total += body.len();
        }
    }
    assert!(total < 250 * 1024, "assets are {total} bytes");
    // Only GET; the page costs nothing upstream.
    let post = client().post(gw.url("/")).send().await.unwrap();
    assert_eq!(post.status(), 405);
    assert!(seen(&sim).await.is_empty(), "the page reached the upstream");
    // Switched off, it is gone (a reload may do it: the setting is read per request).
    let off = TestGateway::start_with(&sim.url(), |c| c.ui.enabled = false).await;
    for path in [
        "/",
        "/ui/app.js",
        "/admin/events",
        "/admin/snapshot",
        "/ui/session",
    ] {
        let response = client().get(off.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "ui_disabled");
    }
}

#[tokio::test]
async fn the_stream_follows_traffic_and_costs_nothing_upstream() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let slug = create_agent(&gw, "Watched").await;
    let mut events = Events::open(client().get(gw.url("/admin/events"))).await;
    let (event, hello) = events.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(event, "hello");
    assert_eq!(hello["history"]["step_ms"], 1000);
    assert!(hello["history"]["points"].is_array());
    let start = &hello["snapshot"];
    assert_eq!(start["mode"], "open");
    assert_eq!(start["upstream"]["breaker"], "closed");
    let used_before = lane(start, "crud")["used"].as_u64().unwrap();
    assert!(used_before >= 1, "the agent's creation is counted: {start}");
    assert_eq!(hello["snapshot"]["recent"][0]["route"], "/api/v1/agents");
    let upstream_before = seen(&sim).await.len();

    for _ in 0..3 {
        let path = format!("/api/v1/agents/{slug}/sessions");
        assert_eq!(get_status(&gw.url(&path)).await, 200);
    }
    let (_, snapshot) = events
        .until(Duration::from_secs(5), |event, data| {
            event == "snapshot" && lane(data, "crud")["used"].as_u64() >= Some(used_before + 1)
        })
        .await
        .expect("a snapshot counting the new sends");
    // The requests of the last second, newest first, by route template:
    // no slug, no query, no key.
    let routes: Vec<&str> = snapshot["recent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["route"].as_str().unwrap())
        .collect();
    assert!(
        routes.contains(&"/api/v1/agents/{slug}/sessions"),
        "{routes:?}"
    );
    assert!(snapshot["upstream"]["latency_ms"]["p50"].as_f64().is_some());
    assert!(snapshot["cache"]["hit_ratio"].as_f64().is_some());
    assert!(snapshot["point"]["lanes"].is_array());

    // Three seconds of open stream later, the upstream saw only the
    // three reads (a miss each at most), nothing of the stream's own.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let upstream_after = seen(&sim).await.len();
    assert!(
        upstream_after - upstream_before <= 3,
        "{} upstream requests for 3 reads",
        upstream_after - upstream_before
    );
    let text = snapshot.to_string();
    assert!(
        !text.contains(UPSTREAM_KEY),
        "the upstream key in a snapshot"
    );
}

#[tokio::test]
async fn queued_invocations_show_with_positions_and_leave_when_sent() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c: &mut Config| {
        c.shaper.invoke_limit = "1/2s".parse().unwrap();
        c.shaper.safety_margin_ms = 0;
    })
    .await;
    let slug = create_agent(&gw, "Queued").await;
    deploy_agent(&gw, &slug).await;
    let mut events = Events::open(client().get(gw.url("/admin/events"))).await;
    events.next(Duration::from_secs(5)).await.unwrap();
    let url = gw.url(&format!("/api/v1/agents/{slug}/invoke"));
    let invokes: Vec<_> = (0..3)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150 * i)).await;
                client()
                    .post(url)
                    .json(&json!({ "prompt": format!("hi {i}") }))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let (_, queued) = events
        .until(Duration::from_secs(5), |event, data| {
            event == "snapshot" && lane(data, "invoke")["depth"] == 2
        })
        .await
        .expect("two invocations waiting");
    let waiting = lane(&queued, "invoke")["waiting"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(waiting[0]["position"], 1);
    assert_eq!(waiting[1]["position"], 2);
    assert_eq!(waiting[0]["agent"], slug.as_str());
    assert!(waiting[0]["client"]
        .as_str()
        .unwrap()
        .starts_with("ip:127.0.0.1"));
    assert!(lane(&queued, "invoke")["next_free_ms"].as_u64().unwrap() > 0);
    let (_, left) = events
        .until(Duration::from_secs(8), |event, data| {
            event == "queue" && data["kind"] == "leave"
        })
        .await
        .expect("a leave event when a waiter was sent");
    assert_eq!(left["lane"], "invoke");
    assert!(left["waited_ms"].as_u64().unwrap() > 0);
    for invoke in invokes {
        assert_eq!(invoke.await.unwrap(), 200);
    }
    let (_, empty) = events
        .until(Duration::from_secs(5), |event, data| {
            event == "snapshot" && lane(data, "invoke")["depth"] == 0
        })
        .await
        .expect("the queue empties");
    assert!(lane(&empty, "invoke")["waiting"]
        .as_array()
        .unwrap()
        .is_empty());
}

/// A same-origin page request to `gw`.
fn from_page(gw: &TestGateway, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    request.header("origin", format!("http://{}", gw.addr))
}

/// `POST /ui/login` with `key`, from the page's origin.
async fn try_login(gw: &TestGateway, key: &str) -> reqwest::Response {
    from_page(gw, client().post(gw.url("/ui/login")))
        .json(&json!({ "key": key }))
        .send()
        .await
        .unwrap()
}

/// Logs in with `key`; the session cookie (`name=value`).
async fn login(gw: &TestGateway, key: &str) -> String {
    let response = try_login(gw, key).await;
    assert_eq!(response.status(), 204, "login");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Max-Age=28800"), "{cookie}");
    assert!(cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains(key), "the key in the cookie");
    cookie.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn keys_mode_needs_a_login_whose_session_is_a_strict_http_only_cookie() {
    let sim = sim().await;
    let broker = Broker::start(&sim.url(), |_| {}).await;
    let gw = &broker.gw;
    let (token, info) = broker.create(json!({"name": "ci", "role": "invoke"})).await;
    let id = info["id"].as_str().unwrap().to_string();

    for path in ["/admin/events", "/admin/snapshot"] {
        let refused = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["code"], "login_required");
    }
    let session = get_json(&gw.url("/ui/session")).await;
    assert_eq!(session["login_required"], true);
    assert_eq!(session["authenticated"], false);
    assert_eq!(session["mode"], "keys");

    // A wrong key, a non-admin key and a cross-site form are refused.
    for key in ["wrong", token.as_str()] {
        let response = try_login(gw, key).await;
        assert_eq!(response.status(), 401);
        assert!(response.headers().get("set-cookie").is_none());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "login_failed");
    }
    let cross = client()
        .post(gw.url("/ui/login"))
        .header("origin", "http://evil.example")
        .json(&json!({ "key": ADMIN_KEY }))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status(), 403);

    let cookie = login(gw, ADMIN_KEY).await;
    let with_cookie = |request: reqwest::RequestBuilder| request.header("cookie", cookie.clone());
    let snapshot = with_cookie(client().get(gw.url("/admin/snapshot")))
        .send()
        .await
        .unwrap();
    assert_eq!(snapshot.status(), 200);
    assert_eq!(snapshot.headers()["cache-control"], "no-store");
    let text = snapshot.text().await.unwrap();
    for secret in [ADMIN_KEY, UPSTREAM_KEY, token.as_str()] {
        assert!(!text.contains(secret), "a secret in the snapshot");
    }
    let snapshot: Value = serde_json::from_str(&text).unwrap();
    let keys = snapshot["keys"].as_array().unwrap();
    assert!(keys
        .iter()
        .any(|k| k["id"] == id.as_str() && k["today"]["cost_usd"] == "0"));
    let session = with_cookie(client().get(gw.url("/ui/session")))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(session["authenticated"], true);

    // An action needs the page's origin as well as the session.
    let revoke =
        |request: reqwest::RequestBuilder| with_cookie(request).json(&json!({ "id": id })).send();
    let forged = revoke(client().post(gw.url("/ui/actions/revoke")))
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "no Origin: refused");
    let forged = revoke(
        client()
            .post(gw.url("/ui/actions/revoke"))
            .header("origin", "http://evil.example"),
    )
    .await
    .unwrap();
    assert_eq!(forged.status(), 403, "another origin: refused");
    assert_eq!(
        get(gw, &token, "/api/v1/agents").await.0,
        200,
        "still valid"
    );
    let done = revoke(from_page(gw, client().post(gw.url("/ui/actions/revoke"))))
        .await
        .unwrap();
    assert_eq!(done.status(), 200);
    let body: Value = done.json().await.unwrap();
    assert_eq!(body["revoked"]["id"], id.as_str());
    assert_eq!(
        get(gw, &token, "/api/v1/agents").await.0,
        401,
        "revoked at once"
    );

    // Logout ends the session for good, the cookie replayed too.
    let out = from_page(gw, with_cookie(client().post(gw.url("/ui/logout"))))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let replayed = with_cookie(client().get(gw.url("/admin/snapshot")))
        .send()
        .await
        .unwrap();
    assert_eq!(replayed.status(), 401);
    // The admin key as a bearer works for scripts, without a session.
    let scripted = client()
        .get(gw.url("/admin/snapshot"))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(scripted.status(), 200);
}

#[tokio::test]
async fn logins_are_rate_limited_per_address() {
    let sim = sim().await;
    let broker = Broker::start(&sim.url(), |_| {}).await;
    let gw = &broker.gw;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let response = try_login(gw, "guess").await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["code"], "login_rate_limited");
        }
    }
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(&statuses[10..], &[429, 429]);
    // Even the right key waits now.
    let right = try_login(gw, ADMIN_KEY).await;
    assert_eq!(right.status(), 429);
}

#[tokio::test]
async fn an_admin_role_keys_session_and_stream_end_when_it_is_revoked() {
    let sim = sim().await;
    let broker = Broker::start(&sim.url(), |_| {}).await;
    let gw = &broker.gw;
    let (token, info) = broker.create(json!({"name": "ops", "role": "admin"})).await;
    let cookie = login(gw, &token).await;
    // One stream on the session, one with the key as a bearer (a script).
    let mut by_session = Events::open(
        client()
            .get(gw.url("/admin/events"))
            .header("cookie", cookie.clone()),
    )
    .await;
    let mut by_bearer =
        Events::open(client().get(gw.url("/admin/events")).bearer_auth(&token)).await;
    for events in [&mut by_session, &mut by_bearer] {
        assert_eq!(
            events.next(Duration::from_secs(5)).await.unwrap().0,
            "hello"
        );
        assert!(
            events.next(Duration::from_secs(3)).await.is_some(),
            "snapshots flow"
        );
    }
    let id = info["id"].as_str().unwrap();
    let revoked = broker
        .admin(reqwest::Method::DELETE, &format!("/admin/keys/{id}"))
        .await;
    assert_eq!(revoked.status(), 200);
    // Each stream ends at its next message; the cookie opens nothing more.
    for (name, events) in [("session", &mut by_session), ("bearer", &mut by_bearer)] {
        assert!(
            events.ends().await,
            "the {name} stream went on after the key was revoked"
        );
    }
    let after = client()
        .get(gw.url("/admin/snapshot"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}

#[tokio::test]
async fn a_reload_that_changes_the_admin_key_ends_its_sessions_open_streams() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("admin.key");
    std::fs::write(&key_file, ADMIN_KEY).unwrap();
    let file = dir.path().join("gateway.toml");
    let toml = format!(
        "[auth]\nmode = \"keys\"\ndb_path = {:?}\nadmin_key_file = {:?}\n",
        dir.path().join("keys.db").display().to_string(),
        key_file.display().to_string()
    );
    std::fs::write(&file, toml).unwrap();
    let env = [("CASTARI_API_KEY", UPSTREAM_KEY)];
    let gw = TestGateway::start_from_file(&sim.url(), &file, &env).await;
    let cookie = login(&gw, ADMIN_KEY).await;
    let mut events = Events::open(
        client()
            .get(gw.url("/admin/events"))
            .header("cookie", cookie.clone()),
    )
    .await;
    assert_eq!(
        events.next(Duration::from_secs(5)).await.unwrap().0,
        "hello"
    );
    assert!(
        events.next(Duration::from_secs(3)).await.is_some(),
        "snapshots flow"
    );

    std::fs::write(&key_file, "a-new-admin-key-0123456789abcdef").unwrap();
    let reload = client()
        .post(gw.url("/admin/config/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 200, "{}", reload.text().await.unwrap());
    // The stream opened under the old key ends; the cookie opens nothing.
    assert!(
        events.ends().await,
        "the stream went on under the replaced admin key"
    );
    let after = client()
        .get(gw.url("/admin/events"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}

#[tokio::test]
async fn open_mode_answers_loopback_hosts_only_and_actions_need_the_origin() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    // A DNS-rebound name pointing at 127.0.0.1 is not this page's origin.
    let rebound = client()
        .get(gw.url("/admin/snapshot"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), 401);
    let session = client()
        .get(gw.url("/ui/session"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(session["login_required"], false);
    assert_eq!(session["can_login"], false);
    // Purge: a cross-site form is refused, the page's own request works.
    let forged = client()
        .post(gw.url("/ui/actions/purge"))
        .header("origin", "http://evil.example")
        .json(&json!({ "prefix": "" }))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["code"], "cross_origin");
    let purged = from_page(&gw, client().post(gw.url("/ui/actions/purge")))
        .json(&json!({ "prefix": "/api/v1/agents" }))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    // Reload: this gateway was not started from a file.
    let reload = from_page(&gw, client().post(gw.url("/ui/actions/reload")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 409);
    let body: Value = reload.json().await.unwrap();
    assert_eq!(body["code"], "reload_unavailable");
}

#[tokio::test]
async fn open_streams_end_at_shutdown_without_holding_the_drain() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.server.shutdown_grace_ms = 20_000).await;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut events = Events::open(client().get(gw.url("/admin/events"))).await;
        events.next(Duration::from_secs(5)).await.unwrap();
        streams.push(events);
    }
    let started = Instant::now();
    gw.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited {:?} for the streams",
        started.elapsed()
    );
    // Each ends after what was already on its way.
    for mut events in streams {
        assert!(events.ends().await, "a stream went on after shutdown");
    }
}
