//! `[breaker]`: fail fast while the upstream is down.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Circuit breaker settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Use the breaker at all.
    pub enabled: bool,
    /// Consecutive upstream failures (refused or broken connections,
    /// timeouts, 502/503/504) that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit stays open before one probe is let through.
    pub open_ms: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            failure_threshold: 5,
            open_ms: 10_000,
        }
    }
}

impl BreakerConfig {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failure_threshold == 0 {
            return Err(ConfigError::new(
                "breaker.failure_threshold",
                "must be greater than 0",
            ));
        }
        if self.open_ms == 0 {
            return Err(ConfigError::new(
                "breaker.open_ms",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}
