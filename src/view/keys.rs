//! The keys table (keys mode): each key's usage today, its budget spent
//! this period, and the day it runs out at the period's rate so far.

use std::collections::HashMap;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::grant::Period;
use crate::keys::clock;
use crate::state::AppState;

use super::model::{BudgetView, KeyRow, Today};

/// Every key of the table as loaded, with its usage from the ledger.
/// `None` in open mode; rows without usage when the ledger cannot be read
/// (logged).
pub async fn rows(state: &AppState) -> Option<Vec<KeyRow>> {
    let backend = state.broker.backend()?;
    let now = clock::now_unix();
    let today = clock::day(now);
    let keys = state.broker.ring().all();
    let since = clock::period_start(Period::Month, now).min(today.clone());
    let usage = match backend.usage(None, &since).await {
        Ok(rows) => rows,
        Err(error) => {
            tracing::warn!(%error, "operator page: the usage ledger cannot be read");
            Vec::new()
        }
    };
    let mut by_key: HashMap<&str, Vec<&crate::keys::model::UsageRow>> = HashMap::new();
    for row in &usage {
        by_key.entry(row.key_id.as_str()).or_default().push(row);
    }
    let mut rows: Vec<KeyRow> = keys
        .iter()
        .map(|key| {
            let record = &key.record;
            let used = by_key
                .get(record.id.as_str())
                .map_or(&[][..], Vec::as_slice);
            let mut day = Today::default();
            let mut cost = Decimal::ZERO;
            for row in used.iter().filter(|r| r.day == today) {
                day.requests += row.requests;
                day.invocations += row.invocations;
                cost += row.cost_usd;
            }
            day.cost_usd = cost.normalize().to_string();
            let budget = record.budget.map(|budget| {
                let start = clock::period_start(budget.period, now);
                let spent: Decimal = used
                    .iter()
                    .filter(|r| r.day >= start)
                    .map(|r| r.cost_usd)
                    .sum();
                BudgetView {
                    limit_usd: budget.usd.normalize().to_string(),
                    period: budget.period.as_str().to_string(),
                    spent_usd: spent.normalize().to_string(),
                    used_ratio: ratio(spent, budget.usd),
                    runs_out: runs_out(
                        spent,
                        budget.usd,
                        clock::period_start_unix(budget.period, now),
                        now,
                    ),
                }
            });
            KeyRow {
                id: record.id.clone(),
                name: record.name.clone(),
                role: record.role.as_str().to_string(),
                revoked: record.revoked_at.is_some(),
                today: day,
                budget,
            }
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name).then(a.id.cmp(&b.id)));
    Some(rows)
}

fn ratio(spent: Decimal, limit: Decimal) -> f64 {
    match (spent.to_f64(), limit.to_f64()) {
        (Some(spent), Some(limit)) if limit > 0.0 => spent / limit,
        _ => 0.0,
    }
}

/// The UTC day on which `limit` is reached if spending goes on at the
/// rate of `spent` since `start`: `None` when nothing is spent; today when
/// it is reached already.
fn runs_out(spent: Decimal, limit: Decimal, start: i64, now: i64) -> Option<String> {
    if spent <= Decimal::ZERO {
        return None;
    }
    if spent >= limit {
        return Some(clock::day(now));
    }
    // At least a minute elapsed, so a first spend at the period's start
    // does not forecast the end of time in a second.
    let elapsed = (now - start).max(60) as f64;
    let per_sec = spent.to_f64()? / elapsed;
    let left = (limit - spent).to_f64()? / per_sec;
    const CENTURY: f64 = 100.0 * 365.0 * 86_400.0;
    Some(clock::day(now + left.min(CENTURY) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usd(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn the_forecast_follows_the_period_rate() {
        let start = 1_795_305_600; // a midnight
        let day = 86_400;
        // 5 of 20 spent in 2 days: 15 left at 2.5 a day is 6 more days.
        assert_eq!(
            runs_out(usd("5"), usd("20"), start, start + 2 * day),
            Some(clock::day(start + 8 * day))
        );
        assert_eq!(runs_out(Decimal::ZERO, usd("20"), start, start + day), None);
        assert_eq!(
            runs_out(usd("20.00"), usd("20"), start, start + day),
            Some(clock::day(start + day)),
            "spent: today"
        );
        // A tiny spend forecasts a far day, never an overflow.
        assert!(runs_out(usd("0.0000001"), usd("1000000"), start, start + 1).is_some());
    }

    #[test]
    fn the_ratio_is_for_the_bar() {
        assert_eq!(ratio(usd("5"), usd("20")), 0.25);
        assert_eq!(ratio(usd("0"), usd("20")), 0.0);
    }
}
