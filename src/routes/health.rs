//! `/healthz`, `/readyz` and `/metrics`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::error_response;
use crate::state::AppState;

/// An upstream answer within this window counts as "reachable recently".
const READY_WINDOW: Duration = Duration::from_secs(30);
/// How long `/readyz` waits for a TCP connect when nothing was heard lately.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /healthz`: 200 while the process serves requests.
pub async fn healthz() -> Response {
    json_ok(r#"{"status":"ok"}"#)
}

/// `GET /readyz`: 200 when the upstream answered in the last 30 s, or a TCP
/// connection to it opens now; 503 otherwise, and while the circuit breaker
/// is open. The body names the circuit's state and, in cluster mode,
/// Redis's: while it is lost the status is `degraded` (still 200: the
/// replica serves on its local share of the budgets).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let circuit = state.breaker.circuit();
    if circuit == crate::upstream::breaker::Circuit::Open {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "circuit_open",
            "Not ready: the Castari API failed repeatedly and the circuit breaker is open; it \
             lets a probe through after breaker.open_ms",
        );
    }
    if state.readiness.recently_ok(READY_WINDOW) || probe(state.upstream.base()).await {
        let body = match &state.cluster {
            None => format!(r#"{{"status":"ready","circuit":"{}"}}"#, circuit.as_str()),
            // Still 200: a replica without Redis serves on its local share.
            Some(cluster) => {
                let (status, redis) = if cluster.is_up() {
                    ("ready", "up")
                } else {
                    ("degraded", "lost")
                };
                format!(
                    r#"{{"status":"{status}","circuit":"{}","redis":"{redis}"}}"#,
                    circuit.as_str()
                )
            }
        };
        return ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    }
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "upstream_unreachable",
        "Not ready: the Castari API has not answered in the last 30 s and a TCP connect to it \
         failed; check upstream.url and the network",
    )
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Some(cache) = &state.cache {
        cache.refresh_gauges().await;
    }
    let body = state.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn probe(base: &url::Url) -> bool {
    let (Some(host), Some(port)) = (base.host_str(), base.port_or_known_default()) else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let connect = tokio::net::TcpStream::connect((host, port));
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, connect).await,
        Ok(Ok(_))
    )
}

fn json_ok(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
