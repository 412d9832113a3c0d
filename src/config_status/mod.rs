//! What `GET /admin/config` shows: the active configuration with secrets
//! redacted, its version, what waits for a restart, and the last reload
//! attempt (with its error when it was refused); and the reload metrics
//! (`metrics.rs`). The state holds these and `reload/` updates them: here,
//! apart from both, so neither imports the other.

pub mod metrics;

use std::sync::{Mutex, OnceLock, PoisonError};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use crate::config::Config;
use crate::keys::clock::now_unix;
use metrics::ReloadMetrics;

/// What started a reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// `SIGHUP`.
    Signal,
    /// The watched files changed.
    Watch,
    /// `POST /admin/config/reload`.
    Admin,
}

impl Trigger {
    /// Its name in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signal => "signal",
            Self::Watch => "watch",
            Self::Admin => "admin",
        }
    }
}

/// The outcome of one reload, as the admin endpoint reports it.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    /// Unix seconds.
    pub at: i64,
    /// What started it.
    pub trigger: Trigger,
    /// Whether the new configuration now serves new requests.
    pub applied: bool,
    /// The version serving new requests after the attempt.
    pub version: u64,
    /// Why it was refused (one line naming the field), when it was.
    pub error: Option<String>,
    /// Restart-only settings the file changes, kept at their running
    /// values.
    pub pending_restart: Vec<&'static str>,
}

/// An admin request for a reload, answered with the attempt.
pub type ReloadRequest = oneshot::Sender<Attempt>;

#[derive(Debug, Default)]
struct History {
    loaded_at: i64,
    pending_restart: Vec<&'static str>,
    last: Option<Attempt>,
}

/// Reload history shared by every configuration version.
#[derive(Debug)]
pub struct ConfigStatus {
    history: Mutex<History>,
    requests: OnceLock<mpsc::Sender<ReloadRequest>>,
    metrics: ReloadMetrics,
}

impl ConfigStatus {
    /// Nothing loaded yet.
    pub fn new(metrics: ReloadMetrics) -> Self {
        Self {
            history: Mutex::new(History::default()),
            requests: OnceLock::new(),
            metrics,
        }
    }

    /// Version `version` of `config` now serves new requests.
    pub fn applied(&self, version: u64, pending_restart: Vec<&'static str>) {
        let mut history = self.lock();
        history.loaded_at = now_unix();
        history.pending_restart = pending_restart;
        self.metrics.applied(version);
    }

    /// Records the outcome of a reload.
    pub fn attempted(&self, attempt: Attempt) {
        self.metrics.attempted(attempt.applied);
        self.lock().last = Some(attempt);
    }

    /// Connects `POST /admin/config/reload` to the running reloader.
    pub fn accept_requests(&self, requests: mpsc::Sender<ReloadRequest>) {
        let _ = self.requests.set(requests);
    }

    /// The reloader's inbox, if one runs.
    pub fn requests(&self) -> Option<&mpsc::Sender<ReloadRequest>> {
        self.requests.get()
    }

    /// The last reload attempt, if any.
    pub fn last_attempt(&self) -> Option<Attempt> {
        self.lock().last.clone()
    }

    /// The `GET /admin/config` body for `config` at `version`.
    pub fn view(&self, version: u64, config: &Config) -> Value {
        let history = self.lock();
        let credentials: Vec<&str> = std::iter::once(crate::config::DEFAULT_CREDENTIAL)
            .chain(config.named_keys.keys().map(String::as_str))
            .collect();
        serde_json::json!({
            "version": version,
            "loaded_at": history.loaded_at,
            "reloadable": self.requests.get().is_some(),
            "pending_restart": history.pending_restart,
            "last_reload": history.last,
            "upstream_credentials": credentials,
            "admin_key": if config.admin_key.is_some() { "set" } else { "unset" },
            "config": redacted(config),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The configuration as JSON, safe to show: keys never appear (they are
/// not part of its serialized form), declared keys' hashes and any proxy
/// password are replaced.
pub fn redacted(config: &Config) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    if let Some(keys) = value
        .pointer_mut("/auth/keys")
        .and_then(Value::as_array_mut)
    {
        for key in keys {
            if let Some(hash) = key.get_mut("sha256") {
                *hash = Value::from("redacted");
            }
        }
    }
    if let Some(proxy) = &config.upstream.proxy {
        let mut shown = proxy.clone();
        if shown.password().is_some() {
            let _ = shown.set_password(Some("redacted"));
        }
        if let Some(slot) = value.pointer_mut("/upstream/proxy") {
            *slot = Value::from(shown.as_str());
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Secret;

    #[test]
    fn the_view_names_credentials_but_shows_no_secret() {
        let mut config = Config {
            upstream_key: Some(Secret::new("cast_upstream_secret".into())),
            admin_key: Some(Secret::new("admin-secret-0123456789abcdef".into())),
            ..Config::default()
        };
        config
            .named_keys
            .insert("team-b".into(), Secret::new("cast_team_b_secret".into()));
        config.upstream.proxy = Some("http://user:hunter2@proxy.internal:3128".parse().unwrap());
        config.auth.keys = toml::from_str::<crate::config::AuthConfig>(
            "[[keys]]\nid = \"3f9a1c0d2b7e\"\nname = \"ci\"\nrole = \"read\"\nsha256 = \"ab12\"\n",
        )
        .unwrap()
        .keys;
        let status = ConfigStatus::new(ReloadMetrics::default());
        let text = status.view(1, &config).to_string();
        for secret in [
            "cast_upstream_secret",
            "admin-secret",
            "cast_team_b_secret",
            "hunter2",
            "ab12",
        ] {
            assert!(!text.contains(secret), "{secret} shown in {text}");
        }
        assert!(text.contains("team-b"));
        assert!(text.contains("proxy.internal"));
        assert!(text.contains("\"admin_key\":\"set\""));
    }
}
