//! `[cluster]`: several gateway processes sharing one upstream account
//! through Redis. Absent `redis_url`, the gateway is one process and keeps
//! everything in memory (and the key store in SQLite).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::ConfigError;
use crate::types::Secret;

/// Cluster mode settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db` or `rediss://…` (TLS). Setting it turns
    /// cluster mode on. A password in the URL works, but
    /// `redis_password_file` keeps it out of the config.
    pub redis_url: Option<Secret<String>>,
    /// A file holding the Redis password (trailing newline ignored); it
    /// wins over a password in the URL.
    pub redis_password_file: Option<PathBuf>,
    /// PEM file of the CA that signed Redis's certificate (`rediss://`
    /// with a private CA); absent: the Mozilla roots.
    pub redis_ca_file: Option<PathBuf>,
    /// Namespace of every Redis key and channel, so deployments can share
    /// one Redis.
    pub prefix: String,
    /// Start when Redis cannot be reached, shaping to the local share, and
    /// use Redis once it answers. Off: Redis unreachable at start is a
    /// configuration error (exit 78).
    pub start_degraded: bool,
    /// How many replicas share the account. While Redis is lost, each
    /// replica shapes to `limit / expected_replicas` of every budget.
    pub expected_replicas: u32,
    /// Longest wait for one Redis command before Redis counts as lost.
    pub op_timeout_ms: u64,
    /// Longest a write's response waits for the other replicas to confirm
    /// they applied its invalidation.
    pub event_ack_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis_url: None,
            redis_password_file: None,
            redis_ca_file: None,
            prefix: "castari-gateway".into(),
            start_degraded: false,
            expected_replicas: 2,
            op_timeout_ms: 500,
            event_ack_ms: 250,
        }
    }
}

impl ClusterConfig {
    /// Whether cluster mode is on.
    pub fn enabled(&self) -> bool {
        self.redis_url.is_some()
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.redis_url {
            let parsed = url::Url::parse(url.expose())
                .map_err(|e| ConfigError::new("cluster.redis_url", format!("not a URL ({e})")))?;
            if !matches!(parsed.scheme(), "redis" | "rediss") {
                return Err(ConfigError::new(
                    "cluster.redis_url",
                    "must start with redis:// or rediss://",
                ));
            }
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(ConfigError::new("cluster.redis_url", "names no host"));
            }
            if self.redis_ca_file.is_some() && parsed.scheme() != "rediss" {
                return Err(ConfigError::new(
                    "cluster.redis_ca_file",
                    "needs a rediss:// redis_url",
                ));
            }
        }
        let prefix_ok = !self.prefix.is_empty()
            && self.prefix.len() <= 64
            && self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if !prefix_ok {
            return Err(ConfigError::new(
                "cluster.prefix",
                "must be 1-64 characters of letters, digits, - _ . :",
            ));
        }
        if self.expected_replicas == 0 {
            return Err(ConfigError::new(
                "cluster.expected_replicas",
                "must be at least 1",
            ));
        }
        if !(10..=60_000).contains(&self.op_timeout_ms) {
            return Err(ConfigError::new(
                "cluster.op_timeout_ms",
                "must be between 10 and 60000",
            ));
        }
        if self.event_ack_ms > 10_000 {
            return Err(ConfigError::new(
                "cluster.event_ack_ms",
                "must be at most 10000",
            ));
        }
        Ok(())
    }
}
