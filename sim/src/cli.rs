//! `castari-gateway sim`: the simulator as a command.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::{RateLimit, SimConfig, Simulator, WindowKind};

/// Arguments of `castari-gateway sim`.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8788")]
    pub listen: SocketAddr,
    /// An accepted Bearer key (repeatable). None: any non-empty key.
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_keys: Vec<String>,
    /// CRUD limit per key, e.g. 100/60s.
    #[arg(long)]
    pub crud_limit: Option<RateLimit>,
    /// Invocation limit per key, e.g. 10/60s.
    #[arg(long)]
    pub invoke_limit: Option<RateLimit>,
    /// fixed or sliding.
    #[arg(long)]
    pub window: Option<WindowKind>,
    /// deploying -> active after this many milliseconds.
    #[arg(long)]
    pub deploy_delay_ms: Option<u64>,
    /// Deploy answers `active` at once.
    #[arg(long)]
    pub sync_deploy: bool,
    /// Each invocation takes this long.
    #[arg(long)]
    pub invoke_latency_ms: Option<u64>,
    /// Fault: added latency on every request.
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Fault: extra random latency up to this.
    #[arg(long)]
    pub jitter_ms: Option<u64>,
    /// Fault: share of requests answered 500/502/503 (0..1).
    #[arg(long)]
    pub error_rate: Option<f64>,
    /// Fault: share of connections dropped without a response (0..1).
    #[arg(long)]
    pub drop_rate: Option<f64>,
    /// Fault: share of responses that stall mid-body (0..1).
    #[arg(long)]
    pub stall_rate: Option<f64>,
    /// A TOML file whose `[sim]` table is a simulator config; flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    sim: SimConfig,
}

impl SimArgs {
    /// The listen address and config these arguments describe.
    ///
    /// # Errors
    /// A message naming the bad file, field or flag.
    pub fn into_config(self) -> Result<(SocketAddr, SimConfig), String> {
        let mut config = match &self.config {
            None => SimConfig::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                let table: toml::Table = toml::from_str(&text)
                    .map_err(|e| format!("{}: {}", path.display(), e.message()))?;
                let sim = table
                    .get("sim")
                    .cloned()
                    .unwrap_or(toml::Value::Table(toml::Table::new()));
                let file = File {
                    sim: sim
                        .try_into()
                        .map_err(|e: toml::de::Error| format!("sim: {}", e.message()))?,
                };
                file.sim
            }
        };
        if !self.api_keys.is_empty() {
            config.api_keys = self.api_keys;
        }
        if let Some(v) = self.crud_limit {
            config.crud_limit = v;
        }
        if let Some(v) = self.invoke_limit {
            config.invoke_limit = v;
        }
        if let Some(v) = self.window {
            config.window = v;
        }
        if let Some(v) = self.deploy_delay_ms {
            config.deploy_delay_ms = v;
        }
        if self.sync_deploy {
            config.sync_deploy = true;
        }
        if let Some(v) = self.invoke_latency_ms {
            config.invoke_latency_ms = v;
        }
        if let Some(v) = self.latency_ms {
            config.faults.latency_ms = v;
        }
        if let Some(v) = self.jitter_ms {
            config.faults.jitter_ms = v;
        }
        for (name, value, slot) in [
            (
                "--error-rate",
                self.error_rate,
                &mut config.faults.error_rate,
            ),
            ("--drop-rate", self.drop_rate, &mut config.faults.drop_rate),
            (
                "--stall-rate",
                self.stall_rate,
                &mut config.faults.stall_rate,
            ),
        ] {
            if let Some(v) = value {
                if !(0.0..=1.0).contains(&v) {
                    return Err(format!("{name}: must be between 0 and 1"));
                }
                *slot = v;
            }
        }
        Ok((self.listen, config))
    }
}

/// Runs the simulator until Ctrl-C or SIGTERM.
///
/// # Errors
/// A bad argument or an address that cannot be bound.
#[allow(clippy::print_stdout)]
pub async fn run(args: SimArgs) -> Result<(), String> {
    let (listen, config) = args.into_config()?;
    let sim = Simulator::bind(listen, config)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    println!("castari-sim listening on {}", sim.url());
    wait_for_signal().await;
    sim.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: SimArgs,
    }

    fn parse(args: &[&str]) -> Result<(SocketAddr, SimConfig), String> {
        let mut full = vec!["sim"];
        full.extend_from_slice(args);
        Cmd::try_parse_from(full)
            .map_err(|e| e.to_string())?
            .args
            .into_config()
    }

    #[test]
    fn flags_set_every_knob() {
        let (addr, c) = parse(&[
            "--listen",
            "127.0.0.1:0",
            "--api-key",
            "a",
            "--api-key",
            "b",
            "--crud-limit",
            "5/1s",
            "--invoke-limit",
            "2/500ms",
            "--window",
            "sliding",
            "--sync-deploy",
            "--error-rate",
            "0.5",
        ])
        .unwrap();
        assert_eq!(addr.port(), 0);
        assert_eq!(c.api_keys, ["a", "b"]);
        assert_eq!(c.crud_limit.to_string(), "5/1s");
        assert_eq!(c.invoke_limit.to_string(), "2/500ms");
        assert_eq!(c.window, WindowKind::Sliding);
        assert!(c.sync_deploy);
        assert!((c.faults.error_rate - 0.5).abs() < f64::EPSILON);
    }

    #[test]
    fn bad_values_are_named() {
        assert!(parse(&["--crud-limit", "lots"])
            .unwrap_err()
            .contains("lots"));
        assert!(parse(&["--window", "rolling"])
            .unwrap_err()
            .contains("rolling"));
        assert!(parse(&["--drop-rate", "2"])
            .unwrap_err()
            .contains("--drop-rate"));
    }

    #[test]
    fn config_file_sim_table_with_flag_overrides() {
        let path =
            std::env::temp_dir().join(format!("castari-sim-cli-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "[sim]\ncrud_limit = \"7/2s\"\nwindow = \"sliding\"\n[sim.faults]\nlatency_ms = 5\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let (_, c) = parse(&["--config", p, "--window", "fixed"]).unwrap();
        assert_eq!(c.crud_limit.to_string(), "7/2s");
        assert_eq!(c.window, WindowKind::Fixed);
        assert_eq!(c.faults.latency_ms, 5);
        std::fs::write(&path, "[sim]\ncrud_limt = \"7/2s\"\n").unwrap();
        assert!(parse(&["--config", p]).unwrap_err().contains("crud_limt"));
    }
}
