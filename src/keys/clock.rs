//! UTC calendar days for the ledger and budget periods, without a date crate:
//! days since the epoch to `YYYY-MM-DD` (Howard Hinnant's civil algorithm).

use super::model::Period;

pub use crate::clock::now_unix;

/// `(year, month, day)` of the UTC day containing `unix_secs`.
pub fn civil(unix_secs: i64) -> (i64, u32, u32) {
    let days = unix_secs.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The UTC day of `unix_secs` as `YYYY-MM-DD`.
pub fn day(unix_secs: i64) -> String {
    let (y, m, d) = civil(unix_secs);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The first day (`YYYY-MM-DD`) of the budget period containing `unix_secs`.
/// Days compare as strings, so `day >= period_start(..)` selects the period.
pub fn period_start(period: Period, unix_secs: i64) -> String {
    day(period_start_unix(period, unix_secs))
}

/// Unix seconds of the UTC midnight that starts the budget period
/// containing `unix_secs`.
pub fn period_start_unix(period: Period, unix_secs: i64) -> i64 {
    let today = unix_secs.div_euclid(86_400);
    match period {
        Period::Day => today * 86_400,
        Period::Month => {
            let (_, _, day) = civil(unix_secs);
            (today - i64::from(day) + 1) * 86_400
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_midnight_and_on_the_first() {
        // 2026-11-22 13:00:00 UTC
        let now = 1_795_305_600 + 13 * 3600;
        assert_eq!(day(period_start_unix(Period::Day, now)), "2026-11-22");
        assert_eq!(period_start_unix(Period::Day, now) % 86_400, 0);
        assert_eq!(day(period_start_unix(Period::Month, now)), "2026-11-01");
    }

    #[test]
    fn days_match_known_dates() {
        assert_eq!(day(0), "1970-01-01");
        assert_eq!(day(86_399), "1970-01-01");
        assert_eq!(day(86_400), "1970-01-02");
        assert_eq!(day(951_782_400), "2000-02-29");
        assert_eq!(day(1_795_305_600), "2026-11-22");
        assert_eq!(day(-1), "1969-12-31");
        assert_eq!(period_start(Period::Month, 1_795_305_600), "2026-11-01");
        assert_eq!(period_start(Period::Day, 1_795_305_600), "2026-11-22");
    }
}
