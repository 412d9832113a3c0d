//! The app (`build_app`), in process, with a stand-in upstream
//! (`Hop::service`) that records what reaches it.

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use castari_gateway::app::App;
use castari_gateway::build_app;
use castari_gateway::config::{AuthMode, Config, DeclaredKey};
use castari_gateway::keys::broker::Broker;
use castari_gateway::keys::model::Role;
use castari_gateway::keys::token;
use castari_gateway::shaper::Shaper;
use castari_gateway::state::AppState;
use castari_gateway::types::Secret;
use castari_gateway::upstream::{Hop, HopError, UpstreamClient};
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// The admin key of the test gateways.
pub(crate) const ADMIN: &str = "parsers-admin-key-0123456789abcdef";
/// A local key declared in the config, with the admin role.
pub(crate) const TOKEN: &str =
    "cgw_decl1_00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// `shaper.replay_max_bytes` of the test gateways.
pub(crate) const INVOKE_REPLAY_MAX: u64 = 64 << 10;
/// The largest `/admin/keys` body (`routes/keys.rs`).
pub(crate) const ADMIN_MAX_BODY: usize = 16 << 10;
/// The longest path and query the gateway forwards (`routes/proxy.rs`):
/// longer is 414 `uri_too_long`.
pub(crate) const MAX_TARGET_BYTES: usize = 16 << 10;

/// What reached the stand-in upstream.
#[derive(Clone, Debug)]
pub(crate) struct Sent {
    pub(crate) uri: String,
    pub(crate) body: Bytes,
    /// Session turns in flight while it was sent.
    pub(crate) sessions: usize,
}

/// One gateway: a runtime, the app, what its upstream saw.
pub(crate) struct Gateway {
    pub(crate) rt: tokio::runtime::Runtime,
    app: App,
    pub(crate) state: AppState,
    sent: Arc<Mutex<Vec<Sent>>>,
    _dir: tempfile::TempDir,
}

/// A config for the test gateways: no cache (every request reaches the
/// stand-in), budgets that never wait, small invocation bodies; in keys
/// mode, one declared key (`TOKEN`).
fn test_config(keys: bool, dir: &Path) -> Config {
    let mut config = Config {
        upstream_key: Some(Secret::new("cast_parsers".to_string())),
        admin_key: Some(Secret::new(ADMIN.to_string())),
        ..Config::default()
    };
    config.cache.enabled = false;
    config.telemetry.access_log = false;
    config.shaper.crud_limit = "100000/1s".parse().unwrap();
    config.shaper.invoke_limit = "100000/1s".parse().unwrap();
    config.shaper.replay_max_bytes = INVOKE_REPLAY_MAX;
    config.retry.base_delay_ms = 1;
    if keys {
        config.auth.mode = Some(AuthMode::Keys);
        config.auth.db_path = Some(dir.join("keys.db"));
        config.auth.keys = vec![DeclaredKey {
            id: "decl1".to_string(),
            name: "parsers".to_string(),
            sha256: token::hex(&token::hash(TOKEN)),
            role: Role::Admin,
            agents: Vec::new(),
            rate: None,
            budget_usd: None,
            upstream: None,
            expires_at: None,
        }];
    }
    config
}

/// The shaper of `state`'s default credential.
fn shaper_of(state: &AppState) -> Option<Shaper> {
    state.credentials.default_credential().shaper().cloned()
}

impl Gateway {
    /// Open mode, or keys mode with the declared key `TOKEN`.
    pub(crate) fn new(keys: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = test_config(keys, dir.path()).validate().unwrap();
        Self::with_config(config, dir)
    }

    /// A gateway on a validated `config`.
    pub(crate) fn with_config(config: Config, dir: tempfile::TempDir) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
        let cell: Arc<OnceLock<AppState>> = Arc::default();
        let (log, seen_by) = (sent.clone(), cell.clone());
        let hop = Hop::service(move |request: http::Request<Body>| {
            let (log, seen_by) = (log.clone(), seen_by.clone());
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.map(|c| c.to_bytes());
                let body = body.map_err(|e| HopError::Exchange(Box::new(e)))?;
                let sessions = seen_by
                    .get()
                    .and_then(shaper_of)
                    .map_or(0, |s| s.sessions().active());
                log.lock().unwrap().push(Sent {
                    uri: parts.uri.to_string(),
                    body,
                    sessions,
                });
                let mut response = http::Response::new(Body::from(r#"{"ok":true}"#));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Ok(response)
            }
        });
        let state = rt.block_on(async {
            let upstream = UpstreamClient::with_hop(&config.upstream, hop);
            let broker = Broker::open(&config, None).unwrap();
            AppState::new(config, upstream, broker, None)
        });
        cell.set(state.clone()).ok();
        let app = build_app(state.clone());
        Self {
            rt,
            app,
            state,
            sent,
            _dir: dir,
        }
    }

    /// Sends `request`; `Err` when no whole answer comes within 10 s.
    pub(crate) fn send(&self, request: http::Request<Body>) -> Result<Answer, String> {
        self.send_within(request, Duration::from_secs(10))
    }

    /// Sends `request`; `Err` when no whole answer comes within `wait`.
    pub(crate) fn send_within(
        &self,
        request: http::Request<Body>,
        wait: Duration,
    ) -> Result<Answer, String> {
        self.sent.lock().unwrap().clear();
        let app = self.app.clone();
        self.rt.block_on(async move {
            let response = tokio::time::timeout(wait, app.oneshot(request))
                .await
                .map_err(|_| format!("no answer within {wait:?}"))?
                .unwrap_or_else(|never| match never {});
            let (parts, body) = response.into_parts();
            let body = tokio::time::timeout(wait, body.collect())
                .await
                .map_err(|_| format!("the answer's body did not end within {wait:?}"))?
                .map_err(|e| format!("the answer's body failed: {e}"))?
                .to_bytes();
            Ok(Answer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        })
    }

    /// What reached the upstream during the last `send`.
    pub(crate) fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }

    /// The shaper of the default credential.
    pub(crate) fn shaper(&self) -> Shaper {
        shaper_of(&self.state).expect("the default credential has a shaper")
    }

    /// Sessions with a turn in flight or waiting.
    pub(crate) fn sessions_active(&self) -> usize {
        shaper_of(&self.state).map_or(0, |s| s.sessions().active())
    }
}

/// A whole answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    /// The `code` of a Castari-shaped error body.
    pub(crate) fn code(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("code")?.as_str().map(String::from))
            .unwrap_or_default()
    }

    /// Its `detail`, or "".
    pub(crate) fn detail(&self) -> String {
        self.json()["detail"].as_str().unwrap_or("").to_string()
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }
}

pub(crate) fn request(method: Method, uri: &str, body: impl Into<Body>) -> http::Request<Body> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .unwrap()
}

/// `request` with `Authorization: Bearer <key>`.
pub(crate) fn with_bearer(mut request: http::Request<Body>, key: &str) -> http::Request<Body> {
    request.headers_mut().insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
    );
    request
}

/// A JSON `POST` to `uri` with the admin key.
pub(crate) fn admin_request(uri: &str, body: &[u8]) -> http::Request<Body> {
    let mut admin = with_bearer(
        request(Method::POST, uri, Bytes::copy_from_slice(body)),
        ADMIN,
    );
    admin.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    admin
}
