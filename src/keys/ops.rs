//! Key management operations, shared by the `keys` CLI and `/admin/keys`:
//! create, rotate, revoke, export and import, and the usage report, on
//! whichever [`KeyBackend`] holds the keys.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::backend::KeyBackend;
use super::clock;
use super::model::{Budget, KeyInfo, KeyRecord, Origin, Role, UsageRow};
use super::scope::AgentGlobs;
use super::store::StoreError;
use super::token;
use crate::config::{Rate, DEFAULT_CREDENTIAL};
use crate::types::Secret;

/// What a new key should be.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Human name, 1 to 64 characters.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Agent slug globs; empty means every agent.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Own rate limit, e.g. `30/min`.
    #[serde(default)]
    pub rate: Option<Rate>,
    /// Budget, e.g. `20/month`.
    #[serde(default)]
    pub budget_usd: Option<Budget>,
    /// Lifetime, e.g. `30d`, `12h`.
    #[serde(default)]
    pub expires: Option<String>,
    /// Upstream credential name; `default` when absent.
    #[serde(default)]
    pub upstream: Option<String>,
}

/// A key just made or rotated: the token is shown this once.
#[derive(Debug, Serialize)]
pub struct Issued {
    /// The whole token.
    pub key: Secret<String>,
    /// The key's record, without hashes.
    pub info: KeyInfo,
}

impl Issued {
    /// The token, for the one place that shows it.
    pub fn token(&self) -> &str {
        self.key.expose()
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// A field is invalid.
    #[error("{field}: {message}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such key.
    #[error("no key with id {0:?}")]
    NotFound(String),
    /// The key is declared in the config file and cannot change here.
    #[error("key {0:?} is declared in the config file; change it there")]
    Declared(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The random source failed.
    #[error("cannot draw random bytes: {0}")]
    Random(String),
}

/// Validates `new`, mints its key and saves it in `backend`.
///
/// # Errors
/// An invalid field, an unknown upstream, or a backend failure.
pub async fn create(
    backend: &dyn KeyBackend,
    new: &NewKey,
    upstreams: &[&str],
    now: i64,
) -> Result<Issued, OpsError> {
    let (issued, record) = mint(new, upstreams, now, Origin::Store)?;
    backend.insert_key(&record).await?;
    Ok(issued)
}

/// Validates `new` and mints its key without saving it (`--print-config`
/// wants the record for the config file).
///
/// # Errors
/// An invalid field or an unknown upstream.
pub fn mint(
    new: &NewKey,
    upstreams: &[&str],
    now: i64,
    origin: Origin,
) -> Result<(Issued, KeyRecord), OpsError> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(invalid("name", "must be 1 to 64 printable characters"));
    }
    AgentGlobs::parse(&new.agents).map_err(|e| invalid("agents", e))?;
    let upstream = new.upstream.as_deref().unwrap_or(DEFAULT_CREDENTIAL);
    if !upstreams.contains(&upstream) {
        return Err(invalid(
            "upstream",
            format!("no upstream credential named {upstream:?}"),
        ));
    }
    let expires_at = match &new.expires {
        None => None,
        Some(text) => Some(
            parse_lifetime(text)
                .filter(|secs| *secs <= MAX_LIFETIME_SECS)
                .and_then(|secs| now.checked_add(secs))
                .ok_or_else(|| {
                    invalid(
                        "expires",
                        format!(
                            "{text:?} is not a lifetime up to 100 years: write 30d, 12h, 90m \
                             or 3600s"
                        ),
                    )
                })?,
        ),
    };
    let minted = token::mint().map_err(|e| OpsError::Random(e.to_string()))?;
    let record = KeyRecord {
        id: minted.id,
        name: name.to_string(),
        role: new.role,
        agents: new.agents.clone(),
        rate: new.rate,
        budget: new.budget_usd,
        upstream: upstream.to_string(),
        created_at: now,
        expires_at,
        revoked_at: None,
        hash: minted.hash,
        previous: None,
        origin,
    };
    let issued = Issued {
        key: minted.token,
        info: KeyInfo::from(&record),
    };
    Ok((issued, record))
}

/// Gives key `id` a new secret; the old one works for `grace_secs` more.
///
/// # Errors
/// No such key (or revoked), or a store failure.
pub async fn rotate(
    backend: &dyn KeyBackend,
    id: &str,
    grace_secs: u64,
    now: i64,
) -> Result<Issued, OpsError> {
    let minted = token::mint_for(id).map_err(|e| OpsError::Random(e.to_string()))?;
    let until = now.saturating_add(i64::try_from(grace_secs).unwrap_or(i64::MAX));
    let record = backend
        .rotate(id, &minted.hash, until)
        .await?
        .ok_or_else(|| OpsError::NotFound(id.to_string()))?;
    Ok(Issued {
        key: minted.token,
        info: KeyInfo::from(&record),
    })
}

/// Revokes key `id` at once.
///
/// # Errors
/// No such key, or a store failure.
pub async fn revoke(backend: &dyn KeyBackend, id: &str, now: i64) -> Result<KeyInfo, OpsError> {
    let record = backend
        .revoke(id, now)
        .await?
        .ok_or_else(|| OpsError::NotFound(id.to_string()))?;
    Ok(KeyInfo::from(&record))
}

/// Copies `records` into `backend`; a key whose id is there already is
/// left as it is. Returns (imported, already there).
///
/// # Errors
/// A backend failure (the keys before it are imported).
pub async fn import(
    backend: &dyn KeyBackend,
    records: &[KeyRecord],
) -> Result<(usize, usize), OpsError> {
    let (mut imported, mut kept) = (0, 0);
    for record in records {
        match backend.insert_key(record).await {
            Ok(()) => imported += 1,
            Err(StoreError::Duplicate(_)) => kept += 1,
            Err(error) => return Err(error.into()),
        }
    }
    Ok((imported, kept))
}

/// Usage over the last `days` days (today included), per row and per key.
#[derive(Debug, Serialize)]
pub struct UsageReport {
    /// The first day included, `YYYY-MM-DD`.
    pub since: String,
    /// Per key, day, agent and route class.
    pub rows: Vec<ReportRow>,
    /// Per key, over the whole range.
    pub totals: Vec<ReportRow>,
}

/// One line of a usage report: a ledger row and its key's name.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReportRow {
    /// The key's name, if known.
    pub key_name: String,
    /// The sums; `day` and `class` are empty in totals.
    #[serde(flatten)]
    pub usage: UsageRow,
}

/// Builds the usage report from the ledger.
///
/// # Errors
/// A store failure.
pub async fn usage(
    backend: &dyn KeyBackend,
    key: Option<&str>,
    days: u32,
    now: i64,
) -> Result<UsageReport, OpsError> {
    let back = i64::from(days.max(1) - 1) * 86_400;
    let since = clock::day(now - back);
    let names: BTreeMap<String, String> = (backend.keys().await?.into_iter())
        .map(|k| (k.id, k.name))
        .collect();
    let ledger = backend.usage(key, &since).await?;
    let name = |id: &str| names.get(id).cloned().unwrap_or_default();
    let mut totals: BTreeMap<String, ReportRow> = BTreeMap::new();
    for row in &ledger {
        let total = totals
            .entry(row.key_id.clone())
            .or_insert_with(|| ReportRow {
                key_name: name(&row.key_id),
                usage: UsageRow {
                    key_id: row.key_id.clone(),
                    ..UsageRow::default()
                },
            });
        let sum = &mut total.usage;
        sum.requests += row.requests;
        sum.invocations += row.invocations;
        sum.input_tokens += row.input_tokens;
        sum.output_tokens += row.output_tokens;
        sum.cost_usd += row.cost_usd;
    }
    let rows = ledger
        .into_iter()
        .map(|usage| ReportRow {
            key_name: name(&usage.key_id),
            usage,
        })
        .collect();
    Ok(UsageReport {
        since,
        rows,
        totals: totals.into_values().collect(),
    })
}

impl UsageReport {
    /// The rows as CSV, with a header line.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "day,key_id,key_name,agent,class,requests,invocations,input_tokens,output_tokens,cost_usd\n",
        );
        for row in &self.rows {
            let r = &row.usage;
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{}\n",
                r.day,
                csv(&r.key_id),
                csv(&row.key_name),
                csv(&r.agent),
                r.class,
                r.requests,
                r.invocations,
                r.input_tokens,
                r.output_tokens,
                r.cost_usd.normalize()
            ));
        }
        out
    }
}

/// Quotes a CSV field when it needs it; a leading `=`, `+`, `-` or `@`
/// is prefixed with `'` so spreadsheets do not run it as a formula.
fn csv(field: &str) -> String {
    let field = match field.chars().next() {
        Some('=' | '+' | '-' | '@') => format!("'{field}"),
        _ => field.to_string(),
    };
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field
    }
}

/// The longest lifetime a key may be given: 100 years, far past any key's
/// use and far from an overflow of the expiry time.
const MAX_LIFETIME_SECS: i64 = 100 * 365 * 86_400;

/// `30d`, `12h`, `90m`, `3600s` as seconds.
pub fn parse_lifetime(text: &str) -> Option<i64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: i64 = number.parse().ok().filter(|n| *n > 0)?;
    let unit: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(unit)
}

fn invalid(field: &'static str, message: impl Into<String>) -> OpsError {
    OpsError::Invalid {
        field,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes_and_csv_fields() {
        assert_eq!(parse_lifetime("30d"), Some(30 * 86_400));
        assert_eq!(parse_lifetime("12h"), Some(43_200));
        assert_eq!(parse_lifetime("90m"), Some(5_400));
        assert_eq!(parse_lifetime("3600s"), Some(3_600));
        for bad in ["", "d", "0d", "10", "5y", "-1d"] {
            assert_eq!(parse_lifetime(bad), None, "{bad}");
        }
        assert_eq!(csv("plain"), "plain");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("=cmd()"), "'=cmd()");
        assert_eq!(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
    }
}
