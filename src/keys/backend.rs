//! Where the key broker keeps its state: the seam between the broker and
//! its storage.
//!
//! [`KeyBackend`] is everything the broker, the admin API and the CLI ask
//! of storage: the keys (list, get, insert, revoke, rotate, and a
//! generation that moves with every key change: the change feed), the
//! usage ledger (add, query) and USD budgets (reserve, settle, release).
//! Two implementations, chosen once at startup: [`SqliteBackend`] (one
//! process, or several on one host sharing the file; its blocking calls
//! run on Tokio's blocking pool, never on a runtime worker) and
//! [`RedisKeys`](super::redis::RedisKeys) (cluster mode).

use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::BoxFuture;
use rust_decimal::Decimal;

use super::model::{Budget, KeyHash, KeyRecord, UsageDelta, UsageRow};
use super::store::{Reserve, Store, StoreError};

/// A backend call's outcome, later.
pub type Fut<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// Names one ledger write, so a write retried after a lost answer is
/// applied once ([`KeyBackend::add_usage`], [`KeyBackend::settle`]).
pub type WriteId = u64;

/// A new [`WriteId`], random.
pub fn write_id() -> WriteId {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Without randomness: the time and the process id still tell
        // replicas apart, the counter this process's writes.
        let nanos = crate::clock::since_epoch().as_nanos() as u64;
        bytes = (nanos ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    u64::from_le_bytes(bytes) ^ NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The broker's storage (module docs). Every call is atomic on its own:
/// a reservation is decided and written in one step across every process
/// that shares the backend.
pub trait KeyBackend: Send + Sync + std::fmt::Debug {
    /// Every stored key (not the ones declared in the config file).
    fn keys(&self) -> Fut<'_, Vec<KeyRecord>>;
    /// One stored key.
    fn key<'a>(&'a self, id: &'a str) -> Fut<'a, Option<KeyRecord>>;
    /// Stores a new key; [`StoreError::Duplicate`] when its id is taken.
    fn insert_key<'a>(&'a self, record: &'a KeyRecord) -> Fut<'a, ()>;
    /// Revokes key `id` at `now` (kept if already revoked) and returns
    /// it as it is now; `None` when there is no such key.
    fn revoke<'a>(&'a self, id: &'a str, now: i64) -> Fut<'a, Option<KeyRecord>>;
    /// Gives key `id` the hash `new`, the old one valid until `until`, and
    /// returns it as it is now; `None` when there is no such key or it is
    /// revoked.
    fn rotate<'a>(
        &'a self,
        id: &'a str,
        new: &'a KeyHash,
        until: i64,
    ) -> Fut<'a, Option<KeyRecord>>;
    /// A counter every key change moves.
    fn generation(&self) -> Fut<'_, i64>;
    /// Adds usage (summed per key, day, agent and class), all or nothing,
    /// once per `write` however often it is retried.
    fn add_usage<'a>(&'a self, write: WriteId, deltas: &'a [UsageDelta]) -> Fut<'a, ()>;
    /// Ledger rows from `since_day` (`YYYY-MM-DD`) on, of `key` if given,
    /// ordered by day, key, agent and class.
    fn usage<'a>(&'a self, key: Option<&'a str>, since_day: &'a str) -> Fut<'a, Vec<UsageRow>>;
    /// Holds `amount` against `key_id`'s budget until `expires_at`, unless
    /// what it spent in the period and holds already reach the limit.
    fn reserve<'a>(
        &'a self,
        key_id: &'a str,
        budget: &'a Budget,
        amount: Decimal,
        now: i64,
        expires_at: i64,
    ) -> Fut<'a, Reserve>;
    /// Frees reservation `id` and adds `delta` to the ledger, together,
    /// once per `write`.
    fn settle<'a>(&'a self, write: WriteId, id: i64, delta: &'a UsageDelta) -> Fut<'a, ()>;
    /// Frees reservation `id` of `key_id` (nothing was spent).
    fn release<'a>(&'a self, key_id: &'a str, id: i64) -> Fut<'a, ()>;
}

/// The SQLite file as a [`KeyBackend`].
#[derive(Clone, Debug)]
pub struct SqliteBackend {
    store: Arc<Mutex<Store>>,
}

impl SqliteBackend {
    /// Over one open connection (the writer).
    pub fn new(store: Store) -> Self {
        Self {
            store: Arc::new(Mutex::new(store)),
        }
    }

    /// Runs `op` on the connection, on the blocking pool.
    fn blocking<T, F>(&self, op: F) -> Fut<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let store = store.lock().unwrap_or_else(PoisonError::into_inner);
                op(&store)
            })
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
        })
    }
}

impl KeyBackend for SqliteBackend {
    fn keys(&self) -> Fut<'_, Vec<KeyRecord>> {
        self.blocking(Store::keys)
    }

    fn key<'a>(&'a self, id: &'a str) -> Fut<'a, Option<KeyRecord>> {
        let id = id.to_string();
        self.blocking(move |s| s.key(&id))
    }

    fn insert_key<'a>(&'a self, record: &'a KeyRecord) -> Fut<'a, ()> {
        let record = record.clone();
        self.blocking(move |s| s.insert_key(&record))
    }

    fn revoke<'a>(&'a self, id: &'a str, now: i64) -> Fut<'a, Option<KeyRecord>> {
        let id = id.to_string();
        self.blocking(move |s| match s.revoke(&id, now)? {
            true => s.key(&id),
            false => Ok(None),
        })
    }

    fn rotate<'a>(
        &'a self,
        id: &'a str,
        new: &'a KeyHash,
        until: i64,
    ) -> Fut<'a, Option<KeyRecord>> {
        let (id, new) = (id.to_string(), *new);
        self.blocking(move |s| match s.rotate(&id, &new, until)? {
            true => s.key(&id),
            false => Ok(None),
        })
    }

    fn generation(&self) -> Fut<'_, i64> {
        self.blocking(Store::generation)
    }

    // One SQLite transaction either commits or not: a failed write was
    // not made, and its retry is its only application.
    fn add_usage<'a>(&'a self, _: WriteId, deltas: &'a [UsageDelta]) -> Fut<'a, ()> {
        let deltas = deltas.to_vec();
        self.blocking(move |s| s.add_usage(&deltas))
    }

    fn usage<'a>(&'a self, key: Option<&'a str>, since_day: &'a str) -> Fut<'a, Vec<UsageRow>> {
        let (key, since) = (key.map(str::to_string), since_day.to_string());
        self.blocking(move |s| s.usage(key.as_deref(), &since))
    }

    fn reserve<'a>(
        &'a self,
        key_id: &'a str,
        budget: &'a Budget,
        amount: Decimal,
        now: i64,
        expires_at: i64,
    ) -> Fut<'a, Reserve> {
        let (key_id, budget) = (key_id.to_string(), *budget);
        self.blocking(move |s| s.reserve(&key_id, &budget, amount, now, expires_at))
    }

    fn settle<'a>(&'a self, _: WriteId, id: i64, delta: &'a UsageDelta) -> Fut<'a, ()> {
        let delta = delta.clone();
        self.blocking(move |s| s.settle(id, &delta))
    }

    fn release<'a>(&'a self, _key_id: &'a str, id: i64) -> Fut<'a, ()> {
        self.blocking(move |s| s.release(id))
    }
}
