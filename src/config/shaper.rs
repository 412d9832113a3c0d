//! `[shaper]`: the upstream budgets and the queue that waits for them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::rate::Rate;

/// Castari's documented CRUD budget per account.
pub const DEFAULT_CRUD_LIMIT: Rate = Rate {
    max: 100,
    window: Duration::from_secs(60),
};
/// Castari's documented invocation budget per account.
pub const DEFAULT_INVOKE_LIMIT: Rate = Rate {
    max: 10,
    window: Duration::from_secs(60),
};

/// The SDK (v0.4) gives up on an ordinary request after 120 s and never
/// retries a 429 itself: a CRUD request waits at most 100 s, so its answer
/// (or the upstream's) still reaches a client that is listening.
pub const DEFAULT_CRUD_MAX_WAIT_MS: u64 = 100_000;
/// The SDK gives up on an invocation after 180 s: 170 s of waiting leaves
/// room for a quick run.
pub const DEFAULT_INVOKE_MAX_WAIT_MS: u64 = 170_000;

/// Rate shaping settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShaperConfig {
    /// Shape traffic at all. Off only for an upstream without limits.
    pub enabled: bool,
    /// Requests of any kind per window (`100/60s`, `5/1500ms`, `10/1m`).
    pub crud_limit: Rate,
    /// Invocations per window.
    pub invoke_limit: Rate,
    /// An invocation also spends the CRUD budget. The upstream does not say
    /// whether it does, so the safe default is yes.
    pub invoke_counts_as_crud: bool,
    /// Added to every window: a request leaves the gateway a little before it
    /// reaches the upstream, and the upstream counts arrivals.
    pub safety_margin_ms: u64,
    /// Most CRUD requests waiting at once; beyond it, 429 at once.
    pub crud_queue_depth: usize,
    /// Longest a CRUD request may wait for the budget. Below the SDK's and
    /// CLI's 120 s client timeout, so a queued request is answered before
    /// its client gives up.
    pub crud_max_wait_ms: u64,
    /// Most invocations waiting at once.
    pub invoke_queue_depth: usize,
    /// Longest an invocation may wait for the budget. Below the SDK's
    /// 180 s invocation timeout.
    pub invoke_max_wait_ms: u64,
    /// Ceiling of a request's own `Prefer: wait=N` (RFC 7240): a client may
    /// ask to wait less than its lane's longest wait, or more up to this.
    pub prefer_wait_max_ms: u64,
    /// Bodies up to this size are held in memory, so that a request the
    /// upstream refuses with 429 can be sent again without the client seeing it.
    pub replay_max_bytes: u64,
}

impl Default for ShaperConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            crud_limit: DEFAULT_CRUD_LIMIT,
            invoke_limit: DEFAULT_INVOKE_LIMIT,
            invoke_counts_as_crud: true,
            safety_margin_ms: 500,
            crud_queue_depth: 1000,
            crud_max_wait_ms: DEFAULT_CRUD_MAX_WAIT_MS,
            invoke_queue_depth: 1000,
            invoke_max_wait_ms: DEFAULT_INVOKE_MAX_WAIT_MS,
            prefer_wait_max_ms: 300_000,
            replay_max_bytes: 1 << 20,
        }
    }
}
