//! The SQLite store: local keys, the usage ledger and budget reservations.
//!
//! One file, shared by the CLI and a running server (separate processes,
//! separate connections). Every connection runs in WAL mode with
//! `synchronous=FULL`, so a write acknowledged by [`Store`] survives a crash
//! of the process or the machine, and waits up to 5 s for a
//! lock held by another connection. Every write runs in a `BEGIN IMMEDIATE`
//! transaction: the write lock is taken up front, so a transaction never has
//! to upgrade a read lock (which SQLite refuses without waiting).
//!
//! Money is exact: costs and reservation amounts are TEXT decimal strings
//! ([`Decimal`]). The ledger's upsert adds them with the SQL function
//! `dec_add(a, b)`, registered on every connection; sums over several rows
//! are taken in Rust with [`Decimal`], never with SQLite's REAL.
//!
//! Schema, version 1 (`PRAGMA user_version`), all tables `STRICT`:
//!
//! ```text
//! keys(id TEXT PRIMARY KEY, name, role, agents /* JSON array of globs */,
//!      rate /* Rate Display, "30/min" */, budget /* "20/month" */,
//!      upstream, created_at, expires_at, revoked_at,
//!      hash BLOB /* 32 bytes */, prev_hash BLOB, prev_until)
//! meta(name TEXT PRIMARY KEY, value INTEGER)          -- 'generation'
//! usage(key_id, day, agent, class, requests, invocations, input_tokens,
//!       output_tokens, cost TEXT, PRIMARY KEY(key_id, day, agent, class))
//! reservations(id INTEGER PRIMARY KEY AUTOINCREMENT, key_id, amount TEXT,
//!              created_at, expires_at)
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::{FromSql, ValueRef};
use rusqlite::{
    params, Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior,
};
use rust_decimal::Decimal;

use super::clock;
use super::model::{Budget, KeyHash, KeyRecord, Origin, Role, UsageDelta, UsageRow};
use crate::config::Rate;

/// How long a connection waits for a lock held by another connection
/// before a statement fails with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The schema version this build creates and understands.
const SCHEMA_VERSION: i64 = 1;

/// Schema version 1.
const SCHEMA: &str = "
CREATE TABLE keys (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    agents      TEXT NOT NULL,
    rate        TEXT,
    budget      TEXT,
    upstream    TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER,
    hash        BLOB NOT NULL CHECK (length(hash) = 32),
    prev_hash   BLOB CHECK (prev_hash IS NULL OR length(prev_hash) = 32),
    prev_until  INTEGER,
    CHECK ((prev_hash IS NULL) = (prev_until IS NULL))
) STRICT;

CREATE TABLE meta (
    name   TEXT PRIMARY KEY NOT NULL,
    value  INTEGER NOT NULL
) STRICT;

INSERT INTO meta (name, value) VALUES ('generation', 0);

CREATE TABLE usage (
    key_id         TEXT NOT NULL,
    day            TEXT NOT NULL,
    agent          TEXT NOT NULL,
    class          TEXT NOT NULL,
    requests       INTEGER NOT NULL DEFAULT 0,
    invocations    INTEGER NOT NULL DEFAULT 0,
    input_tokens   INTEGER NOT NULL DEFAULT 0,
    output_tokens  INTEGER NOT NULL DEFAULT 0,
    cost           TEXT NOT NULL DEFAULT '0',
    PRIMARY KEY (key_id, day, agent, class)
) STRICT, WITHOUT ROWID;

CREATE INDEX usage_by_day ON usage (day);

CREATE TABLE reservations (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    key_id      TEXT NOT NULL,
    amount      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT;

CREATE INDEX reservations_by_key ON reservations (key_id);
";

/// The columns of `keys`, in the order [`key_from_row`] reads them.
const KEY_COLUMNS: &str = "id, name, role, agents, rate, budget, upstream, created_at, \
                           expires_at, revoked_at, hash, prev_hash, prev_until";

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed (cannot open, disk full, still locked after the busy
    /// timeout, ...).
    #[error("database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// [`Store::insert_key`] with an id that is already taken.
    #[error("a key with id {0:?} already exists")]
    Duplicate(String),
    /// A stored row (or the schema) does not parse back.
    #[error("corrupt row in {table}: {message}")]
    Corrupt {
        /// The table (or `schema`).
        table: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// Redis (cluster mode) failed or did not answer in time; the words
    /// never carry its URL or password.
    #[error("Redis: {0}")]
    Redis(String),
    /// Redis is known lost: the call was not sent (so retrying it later
    /// cannot apply it twice).
    #[error("Redis is lost; nothing was sent")]
    RedisLost,
    /// The blocking task running a SQLite operation failed.
    #[error("the store task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether SQLite refused because another connection held a lock (a
    /// connection that [never waits](Store::never_wait) gets this at once).
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            Self::Sqlite {
                source: rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error {
                        code: rusqlite::ErrorCode::DatabaseBusy
                            | rusqlite::ErrorCode::DatabaseLocked,
                        ..
                    },
                    _,
                ),
                ..
            }
        )
    }
}

/// The outcome of [`Store::reserve`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// The reservation's id, for [`Store::settle`] or [`Store::release`].
    Granted(i64),
    /// The budget is used up by what was spent and what is reserved.
    Refused {
        /// Spent in the current period (ledger).
        spent: Decimal,
        /// Held by live reservations of the key.
        reserved: Decimal,
        /// The budget's limit.
        limit: Decimal,
    },
}

/// One connection to the store file. Not Sync; callers wrap it in a Mutex and
/// call from spawn_blocking.
pub struct Store {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A failure inside the store, before the path is attached.
enum Fault {
    Sql(rusqlite::Error),
    Duplicate(String),
    Corrupt {
        table: &'static str,
        message: String,
    },
}

impl From<rusqlite::Error> for Fault {
    fn from(error: rusqlite::Error) -> Self {
        Self::Sql(error)
    }
}

fn corrupt(table: &'static str, message: impl Into<String>) -> Fault {
    Fault::Corrupt {
        table,
        message: message.into(),
    }
}

fn into_store_error(path: &Path, fault: Fault) -> StoreError {
    match fault {
        Fault::Sql(source) => StoreError::Sqlite {
            path: path.display().to_string(),
            source,
        },
        Fault::Duplicate(id) => StoreError::Duplicate(id),
        Fault::Corrupt { table, message } => StoreError::Corrupt { table, message },
    }
}

impl Store {
    /// Opens (creating if needed) the database at `path`; sets WAL,
    /// synchronous=FULL, busy_timeout, foreign_keys; creates the schema;
    /// registers dec_add.
    ///
    /// # Errors
    /// SQLite cannot open or set up the file (the directory is missing, the
    /// file is not a database, WAL is unavailable), or the file's schema is
    /// newer than this build.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        open_connection(path)
            .map(|conn| Store {
                conn,
                path: path.to_path_buf(),
            })
            .map_err(|fault| into_store_error(path, fault))
    }

    /// Makes this connection never wait for another's lock: a statement
    /// that would wait fails with `SQLITE_BUSY` at once. For the key ring's
    /// per-request look at the store, made on a runtime worker.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn never_wait(&self) -> Result<(), StoreError> {
        self.read(|conn| Ok(conn.busy_timeout(Duration::ZERO)?))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Inserts a new key (origin Store). Duplicate id -> StoreError::Duplicate.
    /// Bumps the generation.
    ///
    /// # Errors
    /// [`StoreError::Duplicate`] when the id is taken; SQLite failures.
    pub fn insert_key(&self, key: &KeyRecord) -> Result<(), StoreError> {
        let agents = agents_to_text(&key.agents);
        let rate = key.rate.map(|rate| rate.to_string());
        let budget = key.budget.map(|budget| budget.to_string());
        let (prev_hash, prev_until) = match &key.previous {
            Some((hash, until)) => (Some(&hash[..]), Some(*until)),
            None => (None, None),
        };
        self.write(|conn| {
            let taken: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM keys WHERE id = ?1)",
                [&key.id],
                |row| row.get(0),
            )?;
            if taken {
                return Err(Fault::Duplicate(key.id.clone()));
            }
            conn.execute(
                &format!(
                    "INSERT INTO keys ({KEY_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"
                ),
                params![
                    key.id,
                    key.name,
                    key.role.as_str(),
                    agents,
                    rate,
                    budget,
                    key.upstream,
                    key.created_at,
                    key.expires_at,
                    key.revoked_at,
                    &key.hash[..],
                    prev_hash,
                    prev_until,
                ],
            )?;
            bump_generation(conn)
        })
    }

    /// All keys, ordered by created_at then id.
    ///
    /// # Errors
    /// SQLite failures; [`StoreError::Corrupt`] when a row does not parse.
    pub fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {KEY_COLUMNS} FROM keys ORDER BY created_at, id"
            ))?;
            let mut rows = stmt.query([])?;
            let mut keys = Vec::new();
            while let Some(row) = rows.next()? {
                keys.push(key_from_row(row)?);
            }
            Ok(keys)
        })
    }

    /// The key `id`, if there is one.
    ///
    /// # Errors
    /// SQLite failures; [`StoreError::Corrupt`] when the row does not parse.
    pub fn key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {KEY_COLUMNS} FROM keys WHERE id = ?1"))?;
            let mut rows = stmt.query([id])?;
            match rows.next()? {
                Some(row) => key_from_row(row).map(Some),
                None => Ok(None),
            }
        })
    }

    /// Sets revoked_at = now if not already revoked; Ok(false) when no such
    /// key. Bumps the generation (only when the key changed: revoking a
    /// revoked key keeps its first revocation time and the generation).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn revoke(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        self.write(|conn| {
            let changed = conn.execute(
                "UPDATE keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, now],
            )?;
            if changed > 0 {
                bump_generation(conn)?;
                return Ok(true);
            }
            let exists: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM keys WHERE id = ?1)",
                [id],
                |row| row.get(0),
            )?;
            Ok(exists)
        })
    }

    /// Replaces the key's hash with `new_hash`; the old hash becomes
    /// `previous` valid until `grace_until` (a previous hash from an earlier
    /// rotation is dropped). Ok(false) when no such key or the key is
    /// revoked. Bumps the generation.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn rotate(
        &self,
        id: &str,
        new_hash: &KeyHash,
        grace_until: i64,
    ) -> Result<bool, StoreError> {
        self.write(|conn| {
            let changed = conn.execute(
                "UPDATE keys SET prev_hash = hash, prev_until = ?3, hash = ?2 \
                 WHERE id = ?1 AND revoked_at IS NULL",
                params![id, &new_hash[..], grace_until],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            bump_generation(conn)?;
            Ok(true)
        })
    }

    /// A counter bumped (in the same transaction) by every key change
    /// (insert/revoke/rotate).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn generation(&self) -> Result<i64, StoreError> {
        self.read(|conn| {
            let value: Option<i64> = conn
                .query_row(
                    "SELECT value FROM meta WHERE name = 'generation'",
                    [],
                    |row| row.get(0),
                )
                .optional()?;
            Ok(value.unwrap_or(0))
        })
    }

    /// `PRAGMA data_version`: changes when ANOTHER connection committed
    /// anything. Cheap; the server calls it per request and reads
    /// generation() only when it changed.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        // A cached statement: preparing the pragma again was most of the
        // cost of a keys-mode cache hit's look at the store.
        self.read(|conn| {
            let mut statement = conn.prepare_cached("PRAGMA data_version")?;
            Ok(statement.query_row([], |row| row.get(0))?)
        })
    }

    /// Adds the deltas in ONE transaction: upsert on (key_id, day, agent,
    /// class), summing every counter (saturating at `i64::MAX`) and cost
    /// (dec_add). Empty slice = no-op.
    ///
    /// # Errors
    /// SQLite failures (the whole batch is rolled back).
    pub fn add_usage(&self, deltas: &[UsageDelta]) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        self.write(|conn| upsert_usage(conn, deltas))
    }

    /// Ledger rows (summed per key_id, day, agent, class) with day >=
    /// since_day (YYYY-MM-DD) and, if given, key_id == key. Ordered by day,
    /// key_id, agent, class.
    ///
    /// # Errors
    /// SQLite failures; [`StoreError::Corrupt`] when a row does not parse.
    pub fn usage(&self, key: Option<&str>, since_day: &str) -> Result<Vec<UsageRow>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(
                "SELECT key_id, day, agent, class, requests, invocations, input_tokens, \
                        output_tokens, cost \
                 FROM usage WHERE day >= ?1 AND (?2 IS NULL OR key_id = ?2) \
                 ORDER BY day, key_id, agent, class",
            )?;
            let mut rows = stmt.query(params![since_day, key])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(UsageRow {
                    key_id: column(row, 0, "usage")?,
                    day: column(row, 1, "usage")?,
                    agent: column(row, 2, "usage")?,
                    class: column(row, 3, "usage")?,
                    requests: counter(row, 4)?,
                    invocations: counter(row, 5)?,
                    input_tokens: counter(row, 6)?,
                    output_tokens: counter(row, 7)?,
                    cost_usd: money(&column::<String>(row, 8, "usage")?, "usage")?,
                });
            }
            Ok(out)
        })
    }

    /// Spent in the budget period containing `now` for `key_id`: sum of
    /// ledger cost where day >= clock::period_start(budget.period, now).
    /// Exact Decimal.
    ///
    /// # Errors
    /// SQLite failures; [`StoreError::Corrupt`] when a cost does not parse.
    pub fn spent(&self, key_id: &str, budget: &Budget, now: i64) -> Result<Decimal, StoreError> {
        self.read(|conn| spent_in(conn, key_id, budget, now))
    }

    /// Budget reservation, atomically (one IMMEDIATE transaction, so it holds
    /// across processes): first deletes reservations with expires_at <= now
    /// (all keys); then spent = spent(..), reserved = sum of live
    /// reservations for key_id; if spent + reserved >= budget.usd ->
    /// Ok(Reserve::Refused { spent, reserved, limit: budget.usd }) and no
    /// reservation is written (the purge of expired ones is kept); else
    /// inserts a reservation of `amount` expiring at `expires_at` and returns
    /// Ok(Reserve::Granted(id)).
    ///
    /// # Errors
    /// SQLite failures; [`StoreError::Corrupt`] when an amount does not parse.
    pub fn reserve(
        &self,
        key_id: &str,
        budget: &Budget,
        amount: Decimal,
        now: i64,
        expires_at: i64,
    ) -> Result<Reserve, StoreError> {
        self.write(|conn| {
            conn.execute("DELETE FROM reservations WHERE expires_at <= ?1", [now])?;
            let spent = spent_in(conn, key_id, budget, now)?;
            let reserved = {
                let mut stmt = conn.prepare("SELECT amount FROM reservations WHERE key_id = ?1")?;
                let mut rows = stmt.query([key_id])?;
                let mut total = Decimal::ZERO;
                while let Some(row) = rows.next()? {
                    let amount = money(&column::<String>(row, 0, "reservations")?, "reservations")?;
                    total = checked_sum(total, amount, "reservations")?;
                }
                total
            };
            let committed = checked_sum(spent, reserved, "reservations")?;
            if committed >= budget.usd {
                return Ok(Reserve::Refused {
                    spent,
                    reserved,
                    limit: budget.usd,
                });
            }
            conn.execute(
                "INSERT INTO reservations (key_id, amount, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![key_id, amount.to_string(), now, expires_at],
            )?;
            Ok(Reserve::Granted(conn.last_insert_rowid()))
        })
    }

    /// In ONE transaction: deletes reservation `id` (if still there) and adds
    /// `delta` to the ledger.
    ///
    /// # Errors
    /// SQLite failures (nothing is changed).
    pub fn settle(&self, id: i64, delta: &UsageDelta) -> Result<(), StoreError> {
        self.write(|conn| {
            conn.execute("DELETE FROM reservations WHERE id = ?1", [id])?;
            upsert_usage(conn, std::slice::from_ref(delta))
        })
    }

    /// Deletes reservation `id` (nothing was spent).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn release(&self, id: i64) -> Result<(), StoreError> {
        self.write(|conn| {
            conn.execute("DELETE FROM reservations WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction, committed when `f`
    /// returns `Ok` and rolled back otherwise.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Fault>) -> Result<T, StoreError> {
        let run = || {
            let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        };
        run().map_err(|fault| into_store_error(&self.path, fault))
    }

    /// Runs `f` on the connection (single statements: autocommit).
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T, Fault>) -> Result<T, StoreError> {
        f(&self.conn).map_err(|fault| into_store_error(&self.path, fault))
    }
}

/// Opens and sets up one connection.
fn open_connection(path: &Path) -> Result<Connection, Fault> {
    // No SQLITE_OPEN_URI: the path is a file name, never a `file:` URI.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    // First, so that every later step waits for other connections' locks.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Switching a new file to WAL takes an exclusive lock for which SQLite
    // does not call the busy handler: another process opening the same new
    // file at that moment gets SQLITE_BUSY at once. Try again until the
    // busy timeout.
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mode: String = loop {
        match conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0)) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => break other?,
        }
    };
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Fault::Sql(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
            Some(format!(
                "cannot switch to WAL mode (journal_mode is {mode})"
            )),
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.create_scalar_function(
        "dec_add",
        2,
        FunctionFlags::SQLITE_UTF8
            | FunctionFlags::SQLITE_DETERMINISTIC
            | FunctionFlags::SQLITE_INNOCUOUS,
        dec_add,
    )?;
    create_schema(&conn)?;
    Ok(conn)
}

/// Creates the schema when the file has none (`user_version` 0), in one
/// IMMEDIATE transaction so that two processes opening a new file at once
/// create it once.
fn create_schema(conn: &Connection) -> Result<(), Fault> {
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Immediate)?;
    let version: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    match version {
        0 => {
            tx.execute_batch(SCHEMA)?;
            tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        SCHEMA_VERSION => {}
        other => {
            return Err(corrupt(
                "schema",
                format!(
                    "user_version {other} is not {SCHEMA_VERSION}, the version this build knows"
                ),
            ))
        }
    }
    tx.commit()?;
    Ok(())
}

/// `dec_add(a, b)`: the exact sum of two decimal strings (or integers), as a
/// decimal string; NULL when either is NULL.
fn dec_add(ctx: &Context<'_>) -> rusqlite::Result<Option<String>> {
    let (Some(a), Some(b)) = (dec_arg(ctx, 0)?, dec_arg(ctx, 1)?) else {
        return Ok(None);
    };
    a.checked_add(b)
        .map(|sum| Some(sum.to_string()))
        .ok_or_else(|| {
            rusqlite::Error::UserFunctionError(format!("dec_add({a}, {b}) overflows").into())
        })
}

fn dec_arg(ctx: &Context<'_>, idx: usize) -> rusqlite::Result<Option<Decimal>> {
    let bad = |what: String| {
        rusqlite::Error::UserFunctionError(format!("dec_add: argument {idx}: {what}").into())
    };
    match ctx.get_raw(idx) {
        ValueRef::Null => Ok(None),
        ValueRef::Integer(i) => Ok(Some(Decimal::from(i))),
        ValueRef::Text(bytes) => {
            let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8".into()))?;
            Decimal::from_str_exact(text)
                .map(Some)
                .map_err(|e| bad(format!("{text:?} is not a decimal: {e}")))
        }
        ValueRef::Real(_) => Err(bad("a REAL is not exact money".into())),
        ValueRef::Blob(_) => Err(bad("a BLOB is not a decimal".into())),
    }
}

fn bump_generation(conn: &Connection) -> Result<(), Fault> {
    conn.execute(
        "INSERT INTO meta (name, value) VALUES ('generation', 1) \
         ON CONFLICT (name) DO UPDATE SET value = value + 1",
        [],
    )?;
    Ok(())
}

/// `column + excluded.column`, saturating at `i64::MAX` (SQLite would turn
/// an overflowing integer sum into a REAL). Both sides are never negative.
fn saturating_sum(column: &str) -> String {
    format!(
        "{column} = CASE WHEN {column} > {max} - excluded.{column} THEN {max} \
         ELSE {column} + excluded.{column} END",
        max = i64::MAX
    )
}

fn upsert_usage(conn: &Connection, deltas: &[UsageDelta]) -> Result<(), Fault> {
    let sql = format!(
        "INSERT INTO usage (key_id, day, agent, class, requests, invocations, input_tokens, \
                            output_tokens, cost) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) \
         ON CONFLICT (key_id, day, agent, class) DO UPDATE SET {}, {}, {}, {}, \
             cost = dec_add(cost, excluded.cost)",
        saturating_sum("requests"),
        saturating_sum("invocations"),
        saturating_sum("input_tokens"),
        saturating_sum("output_tokens"),
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    for delta in deltas {
        stmt.execute(params![
            delta.key_id,
            delta.day,
            delta.agent,
            delta.class,
            to_i64(delta.requests),
            to_i64(delta.invocations),
            to_i64(delta.input_tokens),
            to_i64(delta.output_tokens),
            delta.cost_usd.to_string(),
        ])?;
    }
    Ok(())
}

fn spent_in(conn: &Connection, key_id: &str, budget: &Budget, now: i64) -> Result<Decimal, Fault> {
    let since = clock::period_start(budget.period, now);
    let mut stmt = conn.prepare_cached("SELECT cost FROM usage WHERE key_id = ?1 AND day >= ?2")?;
    let mut rows = stmt.query(params![key_id, since])?;
    let mut total = Decimal::ZERO;
    while let Some(row) = rows.next()? {
        let cost = money(&column::<String>(row, 0, "usage")?, "usage")?;
        total = checked_sum(total, cost, "usage")?;
    }
    Ok(total)
}

fn checked_sum(a: Decimal, b: Decimal, table: &'static str) -> Result<Decimal, Fault> {
    a.checked_add(b)
        .ok_or_else(|| corrupt(table, format!("{a} + {b} overflows")))
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Column `idx` of `row`; a value of the wrong type is a corrupt row.
fn column<T: FromSql>(row: &Row<'_>, idx: usize, table: &'static str) -> Result<T, Fault> {
    row.get(idx).map_err(|error| match error {
        rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => {
            corrupt(table, format!("column {idx}: {error}"))
        }
        other => Fault::Sql(other),
    })
}

fn counter(row: &Row<'_>, idx: usize) -> Result<u64, Fault> {
    let value: i64 = column(row, idx, "usage")?;
    u64::try_from(value)
        .map_err(|_| corrupt("usage", format!("column {idx}: negative count {value}")))
}

fn money(text: &str, table: &'static str) -> Result<Decimal, Fault> {
    Decimal::from_str_exact(text)
        .map_err(|e| corrupt(table, format!("{text:?} is not a decimal amount: {e}")))
}

fn hash_from(bytes: Vec<u8>, id: &str, what: &str) -> Result<KeyHash, Fault> {
    KeyHash::try_from(bytes.as_slice()).map_err(|_| {
        corrupt(
            "keys",
            format!("key {id:?}: {what} has {} bytes, not 32", bytes.len()),
        )
    })
}

/// Agent globs as stored: a JSON array of strings (`[]` = every agent), so
/// that any glob, commas included, reads back as written.
fn agents_to_text(agents: &[String]) -> String {
    serde_json::to_string(agents).unwrap_or_else(|_| "[]".to_string())
}

fn key_from_row(row: &Row<'_>) -> Result<KeyRecord, Fault> {
    const T: &str = "keys";
    let id: String = column(row, 0, T)?;
    let bad = |what: &str, e: String| corrupt(T, format!("key {id:?}: {what}: {e}"));
    let role: String = column(row, 2, T)?;
    let role = Role::from_str(&role).map_err(|e| bad("role", e))?;
    let agents: String = column(row, 3, T)?;
    let agents: Vec<String> =
        serde_json::from_str(&agents).map_err(|e| bad("agents", e.to_string()))?;
    let rate: Option<String> = column(row, 4, T)?;
    let rate = rate
        .map(|text| Rate::from_str(&text))
        .transpose()
        .map_err(|e| bad("rate", e))?;
    let budget: Option<String> = column(row, 5, T)?;
    let budget = budget
        .map(|text| Budget::from_str(&text))
        .transpose()
        .map_err(|e| bad("budget", e))?;
    let hash = hash_from(column(row, 10, T)?, &id, "hash")?;
    let prev_hash: Option<Vec<u8>> = column(row, 11, T)?;
    let prev_until: Option<i64> = column(row, 12, T)?;
    let previous = match (prev_hash, prev_until) {
        (Some(bytes), Some(until)) => Some((hash_from(bytes, &id, "prev_hash")?, until)),
        (None, None) => None,
        _ => {
            return Err(bad(
                "previous",
                "prev_hash and prev_until must be set together".into(),
            ))
        }
    };
    Ok(KeyRecord {
        name: column(row, 1, T)?,
        role,
        agents,
        rate,
        budget,
        upstream: column(row, 6, T)?,
        created_at: column(row, 7, T)?,
        expires_at: column(row, 8, T)?,
        revoked_at: column(row, 9, T)?,
        hash,
        previous,
        origin: Origin::Store,
        id,
    })
}

#[cfg(test)]
mod tests;
