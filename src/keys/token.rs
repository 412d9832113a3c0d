//! Local key tokens: `cgw_<id>_<secret>`.
//!
//! The prefix makes a leaked token recognisable (secret scanners, logs);
//! the id finds the record without a scan; the secret is 32 random bytes
//! (256 bits) in hex. Only the SHA-256 of the whole token is stored, and it
//! is compared in constant time. A fast hash is right here: the token is
//! random, not a password, so there is nothing to brute-force.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::model::KeyHash;
pub use crate::grant::{parse_hash_hex, valid_id};
use crate::types::Secret;

/// Every local key starts with this.
pub const PREFIX: &str = "cgw_";

/// A freshly minted token and the pieces to store.
#[derive(Debug)]
pub struct Minted {
    /// The whole token, shown once.
    pub token: Secret<String>,
    /// Its id.
    pub id: String,
    /// Its hash.
    pub hash: KeyHash,
}

/// Mints a token with a new random id.
///
/// # Errors
/// The operating system's random source failed.
pub fn mint() -> Result<Minted, getrandom::Error> {
    let mut id = [0u8; 6];
    getrandom::fill(&mut id)?;
    mint_for(&hex(&id))
}

/// Mints a new secret for an existing id (rotation).
///
/// # Errors
/// The operating system's random source failed.
pub fn mint_for(id: &str) -> Result<Minted, getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let token = format!("{PREFIX}{id}_{}", hex(&secret));
    let hash = hash(&token);
    Ok(Minted {
        token: Secret::new(token),
        id: id.to_string(),
        hash,
    })
}

/// The id inside `token`, if it has the local key shape.
pub fn id_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    (valid_id(id) && !secret.is_empty()).then_some(id)
}

/// SHA-256 of a whole token.
pub fn hash(token: &str) -> KeyHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Constant-time equality of two hashes.
pub fn same(a: &KeyHash, b: &KeyHash) -> bool {
    a.ct_eq(b).into()
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_unique_recognisable_and_verify_by_hash() {
        let a = mint().unwrap();
        let b = mint().unwrap();
        assert_ne!(a.token.expose(), b.token.expose());
        assert!(a.token.expose().starts_with(PREFIX));
        assert_eq!(id_of(a.token.expose()), Some(a.id.as_str()));
        assert_eq!(a.token.expose().len(), PREFIX.len() + 12 + 1 + 64);
        assert!(same(&hash(a.token.expose()), &a.hash));
        assert!(!same(&a.hash, &b.hash));
        let rotated = mint_for(&a.id).unwrap();
        assert_eq!(rotated.id, a.id);
        assert_ne!(rotated.hash, a.hash);
    }

    #[test]
    fn hex_round_trips_and_bad_shapes_are_refused() {
        let h = hash("x");
        assert_eq!(parse_hash_hex(&hex(&h)), Some(h));
        assert_eq!(parse_hash_hex(&hex(&h).to_uppercase()), Some(h));
        assert_eq!(parse_hash_hex("zz"), None);
        assert_eq!(parse_hash_hex(&"g".repeat(64)), None);
        for bad in ["", "cgw_", "cgw__x", "cgw_ID_x", "sk_abc_def", "cgw_abc_"] {
            assert_eq!(id_of(bad), None, "{bad}");
        }
        assert_eq!(id_of("cgw_abc123_secret"), Some("abc123"));
    }
}
