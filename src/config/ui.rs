//! `[ui]`: the operator page (`GET /`), its event stream and its logins.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// The operator page. Every setting reloads.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Serve the page, `/admin/events` and `/admin/snapshot`. Off: they
    /// answer 404 `ui_disabled`.
    pub enabled: bool,
    /// How long a login lasts.
    pub session_ttl_secs: u64,
    /// Mark the session cookie `Secure` (set it when clients reach the
    /// gateway through TLS, e.g. behind a terminating proxy).
    pub secure_cookie: bool,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl_secs: 8 * 3600,
            secure_cookie: false,
        }
    }
}

/// Longest login allowed: a week.
const MAX_SESSION_SECS: u64 = 7 * 24 * 3600;

impl UiConfig {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(60..=MAX_SESSION_SECS).contains(&self.session_ttl_secs) {
            return Err(ConfigError::new(
                "ui.session_ttl_secs",
                "must be between 60 and 604800 (a week)",
            ));
        }
        Ok(())
    }
}
