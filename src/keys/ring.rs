//! The key ring: every local key in memory, kept in step with the store.
//!
//! Each verification first asks SQLite whether another connection (the
//! CLI, the admin API, another replica on the same file) committed
//! anything (`PRAGMA data_version`, read from shared memory, no disk I/O);
//! only when the key generation moved is the table reloaded. So a revoked
//! key stops working on the very next request, on every process that
//! shares the file, without a restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::model::{KeyRecord, Origin};
use super::scope::AgentGlobs;
use super::store::{Store, StoreError};
use super::token;
use crate::config::{AuthConfig, Rate, DEFAULT_CREDENTIAL};
use crate::error::GatewayError;

/// A verified local key, with what the request path needs of it.
#[derive(Debug)]
pub struct LocalKey {
    /// The stored record.
    pub record: KeyRecord,
    /// Its agent globs, compiled.
    pub globs: AgentGlobs,
    /// Its own rate limiter, when it has a rate.
    pub limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

/// Why a presented token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// No token was sent.
    Missing,
    /// Not a local key, or no such key, or a wrong secret.
    Unknown,
    /// The key was revoked.
    Revoked,
    /// The key is past its expiry.
    Expired,
}

impl From<Refused> for GatewayError {
    fn from(refused: Refused) -> Self {
        let (code, detail) = match refused {
            Refused::Missing => (
                "missing_api_key",
                "A gateway key is required: send Authorization: Bearer <your cgw_ key>",
            ),
            Refused::Unknown => ("invalid_api_key", "Invalid API key"),
            Refused::Revoked => ("key_revoked", "This API key has been revoked"),
            Refused::Expired => ("key_expired", "This API key has expired"),
        };
        Self::Unauthorized { code, detail }
    }
}

#[derive(Default)]
struct Seen {
    data_version: Option<i64>,
    generation: Option<i64>,
}

type Table = HashMap<String, Arc<LocalKey>>;

/// Every local key, from the config file and the store.
pub struct KeyRing {
    reader: Option<Mutex<Store>>,
    /// `[[auth.keys]]`; replaced by a config reload.
    declared: RwLock<Vec<KeyRecord>>,
    table: RwLock<Arc<Table>>,
    seen: Mutex<Seen>,
    limiters: Mutex<HashMap<String, (Rate, Arc<DefaultDirectRateLimiter>)>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.current().len())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the declared keys of `config` and, with a store, its keys.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn new(config: &AuthConfig, reader: Option<Store>) -> Result<Self, StoreError> {
        let declared = config.keys.iter().filter_map(declared_record).collect();
        let ring = Self {
            reader: reader.map(Mutex::new),
            declared: RwLock::new(declared),
            table: RwLock::new(Arc::new(Table::new())),
            seen: Mutex::new(Seen::default()),
            limiters: Mutex::new(HashMap::new()),
        };
        ring.refresh()?;
        Ok(ring)
    }

    /// Checks a presented token and returns its key.
    ///
    /// # Errors
    /// [`Refused`] for a bad token; `Err(Err(StoreError))` when the store
    /// cannot be read (the request must then be refused, not let through).
    pub fn verify(&self, token: Option<&str>, now: i64) -> Result<Arc<LocalKey>, VerifyError> {
        let token = token.ok_or(VerifyError::Refused(Refused::Missing))?;
        self.refresh().map_err(VerifyError::Store)?;
        let id = token::id_of(token).ok_or(VerifyError::Refused(Refused::Unknown))?;
        let key = self
            .current()
            .get(id)
            .cloned()
            .ok_or(VerifyError::Refused(Refused::Unknown))?;
        let presented = token::hash(token);
        let record = &key.record;
        let current = token::same(&presented, &record.hash);
        let previous = record
            .previous
            .is_some_and(|(hash, until)| now < until && token::same(&presented, &hash));
        if !(current || previous) {
            return Err(VerifyError::Refused(Refused::Unknown));
        }
        if record.revoked_at.is_some() {
            return Err(VerifyError::Refused(Refused::Revoked));
        }
        if record.expires_at.is_some_and(|at| now >= at) {
            return Err(VerifyError::Refused(Refused::Expired));
        }
        Ok(key)
    }

    /// Every key, declared ones first.
    pub fn all(&self) -> Vec<Arc<LocalKey>> {
        let mut keys: Vec<_> = self.current().values().cloned().collect();
        keys.sort_by(|a, b| {
            (
                a.record.origin == Origin::Store,
                a.record.created_at,
                &a.record.id,
            )
                .cmp(&(
                    b.record.origin == Origin::Store,
                    b.record.created_at,
                    &b.record.id,
                ))
        });
        keys
    }

    /// Replaces the declared keys with those of `config` (a reload) and
    /// rebuilds the table. Per-key rate limiters whose rate is unchanged
    /// carry over.
    ///
    /// # Errors
    /// The store cannot be read; the old declared keys then stay.
    pub fn set_declared(&self, config: &AuthConfig) -> Result<(), StoreError> {
        let declared = config.keys.iter().filter_map(declared_record).collect();
        let old = self.swap_declared(declared);
        self.refresh().inspect_err(|_| {
            self.swap_declared(old);
        })
    }

    /// Replaces the declared keys and makes the next refresh rebuild the
    /// table; returns the old ones.
    fn swap_declared(&self, declared: Vec<KeyRecord>) -> Vec<KeyRecord> {
        let old = std::mem::replace(
            &mut *self
                .declared
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            declared,
        );
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) = Seen::default();
        old
    }

    fn current(&self) -> Arc<Table> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reloads the table if the store's key generation moved.
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn refresh(&self) -> Result<(), StoreError> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(reader) = &self.reader else {
            if seen.generation.is_none() {
                seen.generation = Some(0);
                self.install(Vec::new());
            }
            return Ok(());
        };
        let reader = reader.lock().unwrap_or_else(PoisonError::into_inner);
        let version = reader.data_version()?;
        if seen.data_version == Some(version) {
            return Ok(());
        }
        let generation = reader.generation()?;
        seen.data_version = Some(version);
        if seen.generation == Some(generation) {
            return Ok(());
        }
        let stored = reader.keys()?;
        seen.generation = Some(generation);
        self.install(stored);
        Ok(())
    }

    fn install(&self, stored: Vec<KeyRecord>) {
        let mut limiters = self.limiters.lock().unwrap_or_else(PoisonError::into_inner);
        let mut table = Table::new();
        // Declared keys win over stored ones with the same id.
        let declared = self
            .declared
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for record in stored.into_iter().chain(declared) {
            let globs = match AgentGlobs::parse(&record.agents) {
                Ok(globs) => globs,
                Err(error) => {
                    tracing::error!(key = %record.id, %error, "key skipped: bad agent globs");
                    continue;
                }
            };
            let limiter = record.rate.map(|rate| match limiters.get(&record.id) {
                Some((kept, limiter)) if *kept == rate => limiter.clone(),
                _ => {
                    let limiter = Arc::new(RateLimiter::direct(quota(rate)));
                    limiters.insert(record.id.clone(), (rate, limiter.clone()));
                    limiter
                }
            });
            let id = record.id.clone();
            table.insert(
                id,
                Arc::new(LocalKey {
                    record,
                    globs,
                    limiter,
                }),
            );
        }
        limiters.retain(|id, _| table.contains_key(id));
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }
}

/// A verification failure.
#[derive(Debug)]
pub enum VerifyError {
    /// The token is refused.
    Refused(Refused),
    /// The store could not be read.
    Store(StoreError),
}

/// `rate.max` requests per `rate.window`, as a burst of `max` refilled
/// evenly (governor's GCRA).
fn quota(rate: Rate) -> Quota {
    let burst = std::num::NonZeroU32::new(rate.max).unwrap_or(std::num::NonZeroU32::MIN);
    let period = rate.window / rate.max.max(1);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(burst))
        .allow_burst(burst)
}

/// A `[[auth.keys]]` entry as a record (validated at config load).
fn declared_record(key: &crate::config::DeclaredKey) -> Option<KeyRecord> {
    Some(KeyRecord {
        id: key.id.clone(),
        name: key.name.clone(),
        role: key.role,
        agents: key.agents.clone(),
        rate: key.rate,
        budget: key.budget_usd,
        upstream: key
            .upstream
            .clone()
            .unwrap_or_else(|| DEFAULT_CREDENTIAL.to_string()),
        created_at: 0,
        expires_at: key.expires_at,
        revoked_at: None,
        hash: token::parse_hash_hex(&key.sha256)?,
        previous: None,
        origin: Origin::Config,
    })
}
