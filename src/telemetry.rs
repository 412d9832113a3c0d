//! Logging and the per-request access line.
//!
//! `init` installs the tracing subscriber (text or JSON, non-blocking stdout).
//! [`Access`] is each request's record, kept by the app's frame: it counts
//! the request in metrics and writes one line with the request id, method, path
//! (never the query), route class, status, error code and latencies, and
//! hands `/api/v1` requests to the console's recent requests. It never
//! sees bodies or credentials.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use axum::response::Response;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{LogFormat, TelemetryConfig};
use crate::console::recent::{Client, Record, ShortPath};
use crate::error::ErrorCode;
use crate::metrics::{method_label, RequestLabels};
use crate::route::RouteClass;
use crate::state::AppState;
use crate::upstream::Timing;

/// Keeps the non-blocking log writer alive; drop it last to flush.
pub type LogGuard = tracing_appender::non_blocking::WorkerGuard;

/// Where a reload sends a new `telemetry.log_level`: set by [`init`]
/// unless `RUST_LOG` decides the filter.
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. `RUST_LOG` wins over `log_level`.
/// Calling it twice keeps the first subscriber.
pub fn init(config: &TelemetryConfig) -> LogGuard {
    let from_env = EnvFilter::try_from_default_env().ok();
    let reloadable = from_env.is_none();
    let filter = from_env
        .or_else(|| EnvFilter::try_new(&config.log_level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let (writer, guard) = tracing_appender::non_blocking(std::io::stdout());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let (json, text) = match config.log_format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(writer),
            ),
            None,
        ),
        LogFormat::Text => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .with_writer(writer)
                    .with_ansi(ansi),
            ),
        ),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(json)
        .with(text)
        .try_init()
        .is_ok();
    if installed && reloadable {
        let _ = LEVEL.set(handle);
    }
    guard
}

/// Applies a reloaded `telemetry.log_level` (validated with the config).
/// Nothing changes when `RUST_LOG` set the filter or no subscriber of
/// ours is installed.
pub fn set_log_level(level: &str) {
    let Some(handle) = LEVEL.get() else {
        return;
    };
    match EnvFilter::try_new(level) {
        Ok(filter) => {
            if let Err(error) = handle.reload(filter) {
                tracing::warn!(%error, "cannot apply telemetry.log_level");
            }
        }
        Err(error) => tracing::warn!(%error, "telemetry.log_level not applied"),
    }
}

/// Makes request ids: a per-process random prefix and a counter. Cheaper
/// than a UUID and still unique across restarts.
#[derive(Clone, Debug)]
pub struct RequestIds {
    /// `gw-<12 hex digits>-`, written once.
    prefix: [u8; PREFIX_LEN],
    counter: std::sync::Arc<AtomicU64>,
}

/// `gw-`, 12 hex digits of the process's prefix, and `-`.
const PREFIX_LEN: usize = 16;

impl Default for RequestIds {
    fn default() -> Self {
        let nanos = crate::clock::since_epoch().as_nanos() as u64;
        let seed = (nanos ^ (u64::from(std::process::id()) << 32)) & 0xffff_ffff_ffff;
        let mut prefix = *b"gw-000000000000-";
        for (i, digit) in prefix[3..15].iter_mut().enumerate() {
            let nibble = (seed >> (4 * (11 - i))) & 0xf;
            *digit = b"0123456789abcdef"[nibble as usize];
        }
        Self {
            prefix,
            counter: std::sync::Arc::default(),
        }
    }
}

impl RequestIds {
    /// The next id, as the value of an `x-request-id` header.
    pub fn next(&self) -> http::HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // The prefix rendered once and the counter by `itoa`: `format!`
        // cost about 1,200 instructions per request (callgrind), a tenth
        // of a cache hit's.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(n).as_bytes();
        let mut id = [0u8; PREFIX_LEN + 20];
        id[..PREFIX_LEN].copy_from_slice(&self.prefix);
        let len = PREFIX_LEN + digits.len();
        id[PREFIX_LEN..len].copy_from_slice(digits);
        // Hex digits, dashes and decimal digits are always a valid value;
        // the fallback only keeps `unwrap` off the request path.
        http::HeaderValue::from_bytes(&id[..len]).unwrap_or(http::HeaderValue::from_static("gw"))
    }
}

/// One request's access record: begun when it arrives, finished when its
/// response headers are ready. `/api/v1` requests also go into the
/// console's recent requests (`console::recent`).
#[derive(Debug)]
pub struct Access {
    started: Instant,
    method: &'static str,
    /// `Local` unless the proxy says otherwise ([`Access::taken`]).
    class: RouteClass,
    /// An `/api/v1` request's path, for the console's recent requests
    /// (kept inline: no allocation).
    api: Option<ShortPath>,
    /// The path, when logged.
    path: Option<Box<str>>,
    /// Who sent it, once the proxy took it.
    client: Client,
    /// The request id, captured only when logged.
    logged: Option<String>,
}

impl Access {
    /// Starts the record of `request`.
    pub fn begin<B>(state: &AppState, request: &http::Request<B>) -> Self {
        let path = request.uri().path();
        let logged = state.config.telemetry.access_log.then(|| {
            request
                .headers()
                .get(crate::upstream::headers::X_REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        });
        Self {
            started: Instant::now(),
            method: method_label(request.method()),
            class: RouteClass::Local,
            api: path.starts_with("/api/v1/").then(|| ShortPath::new(path)),
            path: logged.is_some().then(|| path.into()),
            client: Client::Unknown,
            logged,
        }
    }

    /// What the proxy learnt of a request at once: its route class, and
    /// its local key (keys mode) or else the peer it came from.
    pub fn taken(
        &mut self,
        class: RouteClass,
        key: Option<std::sync::Arc<str>>,
        peer: Option<crate::types::Peer>,
    ) {
        self.class = class;
        self.client = match (key, peer) {
            (Some(key), _) => Client::Key(key),
            (None, Some(peer)) => Client::Peer(peer.remote.ip()),
            (None, None) => Client::Unknown,
        };
    }

    /// Counts the request in metrics and writes its access line.
    pub fn finish(self, state: &AppState, response: &Response) {
        let class = self.class;
        let code = response.extensions().get::<ErrorCode>().map_or("", |c| c.0);
        let timing = response.extensions().get::<Timing>().copied();
        let Timing { upstream, waited } = timing.unwrap_or_default();
        let overhead = self.started.elapsed().saturating_sub(waited);
        let status = response.status().as_u16();
        if let Some(latency) = upstream {
            state.readiness.mark_ok();
            state.metrics.upstream_latency(class.as_str(), latency);
        }
        if class != RouteClass::Local {
            state.metrics.overhead(class.as_str(), overhead);
        }
        let method = self.method;
        state.metrics.request(RequestLabels {
            class: class.as_str(),
            method,
            status,
            code,
        });
        // The `X-Cache` the client sees is the record: no extension to
        // allocate on every hit. Only the gateway's own values count; an
        // upstream's header of that name on a route the cache does not
        // take says nothing of the gateway's cache.
        let cache = response
            .headers()
            .get(crate::cache::X_CACHE)
            .and_then(crate::cache::CacheStatus::of_header)
            .map_or("", crate::cache::CacheStatus::as_str);
        if let Some(request_id) = &self.logged {
            tracing::info!(
                target: "access",
                request_id = %request_id,
                method,
                path = self.path.as_deref().unwrap_or(""),
                class = class.as_str(),
                status,
                code,
                cache,
                latency_ms = self.started.elapsed().as_secs_f64() * 1000.0,
                upstream_ms = upstream.map(|l| l.as_secs_f64() * 1000.0),
                overhead_ms = overhead.as_secs_f64() * 1000.0,
            );
        }
        if let Some(path) = self.api {
            state.console.recent.push(Record {
                seq: 0,
                at: self.started,
                client: self.client,
                method,
                path,
                status,
                cache,
                waited,
                upstream,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_the_prefix_and_a_counter() {
        let ids = RequestIds::default();
        let make = |ids: &RequestIds| ids.next().to_str().unwrap().to_string();
        let first = make(&ids);
        let (prefix, n) = first.rsplit_once('-').unwrap();
        assert_eq!(prefix.len(), 15, "{first}");
        assert!(prefix.starts_with("gw-"));
        assert!(prefix[3..].bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(n, "0");
        for expected in 1..=10 {
            assert_eq!(make(&ids), format!("{prefix}-{expected}"));
        }
        ids.counter.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(make(&ids), format!("{prefix}-{}", u64::MAX));
    }
}
