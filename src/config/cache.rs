//! `[cache]`: the in-memory response cache.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Response cache settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Cache GET responses at all.
    pub enabled: bool,
    /// Most bytes held (bodies, headers and keys), default 64 MiB.
    pub max_bytes: u64,
    /// Responses larger than this are relayed but not stored.
    pub max_entry_bytes: u64,
    /// How long past its TTL an entry may still be served (`X-Cache: STALE`)
    /// when the upstream is unreachable, times out or answers 5xx.
    pub stale_if_error_secs: u64,
    /// After a deploy, redeploy, upload-code, stop or PATCH of an agent went
    /// through the gateway, its reads are coalesced fresh fetches until the
    /// gateway has seen the change land (`docs/agent-motion.md`), and for
    /// at most this long when it never sees that.
    pub agent_settle_secs: u64,
    /// While an agent is in motion, reads of it (and of the agent list)
    /// share one upstream fetch per this many milliseconds: each answer is
    /// at most this old.
    pub motion_refresh_ms: u64,
    /// A cacheable GET the shaper would refuse (queue full, wait too long)
    /// is answered from an entry up to this old instead (`X-Cache: STALE`),
    /// unless it shows an agent in motion. 0 turns this off.
    pub stale_if_limited_secs: u64,
    /// Time to live per route class, in seconds; 0 turns a class off.
    pub ttl_secs: TtlConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 64 << 20,
            max_entry_bytes: 1 << 20,
            stale_if_error_secs: 300,
            agent_settle_secs: 600,
            motion_refresh_ms: 1000,
            stale_if_limited_secs: 60,
            ttl_secs: TtlConfig::default(),
        }
    }
}

impl CacheConfig {
    /// Checks the values that parse but make no sense.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.max_bytes == 0 {
            return Err(ConfigError::new(
                "cache.max_bytes",
                "must be greater than 0",
            ));
        }
        if self.max_entry_bytes == 0 || self.max_entry_bytes > self.max_bytes {
            return Err(ConfigError::new(
                "cache.max_entry_bytes",
                "must be greater than 0 and at most cache.max_bytes",
            ));
        }
        if self.motion_refresh_ms == 0 || self.motion_refresh_ms > 60_000 {
            return Err(ConfigError::new(
                "cache.motion_refresh_ms",
                "must be from 1 to 60000",
            ));
        }
        if self.max_entry_bytes > u64::from(u32::MAX) / 2 {
            return Err(ConfigError::new(
                "cache.max_entry_bytes",
                "must be below 2 GiB",
            ));
        }
        Ok(())
    }
}

/// Seconds to live per route class (`gateway-notes.md` §2 defaults).
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtlConfig {
    /// `GET /auth/me`.
    pub auth_me: u64,
    /// `GET /agents` (fetched fresh while an agent is transitional).
    pub agents: u64,
    /// `GET /agents/{slug}` (fetched fresh while transitional or settling).
    pub agent: u64,
    /// `GET /agents/{slug}/secrets` (names only; values are never returned).
    pub secrets: u64,
    /// `GET /agents/{slug}/sessions`.
    pub sessions: u64,
    /// `GET /agents/{slug}/invocations`.
    pub invocations: u64,
    /// `GET /usage`, `/usage/daily`.
    pub usage: u64,
    /// `GET /buckets`, `/buckets/{slug}`.
    pub buckets: u64,
    /// `GET /buckets/{slug}/files`.
    pub bucket_files: u64,
    /// `GET /agents/{slug}/mounts`, `/mounts/{id}`.
    pub mounts: u64,
    /// `GET /files`, `/files/usage`, `/files/{id}`.
    pub files: u64,
    /// `GET /agents/{slug}/files`.
    pub agent_files: u64,
}

impl Default for TtlConfig {
    fn default() -> Self {
        Self {
            auth_me: 600,
            agents: 5,
            agent: 5,
            secrets: 60,
            sessions: 5,
            invocations: 2,
            usage: 30,
            buckets: 60,
            bucket_files: 10,
            mounts: 60,
            files: 30,
            agent_files: 60,
        }
    }
}
