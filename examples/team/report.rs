//! The client side of the results: per class counts, latencies, cache use,
//! goodput and fairness, from the records the clients kept.

use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use crate::http::{Cached, Class, Record};
use crate::roles::Tally;

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Jain's fairness index of per-client amounts: 1 when all are equal,
/// 1/n when one client got everything.
fn jain(amounts: &[u64]) -> Option<f64> {
    let sum: f64 = amounts.iter().map(|&x| x as f64).sum();
    let squares: f64 = amounts.iter().map(|&x| (x as f64) * (x as f64)).sum();
    (squares > 0.0).then(|| sum * sum / (amounts.len() as f64 * squares))
}

fn ok(r: &Record) -> bool {
    (200..300).contains(&r.status)
}

/// Counts and latencies of one class.
fn class_summary(records: &[&Record]) -> Value {
    let mut latencies: Vec<f64> = records.iter().map(|r| r.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    let count = |f: &dyn Fn(&Record) -> bool| records.iter().filter(|r| f(r)).count();
    json!({
        "requests": records.len(),
        "ok": count(&ok),
        "ok_stale": count(&|r| ok(r) && r.cached == Cached::Stale),
        "ok_hit": count(&|r| ok(r) && r.cached == Cached::Hit),
        "s429": count(&|r| r.status == 429),
        // A connection error or a client timeout counts as a 5xx.
        "s5xx": count(&|r| r.status == 0 || r.status >= 500),
        "other": count(&|r| (300..500).contains(&r.status) && r.status != 429),
        "p50_ms": percentile(&latencies, 50.0),
        "p99_ms": percentile(&latencies, 99.0),
    })
}

/// 2xx answers per client of a class (index = client).
fn ok_per_client(records: &[Record], class: Class, clients: usize) -> Vec<u64> {
    let mut per = vec![0u64; clients];
    for r in records.iter().filter(|r| r.class == class && ok(r)) {
        if let Some(slot) = per.get_mut(r.client) {
            *slot += 1;
        }
    }
    per
}

/// How many clients of each class ran.
pub(crate) struct Mix {
    pub(crate) dashboards: usize,
    pub(crate) bots: usize,
}

/// The client half of the result object.
pub(crate) fn summarise(records: &[Record], tally: &Tally, mix: &Mix, duration_s: f64) -> Value {
    let mut classes = serde_json::Map::new();
    for class in Class::ALL {
        let of: Vec<&Record> = records.iter().filter(|r| r.class == class).collect();
        classes.insert(class.name().to_string(), class_summary(&of));
    }
    let per_minute = |n: usize| n as f64 * 60.0 / duration_s;
    let fresh = records
        .iter()
        .filter(|r| ok(r) && r.cached != Cached::Stale)
        .count();
    let stale = records
        .iter()
        .filter(|r| ok(r) && r.cached == Cached::Stale)
        .count();
    let dash_ok: Vec<&Record> = records
        .iter()
        .filter(|r| r.class == Class::Dashboard && ok(r))
        .collect();
    let from_cache = dash_ok
        .iter()
        .filter(|r| matches!(r.cached, Cached::Hit | Cached::Stale))
        .count();
    let pct = |n: usize, of: usize| (of > 0).then(|| 100.0 * n as f64 / of as f64);
    let max_age = dash_ok
        .iter()
        .filter(|r| matches!(r.cached, Cached::Hit | Cached::Stale))
        .filter_map(|r| r.age_s)
        .max();
    let bots = ok_per_client(records, Class::Bot, mix.bots);
    let dashboards = ok_per_client(records, Class::Dashboard, mix.dashboards);
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let started = get(&tally.cycles_started);
    let completed = get(&tally.cycles_completed);
    let failed = get(&tally.cycles_failed);
    json!({
        "classes": classes,
        "goodput_fresh_per_min": per_minute(fresh),
        "goodput_stale_per_min": per_minute(stale),
        "dashboard_ok": dash_ok.len(),
        "dashboard_from_cache_pct": pct(from_cache, dash_ok.len()),
        "dashboard_stale_pct": pct(
            dash_ok.iter().filter(|r| r.cached == Cached::Stale).count(),
            dash_ok.len()
        ),
        "dashboard_max_age_s": max_age,
        "deploy": {
            "cycles_started": started,
            "cycles_completed": completed,
            "cycles_failed": failed,
            // Started, then cut by the end of the run.
            "cycles_cut": started - completed - failed,
            "deploys_answered": get(&tally.deploys_answered),
            "never_active": get(&tally.deploys_never_active),
            "pre_action_statuses": get(&tally.pre_action),
            "not_active": get(&tally.deployer_not_active),
        },
        "bots": {
            "sessions": get(&tally.sessions),
            "ok_per_bot": bots,
            "not_active": get(&tally.bot_not_active),
        },
        "dashboards_ok_per_client": dashboards,
        "jain_bots": jain(&bots),
        "jain_dashboards": jain(&dashboards),
    })
}

#[cfg(test)]
mod tests {
    use super::{jain, percentile};

    #[test]
    fn jain_bounds() {
        assert_eq!(jain(&[5, 5, 5]), Some(1.0));
        assert_eq!(jain(&[9, 0, 0]), Some(1.0 / 3.0));
        assert_eq!(jain(&[0, 0]), None);
    }

    #[test]
    fn nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), Some(2.0));
        assert_eq!(percentile(&v, 99.0), Some(4.0));
        assert_eq!(percentile(&[], 50.0), None);
    }
}
