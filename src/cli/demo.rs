//! `castari-gateway demo`: the simulator on an ephemeral loopback port and
//! the gateway in front of it, ready to curl. The README's first command.

use std::net::SocketAddr;

use castari_gateway::config::Config;
use castari_gateway::types::Secret;
use castari_sim::{SimConfig, Simulator};
use clap::Args;

/// The key the demo gateway holds for the simulator. It is not a real
/// Castari key; clients never see it.
const DEMO_UPSTREAM_KEY: &str = "cast_demo0000_simulatorkey";

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Where the gateway listens.
    #[arg(long, default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// Simulated deploys take this long to reach `active`.
    #[arg(long, default_value_t = 2000)]
    deploy_delay_ms: u64,
}

/// Runs the demo until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: DemoArgs) -> i32 {
    let sim_config = SimConfig {
        api_keys: vec![DEMO_UPSTREAM_KEY.to_string()],
        deploy_delay_ms: args.deploy_delay_ms,
        ..SimConfig::default()
    };
    let sim = match Simulator::start(sim_config).await {
        Ok(sim) => sim,
        Err(error) => {
            eprintln!("castari-gateway demo: cannot start the simulator: {error}");
            return super::EXIT_FAILURE;
        }
    };
    let config = match demo_config(args.listen, &sim.url()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("castari-gateway demo: {error}");
            return super::EXIT_CONFIG;
        }
    };
    let _log = castari_gateway::telemetry::init(&config.telemetry);
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!(
                "castari-gateway demo: cannot listen on {}: {error} (try --listen 127.0.0.1:0)",
                args.listen
            );
            return super::EXIT_FAILURE;
        }
    };
    let gateway = listener
        .local_addr()
        .map_or_else(|_| args.listen.to_string(), |a| a.to_string());
    print_banner(&gateway, &sim.url());
    let result = castari_gateway::run(config, listener, super::shutdown_signal()).await;
    sim.shutdown().await;
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("castari-gateway demo: {error}");
            super::EXIT_FAILURE
        }
    }
}

fn demo_config(listen: SocketAddr, sim_url: &str) -> Result<Config, String> {
    let mut config = Config::default();
    config.server.listen = listen;
    config.server.shutdown_grace_ms = 2_000;
    config.upstream.url = url::Url::parse(sim_url).map_err(|e| e.to_string())?;
    config.upstream_key = Some(Secret::new(DEMO_UPSTREAM_KEY.to_string()));
    config.validate().map_err(|e| e.to_string())
}

#[allow(clippy::print_stdout)]
fn print_banner(gateway: &str, sim: &str) {
    let g = format!("http://{gateway}");
    println!(
        r#"
castari-gateway demo
  gateway    {g}
  simulator  {sim}   (stands in for api.castari.com; the gateway holds its key)

Try it (no key needed: the gateway injects the upstream key):
  curl -s {g}/api/v1/agents -H 'Content-Type: application/json' \
       -d '{{"name":"Demo Agent","source_type":"git","git_repo_url":"https://github.com/castari/demo"}}'
  curl -s -X POST {g}/api/v1/agents/demo-agent/deploy
  curl -s {g}/api/v1/agents/demo-agent          # "deploying", then "active" after ~2 s
  curl -s {g}/api/v1/agents/demo-agent/invoke -H 'Content-Type: application/json' -d '{{"prompt":"hello"}}'
  curl -s {g}/metrics

Point the Castari SDK and CLI at it:
  export CASTARI_API_URL={g}
  export CASTARI_API_KEY=local-anything   # never forwarded upstream

Ctrl-C stops both.
"#
    );
}
