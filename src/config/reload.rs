//! `[reload]`: re-reading the configuration while running.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// How a running gateway notices a new configuration. `SIGHUP` and
/// `POST /admin/config/reload` always work; the file watch is optional.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReloadConfig {
    /// Reload when the config file or a key file it names changes.
    pub watch: bool,
    /// How often the watched files are read and compared.
    pub watch_interval_ms: u64,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: false,
            watch_interval_ms: 2_000,
        }
    }
}

impl ReloadConfig {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.watch_interval_ms < 100 {
            return Err(ConfigError::new(
                "reload.watch_interval_ms",
                "must be at least 100",
            ));
        }
        Ok(())
    }
}
