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
//!      rate /* Rate Display, "30/60000ms" */, budget /* "20/month" */,
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
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

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
        self.read(|conn| Ok(conn.pragma_query_value(None, "data_version", |row| row.get(0))?))
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
    let mode: String =
        conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
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
mod tests {
    use std::sync::{Arc, Barrier};

    use super::*;
    use crate::keys::model::Period;

    fn dec(text: &str) -> Decimal {
        Decimal::from_str_exact(text).unwrap()
    }

    fn budget(text: &str) -> Budget {
        text.parse().unwrap()
    }

    /// 2026-11-22T12:00:00Z.
    const NOON: i64 = 1_795_305_600 + 12 * 3_600;

    fn record(id: &str, created_at: i64) -> KeyRecord {
        KeyRecord {
            id: id.to_string(),
            name: format!("{id}-name"),
            role: Role::Invoke,
            agents: Vec::new(),
            rate: None,
            budget: None,
            upstream: "default".to_string(),
            created_at,
            expires_at: None,
            revoked_at: None,
            hash: [id.len() as u8; 32],
            previous: None,
            origin: Origin::Store,
        }
    }

    fn delta(key: &str, day: &str, agent: &str, class: &str, cost: &str) -> UsageDelta {
        UsageDelta {
            key_id: key.to_string(),
            day: day.to_string(),
            agent: agent.to_string(),
            class: class.to_string(),
            requests: 1,
            invocations: 0,
            input_tokens: 0,
            output_tokens: 0,
            cost_usd: dec(cost),
        }
    }

    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("keys.db")).unwrap();
        (dir, store)
    }

    #[test]
    fn keys_round_trip_with_every_field() {
        let (_dir, store) = temp_store();
        let full = KeyRecord {
            id: "k1".into(),
            name: "ci-bot".into(),
            role: Role::Deploy,
            agents: vec!["demo-*".into(), "prod".into(), "odd,glob".into()],
            rate: Some("30/min".parse().unwrap()),
            budget: Some(budget("2.50/day")),
            upstream: "team".into(),
            created_at: 100,
            expires_at: Some(10_000),
            revoked_at: Some(500),
            hash: [7; 32],
            previous: Some(([9; 32], 2_000)),
            origin: Origin::Config,
        };
        let minimal = record("k0", 100);
        store.insert_key(&full).unwrap();
        store.insert_key(&minimal).unwrap();
        let late = record("a-late", 200);
        store.insert_key(&late).unwrap();

        let expected = KeyRecord {
            origin: Origin::Store,
            ..full.clone()
        };
        assert_eq!(store.key("k1").unwrap(), Some(expected.clone()));
        assert_eq!(store.key("nope").unwrap(), None);
        // created_at, then id.
        assert_eq!(store.keys().unwrap(), vec![minimal, expected, late]);
        assert_eq!(store.generation().unwrap(), 3);
    }

    #[test]
    fn a_duplicate_id_is_refused_and_changes_nothing() {
        let (_dir, store) = temp_store();
        store.insert_key(&record("k1", 1)).unwrap();
        let mut other = record("k1", 2);
        other.name = "other".into();
        let error = store.insert_key(&other).unwrap_err();
        assert!(
            matches!(&error, StoreError::Duplicate(id) if id == "k1"),
            "{error}"
        );
        assert_eq!(error.to_string(), "a key with id \"k1\" already exists");
        assert_eq!(store.key("k1").unwrap().unwrap().name, "k1-name");
        assert_eq!(store.generation().unwrap(), 1);
    }

    #[test]
    fn revoke_and_rotate_change_the_key_and_bump_the_generation() {
        let (_dir, store) = temp_store();
        assert_eq!(store.generation().unwrap(), 0);
        store.insert_key(&record("k1", 1)).unwrap();
        store.insert_key(&record("k2", 1)).unwrap();
        assert_eq!(store.generation().unwrap(), 2);

        assert!(store.rotate("k1", &[0xaa; 32], 5_000).unwrap());
        let k1 = store.key("k1").unwrap().unwrap();
        assert_eq!(k1.hash, [0xaa; 32]);
        assert_eq!(k1.previous, Some(([2; 32], 5_000)));
        assert_eq!(store.generation().unwrap(), 3);
        // A second rotation: the current hash becomes the previous one.
        assert!(store.rotate("k1", &[0xbb; 32], 6_000).unwrap());
        let k1 = store.key("k1").unwrap().unwrap();
        assert_eq!(
            (k1.hash, k1.previous),
            ([0xbb; 32], Some(([0xaa; 32], 6_000)))
        );
        assert_eq!(store.generation().unwrap(), 4);

        assert!(store.revoke("k2", 700).unwrap());
        assert_eq!(store.key("k2").unwrap().unwrap().revoked_at, Some(700));
        assert_eq!(store.generation().unwrap(), 5);
        // Revoking again keeps the first time and the generation.
        assert!(store.revoke("k2", 800).unwrap());
        assert_eq!(store.key("k2").unwrap().unwrap().revoked_at, Some(700));
        assert_eq!(store.generation().unwrap(), 5);
        // A revoked key is not rotated.
        assert!(!store.rotate("k2", &[0xcc; 32], 9_000).unwrap());
        let k2 = store.key("k2").unwrap().unwrap();
        assert_eq!((k2.hash, k2.previous), ([2; 32], None));
        // Unknown keys.
        assert!(!store.revoke("nope", 1).unwrap());
        assert!(!store.rotate("nope", &[1; 32], 1).unwrap());
        assert_eq!(store.generation().unwrap(), 5);
    }

    #[test]
    fn data_version_changes_only_on_other_connections_commits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let a = Store::open(&path).unwrap();
        let b = Store::open(&path).unwrap();
        let v0 = a.data_version().unwrap();
        // A's own reads and writes leave A's data_version alone.
        a.keys().unwrap();
        a.generation().unwrap();
        a.insert_key(&record("mine", 1)).unwrap();
        assert_eq!(a.data_version().unwrap(), v0);

        b.insert_key(&record("theirs", 1)).unwrap();
        let v1 = a.data_version().unwrap();
        assert_ne!(v1, v0);
        assert_eq!(a.generation().unwrap(), 2);
        a.keys().unwrap();
        assert_eq!(a.data_version().unwrap(), v1);

        b.add_usage(&[delta("k", "2026-11-22", "", "crud", "1")])
            .unwrap();
        assert_ne!(a.data_version().unwrap(), v1);
    }

    #[test]
    fn add_usage_sums_money_exactly() {
        let (_dir, store) = temp_store();
        let batch: Vec<UsageDelta> = (0..100)
            .map(|_| UsageDelta {
                invocations: 1,
                input_tokens: 12,
                output_tokens: 34,
                ..delta("k1", "2026-11-22", "demo", "invoke", "0.000171")
            })
            .collect();
        for _ in 0..100 {
            store.add_usage(&batch).unwrap();
        }
        store.add_usage(&[]).unwrap();
        let rows = store.usage(None, "2026-11-01").unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!(row.cost_usd, dec("1.71"));
        assert_eq!(row.cost_usd.to_string(), "1.710000");
        assert_eq!(
            (
                row.requests,
                row.invocations,
                row.input_tokens,
                row.output_tokens
            ),
            (10_000, 10_000, 120_000, 340_000)
        );

        store
            .add_usage(&[
                delta("k2", "2026-11-22", "", "crud", "0.1"),
                delta("k2", "2026-11-22", "", "crud", "0.2"),
                delta(
                    "k3",
                    "2026-11-22",
                    "",
                    "crud",
                    "0.1000000000000000000000000001",
                ),
                delta(
                    "k3",
                    "2026-11-22",
                    "",
                    "crud",
                    "0.0000000000000000000000000002",
                ),
            ])
            .unwrap();
        let k2 = store.usage(Some("k2"), "2026-11-22").unwrap();
        assert_eq!(k2[0].cost_usd, dec("0.3"));
        assert_eq!(k2[0].cost_usd.to_string(), "0.3");
        assert_eq!(k2[0].requests, 2);
        let k3 = store.usage(Some("k3"), "2026-11-22").unwrap();
        assert_eq!(k3[0].cost_usd, dec("0.1000000000000000000000000003"));
        let month = budget("20/month");
        assert_eq!(store.spent("k2", &month, NOON).unwrap(), dec("0.3"));
    }

    #[test]
    fn counters_saturate_instead_of_overflowing() {
        let (_dir, store) = temp_store();
        let huge = UsageDelta {
            requests: u64::MAX,
            input_tokens: i64::MAX as u64 - 1,
            ..delta("k", "2026-11-22", "", "crud", "0")
        };
        store.add_usage(&[huge.clone(), huge]).unwrap();
        let row = &store.usage(None, "").unwrap()[0];
        assert_eq!(row.requests, i64::MAX as u64);
        assert_eq!(row.input_tokens, i64::MAX as u64);
    }

    #[test]
    fn usage_filters_by_key_and_day_in_order() {
        let (_dir, store) = temp_store();
        store
            .add_usage(&[
                delta("b", "2026-11-22", "x", "crud", "1"),
                delta("a", "2026-11-22", "y", "invoke", "2"),
                delta("a", "2026-11-22", "x", "invoke", "3"),
                delta("a", "2026-11-20", "x", "crud", "4"),
                delta("a", "2026-10-31", "x", "crud", "5"),
            ])
            .unwrap();
        let keys_days = |rows: Vec<UsageRow>| {
            rows.into_iter()
                .map(|r| format!("{} {} {} {}", r.day, r.key_id, r.agent, r.class))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            keys_days(store.usage(None, "2026-11-01").unwrap()),
            [
                "2026-11-20 a x crud",
                "2026-11-22 a x invoke",
                "2026-11-22 a y invoke",
                "2026-11-22 b x crud",
            ]
        );
        assert_eq!(
            keys_days(store.usage(Some("a"), "2026-11-21").unwrap()),
            ["2026-11-22 a x invoke", "2026-11-22 a y invoke"]
        );
        assert_eq!(store.usage(None, "").unwrap().len(), 5);
        assert!(store.usage(Some("c"), "").unwrap().is_empty());

        assert_eq!(store.spent("a", &budget("9/day"), NOON).unwrap(), dec("5"));
        assert_eq!(
            store.spent("a", &budget("9/month"), NOON).unwrap(),
            dec("9")
        );
        assert_eq!(
            store.spent("c", &budget("9/month"), NOON).unwrap(),
            Decimal::ZERO
        );
    }

    #[test]
    fn reservations_hold_the_budget_until_settled_released_or_expired() {
        let (_dir, store) = temp_store();
        let limit = budget("1/day");
        store
            .add_usage(&[delta("k", "2026-11-22", "", "invoke", "0.4")])
            .unwrap();
        let Reserve::Granted(first) = store
            .reserve("k", &limit, dec("0.5"), NOON, NOON + 60)
            .unwrap()
        else {
            panic!("0.4 spent is below 1");
        };
        // Another key's reservations do not count.
        assert!(matches!(
            store
                .reserve("other", &limit, dec("5"), NOON, NOON + 60)
                .unwrap(),
            Reserve::Granted(_)
        ));
        // 0.4 + 0.5 < 1: granted.
        let Reserve::Granted(second) = store
            .reserve("k", &limit, dec("0.2"), NOON, NOON + 10)
            .unwrap()
        else {
            panic!("0.9 is below 1");
        };
        assert_ne!(first, second);
        // 0.4 + 0.7 >= 1: refused.
        assert_eq!(
            store
                .reserve("k", &limit, dec("0.01"), NOON, NOON + 60)
                .unwrap(),
            Reserve::Refused {
                spent: dec("0.4"),
                reserved: dec("0.7"),
                limit: dec("1"),
            }
        );
        // Once `second` expired, it is purged and no longer counts.
        let later = NOON + 10;
        let Reserve::Granted(third) = store
            .reserve("k", &limit, dec("0.05"), later, later + 60)
            .unwrap()
        else {
            panic!("0.4 + 0.5 is below 1");
        };
        let count: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM reservations WHERE id = ?1",
                [second],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(count, 0);

        // Settling moves the cost into the ledger and frees the reservation.
        store
            .settle(first, &delta("k", "2026-11-22", "", "invoke", "0.35"))
            .unwrap();
        assert_eq!(store.spent("k", &limit, later).unwrap(), dec("0.75"));
        // Settling again (the reservation is gone) still records the usage.
        store
            .settle(first, &delta("k", "2026-11-22", "", "invoke", "0.2"))
            .unwrap();
        // 0.95 spent + 0.05 reserved reaches the limit exactly: refused.
        assert_eq!(
            store
                .reserve("k", &limit, dec("1"), later, later + 60)
                .unwrap(),
            Reserve::Refused {
                spent: dec("0.95"),
                reserved: dec("0.05"),
                limit: dec("1"),
            }
        );
        store.release(third).unwrap();
        store.release(third).unwrap();
        assert!(matches!(
            store
                .reserve("k", &limit, dec("1"), later, later + 60)
                .unwrap(),
            Reserve::Granted(_)
        ));
        // A refusal stores no reservation.
        let refused = store
            .reserve("k", &limit, dec("1"), later, later + 60)
            .unwrap();
        assert!(matches!(refused, Reserve::Refused { .. }));
        let live: i64 = store
            .conn
            .query_row(
                "SELECT count(*) FROM reservations WHERE key_id = 'k'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(live, 1);
        // The next day starts from zero spent.
        let tomorrow = NOON + 86_400;
        assert_eq!(store.spent("k", &limit, tomorrow).unwrap(), Decimal::ZERO);
        assert!(matches!(
            store
                .reserve("k", &limit, dec("1"), tomorrow, tomorrow + 60)
                .unwrap(),
            Reserve::Granted(_)
        ));
    }

    #[test]
    fn reservations_are_atomic_across_connections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        Store::open(&path)
            .unwrap()
            .add_usage(&[delta("k", "2026-11-22", "", "invoke", "0.5")])
            .unwrap();
        let limit = Budget {
            usd: dec("1"),
            period: Period::Day,
        };
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let path = path.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let store = Store::open(&path).unwrap();
                    barrier.wait();
                    store
                        .reserve("k", &limit, dec("0.3"), NOON, NOON + 60)
                        .unwrap()
                })
            })
            .collect();
        let outcomes: Vec<Reserve> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let granted = outcomes
            .iter()
            .filter(|o| matches!(o, Reserve::Granted(_)))
            .count();
        assert_eq!(granted, 2, "{outcomes:?}");
        for outcome in &outcomes {
            if let Reserve::Refused {
                spent,
                reserved,
                limit,
            } = outcome
            {
                assert_eq!(
                    (*spent, *reserved, *limit),
                    (dec("0.5"), dec("0.6"), dec("1"))
                );
            }
        }
    }

    #[test]
    fn concurrent_first_opens_create_the_schema_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fresh.db");
        let barrier = Arc::new(Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let path = path.clone();
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    barrier.wait();
                    let store = Store::open(&path).unwrap();
                    store.insert_key(&record(&format!("k{i}"), i)).unwrap();
                    for _ in 0..20 {
                        store
                            .add_usage(&[delta("k", "2026-11-22", "", "crud", "0.01")])
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.keys().unwrap().len(), 8);
        assert_eq!(store.generation().unwrap(), 8);
        let row = &store.usage(Some("k"), "").unwrap()[0];
        assert_eq!((row.requests, row.cost_usd), (160, dec("1.6")));
    }

    #[test]
    fn everything_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        let mut key = record("k1", 5);
        key.budget = Some(budget("20/month"));
        key.rate = Some("5/1500ms".parse().unwrap());
        let reservation;
        {
            let store = Store::open(&path).unwrap();
            assert_eq!(store.path(), path);
            store.insert_key(&key).unwrap();
            store.rotate("k1", &[3; 32], 99).unwrap();
            store
                .add_usage(&[delta("k1", "2026-11-22", "a", "invoke", "1.25")])
                .unwrap();
            let Reserve::Granted(id) = store
                .reserve("k1", &budget("20/month"), dec("2"), NOON, NOON + 600)
                .unwrap()
            else {
                panic!("nothing spent yet");
            };
            reservation = id;
        }
        let store = Store::open(&path).unwrap();
        let expected = KeyRecord {
            hash: [3; 32],
            previous: Some(([2; 32], 99)),
            ..key
        };
        assert_eq!(store.keys().unwrap(), vec![expected]);
        assert_eq!(store.generation().unwrap(), 2);
        assert_eq!(store.usage(None, "").unwrap()[0].cost_usd, dec("1.25"));
        assert_eq!(
            store
                .reserve("k1", &budget("3.25/month"), dec("1"), NOON, NOON + 60)
                .unwrap(),
            Reserve::Refused {
                spent: dec("1.25"),
                reserved: dec("2"),
                limit: dec("3.25"),
            }
        );
        store.release(reservation).unwrap();
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = store
            .conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .unwrap();
        assert_eq!(sync, 2, "FULL");
        let version: i64 = store
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, 1);
    }

    #[test]
    fn dec_add_is_exact_and_refuses_non_decimals() {
        let (_dir, store) = temp_store();
        let sum = |a: &str, b: &str| -> rusqlite::Result<Option<String>> {
            store
                .conn
                .query_row(&format!("SELECT dec_add({a}, {b})"), [], |r| r.get(0))
        };
        assert_eq!(sum("'0.1'", "'0.2'").unwrap().as_deref(), Some("0.3"));
        assert_eq!(sum("'1.50'", "2").unwrap().as_deref(), Some("3.50"));
        assert_eq!(sum("NULL", "'1'").unwrap(), None);
        assert!(sum("'abc'", "'1'").is_err());
        assert!(sum("0.5", "'1'").is_err());
        assert!(sum("'79228162514264337593543950335'", "'1'").is_err());
    }

    #[test]
    fn corrupt_rows_are_errors_not_panics() {
        let (_dir, store) = temp_store();
        store.insert_key(&record("k1", 1)).unwrap();
        store
            .add_usage(&[delta("k", "2026-11-22", "", "crud", "1")])
            .unwrap();
        let raw = Connection::open(store.path()).unwrap();
        for (sql, table) in [
            ("UPDATE keys SET role = 'root'", "keys"),
            ("UPDATE keys SET role = 'read', budget = '-1/day'", "keys"),
            ("UPDATE keys SET budget = NULL, rate = 'fast'", "keys"),
            ("UPDATE keys SET rate = NULL, agents = 'a,b'", "keys"),
        ] {
            raw.execute(sql, []).unwrap();
            let error = store.keys().unwrap_err();
            assert!(
                matches!(&error, StoreError::Corrupt { table: t, .. } if *t == table),
                "{sql}: {error}"
            );
            assert!(matches!(store.key("k1"), Err(StoreError::Corrupt { .. })));
        }
        raw.execute("UPDATE keys SET agents = '[]'", []).unwrap();
        store.keys().unwrap();

        raw.execute("UPDATE usage SET cost = '1e5'", []).unwrap();
        assert!(matches!(
            store.usage(None, ""),
            Err(StoreError::Corrupt { table: "usage", .. })
        ));
        assert!(matches!(
            store.spent("k", &budget("1/day"), NOON),
            Err(StoreError::Corrupt { table: "usage", .. })
        ));
        raw.execute("UPDATE usage SET cost = '1', requests = -3", [])
            .unwrap();
        assert!(matches!(
            store.usage(None, ""),
            Err(StoreError::Corrupt { table: "usage", .. })
        ));
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.db");
        drop(Store::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 2)
            .unwrap();
        let error = Store::open(&path).unwrap_err();
        assert!(
            matches!(
                error,
                StoreError::Corrupt {
                    table: "schema",
                    ..
                }
            ),
            "{error}"
        );
        let missing = Store::open(&dir.path().join("no/such/dir/keys.db")).unwrap_err();
        assert!(matches!(missing, StoreError::Sqlite { .. }), "{missing}");
        assert!(missing.to_string().contains("no/such/dir"), "{missing}");
    }
}
