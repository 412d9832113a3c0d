//! Request counts for the usage ledger, batched, and invocation records
//! that could not be written yet.
//!
//! Counting a request is a map update in memory; a task writes the counts
//! to the backend every `auth.ledger_flush_ms` in one batch, and once more
//! at shutdown. A batch that fails is kept as it is and retried on the
//! next tick. Invocations (tokens and cost) do not wait for a batch: they are
//! written when they finish (see `Broker::settle_invocation`); one whose
//! write failed (Redis lost, SQLite locked past its timeout) is kept here
//! and retried on every tick until it is written. Each write carries an id
//! the Redis backend remembers for an hour, so a write whose answer was
//! lost is not applied twice by its retry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rust_decimal::Decimal;

use super::backend::{write_id, KeyBackend, WriteId};
use super::clock;
use super::model::UsageDelta;
use super::store::StoreError;

/// (key id, day, agent, class)
type Slot = (String, String, String, &'static str);

/// A write the backend still owes. Retried under its [`WriteId`], so one
/// whose answer was lost (it was made) is not made twice.
#[derive(Debug)]
pub enum Owed {
    /// Free reservation `.1` and add the usage.
    Settle(WriteId, i64, UsageDelta),
    /// Add the usage (no reservation).
    Add(WriteId, Vec<UsageDelta>),
    /// Free reservation `.1` of key `.0`.
    Release(String, i64),
}

impl Owed {
    /// Makes the write.
    ///
    /// # Errors
    /// The backend failed; retry the same `Owed`.
    pub async fn write(&self, store: &dyn KeyBackend) -> Result<(), StoreError> {
        match self {
            Self::Settle(write, id, delta) => store.settle(*write, *id, delta).await,
            Self::Add(write, deltas) => store.add_usage(*write, deltas).await,
            Self::Release(key, id) => store.release(key, *id).await,
        }
    }
}

#[derive(Default)]
struct Pending {
    counts: HashMap<Slot, u64>,
    owed: Vec<Owed>,
}

/// Pending request counts, owed writes, and the task that writes them.
pub struct Ledger {
    pending: Arc<Mutex<Pending>>,
    backend: Option<Arc<dyn KeyBackend>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger writing to `backend` every `every`. Without a backend,
    /// counts are dropped. Must run inside a Tokio runtime when given one.
    pub fn start(backend: Option<Arc<dyn KeyBackend>>, every: Duration) -> Self {
        let pending = Arc::new(Mutex::new(Pending::default()));
        if let Some(store) = &backend {
            let (pending, store) = (Arc::downgrade(&pending), store.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(pending) = pending.upgrade() else {
                        return;
                    };
                    flush(&pending, store.as_ref()).await;
                }
            });
        }
        Self { pending, backend }
    }

    /// Counts one request.
    pub fn count(&self, key_id: &str, agent: &str, class: &'static str) {
        let day = clock::day(clock::now_unix());
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        *pending
            .counts
            .entry((key_id.to_string(), day, agent.to_string(), class))
            .or_insert(0) += 1;
    }

    /// Keeps a write that failed, for the next tick.
    pub fn owe(&self, owed: Owed) {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.owed.push(owed);
    }

    /// How many writes are waiting for the backend.
    pub fn owed(&self) -> usize {
        let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.owed.len()
    }

    /// Writes what is pending now (shutdown, tests).
    pub async fn flush(&self) {
        if let Some(store) = &self.backend {
            flush(&self.pending, store.as_ref()).await;
        }
    }
}

async fn flush(pending: &Arc<Mutex<Pending>>, store: &dyn KeyBackend) {
    let owed = std::mem::take(&mut pending.lock().unwrap_or_else(PoisonError::into_inner).owed);
    let mut kept = Vec::new();
    for owed in owed {
        // In order: once one fails, the rest wait with it.
        if !kept.is_empty() {
            kept.push(owed);
            continue;
        }
        if owed.write(store).await.is_err() {
            kept.push(owed);
        }
    }
    if !kept.is_empty() {
        let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
        kept.append(&mut pending.owed);
        pending.owed = kept;
    }
    let taken = std::mem::take(
        &mut pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .counts,
    );
    if taken.is_empty() {
        return;
    }
    let deltas: Vec<UsageDelta> = taken
        .iter()
        .map(|((key_id, day, agent, class), n)| UsageDelta {
            key_id: key_id.clone(),
            day: day.clone(),
            agent: agent.clone(),
            class: (*class).to_string(),
            requests: *n,
            cost_usd: Decimal::ZERO,
            ..UsageDelta::default()
        })
        .collect();
    let batch = Owed::Add(write_id(), deltas);
    let Err(error) = batch.write(store).await else {
        return;
    };
    let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
    if matches!(error, StoreError::RedisLost) {
        // Never sent: back with the counts still to come, one batch later.
        for (slot, n) in taken {
            *pending.counts.entry(slot).or_insert(0) += n;
        }
        return;
    }
    tracing::error!(%error, "ledger write failed; keeping the counts for the next try");
    // As this batch, under its id: it may have been written after all.
    pending.owed.push(batch);
}
