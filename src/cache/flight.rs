//! Coalescing: concurrent misses for one key share one upstream fetch.
//!
//! The fetch runs in a task of its own, so a client that hangs up does not
//! cancel it for the others. A waiter joins a fetch only if nothing it must
//! see is missing from it: no matching write was recorded since the fetch
//! started, and, for reads that must be fresh as of some instant, the fetch
//! has not been sent yet (it waits for the budget, so it will see what is
//! there when it leaves) or was sent at or after that instant. Otherwise
//! the waiter starts the next fetch at once, which later waiters share:
//! its own admission is decided now, never after waiting on another's.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use futures_util::future::{BoxFuture, FutureExt, Shared};

/// When a request left for the upstream (after any wait for the budget).
/// The sending path marks it (it travels in the request's `Call`). Until
/// then, a coalesced fetch will see anything that happened before it, and
/// an invocation's client may still take it back.
#[derive(Clone, Debug, Default)]
pub struct SendMark(Arc<OnceLock<Instant>>);

impl SendMark {
    /// The request leaves now (the first call counts).
    pub fn mark(&self) {
        let _ = self.0.set(Instant::now());
    }

    /// When it left, if it has.
    pub fn sent(&self) -> Option<Instant> {
        self.0.get().copied()
    }
}

struct Flight<V> {
    id: u64,
    seq: u64,
    sent: SendMark,
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
    /// The fetch must not have been sent before this instant.
    pub sent_after: Option<Instant>,
    /// The fetch's invalidation stamp must still be current.
    pub current: &'a (dyn Fn(u64) -> bool + Sync),
}

impl std::fmt::Debug for Need<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Need")
            .field("sent_after", &self.sent_after)
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
    /// `start(seq, mark)` where `seq` is `stamp()` taken under the lock and
    /// `mark` is for the sending path to say when the request left.
    pub async fn run<F, Fut>(
        &self,
        key: &K,
        need: Need<'_>,
        stamp: impl Fn() -> u64,
        start: F,
    ) -> (V, Role)
    where
        F: FnOnce(u64, SendMark) -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let (result, role) = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let joinable = map.get(key).filter(|flight| {
                let fresh_enough = match (need.sent_after, flight.sent.sent()) {
                    (Some(after), Some(sent)) => sent >= after,
                    _ => true,
                };
                fresh_enough && (need.current)(flight.seq)
            });
            match joinable {
                Some(flight) => (flight.result.clone(), Role::Joined),
                // None, or one that missed a write or left too early:
                // replace it (the old one finishes for its own waiters).
                None => (self.spawn(&mut map, key, stamp(), start), Role::Leader),
            }
        };
        (result.await, role)
    }

    fn spawn<F, Fut>(
        &self,
        map: &mut HashMap<K, Flight<V>>,
        key: &K,
        seq: u64,
        start: F,
    ) -> Shared<BoxFuture<'static, V>>
    where
        F: FnOnce(u64, SendMark) -> Fut,
        Fut: Future<Output = V> + Send + 'static,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sent = SendMark::default();
        let fetch = start(seq, sent.clone());
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
                sent,
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
