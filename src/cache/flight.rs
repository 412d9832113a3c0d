//! Coalescing: concurrent misses for one key share one upstream fetch.
//!
//! The fetch runs in a task of its own, so a client that hangs up does not
//! cancel it for the others. A waiter joins a fetch only if nothing it must
//! see is missing from it: no matching write was recorded since the fetch
//! started, and, for reads that must be fresh, the fetch started after the
//! waiter arrived. Otherwise the waiter lets that fetch finish and starts
//! (or joins) the next one, so pollers still share one call per round.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::future::{BoxFuture, FutureExt, Shared};

struct Flight<V> {
    id: u64,
    seq: u64,
    started: Instant,
    result: Shared<BoxFuture<'static, V>>,
}

/// The fetches in flight, by key.
pub struct Flights<K, V: Clone> {
    next_id: AtomicU64,
    map: Arc<Mutex<HashMap<K, Flight<V>>>>,
    /// The value waiters get if a fetch task dies (panic, runtime shutdown).
    lost: fn() -> V,
}

impl<K, V: Clone> std::fmt::Debug for Flights<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flights").finish_non_exhaustive()
    }
}

/// What a waiter needs of a fetch it joins.
#[derive(Clone, Copy)]
pub struct Need<'a> {
    /// The fetch must have started at or after this instant.
    pub started_after: Option<Instant>,
    /// The fetch's invalidation stamp must still be current.
    pub current: &'a (dyn Fn(u64) -> bool + Sync),
}

impl std::fmt::Debug for Need<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Need")
            .field("started_after", &self.started_after)
            .finish_non_exhaustive()
    }
}

/// How a waiter got its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It started the fetch.
    Leader,
    /// It joined one that was running.
    Joined,
}

impl<K, V> Flights<K, V>
where
    K: Clone + Eq + Hash + Send + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// No fetches. `lost` is what waiters get if a fetch task dies.
    pub fn new(lost: fn() -> V) -> Self {
        Self {
            next_id: AtomicU64::new(1),
            map: Arc::new(Mutex::new(HashMap::new())),
            lost,
        }
    }

    /// Joins a fetch for `key` that meets `need`, or starts one with
    /// `start(seq)` where `seq` is `stamp()` taken under the lock.
    pub async fn run<F, Fut>(
        &self,
        key: &K,
        need: Need<'_>,
        stamp: impl Fn() -> u64,
        start: F,
    ) -> (V, Role)
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        enum Step<V: Clone> {
            Join(Shared<BoxFuture<'static, V>>),
            Lead(Shared<BoxFuture<'static, V>>),
            Wait(Shared<BoxFuture<'static, V>>),
        }
        let mut start = Some(start);
        loop {
            let step = {
                let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
                match map.get(key) {
                    Some(flight) if (need.current)(flight.seq) => {
                        let fresh_enough = need
                            .started_after
                            .is_none_or(|after| flight.started >= after);
                        if fresh_enough {
                            Step::Join(flight.result.clone())
                        } else {
                            // Let it finish, then share the next round.
                            Step::Wait(flight.result.clone())
                        }
                    }
                    // None, or one that missed a write: replace it (the old
                    // one finishes for its own waiters).
                    _ => match start.take() {
                        Some(start) => Step::Lead(self.spawn(&mut map, key, stamp(), start)),
                        None => {
                            // Unreachable: a waiter that starts returns.
                            tracing::error!("cache flight: started twice");
                            return ((self.lost)(), Role::Joined);
                        }
                    },
                }
            };
            match step {
                Step::Join(result) => return (result.await, Role::Joined),
                Step::Lead(result) => return (result.await, Role::Leader),
                Step::Wait(result) => {
                    let _ = result.await;
                }
            }
        }
    }

    fn spawn<F, Fut>(
        &self,
        map: &mut HashMap<K, Flight<V>>,
        key: &K,
        seq: u64,
        start: F,
    ) -> Shared<BoxFuture<'static, V>>
    where
        F: FnOnce(u64) -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let fetch = start(seq);
        let owner = Arc::clone(&self.map);
        let done_key = key.clone();
        let task = tokio::spawn(async move {
            let value = fetch.await;
            let mut map = owner.lock().unwrap_or_else(|e| e.into_inner());
            if map.get(&done_key).is_some_and(|f| f.id == id) {
                map.remove(&done_key);
            }
            value
        });
        let lost = self.lost;
        let result: BoxFuture<'static, V> = Box::pin(task.map(move |joined| match joined {
            Ok(value) => value,
            Err(error) => {
                tracing::error!(%error, "cache fetch task failed");
                lost()
            }
        }));
        let result = result.shared();
        map.insert(
            key.clone(),
            Flight {
                id,
                seq,
                started: Instant::now(),
                result: result.clone(),
            },
        );
        result
    }

    /// How many fetches are running.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none is running.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
