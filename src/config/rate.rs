//! Rate limits as written in the config: `100/60s`, `5/1500ms`, `10/1m`,
//! `30/min`, `1000/h`.
//!
//! The gateway has its own type (the simulator has another) so that the
//! gateway's code does not depend on the simulator outside tests and `demo`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `max` requests per `window`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Requests allowed per window, at least 1.
    pub max: u32,
    /// The window, longer than zero.
    pub window: Duration,
}

impl Rate {
    /// `max` per `window`.
    pub const fn new(max: u32, window: Duration) -> Self {
        Self { max, window }
    }
}

/// A window written as a number and a unit, or a bare unit (`min` = `1min`).
fn parse_window(text: &str) -> Option<Duration> {
    let split = text
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(text.len(), |(i, _)| i);
    let (number, unit) = text.split_at(split);
    let n: u64 = if number.is_empty() {
        1
    } else {
        number.parse().ok()?
    };
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" | "sec" => 1_000,
        "m" | "min" => 60_000,
        "h" | "hour" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(unit_ms).map(Duration::from_millis)
}

/// The longest window a rate may have. Longer ones mean nothing for a
/// request rate, and the rate limiter keeps time in 64-bit nanoseconds
/// (584 years).
pub const MAX_WINDOW: Duration = Duration::from_secs(365 * 86_400);

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid =
            || format!("{text:?} is not a rate: write N/WINDOW, e.g. 100/60s, 5/1500ms, 30/min");
        let (max, window) = text.split_once('/').ok_or_else(invalid)?;
        let max: u32 = max.trim().parse().map_err(|_| invalid())?;
        let window = parse_window(window.trim()).ok_or_else(invalid)?;
        if max == 0 || window.is_zero() {
            return Err(format!(
                "{text:?}: the count and the window must be above zero"
            ));
        }
        if window > MAX_WINDOW {
            return Err(format!(
                "{text:?}: the window must be at most a year (8760h)"
            ));
        }
        Ok(Self { max, window })
    }
}

/// The shortest form that parses back: `30/min`, `100/60s` stays `100/min`,
/// `1000/h`, `5/1500ms`.
impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.window.as_millis();
        let (n, unit) = match ms {
            _ if ms.is_multiple_of(3_600_000) => (ms / 3_600_000, "h"),
            _ if ms.is_multiple_of(60_000) => (ms / 60_000, "min"),
            _ if ms.is_multiple_of(1_000) => (ms / 1_000, "s"),
            _ => (ms, "ms"),
        };
        if n == 1 {
            write!(f, "{}/{unit}", self.max)
        } else {
            write!(f, "{}/{n}{unit}", self.max)
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_written_form() {
        let secs = |s| Duration::from_secs(s);
        assert_eq!("100/60s".parse(), Ok(Rate::new(100, secs(60))));
        assert_eq!(
            "5/1500ms".parse(),
            Ok(Rate::new(5, Duration::from_millis(1500)))
        );
        assert_eq!("10/1m".parse(), Ok(Rate::new(10, secs(60))));
        assert_eq!("30/min".parse(), Ok(Rate::new(30, secs(60))));
        assert_eq!(" 7 / 2h ".parse(), Ok(Rate::new(7, secs(7200))));
    }

    #[test]
    fn displays_the_shortest_form_that_parses_back() {
        for (text, shown) in [
            ("30/min", "30/min"),
            ("100/60s", "100/min"),
            ("10/2m", "10/2min"),
            ("1000/h", "1000/h"),
            ("5/1500ms", "5/1500ms"),
            ("7/90s", "7/90s"),
        ] {
            let rate: Rate = text.parse().unwrap();
            assert_eq!(rate.to_string(), shown);
            assert_eq!(shown.parse::<Rate>().unwrap(), rate);
        }
    }

    #[test]
    fn refuses_nonsense_with_a_hint() {
        for bad in [
            "",
            "100",
            "0/60s",
            "10/0s",
            "x/60s",
            "10/60parsecs",
            "10/-1s",
            "1/8761h",
            "1/6000000h",
        ] {
            let error = bad.parse::<Rate>().unwrap_err();
            assert!(
                error.contains(bad.trim()) || bad.is_empty(),
                "{bad}: {error}"
            );
        }
    }
}
