//! `[server]`: the listener and its protections against slow or hostile clients.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Loopback only: a gateway that injects a real key must not be reachable
/// from the network unless someone asks for it. Port 8787 is the one the
/// docs tell SDK users to put in `CASTARI_API_URL`.
pub const DEFAULT_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 1], 8787);
/// Enough for a team's tools; each idle connection costs a few KiB.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// A client that has not sent its headers in 10 s is stalling (slowloris).
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// A body that makes no progress for 30 s is abandoned with 408.
pub const DEFAULT_BODY_IDLE_TIMEOUT_MS: u64 = 30_000;
/// 2 GiB: bodies stream, so the limit guards the upstream, not memory; it
/// leaves room for a 1 GiB file plus its multipart framing.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 2 << 30;
/// In-flight requests get this long to finish after SIGTERM.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 30_000;

/// Listener settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most client connections open at once; further ones are closed at once.
    pub max_connections: usize,
    /// Deadline for a client to send its request line and headers.
    pub header_read_timeout_ms: u64,
    /// Longest pause allowed between two chunks of a request body.
    pub body_idle_timeout_ms: u64,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: u64,
    /// How long in-flight requests may run on after a shutdown signal.
    pub shutdown_grace_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(DEFAULT_LISTEN),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
            body_idle_timeout_ms: DEFAULT_BODY_IDLE_TIMEOUT_MS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
        }
    }
}
