//! Small helpers: ids, ISO 8601 timestamps, exact money, JSON field access.

use std::time::{SystemTime, UNIX_EPOCH};

use rand::Rng;

/// `prefix` + 12 random hex digits, e.g. `agt_3f9a0c1b2d4e`.
pub fn id(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("{prefix}{:012x}", n & 0xffff_ffff_ffff)
}

/// Random hex of `bytes` bytes.
pub fn hex_token(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2026-11-22T18:21:35.123Z` for a Unix time in milliseconds.
pub fn iso(ms: u64) -> String {
    let (y, m, d) = civil_from_days((ms / 86_400_000) as i64);
    let day_ms = ms % 86_400_000;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

/// `2026-11-22` for a Unix time in milliseconds.
pub fn date(ms: u64) -> String {
    let (y, m, d) = civil_from_days((ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Micro-dollars as an exact decimal string: 123 → `"0.000123"`.
pub fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// The CLI's slug rule: lowercase, non-`[a-z0-9]` runs become `-`, trimmed,
/// at most 100 characters.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    let mut dash = false;
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c);
        } else {
            dash = true;
        }
    }
    out.truncate(100);
    out.trim_end_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates_and_money() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_795_372_895_123), "2026-11-22T18:41:35.123Z");
        assert_eq!(date(951_782_400_000), "2000-02-29");
        assert_eq!(usd(123), "0.000123");
        assert_eq!(usd(12_345_678), "12.345678");
    }

    #[test]
    fn slugs_follow_the_cli() {
        assert_eq!(slugify("Demo Agent"), "demo-agent");
        assert_eq!(slugify("  --Hello,  World!! 2 "), "hello-world-2");
        assert_eq!(slugify("ÄÖ"), "");
    }
}
