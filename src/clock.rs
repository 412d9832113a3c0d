//! The wall clock, read one way everywhere: time since the Unix epoch.
//!
//! A leaf module (it imports nothing of the crate), so any module can use
//! it without an import circle. Intervals and deadlines use `Instant`;
//! this is only for what is shown or stored as a date (`X-RateLimit-Reset`,
//! the ledger's days, the views' times) and for seeds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the Unix epoch; zero for a clock set before it.
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> i64 {
    i64::try_from(since_epoch().as_secs()).unwrap_or(i64::MAX)
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_readings_agree() {
        let before = since_epoch();
        let (secs, ms) = (now_unix(), unix_ms());
        let after = since_epoch();
        assert!(before.as_secs() as i64 <= secs && secs <= after.as_secs() as i64);
        assert!(before.as_millis() as u64 <= ms && ms <= after.as_millis() as u64);
        // After 2026-01-01: the clock is read, not a constant.
        assert!(secs > 1_767_225_600);
    }
}
