//! `castari-gateway healthcheck`: a probe for Docker's `HEALTHCHECK`, since
//! slim images have no curl.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Args;

/// Arguments of `healthcheck`.
#[derive(Debug, Args)]
pub(crate) struct HealthcheckArgs {
    /// Full URL to probe. Default: `/healthz` on the configured listen
    /// address (env CASTARI_GATEWAY_LISTEN), with 0.0.0.0 mapped to loopback.
    #[arg(long, value_name = "URL")]
    url: Option<url::Url>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
}

/// Exit 0 on a 2xx answer, 1 otherwise.
pub(crate) async fn run(args: HealthcheckArgs) -> i32 {
    let url = match args.url {
        Some(url) => url.to_string(),
        None => default_url(),
    };
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_millis(args.timeout_ms))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("healthcheck: {error}");
            return super::EXIT_FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => 0,
        Ok(response) => {
            eprintln!("healthcheck: {url} answered {}", response.status());
            super::EXIT_FAILURE
        }
        Err(error) => {
            eprintln!("healthcheck: {url}: {}", error.without_url());
            super::EXIT_FAILURE
        }
    }
}

fn default_url() -> String {
    format!("{}/healthz", default_base())
}

/// `http://ADDR` of the configured listen address (env
/// CASTARI_GATEWAY_LISTEN, else the default), 0.0.0.0 mapped to loopback.
pub(crate) fn default_base() -> String {
    let listen = std::env::var(castari_gateway::config::ENV_LISTEN)
        .ok()
        .and_then(|v| v.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| SocketAddr::from(castari_gateway::config::server::DEFAULT_LISTEN));
    let ip = if listen.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        listen.ip()
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}
