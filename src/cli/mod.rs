//! Subcommands of the `castari-gateway` binary.
//!
//! | command | what it does |
//! |---|---|
//! | `serve` | run the gateway |
//! | `check-config` | validate the configuration and exit |
//! | `demo` | the simulator on an ephemeral port and the gateway in front of it (feature `sim`, on by default) |
//! | `sim` | the Castari API simulator alone (feature `sim`) |
//! | `healthcheck` | exit 0 when a running gateway answers `/healthz` (for Docker) |
//! | `keys` | create, list, revoke, rotate local keys; read usage |
//! | `status` | the operator page's picture in the terminal (`--watch`, `--json`) |

#[cfg(feature = "sim")]
mod demo;
mod healthcheck;
mod keys;
mod status;

use std::net::SocketAddr;
use std::path::PathBuf;

use castari_gateway::config::{self, Config, ConfigError, Flags, ProcessEnv};
use clap::{Args, Parser, Subcommand};

/// Exit code for a bad configuration (`EX_CONFIG` from sysexits.h).
pub(crate) const EXIT_CONFIG: i32 = 78;
/// Exit code for any other failure.
pub(crate) const EXIT_FAILURE: i32 = 1;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "castari-gateway",
    version,
    about = "A local gateway in front of the Castari API"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ConfigArgs),
    /// Validate the configuration (file, environment, flags) and exit.
    CheckConfig(ConfigArgs),
    /// Start the simulator on an ephemeral loopback port and the gateway in front of it.
    #[cfg(feature = "sim")]
    Demo(demo::DemoArgs),
    /// Run the Castari API simulator (offline stand-in for api.castari.com).
    #[cfg(feature = "sim")]
    Sim(castari_sim::cli::SimArgs),
    /// Exit 0 if the gateway answers GET /healthz (Docker HEALTHCHECK).
    Healthcheck(healthcheck::HealthcheckArgs),
    /// Manage local keys (create, list, revoke, rotate) and read usage.
    Keys(keys::KeysArgs),
    /// Show a running gateway's budget, queue, cache, upstream and keys.
    Status(status::StatusArgs),
}

/// Where the configuration comes from.
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct ConfigArgs {
    /// TOML config file (env CASTARI_GATEWAY_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address (env CASTARI_GATEWAY_LISTEN).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Upstream base URL (env CASTARI_UPSTREAM_URL).
    #[arg(long, value_name = "URL")]
    upstream: Option<url::Url>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, ConfigError> {
        let flags = Flags {
            config: self.config.clone(),
            listen: self.listen,
            upstream: self.upstream.clone(),
        };
        config::load(&flags, &ProcessEnv)
    }
}

/// Runs a parsed command line and returns the process exit code.
pub(crate) fn run(cli: Cli) -> i32 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("castari-gateway: cannot start the runtime: {error}");
            return EXIT_FAILURE;
        }
    };
    match cli.command {
        Command::Serve(args) => runtime.block_on(serve(args)),
        Command::CheckConfig(args) => check_config(&args),
        #[cfg(feature = "sim")]
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        #[cfg(feature = "sim")]
        Command::Sim(args) => runtime.block_on(async {
            match castari_sim::cli::run(args).await {
                Ok(()) => 0,
                Err(error) => {
                    eprintln!("castari-gateway sim: {error}");
                    EXIT_CONFIG
                }
            }
        }),
        Command::Healthcheck(args) => runtime.block_on(healthcheck::run(args)),
        Command::Keys(args) => keys::run(args),
        Command::Status(args) => runtime.block_on(status::run(args)),
    }
}

fn check_config(args: &ConfigArgs) -> i32 {
    match args.load() {
        Ok(config) => {
            // Redis itself is not contacted: `serve` does, and stops with
            // exit 78 when it cannot reach it.
            let cluster = if config.cluster.enabled() {
                format!(", cluster mode (prefix {})", config.cluster.prefix)
            } else {
                String::new()
            };
            println!(
                "configuration ok: listen {}, upstream {}{cluster}",
                config.server.listen, config.upstream.url
            );
            0
        }
        Err(error) => config_failure(&error),
    }
}

fn config_failure(error: &ConfigError) -> i32 {
    eprintln!("castari-gateway: config error: {error}");
    EXIT_CONFIG
}

async fn serve(args: ConfigArgs) -> i32 {
    let config = match args.load() {
        Ok(config) => config,
        Err(error) => return config_failure(&error),
    };
    let _log = castari_gateway::telemetry::init(&config.telemetry);
    let listen = config.server.listen;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("castari-gateway: cannot listen on {listen}: {error}");
            return EXIT_FAILURE;
        }
    };
    let addr = listener.local_addr().map_or(listen, |a| a);
    tracing::info!(%addr, upstream = %config.upstream.url, "castari-gateway listening");
    let source = args.config.clone().or_else(|| {
        std::env::var_os(config::ENV_CONFIG)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    let load = Box::new(move || args.load());
    match castari_gateway::run_reloadable(config, listener, shutdown_signal(), load, source).await {
        Ok(()) => 0,
        Err(error @ castari_gateway::StartupError::Cluster(_)) => {
            eprintln!("castari-gateway: {error}");
            EXIT_CONFIG
        }
        Err(error) => {
            eprintln!("castari-gateway: {error}");
            EXIT_FAILURE
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM. Handlers are installed
/// explicitly, so this also works as PID 1 in a container.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
