//! `castari-gateway keys ...`: manage local keys and read usage, straight
//! in the store file. A running gateway on the same file sees each change
//! on its next request.

use std::path::PathBuf;

use castari_gateway::config::{self, AuthMode, Config, Rate, DEFAULT_CREDENTIAL};
use castari_gateway::keys::clock;
use castari_gateway::keys::model::{Budget, KeyInfo, Role};
use castari_gateway::keys::ops::{self, NewKey};
use castari_gateway::keys::store::Store;
use castari_gateway::keys::token;
use clap::{Args, Subcommand};

use super::{EXIT_CONFIG, EXIT_FAILURE};

/// `keys` arguments.
#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    /// TOML config file, for `auth.db_path` and the upstream credential
    /// names (env CASTARI_GATEWAY_CONFIG).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// The SQLite file, overriding the config.
    #[arg(long, value_name = "PATH", global = true)]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print it once.
    Create(CreateArgs),
    /// List keys (never their secrets).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key at once.
    Revoke {
        /// Key id.
        id: String,
    },
    /// Give a key a new secret; the old one works for a grace period.
    Rotate {
        /// Key id.
        id: String,
        /// How long the old secret keeps working, e.g. 1h (default: auth.rotate_grace_secs).
        #[arg(long, value_name = "LIFETIME")]
        grace: Option<String>,
    },
    /// Usage per key, day, agent and route class.
    Usage {
        /// Only this key.
        #[arg(long, value_name = "ID")]
        key: Option<String>,
        /// Days back, today included.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// CSV instead of a table.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Human name, e.g. ci-bot.
    #[arg(long)]
    name: String,
    /// read, invoke, deploy or admin.
    #[arg(long)]
    role: Role,
    /// Agent slug globs, comma-separated, e.g. 'demo-*,prod-x'.
    #[arg(long, value_delimiter = ',')]
    agents: Vec<String>,
    /// The key's own rate limit, e.g. 30/min.
    #[arg(long)]
    rate: Option<Rate>,
    /// Spending limit, e.g. 20/month or 2.50/day.
    #[arg(long = "budget-usd", value_name = "USD/PERIOD")]
    budget_usd: Option<Budget>,
    /// Lifetime, e.g. 30d.
    #[arg(long)]
    expires: Option<String>,
    /// Upstream credential the key is bound to.
    #[arg(long, default_value = DEFAULT_CREDENTIAL)]
    upstream: String,
    /// Do not store the key: print a `[[auth.keys]]` block for the config file.
    #[arg(long)]
    print_config: bool,
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// Runs a `keys` subcommand; returns the exit code.
pub(crate) fn run(args: KeysArgs) -> i32 {
    let config = match load_config(args.config.as_ref()) {
        Ok(config) => config,
        Err(message) => {
            eprintln!("castari-gateway keys: config error: {message}");
            return EXIT_CONFIG;
        }
    };
    let mut upstreams = vec![DEFAULT_CREDENTIAL.to_string()];
    upstreams.extend(config.upstream.credentials.keys().cloned());
    let db = args
        .db
        .clone()
        .or_else(|| config.auth.effective_db(AuthMode::Keys));
    let now = clock::now_unix();
    if let KeysCommand::Create(create) = &args.command {
        if create.print_config {
            return print_config(create, &upstreams, now);
        }
    }
    let Some(db) = db else {
        eprintln!("castari-gateway keys: no database: give --db or auth.db_path");
        return EXIT_CONFIG;
    };
    let store = match Store::open(&db) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("castari-gateway keys: {error}");
            return EXIT_FAILURE;
        }
    };
    let result = match args.command {
        KeysCommand::Create(create) => {
            let names: Vec<&str> = upstreams.iter().map(String::as_str).collect();
            ops::create(Some(&store), &new_key(&create), &names, now).map(|(issued, _)| {
                if create.json {
                    println!(
                        "{}",
                        serde_json::json!({ "key": issued.token(), "info": issued.info })
                    );
                } else {
                    println!("{}", issued.token());
                    eprintln!(
                        "created {} (shown once: store it now)",
                        describe(&issued.info)
                    );
                }
            })
        }
        KeysCommand::List { json } => list(&store, json),
        KeysCommand::Revoke { id } => ops::revoke(&store, &id, now).map(|info| {
            eprintln!("revoked {}", describe(&info));
        }),
        KeysCommand::Rotate { id, grace } => {
            let grace = match grace.as_deref().map(ops::parse_lifetime) {
                None => config.auth.rotate_grace_secs,
                Some(Some(secs)) => u64::try_from(secs).unwrap_or(0),
                Some(None) => {
                    eprintln!("castari-gateway keys: --grace: write a lifetime like 1h or 30m");
                    return EXIT_CONFIG;
                }
            };
            ops::rotate(&store, &id, grace, now).map(|issued| {
                println!("{}", issued.token());
                eprintln!(
                    "rotated {}: the old secret works for {grace} s more",
                    describe(&issued.info)
                );
            })
        }
        KeysCommand::Usage {
            key,
            days,
            csv,
            json,
        } => ops::usage(&store, key.as_deref(), days, now).map(|report| {
            if csv {
                print!("{}", report.to_csv());
            } else if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
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
        }),
    };
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("castari-gateway keys: {error}");
            match error {
                ops::OpsError::Invalid { .. } | ops::OpsError::NotFound(_) => EXIT_CONFIG,
                _ => EXIT_FAILURE,
            }
        }
    }
}

/// The config file without the checks `serve` needs (no upstream key is
/// required to manage keys).
fn load_config(path: Option<&PathBuf>) -> Result<Config, String> {
    let path = path
        .cloned()
        .or_else(|| std::env::var_os(config::ENV_CONFIG).map(PathBuf::from));
    match path {
        Some(path) => Config::from_file(&path).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

fn new_key(args: &CreateArgs) -> NewKey {
    NewKey {
        name: args.name.clone(),
        role: args.role,
        agents: args.agents.iter().map(|a| a.trim().to_string()).collect(),
        rate: args.rate,
        budget_usd: args.budget_usd,
        expires: args.expires.clone(),
        upstream: Some(args.upstream.clone()),
    }
}

fn list(store: &Store, json: bool) -> Result<(), ops::OpsError> {
    let keys: Vec<KeyInfo> = store.keys()?.iter().map(KeyInfo::from).collect();
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

fn print_config(args: &CreateArgs, upstreams: &[String], now: i64) -> i32 {
    let names: Vec<&str> = upstreams.iter().map(String::as_str).collect();
    match ops::create(None, &new_key(args), &names, now) {
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

fn describe(info: &KeyInfo) -> String {
    format!("key {} ({}, role {})", info.id, info.name, info.role)
}
