//! The records of the key broker: roles, budgets, local keys and usage rows.
//!
//! These types are shared by the store (SQLite), the in-memory key ring the
//! request path reads, the CLI and the admin API. Hashes never leave this
//! module's types in a printable form: [`KeyInfo`] is the view that is shown.

use rust_decimal::Decimal;
use serde::Serialize;

use crate::config::Rate;
pub use crate::grant::{Budget, KeyHash, Period, Role};

/// Where a key was declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Created by `keys create` or `POST /admin/keys`, held in SQLite.
    Store,
    /// Declared by hash under `[[auth.keys]]` in the config file.
    Config,
}

/// One local key as stored. `hash` and `previous` are never shown.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRecord {
    /// Public identifier, also embedded in the token (`cgw_<id>_<secret>`).
    pub id: String,
    /// Human name (`ci-bot`).
    pub name: String,
    /// What the key may do.
    pub role: Role,
    /// Agent slug globs (`demo-*`); empty means every agent.
    pub agents: Vec<String>,
    /// The key's own request rate, on top of the shared upstream budget.
    pub rate: Option<Rate>,
    /// The key's spending limit.
    pub budget: Option<Budget>,
    /// The upstream credential the key is bound to.
    pub upstream: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which the key is refused.
    pub expires_at: Option<i64>,
    /// Unix seconds when the key was revoked.
    pub revoked_at: Option<i64>,
    /// SHA-256 of the current token.
    pub hash: KeyHash,
    /// After a rotation: the old token's hash and until when (unix seconds)
    /// it stays valid.
    pub previous: Option<(KeyHash, i64)>,
    /// Where the key was declared.
    pub origin: Origin,
}

/// What is shown about a key: everything but its hashes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct KeyInfo {
    /// Public identifier.
    pub id: String,
    /// Human name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Agent globs; empty means every agent.
    pub agents: Vec<String>,
    /// Rate limit, as written (`30/min`).
    pub rate: Option<String>,
    /// Budget, as written (`20/month`).
    pub budget: Option<Budget>,
    /// Upstream credential name.
    pub upstream: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
    /// Unix seconds until which the pre-rotation token still works.
    pub previous_valid_until: Option<i64>,
    /// `store` or `config`.
    pub origin: Origin,
}

impl From<&KeyRecord> for KeyInfo {
    fn from(r: &KeyRecord) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            role: r.role,
            agents: r.agents.clone(),
            rate: r.rate.map(|rate| rate.to_string()),
            budget: r.budget,
            upstream: r.upstream.clone(),
            created_at: r.created_at,
            expires_at: r.expires_at,
            revoked_at: r.revoked_at,
            previous_valid_until: r.previous.map(|(_, until)| until),
            origin: r.origin,
        }
    }
}

/// Usage to add to the ledger for one key, day, agent and route class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct UsageDelta {
    /// Local key id (`open` in open mode).
    pub key_id: String,
    /// UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Agent slug, or empty for routes that name none.
    pub agent: String,
    /// Route class label (`crud`, `invoke`, `long`, `download`).
    pub class: String,
    /// Requests answered (by the upstream or the cache).
    pub requests: u64,
    /// Invocations that returned an `InvocationResponse`.
    pub invocations: u64,
    /// Input tokens reported by the upstream.
    pub input_tokens: u64,
    /// Output tokens reported by the upstream.
    pub output_tokens: u64,
    /// Cost in USD, exact; shown as a decimal string.
    #[serde(serialize_with = "decimal_string")]
    pub cost_usd: Decimal,
}

/// Money goes out as a string (`"0.000171"`), as the upstream writes it:
/// no reader turns it into a float on the way.
fn decimal_string<S: serde::Serializer>(value: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&value.normalize())
}

/// One row of the ledger: the sums for a key, day, agent and class.
pub type UsageRow = UsageDelta;
