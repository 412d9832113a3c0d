//! Simulator settings: accepted keys, rate limits, deploy timing, faults.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// Everything a simulator can be told at start. Also the `[sim]` table of a
/// TOML file (`castari-gateway sim --config FILE`).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Accepted Bearer keys; empty accepts any non-empty Bearer token.
    pub api_keys: Vec<String>,
    /// CRUD budget per key, default `100/60s`.
    pub crud_limit: RateLimit,
    /// Invocation budget per key, default `10/60s`.
    pub invoke_limit: RateLimit,
    /// `fixed` (default) or `sliding` windows.
    pub window: WindowKind,
    /// An invocation also spends the CRUD budget (default true).
    pub invoke_counts_as_crud: bool,
    /// `deploying` turns `active` after this long (default 2000 ms).
    pub deploy_delay_ms: u64,
    /// Deploy answers `active` at once (default false).
    pub sync_deploy: bool,
    /// Time an invocation takes (default 0).
    pub invoke_latency_ms: u64,
    /// Faults in force from the start.
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            api_keys: Vec::new(),
            crud_limit: RateLimit::new(100, Duration::from_secs(60)),
            invoke_limit: RateLimit::new(10, Duration::from_secs(60)),
            window: WindowKind::Fixed,
            invoke_counts_as_crud: true,
            deploy_delay_ms: 2000,
            sync_deploy: false,
            invoke_latency_ms: 0,
            faults: Faults::default(),
        }
    }
}

/// `max` requests per `window`, written `100/60s`, `5/1500ms` or `10/1m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests admitted per window.
    pub max: u32,
    /// Window length.
    pub window: Duration,
}

impl RateLimit {
    /// A limit of `max` per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self { max, window }
    }
}

impl FromStr for RateLimit {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid rate limit {text:?}: expected N/DURATION such as 100/60s, 5/1500ms or 10/1m")
        };
        let (max, window) = text.trim().split_once('/').ok_or_else(bad)?;
        let max: u32 = max.trim().parse().map_err(|_| bad())?;
        let window = window.trim();
        let (number, unit) = window
            .find(|c: char| !c.is_ascii_digit())
            .map_or((window, ""), |i| window.split_at(i));
        let n: u64 = number.parse().map_err(|_| bad())?;
        let window = match unit {
            "ms" => Duration::from_millis(n),
            "s" | "" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            _ => return Err(bad()),
        };
        if max == 0 || window.is_zero() {
            return Err(format!(
                "invalid rate limit {text:?}: count and window must be positive"
            ));
        }
        Ok(Self { max, window })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.window.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}/{}s", self.max, ms / 1000)
        } else {
            write!(f, "{}/{}ms", self.max, ms)
        }
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How rate-limit windows move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    /// A window opens at the first request after the previous one closed and
    /// admits `max` requests until it closes.
    Fixed,
    /// Admits a request when fewer than `max` were admitted in the last
    /// `window`.
    Sliding,
}

impl FromStr for WindowKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "fixed" => Ok(Self::Fixed),
            "sliding" => Ok(Self::Sliding),
            other => Err(format!(
                "invalid window {other:?}: expected fixed or sliding"
            )),
        }
    }
}

impl fmt::Display for WindowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Fixed => "fixed",
            Self::Sliding => "sliding",
        })
    }
}

/// Fault knobs, applied to `/api/v1` requests after the request is read and
/// before authentication. Set at start or with `POST /_sim/faults`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added latency before answering.
    pub latency_ms: u64,
    /// Extra random latency, 0..=jitter_ms.
    pub jitter_ms: u64,
    /// Probability (0..=1) of answering with one of `error_statuses`.
    pub error_rate: f64,
    /// Statuses for injected errors; empty means 500, 502, 503.
    pub error_statuses: Vec<u16>,
    /// The next N requests get the first of `error_statuses` (or 503).
    pub fail_next: u32,
    /// Probability of closing the connection without any response.
    pub drop_rate: f64,
    /// The next N requests have their connection closed without a response.
    pub drop_next: u32,
    /// Probability of a response that stalls mid-body.
    pub stall_rate: f64,
    /// The next N responses stall mid-body.
    pub stall_next: u32,
    /// How long a stalled response hangs before the connection closes
    /// (0 means 60 s).
    pub stall_ms: u64,
    /// Slow deploys: overrides `deploy_delay_ms` while set.
    pub deploy_delay_ms: Option<u64>,
    /// Faults apply only to paths starting with this, when set.
    pub path_prefix: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rate_limits() {
        assert_eq!(
            "100/60s".parse::<RateLimit>().unwrap(),
            RateLimit::new(100, Duration::from_secs(60))
        );
        assert_eq!(
            "5/1500ms".parse::<RateLimit>().unwrap(),
            RateLimit::new(5, Duration::from_millis(1500))
        );
        assert_eq!(
            "10/1m".parse::<RateLimit>().unwrap(),
            RateLimit::new(10, Duration::from_secs(60))
        );
        assert_eq!("10/1m".parse::<RateLimit>().unwrap().to_string(), "10/60s");
        for bad in ["", "10", "x/1s", "10/1h", "0/1s", "10/0s"] {
            assert!(bad.parse::<RateLimit>().is_err(), "{bad}");
        }
    }
}
