//! The key broker's state in Redis (cluster mode): every replica reads and
//! writes the same keys, ledger and budget reservations.
//!
//! Layout, under `{prefix}`:
//!
//! ```text
//! keys:ids              SET of key ids
//! key:{id}              HASH of a key's fields (see keys::portable)
//! keys:gen              INT, moved by every key change
//! usage:days            ZSET of days with usage (lexical order)
//! usage:{day}           HASH "{key}\t{agent}\t{class}\t{counter}" -> n,
//!                       "…\tcost" -> exact decimal string
//! spent:{key}:{day}     STRING, exact decimal: the key's cost that day
//! resv:{key}            HASH reservation id -> "{amount} {expires_at}"
//! resv-next             INT, reservation ids
//! done:{write}          a ledger write applied (an hour; retries skip it)
//! rate:{key}            STRING, the key's own rate (GCRA arrival time, µs)
//! ```
//!
//! Each write is one script (see `scripts`), atomic across replicas. A key
//! change is published on the cluster's event bus as
//! [`Event::Keys`], and the change waits (at most
//! `cluster.event_ack_ms`) until every replica has marked its key table
//! stale: a key revoked through one replica is refused by every other on
//! its next request. While Redis is lost, calls fail at once with
//! [`StoreError::Redis`].

mod scripts;

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;

use super::backend::{Fut, KeyBackend, WriteId};
use super::clock;
use super::model::{Budget, KeyHash, KeyRecord, UsageDelta, UsageRow};
use super::portable;
use super::store::{Reserve, StoreError};
use super::token;
use crate::cluster::{Cluster, Event};
use crate::config::Rate;

/// The Redis backend.
#[derive(Clone, Debug)]
pub struct RedisKeys {
    cluster: Cluster,
}

impl RedisKeys {
    /// Over the cluster's connection.
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    fn key(&self, parts: &[&str]) -> String {
        self.cluster.key(parts)
    }

    fn record_key(&self, id: &str) -> String {
        self.key(&["key", id])
    }

    /// Runs a script; fails at once while Redis is lost.
    async fn call<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.up()?;
        self.cluster.invoke(call).await.map_err(StoreError::Redis)
    }

    /// Runs one command; fails at once while Redis is lost.
    async fn query<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, StoreError> {
        self.up()?;
        let mut conn = self.cluster.conn();
        let answer = command.query_async::<T>(&mut conn);
        self.cluster.run(answer).await.map_err(StoreError::Redis)
    }

    fn up(&self) -> Result<(), StoreError> {
        if self.cluster.is_up() {
            Ok(())
        } else {
            Err(StoreError::RedisLost)
        }
    }

    /// Takes one request from key `key_id`'s own `rate`, shared by every
    /// replica: `Ok(None)` when it may go, `Ok(Some(wait))` when the rate
    /// is spent.
    ///
    /// # Errors
    /// Redis is lost or failed.
    pub async fn take_rate(
        &self,
        key_id: &str,
        rate: Rate,
    ) -> Result<Option<std::time::Duration>, StoreError> {
        let window = u64::try_from(rate.window.as_micros()).unwrap_or(u64::MAX / 2);
        let interval = (window / u64::from(rate.max.max(1))).max(1);
        let mut call = scripts::scripts().rate.prepare_invoke();
        call.key(self.key(&["rate", key_id]))
            .arg(interval)
            .arg(interval.saturating_mul(u64::from(rate.max.max(1))));
        let wait: u64 = self.call(&call).await?;
        Ok((wait > 0).then(|| std::time::Duration::from_micros(wait)))
    }

    /// Runs a script that changes one key and answers its fields (none:
    /// nothing changed); tells the replicas when it did.
    async fn changed_to(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let fields: HashMap<String, String> = self.call(call).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        self.changed().await;
        decode(&fields).map(Some)
    }

    /// Tells every replica the keys changed, and waits for them.
    async fn changed(&self) {
        self.cluster.publish(Event::Keys).await;
    }

    async fn add(
        &self,
        write: WriteId,
        reservation: Option<i64>,
        deltas: &[UsageDelta],
    ) -> Result<(), StoreError> {
        if deltas.is_empty() && reservation.is_none() {
            return Ok(());
        }
        let script = &scripts::scripts().usage;
        let mut call = script.prepare_invoke();
        let resv_of = deltas.first().map_or("-", |d| d.key_id.as_str());
        call.key(self.key(&["usage", "days"]))
            .key(self.key(&["resv", resv_of]))
            .key(self.key(&["done", &format!("{write:016x}")]))
            .arg(reservation.map(|id| id.to_string()).unwrap_or_default());
        for delta in deltas {
            if delta.cost_usd.is_sign_negative() && !delta.cost_usd.is_zero() {
                tracing::warn!(cost = %delta.cost_usd, "a negative invocation cost is recorded as 0");
            }
            call.key(self.key(&["usage", &delta.day]))
                .key(self.key(&["spent", &delta.key_id, &delta.day]))
                .arg(format!(
                    "{}\t{}\t{}",
                    delta.key_id, delta.agent, delta.class
                ))
                .arg(&delta.day)
                .arg(delta.requests)
                .arg(delta.invocations)
                .arg(delta.input_tokens)
                .arg(delta.output_tokens)
                .arg(money(delta.cost_usd));
        }
        self.call::<i64>(&call).await.map(drop)
    }
}

impl KeyBackend for RedisKeys {
    fn keys(&self) -> Fut<'_, Vec<KeyRecord>> {
        Box::pin(async move {
            let mut smembers = redis::cmd("SMEMBERS");
            smembers.arg(self.key(&["keys", "ids"]));
            let ids: Vec<String> = self.query(&smembers).await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut conn = self.cluster.conn();
            let mut pipe = redis::pipe();
            for id in &ids {
                pipe.cmd("HGETALL").arg(self.record_key(id));
            }
            let all = pipe.query_async::<Vec<HashMap<String, String>>>(&mut conn);
            let all = self.cluster.run(all).await.map_err(StoreError::Redis)?;
            let mut records = Vec::with_capacity(all.len());
            for fields in all.iter().filter(|f| !f.is_empty()) {
                records.push(decode(fields)?);
            }
            records.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(records)
        })
    }

    fn key<'a>(&'a self, id: &'a str) -> Fut<'a, Option<KeyRecord>> {
        Box::pin(async move {
            let mut get = redis::cmd("HGETALL");
            get.arg(self.record_key(id));
            let fields: HashMap<String, String> = self.query(&get).await?;
            if fields.is_empty() {
                return Ok(None);
            }
            decode(&fields).map(Some)
        })
    }

    fn insert_key<'a>(&'a self, record: &'a KeyRecord) -> Fut<'a, ()> {
        Box::pin(async move {
            let mut call = scripts::scripts().insert.prepare_invoke();
            call.key(self.key(&["keys", "ids"]))
                .key(self.record_key(&record.id))
                .key(self.key(&["keys", "gen"]));
            for (name, value) in portable::to_fields(record) {
                call.arg(name).arg(value);
            }
            if self.call::<i64>(&call).await? == 0 {
                return Err(StoreError::Duplicate(record.id.clone()));
            }
            self.changed().await;
            Ok(())
        })
    }

    fn revoke<'a>(&'a self, id: &'a str, now: i64) -> Fut<'a, Option<KeyRecord>> {
        Box::pin(async move {
            let mut call = scripts::scripts().revoke.prepare_invoke();
            call.key(self.record_key(id))
                .key(self.key(&["keys", "gen"]))
                .arg(now);
            self.changed_to(&call).await
        })
    }

    fn rotate<'a>(
        &'a self,
        id: &'a str,
        new: &'a KeyHash,
        until: i64,
    ) -> Fut<'a, Option<KeyRecord>> {
        Box::pin(async move {
            let mut call = scripts::scripts().rotate.prepare_invoke();
            call.key(self.record_key(id))
                .key(self.key(&["keys", "gen"]))
                .arg(token::hex(new))
                .arg(until);
            self.changed_to(&call).await
        })
    }

    fn generation(&self) -> Fut<'_, i64> {
        Box::pin(async move {
            let mut get = redis::cmd("GET");
            get.arg(self.key(&["keys", "gen"]));
            let generation: Option<i64> = self.query(&get).await?;
            Ok(generation.unwrap_or(0))
        })
    }

    fn add_usage<'a>(&'a self, write: WriteId, deltas: &'a [UsageDelta]) -> Fut<'a, ()> {
        Box::pin(self.add(write, None, deltas))
    }

    fn usage<'a>(&'a self, key: Option<&'a str>, since_day: &'a str) -> Fut<'a, Vec<UsageRow>> {
        Box::pin(async move {
            let mut call = scripts::scripts().read_usage.prepare_invoke();
            call.key(self.key(&["usage", "days"]))
                .arg(since_day)
                .arg(self.key(&["usage", ""]));
            let flat: Vec<String> = self.call(&call).await?;
            rows(&flat, key)
        })
    }

    fn reserve<'a>(
        &'a self,
        key_id: &'a str,
        budget: &'a Budget,
        amount: Decimal,
        now: i64,
        expires_at: i64,
    ) -> Fut<'a, Reserve> {
        Box::pin(async move {
            let mut call = scripts::scripts().reserve.prepare_invoke();
            call.key(self.key(&["resv", key_id]))
                .key(self.key(&["resv-next"]));
            for day in period_days(budget, now) {
                call.key(self.key(&["spent", key_id, &day]));
            }
            call.arg(money(budget.usd))
                .arg(money(amount))
                .arg(expires_at.saturating_sub(now).max(1));
            let (id, spent, reserved): (i64, String, String) = self.call(&call).await?;
            if id > 0 {
                return Ok(Reserve::Granted(id));
            }
            Ok(Reserve::Refused {
                spent: decimal(&spent)?,
                reserved: decimal(&reserved)?,
                limit: budget.usd,
            })
        })
    }

    fn settle<'a>(&'a self, write: WriteId, id: i64, delta: &'a UsageDelta) -> Fut<'a, ()> {
        Box::pin(self.add(write, Some(id), std::slice::from_ref(delta)))
    }

    fn release<'a>(&'a self, key_id: &'a str, id: i64) -> Fut<'a, ()> {
        Box::pin(async move {
            let mut del = redis::cmd("HDEL");
            del.arg(self.key(&["resv", key_id])).arg(id);
            self.query::<i64>(&del).await.map(drop)
        })
    }
}

fn decode(fields: &HashMap<String, String>) -> Result<KeyRecord, StoreError> {
    portable::from_fields(fields).map_err(|message| StoreError::Corrupt {
        table: "keys",
        message,
    })
}

/// An amount as the scripts take it: plain digits, never negative.
fn money(amount: Decimal) -> String {
    amount.max(Decimal::ZERO).normalize().to_string()
}

fn decimal(text: &str) -> Result<Decimal, StoreError> {
    Decimal::from_str_exact(text).map_err(|_| StoreError::Corrupt {
        table: "usage",
        message: format!("{text:?} is not a decimal"),
    })
}

/// The days of the budget period containing `now`, today first.
fn period_days(budget: &Budget, now: i64) -> Vec<String> {
    let start = clock::period_start(budget.period, now);
    let mut days = Vec::new();
    let mut at = now;
    loop {
        let day = clock::day(at);
        if day < start {
            return days;
        }
        days.push(day);
        at -= 86_400;
    }
}

/// Ledger rows from the read script's `{day, field, value}` triples.
fn rows(flat: &[String], only: Option<&str>) -> Result<Vec<UsageRow>, StoreError> {
    let mut rows: BTreeMap<(String, String, String, String), UsageRow> = BTreeMap::new();
    for triple in flat.chunks_exact(3) {
        let [day, field, value] = triple else {
            continue;
        };
        // The key id and the class hold no tab; an agent slug may (it
        // comes decoded from a path): split it off from both ends.
        let Some((key_id, rest)) = field.split_once('\t') else {
            continue;
        };
        let mut tail = rest.rsplitn(3, '\t');
        let (Some(counter), Some(class), Some(agent)) = (tail.next(), tail.next(), tail.next())
        else {
            continue;
        };
        if only.is_some_and(|only| only != key_id) {
            continue;
        }
        let slot = (day.clone(), key_id.into(), agent.into(), class.into());
        let row = rows.entry(slot).or_insert_with(|| UsageRow {
            key_id: key_id.into(),
            day: day.clone(),
            agent: agent.into(),
            class: class.into(),
            ..UsageRow::default()
        });
        let count = || {
            value.parse::<u64>().map_err(|_| StoreError::Corrupt {
                table: "usage",
                message: format!("{counter} {value:?} is not a count"),
            })
        };
        match counter {
            "requests" => row.requests = count()?,
            "invocations" => row.invocations = count()?,
            "input_tokens" => row.input_tokens = count()?,
            "output_tokens" => row.output_tokens = count()?,
            "cost" => row.cost_usd = decimal(value)?,
            _ => {}
        }
    }
    Ok(rows.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::model::Period;

    #[test]
    fn a_months_days_run_back_to_its_first() {
        let budget = Budget {
            usd: Decimal::ONE,
            period: Period::Month,
        };
        // 2026-11-22 12:00 UTC.
        let days = period_days(&budget, 1_795_305_600 + 43_200);
        assert_eq!(days.len(), 22);
        assert_eq!(days[0], "2026-11-22");
        assert_eq!(days[21], "2026-11-01");
        let daily = Budget {
            period: Period::Day,
            ..budget
        };
        assert_eq!(period_days(&daily, 1_795_305_600), ["2026-11-22"]);
    }

    #[test]
    fn usage_rows_group_by_day_key_agent_and_class() {
        let flat: Vec<String> = [
            ("2026-11-22", "k1\tdemo\tinvoke\tinvocations", "2"),
            ("2026-11-22", "k1\tdemo\tinvoke\tcost", "0.000342"),
            ("2026-11-22", "k2\t\tcrud\trequests", "5"),
            ("2026-11-21", "k1\tdemo\tinvoke\trequests", "1"),
            // A slug with tabs (decoded from %09) stays the agent's.
            ("2026-11-21", "k3\tx\tinvoke\tcost\tcrud\trequests", "4"),
        ]
        .iter()
        .flat_map(|(d, f, v)| [d.to_string(), f.to_string(), v.to_string()])
        .collect();
        let all = rows(&flat, None).unwrap();
        assert_eq!(all.len(), 4);
        let tabbed = all.iter().find(|r| r.key_id == "k3").unwrap();
        assert_eq!(
            (
                tabbed.agent.as_str(),
                tabbed.class.as_str(),
                tabbed.requests
            ),
            ("x\tinvoke\tcost", "crud", 4)
        );
        assert_eq!(tabbed.cost_usd, Decimal::ZERO);
        assert_eq!(all[0].day, "2026-11-21");
        let k1 = all
            .iter()
            .find(|r| r.key_id == "k1" && r.day == "2026-11-22")
            .unwrap();
        assert_eq!(k1.cost_usd, Decimal::new(342, 6));
        assert_eq!(k1.invocations, 2);
        assert_eq!(rows(&flat, Some("k2")).unwrap().len(), 1);
    }
}
