//! What a local key is granted, as small types both the config (keys
//! declared by hash) and the key broker read: its [`Role`], USD [`Budget`],
//! [`AgentGlobs`], and the syntax of key ids and hashes. Here so that
//! neither `config` nor `keys` imports the other's insides: `keys` reads
//! the config; the config reads only these.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

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

/// SHA-256 of a whole local key token.
pub type KeyHash = [u8; 32];

/// Whether `id` can be a key id: 1 to 32 characters of `[a-z0-9]`.
pub fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Parses 64 hex digits (either case) into a hash.
pub fn parse_hash_hex(text: &str) -> Option<KeyHash> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        let digit = |c: u8| char::from(c).to_digit(16);
        let (hi, lo) = (digit(pair[0])?, digit(pair[1])?);
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Compiled agent slug globs from a key's `agents` list; empty list = every agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentGlobs {
    /// ASCII patterns; empty means every agent.
    globs: Vec<Box<[u8]>>,
}

impl AgentGlobs {
    /// Parses globs (`*` = any run of chars, `?` = one char; otherwise literal).
    ///
    /// # Errors
    /// A message naming the first glob that is empty or has a character
    /// outside `[a-z0-9-_.*?]`.
    pub fn parse(globs: &[String]) -> Result<Self, String> {
        let allowed =
            |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'?');
        let mut compiled = Vec::with_capacity(globs.len());
        for glob in globs {
            if glob.is_empty() || !glob.bytes().all(allowed) {
                return Err(format!(
                    "agent glob {glob:?} is not valid: use a-z, 0-9, '-', '_', '.', '*' and '?'"
                ));
            }
            compiled.push(glob.as_bytes().into());
        }
        Ok(Self { globs: compiled })
    }

    /// Every agent allowed (no globs given).
    pub fn all() -> Self {
        Self { globs: Vec::new() }
    }

    /// Whether every agent is allowed.
    pub fn is_all(&self) -> bool {
        self.globs.is_empty()
    }

    /// Whether `slug` matches at least one glob (always true for [`all`](Self::all)).
    pub fn allows(&self, slug: &str) -> bool {
        if self.is_all() {
            return true;
        }
        let chars: Vec<char> = slug.chars().collect();
        self.globs.iter().any(|glob| wildcard_match(glob, &chars))
    }
}

/// The globs as written, comma-separated (`demo-*, prod-x`); `every agent`
/// when there are none. For error details: globs are not secret.
impl fmt::Display for AgentGlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_all() {
            return f.write_str("every agent");
        }
        for (i, glob) in self.globs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            // Parsed from ASCII only.
            f.write_str(&String::from_utf8_lossy(glob))?;
        }
        Ok(())
    }
}

/// Two-pointer wildcard match: on a mismatch, retry from the last `*` with
/// one more character swallowed. O(pattern × slug) at worst, no recursion.
fn wildcard_match(pattern: &[u8], slug: &[char]) -> bool {
    let (mut p, mut s) = (0, 0);
    // (pattern index after the last `*`, slug index that star swallowed up to)
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = slug.get(s) {
        match pattern.get(p) {
            Some(b'*') => {
                p += 1;
                star = Some((p, s));
            }
            Some(&b) if b == b'?' || char::from(b) == c => {
                p += 1;
                s += 1;
            }
            _ => match star {
                Some((after, swallowed)) => {
                    p = after;
                    s = swallowed + 1;
                    star = Some((after, s));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}
