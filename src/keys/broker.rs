//! The broker: who is calling, what they may do, what they spend.
//!
//! On the request path, in order: [`Broker::identify`] (the local key, or
//! the one open-mode user, and its upstream credential), then
//! [`Broker::authorize`] (role, agent globs, the key's own rate), then for
//! invocations [`Broker::reserve`] before sending and
//! [`Broker::settle_invocation`] after. Every answered request is counted
//! with [`Broker::count`]. All of it happens before the cache and the
//! shaper, so a refused request never reaches either.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::request::Parts;
use http::{header, HeaderMap, Method};
use rust_decimal::Decimal;

use super::backend::{write_id, KeyBackend, SqliteBackend};
use super::clock;
use super::ledger::{Ledger, Owed};
use super::model::{KeyHash, Role, UsageDelta};
use super::redis::RedisKeys;
use super::remote::Remote;
use super::ring::{KeyRing, LocalKey, VerifyError};
use super::scope::{self, AgentGlobs};
use super::store::{Reserve, Store, StoreError};
use super::token;
pub use super::usage::InvocationUsage;
use crate::cluster::Cluster;
use crate::config::{AuthMode, Config};
use crate::console::session::Principal;
use crate::error::GatewayError;
use crate::upstream::credential::{Credential, Credentials};
use crate::upstream::headers::X_API_KEY;

/// The ledger name of the one user of open mode.
pub const OPEN_USER: &str = "open";

/// Who sent a request, once identified.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The local key (keys mode), or none (open mode).
    pub key: Option<Arc<LocalKey>>,
    /// The upstream credential the request goes out with.
    pub credential: Arc<Credential>,
}

impl Caller {
    /// The id the ledger and the shaper's fairness use.
    pub fn id(&self) -> &str {
        self.key.as_ref().map_or(OPEN_USER, |k| &k.record.id)
    }

    /// The key's agent globs (every agent in open mode).
    pub fn globs(&self) -> Option<&AgentGlobs> {
        self.key.as_ref().map(|k| &k.globs).filter(|g| !g.is_all())
    }
}

/// A budget reservation held while an invocation runs.
#[derive(Debug)]
pub struct Reservation {
    id: i64,
    amount: Decimal,
}

/// The key broker: the settings of one configuration version over the
/// store, keys and ledger that every version shares.
pub struct Broker {
    shared: Arc<Shared>,
    admin_hash: Option<KeyHash>,
    reserve_floor: Decimal,
    reservation_ttl: i64,
    rotate_grace_secs: u64,
}

/// What outlives a reload. The mode and the backend are fixed for the
/// life of the process.
struct Shared {
    mode: AuthMode,
    ring: KeyRing,
    backend: Option<Arc<dyn KeyBackend>>,
    /// Cluster mode: keys' own rates are shared through Redis.
    rates: Option<RedisKeys>,
    ledger: Ledger,
    /// The last real cost seen per (key, agent): the next reservation.
    estimates: Mutex<HashMap<(String, String), Decimal>>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("mode", &self.shared.mode)
            .field("ring", &self.shared.ring)
            .finish_non_exhaustive()
    }
}

/// Which key table a verification may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keys {
    /// The table, if a look at the store shows it current without waiting.
    Current,
    /// The table as loaded (just refreshed).
    Loaded,
}

/// Why a caller was not identified.
#[derive(Debug)]
pub enum Unidentified {
    /// Refused: answer with this.
    Refused(GatewayError),
    /// The key table must be reloaded first (off the runtime).
    Stale,
}

impl From<GatewayError> for Unidentified {
    fn from(error: GatewayError) -> Self {
        Self::Refused(error)
    }
}

/// Failure to open the broker.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpenError(#[from] StoreError);

impl Broker {
    /// Opens the backend: in cluster mode Redis, else the SQLite store
    /// (when the mode or `auth.db_path` asks for one); loads the keys (in
    /// cluster mode the first request reads them). The ledger flushes from
    /// a task on the current Tokio runtime, so this must run inside one.
    ///
    /// # Errors
    /// The database cannot be opened or read.
    pub fn open(config: &Config, cluster: Option<&Cluster>) -> Result<Self, OpenError> {
        let auth = &config.auth;
        let mode = auth.effective_mode(config.server.listen);
        let rates = cluster.map(|cluster| RedisKeys::new(cluster.clone()));
        let (ring, backend): (_, Option<Arc<dyn KeyBackend>>) =
            match (cluster, auth.effective_db(mode)) {
                (Some(cluster), _) => {
                    let backend: Arc<dyn KeyBackend> = Arc::new(RedisKeys::new(cluster.clone()));
                    let remote = Remote::new(backend.clone());
                    remote.follow(cluster);
                    (KeyRing::with_remote(auth, remote), Some(backend))
                }
                (None, Some(path)) => {
                    let readers = (Store::open(&path)?, Store::open(&path)?);
                    let writer = SqliteBackend::new(Store::open(&path)?);
                    (KeyRing::new(auth, Some(readers))?, Some(Arc::new(writer)))
                }
                (None, None) => (KeyRing::new(auth, None)?, None),
            };
        let ledger = Ledger::start(backend.clone(), Duration::from_millis(auth.ledger_flush_ms));
        let shared = Arc::new(Shared {
            mode,
            ring,
            backend,
            rates,
            ledger,
            estimates: Mutex::new(HashMap::new()),
        });
        Ok(Self::with_settings(shared, config))
    }

    /// The same store, keys and ledger under `config` (a reload): its
    /// declared keys replace the old ones at once; the admin key, reserve
    /// and rotation grace apply to new requests. `auth.mode`,
    /// `auth.db_path` and `auth.ledger_flush_ms` stay as opened.
    ///
    /// # Errors
    /// The store cannot be read to rebuild the key table.
    pub fn reconfigured(&self, config: &Config) -> Result<Self, StoreError> {
        self.shared.ring.set_declared(&config.auth)?;
        Ok(Self::with_settings(self.shared.clone(), config))
    }

    fn with_settings(shared: Arc<Shared>, config: &Config) -> Self {
        let auth = &config.auth;
        let reserve_floor =
            Decimal::from_str_exact(auth.invoke_reserve_usd.trim()).unwrap_or(Decimal::ONE);
        // A reservation outlives the longest an invocation can take: its
        // wait in the shaper's queue, then its upstream timeout.
        let wait = config
            .shaper
            .invoke_max_wait_ms
            .max(config.shaper.prefer_wait_max_ms);
        let invoke_secs = (wait + config.upstream.invoke_timeout_ms) / 1_000;
        Self {
            shared,
            admin_hash: config.admin_key.as_ref().map(|k| token::hash(k.expose())),
            reserve_floor,
            reservation_ttl: i64::try_from(invoke_secs).unwrap_or(i64::MAX / 2) + 60,
            rotate_grace_secs: auth.rotate_grace_secs,
        }
    }

    /// `open` or `keys`.
    pub fn mode(&self) -> AuthMode {
        self.shared.mode
    }

    /// The keys.
    pub fn ring(&self) -> &KeyRing {
        &self.shared.ring
    }

    /// Where keys, usage and budgets are kept, if anywhere.
    pub fn backend(&self) -> Option<&Arc<dyn KeyBackend>> {
        self.shared.backend.as_ref()
    }

    /// Seconds an old secret stays valid after a rotation.
    pub fn rotate_grace_secs(&self) -> u64 {
        self.rotate_grace_secs
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.shared.ledger
    }

    /// Identifies the caller: in keys mode the local key in
    /// `Authorization: Bearer` or `X-API-Key`, in open mode nobody. With
    /// `keys` [`Keys::Current`], only if the key table is known current
    /// without waiting; else [`Unidentified::Stale`]: call
    /// [`refresh_keys`](Self::refresh_keys), then again with
    /// [`Keys::Loaded`].
    ///
    /// # Errors
    /// 401 for a missing or refused key; 503 when the store is unreadable;
    /// 403 when the key's upstream credential is not configured.
    pub fn identify(
        &self,
        parts: &Parts,
        credentials: &Credentials,
        keys: Keys,
    ) -> Result<Caller, Unidentified> {
        if self.shared.mode == AuthMode::Open {
            return Ok(Caller {
                key: None,
                credential: credentials.default_credential().clone(),
            });
        }
        let presented = presented(&parts.headers);
        let now = clock::now_unix();
        let verified = match keys {
            Keys::Current => self.shared.ring.verify(presented, now),
            Keys::Loaded => self.shared.ring.verify_loaded(presented, now),
        };
        let key = match verified {
            Ok(key) => key,
            Err(VerifyError::Refused(refused)) => {
                return Err(Unidentified::Refused(refused.into()))
            }
            Err(VerifyError::Stale) => return Err(Unidentified::Stale),
            Err(VerifyError::Store(error)) => {
                tracing::error!(%error, "key store unreadable; refusing the request");
                return Err(GatewayError::StoreUnavailable.into());
            }
        };
        let Some(credential) = credentials.get(&key.record.upstream) else {
            return Err(Unidentified::Refused(GatewayError::Forbidden {
                code: "unknown_upstream",
                detail: format!(
                    "This key is bound to the upstream credential {:?}, which this gateway does \
                     not hold; its operator must configure upstream.credentials.{} or give you a \
                     key for a credential it has",
                    key.record.upstream, key.record.upstream
                ),
            }));
        };
        Ok(Caller {
            credential: credential.clone(),
            key: Some(key),
        })
    }

    /// Checks the caller's role, agent globs and own rate for `method` on
    /// the decoded `segments` after `/api/v1/`.
    ///
    /// # Errors
    /// 403 for a route or agent outside the key's scope, 429 with
    /// `Retry-After` when the key's own rate is spent.
    pub fn authorize(
        &self,
        caller: &Caller,
        method: &Method,
        segments: &[Box<str>],
    ) -> Result<(), GatewayError> {
        let Some(key) = &caller.key else {
            return Ok(());
        };
        scope::authorize(key.record.role, &key.globs, method, segments)
            .map_err(|denial| denial.forbidden(method))?;
        if self.shares_rate(caller) {
            // Taken from Redis next: [`take_shared_rate`](Self::take_shared_rate).
            return Ok(());
        }
        local_rate(key)
    }

    /// Whether the caller's own rate is taken through
    /// [`take_shared_rate`](Self::take_shared_rate) (cluster mode, a key
    /// with a rate) rather than by [`authorize`](Self::authorize): call it
    /// before serving the request.
    pub fn shares_rate(&self, caller: &Caller) -> bool {
        let rated = caller.key.as_ref().is_some_and(|k| k.record.rate.is_some());
        rated && self.shared.rates.is_some()
    }

    /// Takes one request from the caller's own rate in Redis, shared by
    /// every replica; with Redis lost or failing, from this replica's
    /// limiter (at once: a lost Redis is not asked).
    ///
    /// # Errors
    /// 429 with `Retry-After` when the key's rate is spent.
    pub async fn take_shared_rate(&self, caller: &Caller) -> Result<(), GatewayError> {
        let (Some(key), Some(rates)) = (&caller.key, &self.shared.rates) else {
            return Ok(());
        };
        let Some(rate) = key.record.rate else {
            return Ok(());
        };
        match rates.take_rate(&key.record.id, rate).await {
            Ok(None) => Ok(()),
            Ok(Some(wait)) => Err(GatewayError::KeyRateLimited {
                retry_after_secs: crate::error::retry_after_secs(wait),
                rate: rate.to_string(),
            }),
            Err(_) => local_rate(key),
        }
    }

    /// Whether `parts` carries the admin key, or a local key with the
    /// `admin` role, by the key table as loaded: call
    /// [`refresh_keys`](Self::refresh_keys) first.
    pub fn is_admin(&self, headers: &HeaderMap) -> bool {
        self.admin_principal_in(headers).is_some()
    }

    /// Who `token` is, if an admin: the admin key, or a local key with the
    /// `admin` role (by the key table as loaded: call
    /// [`refresh_keys`](Self::refresh_keys) first). The operator page's
    /// login.
    pub fn admin_principal(&self, token: &str) -> Option<Principal> {
        let hash = token::hash(token);
        if let Some(admin) = &self.admin_hash {
            if token::same(&hash, admin) {
                return Some(Principal::AdminKey(hash));
            }
        }
        match self
            .shared
            .ring
            .verify_loaded(Some(token), clock::now_unix())
        {
            Ok(key) if key.record.role == Role::Admin => {
                Some(Principal::Key(key.record.id.clone()))
            }
            _ => None,
        }
    }

    /// Who the key in `headers` (`Authorization: Bearer` or `X-API-Key`)
    /// is, if an admin; as [`admin_principal`](Self::admin_principal).
    pub fn admin_principal_in(&self, headers: &HeaderMap) -> Option<Principal> {
        presented(headers).and_then(|token| self.admin_principal(token))
    }

    /// Whether `principal` is still an admin: the admin key unchanged, or
    /// the key not revoked, expired or moved off the `admin` role.
    pub fn still_admin(&self, principal: &Principal) -> bool {
        match principal {
            Principal::AdminKey(hash) => self
                .admin_hash
                .as_ref()
                .is_some_and(|admin| token::same(hash, admin)),
            Principal::Key(id) => self.shared.ring.all().iter().any(|key| {
                key.record.id == *id
                    && key.record.role == Role::Admin
                    && key.record.revoked_at.is_none()
                    && key
                        .record
                        .expires_at
                        .is_none_or(|at| at > clock::now_unix())
            }),
        }
    }

    /// Reloads the key table if the store moved, on the blocking pool
    /// (SQLite may wait for locks there); in cluster mode from Redis, or
    /// not at all while Redis is lost (the keys as last loaded serve).
    ///
    /// # Errors
    /// 503 `key_store_unavailable` when the store cannot be read or the
    /// reload failed (logged): a request is then refused, never let
    /// through on a table that may be stale.
    pub async fn refresh_keys(&self) -> Result<(), GatewayError> {
        if self.shared.ring.is_remote() {
            return self.shared.ring.refresh_remote().await.map_err(|error| {
                tracing::error!(%error, "keys never read from Redis; refusing the request");
                GatewayError::StoreUnavailable
            });
        }
        let shared = self.shared.clone();
        let refreshed = tokio::task::spawn_blocking(move || shared.ring.refresh()).await;
        match refreshed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                tracing::error!(%error, "key store unreadable; refusing the request");
                Err(GatewayError::StoreUnavailable)
            }
            Err(error) => {
                tracing::error!(%error, "key table reload failed; refusing the request");
                Err(GatewayError::StoreUnavailable)
            }
        }
    }

    /// Counts one answered request in the ledger (flushed in batches).
    pub fn count(&self, caller: &Caller, agent: Option<&str>, class: &'static str) {
        if self.shared.backend.is_some() {
            self.shared
                .ledger
                .count(caller.id(), agent.unwrap_or(""), class);
        }
    }

    /// Reserves an invocation's estimated cost against the caller's budget.
    /// `Ok(None)`: the key has no budget (or there is no key).
    ///
    /// # Errors
    /// 402 when the budget is spent (with what was spent and reserved),
    /// 503 when the store fails.
    pub async fn reserve(
        &self,
        caller: &Caller,
        agent: &str,
    ) -> Result<Option<Reservation>, GatewayError> {
        let (Some(key), Some(backend)) = (&caller.key, &self.shared.backend) else {
            return Ok(None);
        };
        let Some(budget) = key.record.budget else {
            return Ok(None);
        };
        let amount = self.estimate(&key.record.id, agent);
        let now = clock::now_unix();
        let expires = now + self.reservation_ttl;
        let outcome = backend
            .reserve(&key.record.id, &budget, amount, now, expires)
            .await;
        match outcome {
            Ok(Reserve::Granted(id)) => Ok(Some(Reservation { id, amount })),
            Ok(Reserve::Refused {
                spent,
                reserved,
                limit,
            }) => Err(GatewayError::BudgetExceeded {
                limit: limit.normalize().to_string(),
                period: budget.period.as_str(),
                spent: spent.normalize().to_string(),
                reserved: reserved.normalize().to_string(),
            }),
            Err(error) => {
                tracing::error!(%error, "budget reservation failed");
                Err(GatewayError::StoreUnavailable)
            }
        }
    }

    /// Records a finished invocation: its tokens and exact cost go to the
    /// ledger and its reservation (if any) is freed, in one transaction.
    /// `usage == None` means nothing was spent (the upstream refused it).
    pub async fn settle_invocation(
        &self,
        caller: &Caller,
        agent: &str,
        reservation: Option<Reservation>,
        usage: Option<InvocationUsage>,
    ) {
        let Some(backend) = &self.shared.backend else {
            return;
        };
        let reservation_id = reservation.as_ref().map(|r| r.id);
        let delta = usage.map(|usage| UsageDelta {
            key_id: caller.id().to_string(),
            day: clock::day(clock::now_unix()),
            agent: agent.to_string(),
            class: "invoke".to_string(),
            requests: 0,
            invocations: 1,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            cost_usd: usage.cost_usd,
        });
        if let Some(delta) = &delta {
            let mut estimates = self
                .shared
                .estimates
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            estimates.insert((delta.key_id.clone(), agent.to_string()), delta.cost_usd);
        }
        let owed = match (reservation_id, delta) {
            (Some(id), Some(delta)) => Owed::Settle(write_id(), id, delta),
            (Some(id), None) => Owed::Release(caller.id().to_string(), id),
            (None, Some(delta)) => Owed::Add(write_id(), vec![delta]),
            (None, None) => return,
        };
        if let Err(error) = owed.write(backend.as_ref()).await {
            // Never lost: the ledger retries it until it is written.
            tracing::error!(%error, "could not record an invocation's usage yet; retrying");
            self.shared.ledger.owe(owed);
        }
    }

    /// What the next invocation of `agent` by `key_id` is assumed to cost:
    /// the last real cost seen, but never under `auth.invoke_reserve_usd`.
    fn estimate(&self, key_id: &str, agent: &str) -> Decimal {
        let estimates = self
            .shared
            .estimates
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let seen = estimates
            .get(&(key_id.to_string(), agent.to_string()))
            .copied()
            .unwrap_or(Decimal::ZERO);
        seen.max(self.reserve_floor)
    }
}

impl Reservation {
    /// The amount held.
    pub fn amount(&self) -> Decimal {
        self.amount
    }
}

/// Takes one request from the key's own limiter in this process.
fn local_rate(key: &LocalKey) -> Result<(), GatewayError> {
    if let Some(limiter) = &key.limiter {
        if let Err(not_until) = limiter.check() {
            use governor::clock::{Clock, DefaultClock};
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(GatewayError::KeyRateLimited {
                retry_after_secs: crate::error::retry_after_secs(wait),
                rate: key
                    .record
                    .rate
                    .map(|rate| rate.to_string())
                    .unwrap_or_default(),
            });
        }
    }
    Ok(())
}

/// The token a client presented: `Authorization: Bearer X` or `X-API-Key`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim())
            .filter(|t| !t.is_empty());
    }
    headers
        .get(X_API_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}
