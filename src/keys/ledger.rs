//! Request counts for the usage ledger, batched.
//!
//! Counting a request is a map update in memory; a task writes the counts
//! to SQLite every `auth.ledger_flush_ms` in one transaction, and once more
//! at shutdown. A write that fails is merged back and retried on the next
//! tick. Invocations (tokens and cost) do not wait for a batch: they are
//! written when they finish (see `Broker::settle_invocation`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rust_decimal::Decimal;

use super::clock;
use super::model::UsageDelta;
use super::store::Store;

/// (key id, day, agent, class)
type Slot = (String, String, String, &'static str);

/// Pending request counts and the task that writes them.
pub struct Ledger {
    pending: Arc<Mutex<HashMap<Slot, u64>>>,
    store: Option<Arc<Mutex<Store>>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// A ledger writing to `store` every `every`. Without a store, counts
    /// are dropped. Must run inside a Tokio runtime when given a store.
    pub fn start(store: Option<Arc<Mutex<Store>>>, every: Duration) -> Self {
        let pending = Arc::new(Mutex::new(HashMap::new()));
        if let Some(store) = &store {
            let (pending, store) = (Arc::downgrade(&pending), store.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    let Some(pending) = pending.upgrade() else {
                        return;
                    };
                    flush(&pending, &store).await;
                }
            });
        }
        Self { pending, store }
    }

    /// Counts one request.
    pub fn count(&self, key_id: &str, agent: &str, class: &'static str) {
        let day = clock::day(clock::now_unix());
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        *pending
            .entry((key_id.to_string(), day, agent.to_string(), class))
            .or_insert(0) += 1;
    }

    /// Writes what is pending now (shutdown, tests).
    pub async fn flush(&self) {
        if let Some(store) = &self.store {
            flush(&self.pending, store).await;
        }
    }
}

async fn flush(pending: &Arc<Mutex<HashMap<Slot, u64>>>, store: &Arc<Mutex<Store>>) {
    let taken = std::mem::take(&mut *pending.lock().unwrap_or_else(PoisonError::into_inner));
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
    let writer = store.clone();
    let result = tokio::task::spawn_blocking(move || {
        let store = writer.lock().unwrap_or_else(PoisonError::into_inner);
        store.add_usage(&deltas)
    })
    .await;
    let failed = match result {
        Ok(Ok(())) => return,
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    };
    tracing::error!(error = %failed, "ledger write failed; keeping the counts for the next try");
    let mut pending = pending.lock().unwrap_or_else(PoisonError::into_inner);
    for (slot, n) in taken {
        *pending.entry(slot).or_insert(0) += n;
    }
}
