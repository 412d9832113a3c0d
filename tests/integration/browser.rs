//! The operator page in a real browser (issue #18): Debian's headless
//! Chromium driven over WebDriver (chromedriver, with `fantoccini`),
//! against the real gateway and the simulator. `scripts/test` installs
//! both when missing; without them these tests fail with the command to
//! run, never skip.
//!
//! Screenshots go to `target/tmp/browser/` (`CARGO_TARGET_TMPDIR`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::keys::{get, Broker, ADMIN_KEY};
use crate::support::*;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long any one step may take to show on the page. Generous: the
/// whole suite runs beside Chromium on two cores, and a step that is
/// ready returns at once.
const STEP: Duration = Duration::from_secs(30);

/// A chromedriver on a loopback port and one headless Chromium session.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Self {
        for path in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: the browser tests need Debian's Chromium. Install with:\n  \
                 sudo apt-get install -y --no-install-recommends chromium chromium-driver\n\
                 (bash scripts/test does it when run as root)"
            );
        }
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let capabilities = capabilities.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector)
                .capabilities(capabilities.clone())
                .connect(&url)
                .await
            {
                Ok(client) => break client,
                Err(error) if Instant::now() < deadline => {
                    let _ = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("chromedriver did not start a session: {error}"),
            }
        };
        Self {
            client,
            driver,
            _profile: profile,
        }
    }

    /// Runs `script` (a function body) and returns its value.
    async fn js(&self, script: &str) -> Value {
        match self.client.execute(script, Vec::new()).await {
            Ok(value) => value,
            Err(error) => panic!("the browser could not run `{script}`: {error}"),
        }
    }

    /// Waits until `script` returns `true`.
    async fn until(&self, within: Duration, what: &str, script: &str) {
        let deadline = Instant::now() + within;
        loop {
            if self.js(script).await == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let body = self.js("return document.body.innerText").await;
                panic!(
                    "timed out waiting for {what}; the page shows:\n{}",
                    body.as_str().unwrap_or("")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Clicks the element at `selector`. A click the browser cannot make
    /// yet (the element re-drawn, covered or still opening) is tried again
    /// until `STEP` has passed.
    async fn click(&self, selector: &str) {
        let deadline = Instant::now() + STEP;
        loop {
            let error = match self.client.find(Locator::Css(selector)).await {
                Ok(element) => match element.click().await {
                    Ok(_) => return,
                    Err(error) => error,
                },
                Err(error) => error,
            };
            if Instant::now() > deadline {
                panic!("could not click {selector}: {error}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types `key` into the login form and submits it.
    async fn log_in(&self, key: &str) {
        let field = self
            .client
            .find(Locator::Css("#login-key"))
            .await
            .expect("the login form's key field");
        field
            .send_keys(key)
            .await
            .expect("typing into the login form");
        self.click("#login-submit").await;
    }

    /// The page's text at `selector`, trimmed.
    async fn text(&self, selector: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent.trim() : null",
            json!(selector)
        );
        self.js(&script)
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Browser console entries at level SEVERE since the last call.
    async fn console_errors(&self) -> Vec<String> {
        let logs = self
            .client
            .issue_cmd(BrowserLog)
            .await
            .expect("reading the browser's console log");
        logs.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter(|e| e["level"] == "SEVERE")
                    .map(|e| e["message"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Saves a screenshot at `width` px (tall enough for the whole page)
    /// as `name`.png; returns its path.
    async fn screenshot(&self, width: u32, name: &str) -> PathBuf {
        self.client.set_window_size(width, 900).await.unwrap();
        let height = self
            .js("return document.documentElement.scrollHeight")
            .await;
        let height = height.as_u64().unwrap_or(900).clamp(900, 4000) as u32;
        self.client.set_window_size(width, height).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let fits = self
            .js("return document.documentElement.scrollWidth <= window.innerWidth")
            .await;
        assert_eq!(
            fits,
            Value::Bool(true),
            "the page scrolls sideways at {width} px"
        );
        let png = self.client.screenshot().await.unwrap();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Asserts that none of `secrets` is in the DOM, the URL, storage or
    /// the cookies scripts can read.
    async fn assert_nothing_leaks(&self, secrets: &[&str]) {
        let seen = self
            .js(
                "return [document.documentElement.outerHTML, location.href, \
                 JSON.stringify(Object.entries(localStorage)), \
                 JSON.stringify(Object.entries(sessionStorage)), document.cookie, \
                 Array.from(document.querySelectorAll('input')).map(i => i.value).join(' ')]",
            )
            .await;
        let seen = seen.to_string();
        for secret in secrets {
            assert!(!seen.contains(secret), "a secret reached the page");
        }
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver's `POST /session/{id}/goog/cdp/execute`: one DevTools
/// command (here, emulating the dark color scheme).
#[derive(Debug)]
struct Cdp(Value);

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!(
            "session/{}/goog/cdp/execute",
            session.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.0.to_string()))
    }
}

/// chromedriver's `POST /session/{id}/se/log` for the browser console.
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": "browser" }).to_string()),
        )
    }
}

#[tokio::test]
async fn the_page_shows_live_budget_and_queue_in_a_real_browser() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.shaper.invoke_limit = "1/3s".parse().unwrap();
        c.shaper.safety_margin_ms = 0;
    })
    .await;
    let slug = create_agent(&gw, "Browsed").await;
    deploy_agent(&gw, &slug).await;
    let browser = Browser::start().await;
    browser.client.goto(&gw.url("/")).await.unwrap();
    browser
        .until(
            STEP,
            "the stream",
            "return document.getElementById('conn').textContent === 'live'",
        )
        .await;
    let crud = r#"[data-lane="default/crud"] .used"#;
    browser
        .until(
            STEP,
            "the CRUD figure",
            &format!(
                "return /^\\d+$/.test(document.querySelector({}).textContent)",
                json!(crud)
            ),
        )
        .await;
    assert_eq!(
        browser.text(r#"[data-lane="default/crud"] .limit"#).await,
        "10000"
    );
    let before: u64 = browser.text(crud).await.parse().unwrap();
    for _ in 0..5 {
        let sent = client()
            .get(gw.url("/api/v1/agents"))
            .header("cache-control", "no-store")
            .send()
            .await
            .unwrap();
        assert_eq!(sent.status(), 200);
    }
    browser
        .until(
            STEP,
            "the CRUD figure to count the sends",
            &format!(
                "return Number(document.querySelector({}).textContent) >= {}",
                json!(crud),
                before + 5
            ),
        )
        .await;
    assert!(
        browser
            .text("#recent-body")
            .await
            .contains("/api/v1/agents"),
        "the request table shows the sends"
    );

    // Three invocations on a 1/3s budget: two wait, in order, then leave.
    let url = gw.url(&format!("/api/v1/agents/{slug}/invoke"));
    let invokes: Vec<_> = (0..3u64)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100 * i)).await;
                client()
                    .post(url)
                    .json(&json!({"prompt": "hi"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    browser
        .until(
            STEP,
            "two waiters",
            "return document.querySelectorAll('#queue-body tr').length === 2",
        )
        .await;
    let positions = browser
        .js("return Array.from(document.querySelectorAll('#queue-body tr')).map(r => r.cells[0].textContent.trim())")
        .await;
    assert_eq!(positions, json!(["1", "2"]));
    assert!(browser.text("#queue-body").await.contains(&slug));
    let wide = browser.screenshot(1280, "page-1280").await;
    let narrow = browser.screenshot(390, "page-390").await;
    let dark = json!({
        "cmd": "Emulation.setEmulatedMedia",
        "params": { "features": [{ "name": "prefers-color-scheme", "value": "dark" }] },
    });
    browser.client.issue_cmd(Cdp(dark)).await.unwrap();
    let background = browser
        .js("return getComputedStyle(document.body).backgroundColor")
        .await;
    let dark_shot = browser.screenshot(390, "page-390-dark").await;
    assert_ne!(
        background,
        json!("rgb(255, 255, 255)"),
        "dark scheme applied"
    );
    browser.client.set_window_size(1280, 900).await.unwrap();
    browser
        .until(
            STEP,
            "the waiters to leave",
            "return document.querySelectorAll('#queue-body tr').length === 0",
        )
        .await;
    for invoke in invokes {
        assert_eq!(invoke.await.unwrap(), 200);
    }
    assert!(
        browser.text("#events").await.contains("left")
            || browser.text("#events").await.contains("leave"),
        "the events log shows the waiters leaving: {}",
        browser.text("#events").await
    );
    browser.assert_nothing_leaks(&[UPSTREAM_KEY]).await;
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors: {errors:?}");
    keyboard_reaches_an_action_and_its_confirm_step(&browser).await;
    assert!(seen(&sim).await.iter().all(|r| !r.path.contains("reload")));
    println!(
        "screenshots: {} {} {}",
        wide.display(),
        narrow.display(),
        dark_shot.display()
    );
    browser.close().await;
}

/// Tab reaches `Reload config…`, Enter opens its confirm step, Escape
/// closes it without sending.
async fn keyboard_reaches_an_action_and_its_confirm_step(browser: &Browser) {
    browser
        .js("document.activeElement.blur(); window.scrollTo(0, 0)")
        .await;
    let body = browser.client.find(Locator::Css("body")).await.unwrap();
    let mut reached = false;
    for _ in 0..40 {
        body.send_keys("\u{E004}").await.unwrap(); // Tab
        if browser.js("return document.activeElement.id").await == json!("reload") {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab never reached the reload button");
    let focused = browser.client.active_element().await.unwrap();
    focused.send_keys("\u{E007}").await.unwrap(); // Enter
    browser
        .until(
            STEP,
            "the confirm step",
            "return document.getElementById('confirm').open",
        )
        .await;
    let confirm = browser.client.active_element().await.unwrap();
    confirm.send_keys("\u{E00C}").await.unwrap(); // Escape
    browser
        .until(
            STEP,
            "the confirm step to close",
            "return !document.getElementById('confirm').open",
        )
        .await;
}

#[tokio::test]
async fn keys_mode_login_an_action_and_logout_in_a_real_browser() {
    let sim = sim().await;
    let broker = Broker::start(&sim.url(), |_| {}).await;
    let gw = &broker.gw;
    let (token, info) = broker
        .create(json!({"name": "ci-bot", "role": "invoke", "budget_usd": "20/month"}))
        .await;
    let id = info["id"].as_str().unwrap().to_string();
    let browser = Browser::start().await;
    browser.client.goto(&gw.url("/")).await.unwrap();
    browser
        .until(
            STEP,
            "the login form",
            "return !document.getElementById('login').hidden",
        )
        .await;
    assert!(
        browser
            .js("return document.getElementById('dashboard').hidden")
            .await
            == Value::Bool(true)
    );
    let errors = browser.console_errors().await;
    assert!(errors.is_empty(), "console errors on load: {errors:?}");
    let shot = browser.screenshot(390, "login-390").await;

    // A wrong key: the form says so.
    browser.log_in("not-the-key").await;
    browser
        .until(
            STEP,
            "the login error",
            "return document.getElementById('login-error').textContent.length > 0",
        )
        .await;
    assert!(browser
        .text("#login-error")
        .await
        .contains("not the admin key"));
    // The failed login's 401 is the only console error.
    let errors = browser.console_errors().await;
    assert!(
        errors
            .iter()
            .all(|e| e.contains("/ui/login") && e.contains("401")),
        "{errors:?}"
    );

    // The admin key: in, and the key is gone from the form at once.
    browser.log_in(ADMIN_KEY).await;
    browser
        .until(
            STEP,
            "the dashboard",
            "return document.getElementById('conn').textContent === 'live'",
        )
        .await;
    browser
        .assert_nothing_leaks(&[ADMIN_KEY, UPSTREAM_KEY, &token])
        .await;
    let row = format!(r#"tr[data-key-id="{id}"]"#);
    browser
        .until(
            STEP,
            "the key's row",
            &format!("return !!document.querySelector({})", json!(row)),
        )
        .await;
    assert!(browser.text(&row).await.contains("ci-bot"));
    let wide = browser.screenshot(1280, "keys-1280").await;

    // Revoke, through the confirm step.
    assert_eq!(get(gw, &token, "/api/v1/agents").await.0, 200);
    browser.click(&format!("{row} button.revoke")).await;
    browser
        .until(
            STEP,
            "the confirm step",
            "return document.getElementById('confirm').open",
        )
        .await;
    assert!(browser.text("#confirm").await.contains("ci-bot"));
    assert_eq!(
        get(gw, &token, "/api/v1/agents").await.0,
        200,
        "nothing before the confirm"
    );
    browser.click("#confirm-ok").await;
    browser
        .until(
            STEP,
            "the outcome",
            // "Working…" shows while the request is out; wait for its answer.
            "return document.getElementById('action-result').textContent.startsWith('Revoked key')",
        )
        .await;
    assert_eq!(
        get(gw, &token, "/api/v1/agents").await.0,
        401,
        "revoked from the page"
    );

    // Logout: the session is over for the browser.
    browser.click("#logout").await;
    browser
        .until(
            STEP,
            "the login form again",
            "return !document.getElementById('login').hidden",
        )
        .await;
    let session = browser
        .js("return fetch('/ui/session').then(r => r.json())")
        .await;
    assert_eq!(session["authenticated"], false);
    let stream = browser
        .js("return fetch('/admin/snapshot').then(r => r.status)")
        .await;
    assert_eq!(stream, 401);
    browser
        .assert_nothing_leaks(&[ADMIN_KEY, UPSTREAM_KEY, &token])
        .await;
    println!("screenshots: {} {}", shot.display(), wide.display());
    browser.close().await;
}
