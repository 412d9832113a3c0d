//! Configuration: one struct per section, loaded in three steps.
//!
//! 1. the TOML file (`--config`, else `CASTARI_GATEWAY_CONFIG`, else none:
//!    every key has a default);
//! 2. environment overrides (`CASTARI_GATEWAY_LISTEN`, `CASTARI_UPSTREAM_URL`,
//!    `CASTARI_API_KEY`, `CASTARI_GATEWAY_AUTH_MODE`,
//!    `CASTARI_GATEWAY_ALLOW_OPEN_ON_NETWORK`, `CASTARI_GATEWAY_ADMIN_KEY`,
//!    `CASTARI_GATEWAY_REDIS_URL`),
//!    read through [`Source`] so tests never touch the process environment;
//! 3. flags (`--listen`, `--upstream`), then [`Config::validate`].
//!
//! Precedence is therefore flag > environment > file > default. Unknown keys
//! are errors. Every error names the field it is about, on one line.

pub mod auth;
pub mod breaker;
pub mod cache;
pub mod cluster;
pub mod rate;
pub mod reload;
pub mod retry;
pub mod server;
pub mod shaper;
pub mod telemetry;
pub mod ui;
pub mod upstream;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use auth::{AuthConfig, AuthMode, DeclaredKey};
pub use breaker::BreakerConfig;
pub use cache::{CacheConfig, TtlConfig};
pub use cluster::ClusterConfig;
pub use rate::Rate;
pub use reload::ReloadConfig;
pub use retry::RetryConfig;
pub use server::ServerConfig;
pub use shaper::ShaperConfig;
pub use telemetry::{LogFormat, TelemetryConfig};
pub use ui::UiConfig;
pub use upstream::{CredentialSource, UpstreamConfig};

use crate::types::Secret;

/// Environment variable naming the config file.
pub const ENV_CONFIG: &str = "CASTARI_GATEWAY_CONFIG";
/// Environment variable overriding `server.listen`.
pub const ENV_LISTEN: &str = "CASTARI_GATEWAY_LISTEN";
/// Environment variable overriding `upstream.url`.
pub const ENV_UPSTREAM_URL: &str = "CASTARI_UPSTREAM_URL";
/// Environment variable holding the upstream API key (the one the SDK reads).
pub const ENV_API_KEY: &str = "CASTARI_API_KEY";
/// Environment variable holding the admin key for `/admin/keys`.
pub const ENV_ADMIN_KEY: &str = "CASTARI_GATEWAY_ADMIN_KEY";
/// Environment variable overriding `auth.mode` (`open` or `keys`).
pub const ENV_AUTH_MODE: &str = "CASTARI_GATEWAY_AUTH_MODE";
/// Environment variable overriding `auth.allow_open_on_network` (`true`).
pub const ENV_ALLOW_OPEN_ON_NETWORK: &str = "CASTARI_GATEWAY_ALLOW_OPEN_ON_NETWORK";
/// Environment variable overriding `cluster.redis_url` (cluster mode).
pub const ENV_REDIS_URL: &str = "CASTARI_GATEWAY_REDIS_URL";
/// The name of the credential from `CASTARI_API_KEY` / `upstream.api_key_file`.
pub const DEFAULT_CREDENTIAL: &str = "default";

/// The whole gateway configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`: the listener.
    pub server: ServerConfig,
    /// `[upstream]`: the Castari API.
    pub upstream: UpstreamConfig,
    /// `[telemetry]`: logs.
    pub telemetry: TelemetryConfig,
    /// `[shaper]`: upstream budgets and the queue.
    pub shaper: ShaperConfig,
    /// `[cache]`: the response cache.
    pub cache: CacheConfig,
    /// `[auth]`: local keys, roles, budgets and the usage ledger.
    pub auth: AuthConfig,
    /// `[retry]`: safe retries of failed upstream attempts.
    pub retry: RetryConfig,
    /// `[breaker]`: fail fast while the upstream is down.
    pub breaker: BreakerConfig,
    /// `[reload]`: re-reading this configuration while running.
    pub reload: ReloadConfig,
    /// `[cluster]`: replicas sharing budgets and cache truth through Redis.
    pub cluster: ClusterConfig,
    /// `[ui]`: the operator page.
    pub ui: UiConfig,
    /// The upstream API key, resolved from `CASTARI_API_KEY` or
    /// `upstream.api_key_file`. Never read from the TOML text itself.
    #[serde(skip)]
    pub upstream_key: Option<Secret<String>>,
    /// The keys of `[upstream.credentials.*]`, by name, resolved at load.
    #[serde(skip)]
    pub named_keys: BTreeMap<String, Secret<String>>,
    /// The admin key, from `CASTARI_GATEWAY_ADMIN_KEY` or
    /// `auth.admin_key_file`.
    #[serde(skip)]
    pub admin_key: Option<Secret<String>>,
}

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The key, variable or flag at fault, e.g. `server.listen`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// Makes an error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Where environment overrides come from.
pub trait Source {
    /// The value of variable `key`, if set and not empty.
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Source for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Source for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).filter(|v| !v.is_empty()).cloned()
    }
}

/// Values given as command-line flags; they win over everything else.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--listen ADDR`.
    pub listen: Option<SocketAddr>,
    /// `--upstream URL`.
    pub upstream: Option<url::Url>,
}

/// Loads, overrides and validates the configuration.
///
/// # Errors
/// A [`ConfigError`] naming the first bad field.
pub fn load(flags: &Flags, env: &dyn Source) -> Result<Config, ConfigError> {
    let path = flags
        .config
        .clone()
        .or_else(|| env.get(ENV_CONFIG).map(PathBuf::from));
    let mut config = match path {
        Some(path) => Config::from_file(&path)?,
        None => Config::default(),
    };
    if let Some(listen) = env.get(ENV_LISTEN) {
        config.server.listen = listen.parse().map_err(|_| {
            ConfigError::new(ENV_LISTEN, format!("not a socket address: {listen:?}"))
        })?;
    }
    if let Some(url) = env.get(ENV_UPSTREAM_URL) {
        config.upstream.url = url::Url::parse(&url)
            .map_err(|e| ConfigError::new(ENV_UPSTREAM_URL, format!("not a URL ({e})")))?;
    }
    if let Some(mode) = env.get(ENV_AUTH_MODE) {
        config.auth.mode = Some(match mode.as_str() {
            "open" => AuthMode::Open,
            "keys" => AuthMode::Keys,
            _ => return Err(ConfigError::new(ENV_AUTH_MODE, "must be open or keys")),
        });
    }
    if let Some(allow) = env.get(ENV_ALLOW_OPEN_ON_NETWORK) {
        config.auth.allow_open_on_network = match allow.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => {
                return Err(ConfigError::new(
                    ENV_ALLOW_OPEN_ON_NETWORK,
                    "must be true or false",
                ))
            }
        };
    }
    if let Some(url) = env.get(ENV_REDIS_URL) {
        config.cluster.redis_url = Some(Secret::new(url));
    }
    if let Some(listen) = flags.listen {
        config.server.listen = listen;
    }
    if let Some(url) = &flags.upstream {
        config.upstream.url = url.clone();
    }
    config.upstream_key = resolve_key(&config.upstream, env)?;
    config.named_keys = resolve_named_keys(&config.upstream, env)?;
    config.admin_key = resolve_admin_key(&config.auth, env)?;
    config.validate()
}

impl Config {
    /// Parses a TOML file.
    ///
    /// # Errors
    /// Unreadable file, TOML syntax error, unknown key or wrong type.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
        })?;
        Self::from_toml(&text)
    }

    /// Parses TOML text.
    ///
    /// # Errors
    /// TOML syntax error, unknown key or wrong type, naming the field.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let field = if path == "." {
                "config".to_string()
            } else {
                path
            };
            // One line, whatever the key's name holds.
            let field = field.replace(['\n', '\r'], " ");
            let line = inner.span().map(|span| {
                text.as_bytes()[..span.start.min(text.len())]
                    .iter()
                    .filter(|b| **b == b'\n')
                    .count()
                    + 1
            });
            let message = inner.message().replace('\n', " ");
            match line {
                Some(line) => ConfigError::new(field, format!("{message} (line {line})")),
                None => ConfigError::new(field, message),
            }
        })
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The first field whose value is out of range.
    pub fn validate(self) -> Result<Self, ConfigError> {
        let s = &self.server;
        positive("server.max_connections", s.max_connections as u64)?;
        positive("server.header_read_timeout_ms", s.header_read_timeout_ms)?;
        positive("server.body_idle_timeout_ms", s.body_idle_timeout_ms)?;
        positive("server.max_body_bytes", s.max_body_bytes)?;
        let u = &self.upstream;
        check_base_url("upstream.url", &u.url)?;
        if let Some(proxy) = &u.proxy {
            if !matches!(proxy.scheme(), "http" | "https" | "socks5") {
                return Err(ConfigError::new(
                    "upstream.proxy",
                    "scheme must be http, https or socks5",
                ));
            }
        }
        positive("upstream.connect_timeout_ms", u.connect_timeout_ms)?;
        positive("upstream.crud_timeout_ms", u.crud_timeout_ms)?;
        positive("upstream.long_timeout_ms", u.long_timeout_ms)?;
        positive("upstream.invoke_timeout_ms", u.invoke_timeout_ms)?;
        positive(
            "upstream.download_idle_timeout_ms",
            u.download_idle_timeout_ms,
        )?;
        let sh = &self.shaper;
        positive("shaper.crud_queue_depth", sh.crud_queue_depth as u64)?;
        positive("shaper.invoke_queue_depth", sh.invoke_queue_depth as u64)?;
        positive("shaper.crud_max_wait_ms", sh.crud_max_wait_ms)?;
        positive("shaper.invoke_max_wait_ms", sh.invoke_max_wait_ms)?;
        self.cache.validate()?;
        self.retry.validate()?;
        self.breaker.validate()?;
        self.reload.validate()?;
        self.cluster.validate()?;
        self.ui.validate()?;
        if self.cluster.redis_url.is_some() && self.auth.db_path.is_some() {
            return Err(ConfigError::new(
                "auth.db_path",
                "cluster mode keeps keys, usage and budgets in Redis: leave it unset \
                 (move keys with `castari-gateway keys export` and `keys import --redis`)",
            ));
        }
        if self.upstream_key.is_none() {
            return Err(ConfigError::new(
                "upstream.api_key_file",
                format!("no upstream key: set {ENV_API_KEY} or upstream.api_key_file"),
            ));
        }
        let mut names = vec![DEFAULT_CREDENTIAL];
        names.extend(self.upstream.credentials.keys().map(String::as_str));
        self.auth.validate(self.server.listen, &names)?;
        tracing_subscriber::EnvFilter::try_new(&self.telemetry.log_level)
            .map_err(|e| ConfigError::new("telemetry.log_level", e.to_string()))?;
        Ok(self)
    }
}

fn positive(field: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(field, "must be greater than 0"));
    }
    Ok(())
}

fn check_base_url(field: &str, url: &url::Url) -> Result<(), ConfigError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ConfigError::new(field, "scheme must be http or https"));
    }
    if url.host().is_none() {
        return Err(ConfigError::new(field, "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(field, "must not carry credentials"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(field, "must not have a query or fragment"));
    }
    Ok(())
}

fn resolve_key(
    upstream: &UpstreamConfig,
    env: &dyn Source,
) -> Result<Option<Secret<String>>, ConfigError> {
    if let Some(key) = env.get(ENV_API_KEY) {
        return usable_key(ENV_API_KEY, key.trim()).map(Some);
    }
    let Some(path) = &upstream.api_key_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "upstream.api_key_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    usable_key("upstream.api_key_file", text.trim()).map(Some)
}

/// Reads every `[upstream.credentials.NAME]` key.
fn resolve_named_keys(
    upstream: &UpstreamConfig,
    env: &dyn Source,
) -> Result<BTreeMap<String, Secret<String>>, ConfigError> {
    let mut keys = BTreeMap::new();
    for (name, source) in &upstream.credentials {
        let field = format!("upstream.credentials.{name}");
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name || name == DEFAULT_CREDENTIAL {
            return Err(ConfigError::new(
                field,
                "the name must be [a-z0-9_-] and not \"default\"",
            ));
        }
        let key = match (&source.key_env, &source.key_file) {
            (Some(var), None) => {
                let key = env.get(var).ok_or_else(|| {
                    ConfigError::new(format!("{field}.key_env"), format!("{var} is not set"))
                })?;
                usable_key(&format!("{field}.key_env"), key.trim())?
            }
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(
                        format!("{field}.key_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                usable_key(&format!("{field}.key_file"), text.trim())?
            }
            _ => {
                return Err(ConfigError::new(
                    field,
                    "set exactly one of key_env or key_file",
                ))
            }
        };
        keys.insert(name.clone(), key);
    }
    Ok(keys)
}

/// The admin key: the environment wins over `auth.admin_key_file`.
fn resolve_admin_key(
    auth: &AuthConfig,
    env: &dyn Source,
) -> Result<Option<Secret<String>>, ConfigError> {
    if let Some(key) = env.get(ENV_ADMIN_KEY) {
        return admin_key(ENV_ADMIN_KEY, key.trim()).map(Some);
    }
    let Some(path) = &auth.admin_key_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            "auth.admin_key_file",
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    admin_key("auth.admin_key_file", text.trim()).map(Some)
}

/// An admin key must be long enough not to be guessed.
fn admin_key(field: &str, key: &str) -> Result<Secret<String>, ConfigError> {
    if key.len() < 24 {
        return Err(ConfigError::new(
            field,
            "the admin key must be at least 24 characters",
        ));
    }
    usable_key(field, key)
}

/// Checks that a key can travel in an `Authorization` header, without ever
/// putting the key itself into the error.
fn usable_key(field: &str, key: &str) -> Result<Secret<String>, ConfigError> {
    if key.is_empty() {
        return Err(ConfigError::new(field, "the key is empty"));
    }
    if http::HeaderValue::from_str(&format!("Bearer {key}")).is_err() {
        return Err(ConfigError::new(
            field,
            "the key has characters not allowed in a header",
        ));
    }
    Ok(Secret::new(key.to_string()))
}

#[cfg(test)]
mod tests;
