//! A stored key as named text fields: how the Redis backend holds a key
//! (one hash per key) and how `keys export` / `keys import` move keys
//! between stores (one JSON object per line). The hashes go as hex: they
//! are SHA-256 of the tokens, never the tokens.

use std::collections::HashMap;

use super::model::{KeyRecord, Origin};
use super::token;

/// The fields of `record`; optional ones only when set.
pub fn to_fields(record: &KeyRecord) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("id", record.id.clone()),
        ("name", record.name.clone()),
        ("role", record.role.as_str().to_string()),
        (
            "agents",
            serde_json::to_string(&record.agents).unwrap_or_else(|_| "[]".into()),
        ),
        ("upstream", record.upstream.clone()),
        ("created_at", record.created_at.to_string()),
        ("hash", token::hex(&record.hash)),
    ];
    if let Some(rate) = record.rate {
        fields.push(("rate", rate.to_string()));
    }
    if let Some(budget) = record.budget {
        fields.push(("budget", budget.to_string()));
    }
    if let Some(at) = record.expires_at {
        fields.push(("expires_at", at.to_string()));
    }
    if let Some(at) = record.revoked_at {
        fields.push(("revoked_at", at.to_string()));
    }
    if let Some((hash, until)) = record.previous {
        fields.push(("prev_hash", token::hex(&hash)));
        fields.push(("prev_until", until.to_string()));
    }
    fields
}

/// A stored key from its fields.
///
/// # Errors
/// A missing or unreadable field, named.
pub fn from_fields(fields: &HashMap<String, String>) -> Result<KeyRecord, String> {
    let get = |name: &str| fields.get(name).map(String::as_str);
    let need = |name: &'static str| get(name).ok_or_else(|| format!("{name}: missing"));
    fn parse<T: std::str::FromStr>(name: &str, text: &str) -> Result<T, String> {
        text.parse().map_err(|_| format!("{name}: unreadable"))
    }
    let optional = |name: &'static str| get(name).map(|text| parse::<i64>(name, text)).transpose();
    let hash = |name: &'static str, text: &str| {
        token::parse_hash_hex(text).ok_or_else(|| format!("{name}: not a SHA-256 in hex"))
    };
    let id = need("id")?.to_string();
    if !crate::grant::valid_id(&id) {
        return Err("id: not a key id".into());
    }
    let previous = match (get("prev_hash"), optional("prev_until")?) {
        (Some(text), Some(until)) => Some((hash("prev_hash", text)?, until)),
        (None, None) => None,
        _ => return Err("prev_hash, prev_until: one without the other".into()),
    };
    Ok(KeyRecord {
        id,
        name: need("name")?.to_string(),
        role: parse("role", need("role")?)?,
        agents: serde_json::from_str(need("agents")?).map_err(|_| "agents: unreadable")?,
        rate: get("rate").map(|t| parse("rate", t)).transpose()?,
        budget: get("budget").map(|t| parse("budget", t)).transpose()?,
        upstream: need("upstream")?.to_string(),
        created_at: parse("created_at", need("created_at")?)?,
        expires_at: optional("expires_at")?,
        revoked_at: optional("revoked_at")?,
        hash: hash("hash", need("hash")?)?,
        previous,
        origin: Origin::Store,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::model::Role;

    #[test]
    fn a_record_survives_its_fields_and_bad_fields_are_named() {
        let record = KeyRecord {
            id: "k1".into(),
            name: "ci, \"bot\"".into(),
            role: Role::Invoke,
            agents: vec!["demo-*".into()],
            rate: Some("30/min".parse().unwrap()),
            budget: Some("2.50/day".parse().unwrap()),
            upstream: "team-b".into(),
            created_at: 1_700_000_000,
            expires_at: Some(1_800_000_000),
            revoked_at: None,
            hash: [7; 32],
            previous: Some(([9; 32], 1_700_000_600)),
            origin: Origin::Store,
        };
        let fields: HashMap<String, String> = to_fields(&record)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        assert_eq!(from_fields(&fields).unwrap(), record);
        let mut broken = fields.clone();
        broken.insert("budget".into(), "lots".into());
        assert_eq!(from_fields(&broken).unwrap_err(), "budget: unreadable");
        let mut broken = fields;
        broken.remove("prev_until");
        assert!(from_fields(&broken).unwrap_err().contains("prev_until"));
    }
}
