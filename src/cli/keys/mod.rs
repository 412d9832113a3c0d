//! `castari-gateway keys ...`: manage local keys and read usage, straight
//! in the store: the SQLite file, or Redis in cluster mode (`--redis URL`
//! or the config's `[cluster]`). A running gateway on the same store sees
//! each change on its next request; in cluster mode every replica has
//! confirmed it before this command returns (up to `cluster.event_ack_ms`).

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;

use castari_gateway::cluster::Cluster;
use castari_gateway::config::{self, AuthMode, ClusterConfig, Config, Rate, DEFAULT_CREDENTIAL};
use castari_gateway::keys::backend::{KeyBackend, SqliteBackend};
use castari_gateway::keys::model::{Budget, KeyRecord, Origin, Role};
use castari_gateway::keys::ops::{self, NewKey};
use castari_gateway::keys::redis::RedisKeys;
use castari_gateway::keys::store::Store;
use castari_gateway::keys::{clock, portable};
use castari_gateway::types::Secret;
use clap::{Args, Subcommand};

mod show;

use show::{describe, list, print_config, print_usage};

use super::{EXIT_CONFIG, EXIT_FAILURE};

/// `keys` arguments.
#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    /// TOML config file, for `auth.db_path` and the upstream credential
    /// names (env CASTARI_GATEWAY_CONFIG).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// The SQLite file, overriding the config (and --redis).
    #[arg(long, value_name = "PATH", global = true)]
    db: Option<PathBuf>,
    /// Cluster mode: the keys are in this Redis (`redis://…`,
    /// `rediss://…`), overriding the config's `cluster.redis_url`.
    #[arg(
        long,
        value_name = "URL",
        global = true,
        env = "CASTARI_GATEWAY_REDIS_URL",
        hide_env_values = true
    )]
    redis: Option<String>,
    /// Cluster mode: the key prefix (default: the config's
    /// `cluster.prefix`).
    #[arg(long, value_name = "PREFIX", global = true)]
    prefix: Option<String>,
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
    /// Print every stored key (never a secret: ids, settings and the
    /// SHA-256 of each token) as JSON lines, for `keys import`.
    Export,
    /// Add the keys of a `keys export` file (or `-` for stdin); ids
    /// already there are left as they are.
    Import {
        /// The file.
        file: PathBuf,
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
    let now = clock::now_unix();
    if let KeysCommand::Create(create) = &args.command {
        if create.print_config {
            return print_config(create, &upstreams, now);
        }
    }
    let place = match place(&args, &config) {
        Ok(place) => place,
        Err(message) => {
            eprintln!("castari-gateway keys: {message}");
            return EXIT_CONFIG;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("castari-gateway keys: cannot start: {error}");
            return EXIT_FAILURE;
        }
    };
    runtime.block_on(async move {
        let backend = match open(place).await {
            Ok(backend) => backend,
            Err((code, message)) => {
                eprintln!("castari-gateway keys: {message}");
                return code;
            }
        };
        let names: Vec<&str> = upstreams.iter().map(String::as_str).collect();
        let result = command(args.command, backend.as_ref(), &config, &names, now).await;
        finish(result)
    })
}

/// Where the keys are.
enum Place {
    Sqlite(PathBuf),
    Redis(ClusterConfig),
}

fn place(args: &KeysArgs, config: &Config) -> Result<Place, String> {
    if let Some(db) = &args.db {
        return Ok(Place::Sqlite(db.clone()));
    }
    let mut cluster = config.cluster.clone();
    if let Some(url) = &args.redis {
        cluster.redis_url = Some(Secret::new(url.clone()));
    }
    if let Some(prefix) = &args.prefix {
        cluster.prefix = prefix.clone();
    }
    if cluster.enabled() {
        cluster.start_degraded = false;
        cluster.validate().map_err(|e| e.to_string())?;
        return Ok(Place::Redis(cluster));
    }
    match config.auth.effective_db(AuthMode::Keys) {
        Some(db) => Ok(Place::Sqlite(db)),
        None => Err("no store: give --db, --redis, auth.db_path or cluster.redis_url".into()),
    }
}

async fn open(place: Place) -> Result<Arc<dyn KeyBackend>, (i32, String)> {
    let config = match place {
        Place::Sqlite(db) => {
            return match Store::open(&db) {
                Ok(store) => Ok(Arc::new(SqliteBackend::new(store))),
                Err(error) => Err((EXIT_FAILURE, error.to_string())),
            }
        }
        Place::Redis(config) => config,
    };
    // Warnings (a replica that did not confirm a change in time) go to
    // stderr; never a URL or a secret.
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::WARN)
        .without_time()
        .with_target(false)
        .try_init();
    match Cluster::connect(&config).await {
        Ok(Some(cluster)) => {
            // Live before a change is published, to hear the replicas
            // confirm it.
            cluster.wait_subscribed(cluster.op_timeout()).await;
            Ok(Arc::new(RedisKeys::new(cluster)))
        }
        Ok(None) => Err((EXIT_CONFIG, "cluster.redis_url: not set".into())),
        Err(error) => Err((EXIT_CONFIG, error.to_string())),
    }
}

async fn command(
    command: KeysCommand,
    backend: &dyn KeyBackend,
    config: &Config,
    upstreams: &[&str],
    now: i64,
) -> Result<(), ops::OpsError> {
    match command {
        KeysCommand::Create(create) => {
            let issued = ops::create(backend, &new_key(&create), upstreams, now).await?;
            if create.json {
                println!(
                    "{}",
                    serde_json::json!({ "key": issued.token(), "info": issued.info })
                );
            } else {
                println!("{}", issued.token());
                let info = describe(&issued.info);
                eprintln!("created {info} (shown once: store it now)");
            }
            Ok(())
        }
        KeysCommand::List { json } => list(&backend.keys().await?, json),
        KeysCommand::Revoke { id } => {
            let info = ops::revoke(backend, &id, now).await?;
            eprintln!("revoked {}", describe(&info));
            Ok(())
        }
        KeysCommand::Rotate { id, grace } => {
            let grace = match grace.as_deref().map(ops::parse_lifetime) {
                None => config.auth.rotate_grace_secs,
                Some(Some(secs)) => u64::try_from(secs).unwrap_or(0),
                Some(None) => return Err(invalid("grace", "write a lifetime like 1h or 30m")),
            };
            let issued = ops::rotate(backend, &id, grace, now).await?;
            println!("{}", issued.token());
            let info = describe(&issued.info);
            eprintln!("rotated {info}: the old secret works for {grace} s more");
            Ok(())
        }
        KeysCommand::Export => {
            let keys = backend.keys().await?;
            for record in &keys {
                let fields: HashMap<&str, String> =
                    portable::to_fields(record).into_iter().collect();
                println!("{}", serde_json::to_string(&fields).unwrap_or_default());
            }
            eprintln!("exported {} keys", keys.len());
            Ok(())
        }
        KeysCommand::Import { file } => {
            let records = read_export(&file)?;
            let (imported, kept) = ops::import(backend, &records).await?;
            eprintln!("imported {imported} keys; {kept} were there already and are unchanged");
            Ok(())
        }
        KeysCommand::Usage {
            key,
            days,
            csv,
            json,
        } => {
            let report = ops::usage(backend, key.as_deref(), days, now).await?;
            if csv {
                print!("{}", report.to_csv());
            } else if json {
                let text = serde_json::to_string_pretty(&report).unwrap_or_default();
                println!("{text}");
            } else {
                print_usage(&report);
            }
            Ok(())
        }
    }
}

fn finish(result: Result<(), ops::OpsError>) -> i32 {
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

/// The keys of a `keys export` file (`-`: stdin).
fn read_export(file: &PathBuf) -> Result<Vec<KeyRecord>, ops::OpsError> {
    let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let opened = std::fs::File::open(file)
            .map_err(|e| invalid("file", format!("cannot read {}: {e}", file.display())))?;
        Box::new(std::io::BufReader::new(opened))
    };
    let mut records = Vec::new();
    for (n, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| invalid("file", format!("cannot read it: {e}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let fields: HashMap<String, String> = serde_json::from_str(&line)
            .map_err(|_| invalid("file", format!("line {}: not a keys export line", n + 1)))?;
        let mut record = portable::from_fields(&fields)
            .map_err(|e| invalid("file", format!("line {}: {e}", n + 1)))?;
        record.origin = Origin::Store;
        records.push(record);
    }
    Ok(records)
}

fn invalid(field: &'static str, message: impl Into<String>) -> ops::OpsError {
    ops::OpsError::Invalid {
        field,
        message: message.into(),
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
