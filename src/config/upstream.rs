//! `[upstream]`: where requests go, with which key, and how long they may take.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The real Castari API.
pub const DEFAULT_URL: &str = "https://api.castari.com";
/// Connecting should be fast; a slow connect means the upstream is unreachable.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 5_000;
/// CRUD routes answer in well under a second; 30 s is the SDK's own patience.
pub const DEFAULT_CRUD_TIMEOUT_MS: u64 = 30_000;
/// Deploys clone and `npm install`; uploads carry tarballs: 10 minutes.
pub const DEFAULT_LONG_TIMEOUT_MS: u64 = 600_000;
/// Agents may run 600 s (`timeout_seconds` max) plus a margin.
pub const DEFAULT_INVOKE_TIMEOUT_MS: u64 = 660_000;
/// Downloads have no total limit, only a limit on silence.
pub const DEFAULT_DOWNLOAD_IDLE_TIMEOUT_MS: u64 = 60_000;
/// Idle upstream connections are kept this long for reuse.
pub const DEFAULT_POOL_IDLE_TIMEOUT_MS: u64 = 90_000;
/// Idle upstream connections kept per host.
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;

/// Upstream settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Base URL of the Castari API (scheme, host, optional port).
    pub url: url::Url,
    /// A file holding the upstream API key (Docker or Kubernetes secret).
    /// `CASTARI_API_KEY` in the environment wins over it.
    pub api_key_file: Option<PathBuf>,
    /// An explicit proxy for upstream traffic: `http://` or `https://` (a
    /// `CONNECT` tunnel) or `socks5://`; a `user:password` in the URL is
    /// sent to the proxy. System proxy variables (`HTTPS_PROXY`, ...) are
    /// never read.
    pub proxy: Option<url::Url>,
    /// TCP + TLS connect deadline.
    pub connect_timeout_ms: u64,
    /// Time to response headers for ordinary routes.
    pub crud_timeout_ms: u64,
    /// Time to response headers for deploy, redeploy and uploads.
    pub long_timeout_ms: u64,
    /// Time to response headers for invocations.
    pub invoke_timeout_ms: u64,
    /// Longest silence while streaming a download (or any response body).
    pub download_idle_timeout_ms: u64,
    /// How long an idle pooled connection is kept.
    pub pool_idle_timeout_ms: u64,
    /// Most idle pooled connections kept.
    pub pool_max_idle: usize,
    /// Further upstream credentials by name, for local keys bound to them
    /// (`[upstream.credentials.team-a]`). The credential named `default` is
    /// always `CASTARI_API_KEY` or `api_key_file`.
    pub credentials: BTreeMap<String, CredentialSource>,
}

/// Where a named upstream credential's key is read from: exactly one of
/// an environment variable or a file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialSource {
    /// The environment variable holding the key.
    pub key_env: Option<String>,
    /// A file holding the key (Docker or Kubernetes secret).
    pub key_file: Option<PathBuf>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: default_url(),
            api_key_file: None,
            proxy: None,
            connect_timeout_ms: DEFAULT_CONNECT_TIMEOUT_MS,
            crud_timeout_ms: DEFAULT_CRUD_TIMEOUT_MS,
            long_timeout_ms: DEFAULT_LONG_TIMEOUT_MS,
            invoke_timeout_ms: DEFAULT_INVOKE_TIMEOUT_MS,
            download_idle_timeout_ms: DEFAULT_DOWNLOAD_IDLE_TIMEOUT_MS,
            pool_idle_timeout_ms: DEFAULT_POOL_IDLE_TIMEOUT_MS,
            pool_max_idle: DEFAULT_POOL_MAX_IDLE,
            credentials: BTreeMap::new(),
        }
    }
}

#[allow(clippy::expect_used)]
fn default_url() -> url::Url {
    url::Url::parse(DEFAULT_URL).expect("the default upstream URL is valid")
}
