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

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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
///
/// Two counters rather than a flag: a reread that starts after the last
/// sign of a change makes the table current only once it is installed, so
/// a request verified meanwhile (or a reread given up half way) never
/// trusts a table read before the change.
#[derive(Debug)]
struct Freshness {
    /// Moved by every sign that the keys may have changed.
    wanted: AtomicU64,
    /// The `wanted` that the installed table was read after.
    installed: AtomicU64,
    /// The generation the table was read at; -1 before the first read.
    seen: AtomicI64,
}

impl Freshness {
    fn want(&self) {
        self.wanted.fetch_add(1, Ordering::AcqRel);
    }

    fn is_current(&self) -> bool {
        self.installed.load(Ordering::Acquire) >= self.wanted.load(Ordering::Acquire)
    }
}

impl Sink for Freshness {
    fn apply(&self, event: &Event) {
        if *event == Event::Keys {
            self.want();
        }
    }

    fn resync(&self) {
        self.want();
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
    /// Over `backend`'s keys; stale until the first read.
    pub fn new(backend: Arc<dyn KeyBackend>) -> Self {
        Self {
            backend,
            freshness: Arc::new(Freshness {
                wanted: AtomicU64::new(1),
                installed: AtomicU64::new(0),
                seen: AtomicI64::new(-1),
            }),
            loaded: AtomicBool::new(false),
            reading: tokio::sync::Mutex::new(()),
            stored: Mutex::new(Vec::new()),
            warned: AtomicBool::new(false),
        }
    }

    /// Marks the table stale on `cluster`'s key events (and resyncs), and
    /// every [`POLL_EVERY`] when Redis's key generation moved. Must run
    /// inside a Tokio runtime.
    pub fn follow(&self, cluster: &Cluster) {
        let sink: Arc<dyn Sink> = self.freshness.clone();
        // The bus and the poll hold it weakly: it lives as long as this.
        cluster.bus().register(Arc::downgrade(&sink));
        spawn_poll(Arc::downgrade(&self.freshness), self.backend.clone());
    }

    /// Whether the table is known current.
    pub fn is_current(&self) -> bool {
        self.freshness.is_current()
    }

    /// Marks the table stale (a change made here, a config reload).
    pub fn mark_stale(&self) {
        self.freshness.want();
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
        // Taken before the read: a change heard during it keeps the table
        // stale after it.
        let wanted = self.freshness.wanted.load(Ordering::Acquire);
        match self.read().await {
            Ok((generation, stored)) => {
                self.freshness.seen.store(generation, Ordering::Release);
                *self.stored.lock().unwrap_or_else(PoisonError::into_inner) = stored.clone();
                install(stored);
                self.freshness.installed.fetch_max(wanted, Ordering::AcqRel);
                self.loaded.store(true, Ordering::Release);
                self.warned.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => {
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
                freshness.want();
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::keys::backend::{Fut, WriteId};
    use crate::keys::model::{Budget, KeyHash, UsageDelta, UsageRow};
    use crate::keys::store::Reserve;

    /// Answers `generation` and `keys` unless `down`; nothing else. While
    /// `held`, `keys` waits for `gate`.
    #[derive(Debug, Default)]
    struct Flaky {
        down: AtomicBool,
        reads: AtomicUsize,
        held: AtomicBool,
        gate: tokio::sync::Notify,
    }

    impl KeyBackend for Flaky {
        fn keys(&self) -> Fut<'_, Vec<KeyRecord>> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let down = self.down.load(Ordering::Relaxed);
            let held = self.held.load(Ordering::Relaxed);
            Box::pin(async move {
                if held {
                    self.gate.notified().await;
                }
                if down {
                    return Err(StoreError::Redis("lost".into()));
                }
                Ok(Vec::new())
            })
        }
        fn generation(&self) -> Fut<'_, i64> {
            let down = self.down.load(Ordering::Relaxed);
            Box::pin(async move {
                if down {
                    return Err(StoreError::Redis("lost".into()));
                }
                Ok(1)
            })
        }
        fn key<'a>(&'a self, _: &'a str) -> Fut<'a, Option<KeyRecord>> {
            unreachable!()
        }
        fn insert_key<'a>(&'a self, _: &'a KeyRecord) -> Fut<'a, ()> {
            unreachable!()
        }
        fn revoke<'a>(&'a self, _: &'a str, _: i64) -> Fut<'a, Option<KeyRecord>> {
            unreachable!()
        }
        fn rotate<'a>(&'a self, _: &'a str, _: &'a KeyHash, _: i64) -> Fut<'a, Option<KeyRecord>> {
            unreachable!()
        }
        fn add_usage<'a>(&'a self, _: WriteId, _: &'a [UsageDelta]) -> Fut<'a, ()> {
            unreachable!()
        }
        fn usage<'a>(&'a self, _: Option<&'a str>, _: &'a str) -> Fut<'a, Vec<UsageRow>> {
            unreachable!()
        }
        fn reserve<'a>(
            &'a self,
            _: &'a str,
            _: &'a Budget,
            _: rust_decimal::Decimal,
            _: i64,
            _: i64,
        ) -> Fut<'a, Reserve> {
            unreachable!()
        }
        fn settle<'a>(&'a self, _: WriteId, _: i64, _: &'a UsageDelta) -> Fut<'a, ()> {
            unreachable!()
        }
        fn release<'a>(&'a self, _: &'a str, _: i64) -> Fut<'a, ()> {
            unreachable!()
        }
    }

    #[tokio::test]
    async fn a_stale_table_serves_as_last_loaded_while_redis_is_lost_and_never_unloaded() {
        let backend = Arc::new(Flaky::default());
        backend.down.store(true, Ordering::Relaxed);
        let remote = Remote::new(backend.clone());
        let installed = AtomicUsize::new(0);
        let install = |_: Vec<KeyRecord>| {
            installed.fetch_add(1, Ordering::Relaxed);
        };
        assert!(
            remote.refresh(install).await.is_err(),
            "never loaded: refused"
        );

        backend.down.store(false, Ordering::Relaxed);
        remote.refresh(install).await.unwrap();
        assert!(remote.is_current());
        remote.refresh(install).await.unwrap();
        assert_eq!(
            backend.reads.load(Ordering::Relaxed),
            1,
            "current: no reread"
        );

        // A change is heard, then Redis is lost: the table as loaded serves,
        // and it stays stale so the next request tries again.
        remote.freshness.apply(&Event::Keys);
        backend.down.store(true, Ordering::Relaxed);
        remote.refresh(install).await.unwrap();
        assert!(!remote.is_current());
        assert_eq!(installed.load(Ordering::Relaxed), 1);
        backend.down.store(false, Ordering::Relaxed);
        remote.refresh(install).await.unwrap();
        assert_eq!(installed.load(Ordering::Relaxed), 2, "reread once back");
    }

    #[tokio::test]
    async fn a_change_heard_during_a_reread_keeps_the_table_stale() {
        let backend = Arc::new(Flaky::default());
        backend.held.store(true, Ordering::Relaxed);
        let remote = Remote::new(backend.clone());
        let reread = remote.refresh(|_| {});
        tokio::pin!(reread);
        let started = tokio::time::timeout(Duration::from_millis(20), &mut reread).await;
        assert!(started.is_err(), "the read waits at the gate");
        assert!(!remote.is_current(), "never current while it reads");
        remote.freshness.apply(&Event::Keys);
        backend.gate.notify_one();
        reread.await.unwrap();
        assert!(!remote.is_current(), "the change came after the read began");
        backend.held.store(false, Ordering::Relaxed);
        remote.refresh(|_| {}).await.unwrap();
        assert!(remote.is_current());
    }
}
