//! The records of the key broker: roles, budgets, local keys and usage rows.
//!
//! These types are shared by the store (SQLite), the in-memory key ring the
//! request path reads, the CLI and the admin API. Hashes never leave this
//! module's types in a printable form: [`KeyInfo`] is the view that is shown.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::config::Rate;

/// What a local key may do. Each role includes `read`; `admin` includes all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// GETs (and HEADs) of every route but the security-sensitive ones.
    Read,
    /// `read`, plus invocations and sessions.
    Invoke,
    /// `read`, plus agents, deploys, secrets, files, mounts and buckets.
    Deploy,
    /// Everything, the security-sensitive routes included.
    Admin,
}

impl Role {
    /// The name used in the config, the CLI and the store.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Invoke => "invoke",
            Self::Deploy => "deploy",
            Self::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "read" => Ok(Self::Read),
            "invoke" => Ok(Self::Invoke),
            "deploy" => Ok(Self::Deploy),
            "admin" => Ok(Self::Admin),
            _ => Err(format!(
                "{text:?} is not a role: use read, invoke, deploy or admin"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The period a budget covers, in UTC calendar terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// The current UTC day.
    Day,
    /// The current UTC calendar month.
    Month,
}

impl Period {
    /// `day` or `month`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Day => "day",
            Self::Month => "month",
        }
    }
}

/// A spending limit in USD per period, written `20/month` or `5/day`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// The most that may be spent in one period, exact.
    pub usd: Decimal,
    /// Which period.
    pub period: Period,
}

impl FromStr for Budget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid =
            || format!("{text:?} is not a budget: write USD/PERIOD, e.g. 20/month, 2.50/day");
        let (usd, period) = text.split_once('/').ok_or_else(invalid)?;
        let usd = usd.trim().trim_start_matches('$');
        let usd = Decimal::from_str_exact(usd).map_err(|_| invalid())?;
        if usd <= Decimal::ZERO {
            return Err(invalid());
        }
        let period = match period.trim() {
            "day" | "d" => Period::Day,
            "month" | "mo" => Period::Month,
            _ => return Err(invalid()),
        };
        Ok(Self { usd, period })
    }
}

impl fmt::Display for Budget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.usd.normalize(), self.period.as_str())
    }
}

impl Serialize for Budget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Where a key was declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Created by `keys create` or `POST /admin/keys`, held in SQLite.
    Store,
    /// Declared by hash under `[[auth.keys]]` in the config file.
    Config,
}

/// SHA-256 of a whole local key token.
pub type KeyHash = [u8; 32];

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
