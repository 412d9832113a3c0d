//! The key ring: every local key in memory, kept in step with the store.
//!
//! Each verification first asks SQLite whether another connection (the
//! CLI, the admin API, another replica on the same file) committed
//! anything (`PRAGMA data_version`, read from shared memory, no disk I/O).
//! So a revoked key stops working on the very next request, on every
//! process that shares the file, without a restart.
//!
//! That look never waits, so it can run on a runtime worker: it has its own
//! connection (the *prober*) that never waits for a lock (`busy_timeout`
//! 0), taken with `try_lock`, and the table is read without a lock
//! (`ArcSwap`). When the look cannot be made at once (the prober is busy,
//! SQLite is busy) or shows a commit, the verification answers
//! [`VerifyError::Stale`]: the caller reloads with [`KeyRing::refresh`]
//! off the runtime (`spawn_blocking`), on a second connection that may
//! wait, and verifies again with [`KeyRing::verify_loaded`].
//!
//! In cluster mode the keys are in Redis: the look is one atomic load of a
//! flag that key events, resyncs and a generation poll set (see
//! [`Remote`]), and the reload is [`KeyRing::refresh_remote`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use arc_swap::ArcSwap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::model::{KeyRecord, Origin};
use super::remote::Remote;
use super::scope::AgentGlobs;
use super::store::{Store, StoreError, BUSY_TIMEOUT};
use super::token;
use crate::config::{AuthConfig, Rate, DEFAULT_CREDENTIAL};
use crate::error::GatewayError;

/// A verified local key, with what the request path needs of it.
#[derive(Debug)]
pub struct LocalKey {
    /// Its id, shared: the request path labels requests with it.
    pub id: Arc<str>,
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
                "This gateway requires a local API key: send Authorization: Bearer cgw_... (or \
                 set CASTARI_API_KEY for the SDK and CLI); the gateway's operator issues them \
                 with castari-gateway keys create",
            ),
            Refused::Unknown => (
                "invalid_api_key",
                "This gateway does not know the key sent (or its secret is wrong; a Castari API \
                 key is not accepted here): send a cgw_... key issued by this gateway's operator",
            ),
            Refused::Revoked => (
                "key_revoked",
                "This gateway key has been revoked; ask the gateway's operator for a new one",
            ),
            Refused::Expired => (
                "key_expired",
                "This gateway key has expired; ask the gateway's operator for a new one",
            ),
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
    /// Reads the keys (a refresh, off the runtime; may wait for locks).
    reader: Option<Mutex<Store>>,
    /// Looks for commits (per request, on the runtime; never waits).
    prober: Option<Mutex<Store>>,
    /// Cluster mode: the keys are in Redis.
    remote: Option<Remote>,
    /// `[[auth.keys]]`; replaced by a config reload.
    declared: RwLock<Vec<KeyRecord>>,
    table: ArcSwap<Table>,
    /// What the last refresh saw; `data_version` is the prober's.
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
    pub fn new(config: &AuthConfig, store: Option<(Store, Store)>) -> Result<Self, StoreError> {
        let declared = config.keys.iter().filter_map(declared_record).collect();
        let (reader, prober) = match store {
            Some((reader, prober)) => {
                prober.never_wait()?;
                (Some(Mutex::new(reader)), Some(Mutex::new(prober)))
            }
            None => (None, None),
        };
        let ring = Self {
            reader,
            prober,
            remote: None,
            declared: RwLock::new(declared),
            table: ArcSwap::from_pointee(Table::new()),
            seen: Mutex::new(Seen::default()),
            limiters: Mutex::new(HashMap::new()),
        };
        ring.refresh()?;
        Ok(ring)
    }

    /// The declared keys of `config` and, once read, the keys in Redis
    /// (cluster mode): the first request reads them.
    pub fn with_remote(config: &AuthConfig, remote: Remote) -> Self {
        let declared = config.keys.iter().filter_map(declared_record).collect();
        let ring = Self {
            reader: None,
            prober: None,
            remote: Some(remote),
            declared: RwLock::new(declared),
            table: ArcSwap::from_pointee(Table::new()),
            seen: Mutex::new(Seen::default()),
            limiters: Mutex::new(HashMap::new()),
        };
        ring.install(Vec::new());
        ring
    }

    /// A key was changed through this process: in cluster mode the next
    /// verification rereads the keys (other replicas hear of it on the
    /// event bus; SQLite's own connections see the commit anyway).
    pub fn changed_here(&self) {
        if let Some(remote) = &self.remote {
            remote.mark_stale();
        }
    }

    /// Whether the keys are in Redis (cluster mode).
    pub fn is_remote(&self) -> bool {
        self.remote.is_some()
    }

    /// Cluster mode: rereads the keys from Redis if they may have changed
    /// (see [`Remote::refresh`]). Elsewhere a no-op.
    ///
    /// # Errors
    /// Redis cannot be read and no table was ever loaded.
    pub async fn refresh_remote(&self) -> Result<(), StoreError> {
        match &self.remote {
            Some(remote) => remote.refresh(|stored| self.install(stored)).await,
            None => Ok(()),
        }
    }

    /// Checks a presented token and returns its key, when the table is
    /// known to be current without waiting (module docs).
    ///
    /// # Errors
    /// [`Refused`] for a bad token; [`VerifyError::Stale`] when the table
    /// must be reloaded first ([`refresh`](Self::refresh), then
    /// [`verify_loaded`](Self::verify_loaded)).
    pub fn verify(&self, token: Option<&str>, now: i64) -> Result<Arc<LocalKey>, VerifyError> {
        let token = token.ok_or(VerifyError::Refused(Refused::Missing))?;
        if !self.is_current() {
            return Err(VerifyError::Stale);
        }
        self.verify_loaded(Some(token), now)
    }

    /// Whether the table holds the store's keys as of now, found without
    /// waiting: `false` also when that cannot be told at once.
    fn is_current(&self) -> bool {
        if let Some(remote) = &self.remote {
            return remote.is_current();
        }
        let Some(prober) = &self.prober else {
            return true;
        };
        let Ok(prober) = prober.try_lock() else {
            return false;
        };
        let Ok(seen) = self.seen.try_lock() else {
            return false;
        };
        matches!(
            (prober.data_version(), seen.data_version),
            (Ok(now), Some(then)) if now == then
        )
    }

    /// Checks a presented token against the table as loaded.
    ///
    /// # Errors
    /// [`Refused`] for a bad token.
    pub fn verify_loaded(
        &self,
        token: Option<&str>,
        now: i64,
    ) -> Result<Arc<LocalKey>, VerifyError> {
        let token = token.ok_or(VerifyError::Refused(Refused::Missing))?;
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
        if let Some(remote) = &self.remote {
            self.install(remote.stored());
            // A reread racing this may have installed the old declared
            // keys: the next request reads again.
            remote.mark_stale();
            return Ok(());
        }
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
        self.table.load_full()
    }

    /// Reloads the table if the store's key generation moved. It may wait
    /// for SQLite's locks: call it off the runtime (`spawn_blocking`).
    ///
    /// # Errors
    /// The store cannot be read.
    pub fn refresh(&self) -> Result<(), StoreError> {
        if self.remote.is_some() {
            return Ok(());
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let (Some(reader), Some(prober)) = (&self.reader, &self.prober) else {
            if seen.generation.is_none() {
                seen.generation = Some(0);
                self.install(Vec::new());
            }
            return Ok(());
        };
        // The prober's count, read before the keys: a commit after it makes
        // the next look go for another refresh.
        let version = {
            let prober = prober.lock().unwrap_or_else(PoisonError::into_inner);
            // The prober never waits on its own; here, off the runtime, it
            // may, as long as any connection would.
            let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
            loop {
                match prober.data_version() {
                    Ok(version) => break version,
                    Err(error) if error.is_busy() && std::time::Instant::now() < deadline => {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(error) => return Err(error),
                }
            }
        };
        if seen.data_version == Some(version) {
            return Ok(());
        }
        let reader = reader.lock().unwrap_or_else(PoisonError::into_inner);
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
                    id: Arc::from(record.id.as_str()),
                    record,
                    globs,
                    limiter,
                }),
            );
        }
        limiters.retain(|id, _| table.contains_key(id));
        self.table.store(Arc::new(table));
    }
}

/// A verification failure.
#[derive(Debug)]
pub enum VerifyError {
    /// The token is refused.
    Refused(Refused),
    /// The store could not be read.
    Store(StoreError),
    /// The table may be behind the store: reload it off the runtime, then
    /// verify again.
    Stale,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::model::Role;

    fn minted(id: &str) -> (String, KeyRecord) {
        let minted = token::mint_for(id).unwrap();
        let record = KeyRecord {
            id: id.to_string(),
            name: id.to_string(),
            role: Role::Read,
            agents: Vec::new(),
            rate: None,
            budget: None,
            upstream: DEFAULT_CREDENTIAL.to_string(),
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            hash: minted.hash,
            previous: None,
            origin: Origin::Store,
        };
        (minted.token.expose().clone(), record)
    }

    #[test]
    fn another_connections_commit_makes_the_look_stale_until_a_refresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let writer = Store::open(&path).unwrap();
        let (token, record) = minted("k1");
        writer.insert_key(&record).unwrap();
        let readers = (Store::open(&path).unwrap(), Store::open(&path).unwrap());
        let ring = KeyRing::new(&AuthConfig::default(), Some(readers)).unwrap();
        assert!(ring.verify(Some(&token), 1).is_ok(), "current: verified");

        // Another connection revokes: the look sees a commit, and the
        // table as loaded still has the key until a refresh.
        writer.revoke("k1", 1).unwrap();
        let looked = ring.verify(Some(&token), 1);
        assert!(matches!(looked, Err(VerifyError::Stale)), "{looked:?}");
        assert!(ring.verify_loaded(Some(&token), 1).is_ok());

        ring.refresh().unwrap();
        let loaded = ring.verify_loaded(Some(&token), 1);
        assert!(
            matches!(loaded, Err(VerifyError::Refused(Refused::Revoked))),
            "{loaded:?}"
        );
        let again = ring.verify(Some(&token), 1);
        assert!(
            matches!(again, Err(VerifyError::Refused(Refused::Revoked))),
            "current again after the refresh: {again:?}"
        );
    }
}
