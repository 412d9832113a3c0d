//! `[retry]`: which failed upstream attempts are sent again, and how often.

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// Retry settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retry at all.
    pub enabled: bool,
    /// Most attempts per request, the first included.
    pub max_attempts: u32,
    /// Backoff before attempt n+1 is drawn from 0..=min(max, base·2^(n-1)).
    pub base_delay_ms: u64,
    /// The longest backoff, and the longest `Retry-After` honoured: a
    /// longer one is passed to the client instead.
    pub max_delay_ms: u64,
    /// Retries allowed per original request, on average: 0.2 means at most
    /// about 20% extra upstream load (plus a reserve of 10 retries).
    pub budget_ratio: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_attempts: 3,
            base_delay_ms: 250,
            max_delay_ms: 5_000,
            budget_ratio: 0.2,
        }
    }
}

impl RetryConfig {
    /// Checks values that parse but make no sense.
    ///
    /// # Errors
    /// The first field out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(1..=10).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                "retry.max_attempts",
                "must be 1 to 10 (1 turns retries off)",
            ));
        }
        if self.base_delay_ms == 0 || self.base_delay_ms > self.max_delay_ms {
            return Err(ConfigError::new(
                "retry.base_delay_ms",
                "must be greater than 0 and at most retry.max_delay_ms",
            ));
        }
        if !(0.0..=1.0).contains(&self.budget_ratio) {
            return Err(ConfigError::new(
                "retry.budget_ratio",
                "must be between 0 and 1",
            ));
        }
        Ok(())
    }
}
