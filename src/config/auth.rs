//! `[auth]`: who may use the gateway: anyone on loopback (open mode) or
//! holders of local keys (keys mode), and where keys and usage are kept.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Rate};
use crate::grant::{Budget, Role};

/// The database file used when keys mode names none.
pub const DEFAULT_DB_PATH: &str = "castari-gateway.db";
/// After `keys rotate`, the old secret keeps working this long.
pub const DEFAULT_ROTATE_GRACE_SECS: u64 = 86_400;
/// What an invocation is assumed to cost until it reports its real cost.
pub const DEFAULT_INVOKE_RESERVE_USD: &str = "0.10";
/// Request counts reach the ledger at least this often.
pub const DEFAULT_LEDGER_FLUSH_MS: u64 = 1_000;

/// Whether clients need a local key.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Any client, with any key or none, acts as one user.
    Open,
    /// Every `/api/v1` request needs a valid local key.
    Keys,
}

/// Client authentication and the key broker.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// `open` or `keys`. Unset: `open` on a loopback listener, `keys` on
    /// any other address.
    pub mode: Option<AuthMode>,
    /// Allows open mode on a non-loopback address (anyone who can reach the
    /// port then spends the shared key). Off by default.
    pub allow_open_on_network: bool,
    /// Lets open mode send the routes that mint or revoke the account's
    /// upstream credentials (`POST /api-keys`, `DELETE /api-keys/{id}`,
    /// `POST`/`DELETE /auth/api-key`, sandbox access tokens). Off by
    /// default: any local tool could otherwise take a new full upstream key,
    /// or revoke the one the whole team relies on. In keys mode these routes
    /// need an admin-role key instead.
    pub open_mode_credential_routes: bool,
    /// Lets a request revoke the very upstream key the gateway holds (the
    /// legacy `DELETE /auth/api-key`, or `DELETE /api-keys/{id}` naming one
    /// of its credentials). Off by default, in every mode: it takes the
    /// gateway, and every tool behind it, offline.
    pub allow_revoking_gateway_key: bool,
    /// The SQLite file holding keys and the usage ledger. In keys mode it
    /// defaults to `castari-gateway.db`; in open mode, usage is recorded
    /// (as key `open`) only when this is set.
    pub db_path: Option<PathBuf>,
    /// A file holding the admin key for `/admin/keys` and `/admin/usage`.
    /// `CASTARI_GATEWAY_ADMIN_KEY` in the environment wins over it.
    pub admin_key_file: Option<PathBuf>,
    /// Seconds the old secret stays valid after a rotation.
    pub rotate_grace_secs: u64,
    /// USD reserved against a key's budget before an invocation is sent,
    /// when the agent has not yet shown a higher real cost. A decimal string.
    pub invoke_reserve_usd: String,
    /// How often request counts are written to the ledger, in milliseconds.
    pub ledger_flush_ms: u64,
    /// Keys declared by hash, for GitOps-style deployments.
    pub keys: Vec<DeclaredKey>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: None,
            allow_open_on_network: false,
            open_mode_credential_routes: false,
            allow_revoking_gateway_key: false,
            db_path: None,
            admin_key_file: None,
            rotate_grace_secs: DEFAULT_ROTATE_GRACE_SECS,
            invoke_reserve_usd: DEFAULT_INVOKE_RESERVE_USD.to_string(),
            ledger_flush_ms: DEFAULT_LEDGER_FLUSH_MS,
            keys: Vec::new(),
        }
    }
}

/// A local key declared in the config file by the SHA-256 of its token
/// (`castari-gateway keys create --print-config` prints such a block).
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredKey {
    /// The id embedded in the token (`cgw_<id>_...`).
    pub id: String,
    /// Human name.
    pub name: String,
    /// Hex SHA-256 of the whole token.
    pub sha256: String,
    /// `read`, `invoke`, `deploy` or `admin`.
    pub role: Role,
    /// Agent slug globs; empty or absent means every agent.
    #[serde(default)]
    pub agents: Vec<String>,
    /// The key's own rate limit, e.g. `30/min`.
    pub rate: Option<Rate>,
    /// Spending limit, e.g. `20/month`.
    pub budget_usd: Option<Budget>,
    /// Upstream credential name; `default` when absent.
    pub upstream: Option<String>,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<i64>,
}

impl AuthConfig {
    /// The mode in effect for a listener on `listen`.
    pub fn effective_mode(&self, listen: std::net::SocketAddr) -> AuthMode {
        self.mode.unwrap_or(if listen.ip().is_loopback() {
            AuthMode::Open
        } else {
            AuthMode::Keys
        })
    }

    /// The database path in effect, if any.
    pub fn effective_db(&self, mode: AuthMode) -> Option<PathBuf> {
        match (mode, &self.db_path) {
            (_, Some(path)) => Some(path.clone()),
            (AuthMode::Keys, None) => Some(PathBuf::from(DEFAULT_DB_PATH)),
            (AuthMode::Open, None) => None,
        }
    }

    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The first bad field.
    pub fn validate(
        &self,
        listen: std::net::SocketAddr,
        credentials: &[&str],
    ) -> Result<(), ConfigError> {
        let mode = self.effective_mode(listen);
        if mode == AuthMode::Open && !listen.ip().is_loopback() && !self.allow_open_on_network {
            return Err(ConfigError::new(
                "auth.mode",
                format!(
                    "open mode on the non-loopback address {listen} would let anyone spend the \
                     upstream key: use mode = \"keys\", or set auth.allow_open_on_network = true"
                ),
            ));
        }
        match rust_decimal::Decimal::from_str_exact(self.invoke_reserve_usd.trim()) {
            Ok(usd) if usd > rust_decimal::Decimal::ZERO => {}
            _ => {
                return Err(ConfigError::new(
                    "auth.invoke_reserve_usd",
                    "must be a positive decimal number of USD, e.g. \"0.10\"",
                ))
            }
        }
        if self.ledger_flush_ms == 0 {
            return Err(ConfigError::new(
                "auth.ledger_flush_ms",
                "must be greater than 0",
            ));
        }
        for (i, key) in self.keys.iter().enumerate() {
            let field = |name: &str| format!("auth.keys[{i}].{name}");
            if !crate::grant::valid_id(&key.id) {
                return Err(ConfigError::new(
                    field("id"),
                    "must be 1 to 32 characters of [a-z0-9]",
                ));
            }
            if crate::grant::parse_hash_hex(&key.sha256).is_none() {
                return Err(ConfigError::new(
                    field("sha256"),
                    "must be 64 hex digits (the SHA-256 of the whole token)",
                ));
            }
            if let Err(e) = crate::grant::AgentGlobs::parse(&key.agents) {
                return Err(ConfigError::new(field("agents"), e));
            }
            let upstream = key.upstream.as_deref().unwrap_or("default");
            if !credentials.contains(&upstream) {
                return Err(ConfigError::new(
                    field("upstream"),
                    format!("no upstream credential named {upstream:?}"),
                ));
            }
            if self.keys[..i].iter().any(|k| k.id == key.id) {
                return Err(ConfigError::new(field("id"), "declared twice"));
            }
        }
        Ok(())
    }
}
