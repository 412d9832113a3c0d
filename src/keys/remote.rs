//! The key table in cluster mode: when it must be reread from Redis.
//!
//! A key change made through any replica (or `keys … --redis`) is
//! published as [`Event::Keys`]; the change's answer waits until each
//! replica has applied it, which here means marking the table stale. So
//! the next request on every replica rereads the keys first. A replica that
//! lost its subscription marks the table stale when it is back (the bus's
//! resync), and a poll of the key generation every
//! [`POLL_EVERY`] catches whatever else slipped by.
//!
//! Redis lost: a reread fails, and the table as last loaded keeps
//! answering (already-verified keys keep working; keys created or revoked
//! meanwhile wait for Redis). A table never loaded refuses with 503.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::backend::KeyBackend;
use super::model::KeyRecord;
use super::store::StoreError;
use crate::cluster::events::Sink;
use crate::cluster::{Cluster, Event};

/// How often a replica compares its key generation with Redis's.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// What a replica knows about the freshness of its key table.
#[derive(Debug)]
struct Freshness {
    stale: AtomicBool,
    /// The generation the table was read at; -1 before the first read.
    seen: AtomicI64,
}

impl Sink for Freshness {
    fn apply(&self, event: &Event) {
        if *event == Event::Keys {
            self.stale.store(true, Ordering::Release);
        }
    }

    fn resync(&self) {
        self.stale.store(true, Ordering::Release);
    }
}

/// The key table's source in cluster mode.
pub struct Remote {
    backend: Arc<dyn KeyBackend>,
    freshness: Arc<Freshness>,
    loaded: AtomicBool,
    /// One reread at a time; the others wait for it.
    reading: tokio::sync::Mutex<()>,
    /// The stored keys as last read (a reload of the config rebuilds the
    /// table from them without reading Redis).
    stored: Mutex<Vec<KeyRecord>>,
    /// Whether the "serving the last loaded keys" warning was logged
    /// since the last good read.
    warned: AtomicBool,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("freshness", &self.freshness)
            .finish_non_exhaustive()
    }
}

impl Remote {
    /// Follows `backend`'s keys through `cluster`'s event bus and a poll.
    /// Stale until the first read. Must run inside a Tokio runtime.
    pub fn new(backend: Arc<dyn KeyBackend>, cluster: &Cluster) -> Self {
        let freshness = Arc::new(Freshness {
            stale: AtomicBool::new(true),
            seen: AtomicI64::new(-1),
        });
        let sink: Arc<dyn Sink> = freshness.clone();
        // The bus and the poll hold it weakly: it lives as long as this.
        cluster.bus().register(Arc::downgrade(&sink));
        spawn_poll(Arc::downgrade(&freshness), backend.clone());
        Self {
            backend,
            freshness,
            loaded: AtomicBool::new(false),
            reading: tokio::sync::Mutex::new(()),
            stored: Mutex::new(Vec::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// Whether the table is known current.
    pub fn is_current(&self) -> bool {
        !self.freshness.stale.load(Ordering::Acquire)
    }

    /// Marks the table stale (a config reload, tests).
    pub fn mark_stale(&self) {
        self.freshness.stale.store(true, Ordering::Release);
    }

    /// The stored keys as last read.
    pub fn stored(&self) -> Vec<KeyRecord> {
        self.stored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Rereads the keys if the table is stale; `install` builds the table
    /// from them. Redis failing: `Ok` with the table as last loaded, or
    /// the error when there is none.
    ///
    /// # Errors
    /// Redis cannot be read and no table was ever loaded.
    pub async fn refresh(&self, install: impl FnOnce(Vec<KeyRecord>)) -> Result<(), StoreError> {
        if self.is_current() {
            return Ok(());
        }
        let _reading = self.reading.lock().await;
        if self.is_current() {
            return Ok(());
        }
        // Cleared before the read: a change published during it marks
        // the table stale again.
        self.freshness.stale.store(false, Ordering::Release);
        match self.read().await {
            Ok((generation, stored)) => {
                self.freshness.seen.store(generation, Ordering::Release);
                *self.stored.lock().unwrap_or_else(PoisonError::into_inner) = stored.clone();
                install(stored);
                self.loaded.store(true, Ordering::Release);
                self.warned.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
                self.freshness.stale.store(true, Ordering::Release);
                if !self.loaded.load(Ordering::Acquire) {
                    return Err(error);
                }
                if !self.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "cannot reread the keys from Redis; serving the keys as last loaded");
                }
                Ok(())
            }
        }
    }

    async fn read(&self) -> Result<(i64, Vec<KeyRecord>), StoreError> {
        // The generation first: a change after it makes the poll reread.
        let generation = self.backend.generation().await?;
        let stored = self.backend.keys().await?;
        Ok((generation, stored))
    }
}

/// Every [`POLL_EVERY`], marks the table stale when Redis's key
/// generation is not the one it was read at. Ends with the table.
fn spawn_poll(freshness: std::sync::Weak<Freshness>, backend: Arc<dyn KeyBackend>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if freshness.strong_count() == 0 {
                return;
            }
            let Ok(generation) = backend.generation().await else {
                continue;
            };
            let Some(freshness) = freshness.upgrade() else {
                return;
            };
            if freshness.seen.load(Ordering::Acquire) != generation {
                freshness.stale.store(true, Ordering::Release);
            }
        }
    });
}
