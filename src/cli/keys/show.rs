//! What the `keys` commands print: key lists, usage tables and config
//! blocks. Never a secret but the token just minted.

use castari_gateway::config::DEFAULT_CREDENTIAL;
use castari_gateway::keys::model::{KeyInfo, KeyRecord, Origin};
use castari_gateway::keys::ops;
use castari_gateway::keys::{clock, token};

use super::{new_key, CreateArgs};
use crate::cli::EXIT_CONFIG;

pub(super) fn print_usage(report: &ops::UsageReport) {
    println!(
        "{:<14} {:<20} {:>9} {:>11} {:>12} {:>12} {:>14}",
        "key", "name", "requests", "invocations", "input_tok", "output_tok", "cost_usd"
    );
    for total in &report.totals {
        let t = &total.usage;
        println!(
            "{:<14} {:<20} {:>9} {:>11} {:>12} {:>12} {:>14}",
            t.key_id,
            total.key_name,
            t.requests,
            t.invocations,
            t.input_tokens,
            t.output_tokens,
            t.cost_usd.normalize()
        );
    }
    eprintln!("since {} (UTC); --csv for per-day rows", report.since);
}

pub(super) fn list(stored: &[KeyRecord], json: bool) -> Result<(), ops::OpsError> {
    let keys: Vec<KeyInfo> = stored.iter().map(KeyInfo::from).collect();
    if json {
        println!("{}", serde_json::json!({ "keys": keys }));
        return Ok(());
    }
    println!(
        "{:<14} {:<20} {:<7} {:<10} {:<12} {:<16} {:<10} agents",
        "id", "name", "role", "upstream", "rate", "budget", "state"
    );
    let now = clock::now_unix();
    for k in keys {
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else if k.expires_at.is_some_and(|at| now >= at) {
            "expired"
        } else {
            "active"
        };
        println!(
            "{:<14} {:<20} {:<7} {:<10} {:<12} {:<16} {:<10} {}",
            k.id,
            k.name,
            k.role,
            k.upstream,
            k.rate.as_deref().unwrap_or("-"),
            k.budget.map_or("-".to_string(), |b| b.to_string()),
            state,
            if k.agents.is_empty() {
                "*".to_string()
            } else {
                k.agents.join(",")
            }
        );
    }
    Ok(())
}

pub(super) fn print_config(args: &CreateArgs, upstreams: &[String], now: i64) -> i32 {
    let names: Vec<&str> = upstreams.iter().map(String::as_str).collect();
    match ops::mint(&new_key(args), &names, now, Origin::Config) {
        Ok((issued, record)) => {
            println!("{}", issued.token());
            eprintln!("# add to the config file (the key above is shown once):");
            eprintln!("[[auth.keys]]");
            eprintln!("id = {:?}", record.id);
            eprintln!("name = {:?}", record.name);
            eprintln!("sha256 = {:?}", token::hex(&record.hash));
            eprintln!("role = {:?}", record.role.as_str());
            if !record.agents.is_empty() {
                eprintln!("agents = {:?}", record.agents);
            }
            if let Some(rate) = record.rate {
                eprintln!("rate = {:?}", rate.to_string());
            }
            if let Some(budget) = record.budget {
                eprintln!("budget_usd = {:?}", budget.to_string());
            }
            if record.upstream != DEFAULT_CREDENTIAL {
                eprintln!("upstream = {:?}", record.upstream);
            }
            if let Some(at) = record.expires_at {
                eprintln!("expires_at = {at}");
            }
            0
        }
        Err(error) => {
            eprintln!("castari-gateway keys: {error}");
            EXIT_CONFIG
        }
    }
}

pub(super) fn describe(info: &KeyInfo) -> String {
    format!("key {} ({}, role {})", info.id, info.name, info.role)
}
