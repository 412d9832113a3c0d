//! Turns of one session go one at a time, in arrival order.
//!
//! A Castari session is a stateful sandbox: turn N+1 must see what turn N
//! wrote, so it may leave only after turn N's response. Each `(agent,
//! session)` pair has a FIFO lock (tokio's mutex queues waiters fairly);
//! different sessions and session-less invocations never wait on each other.
//! A pair's entry is dropped when its last turn is done, so the map holds
//! only sessions with a turn in flight or waiting. In cluster mode the line
//! is in Redis instead ([`crate::cluster::turns`]), across replicas.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

use crate::cluster::turns::SharedTurn;

type Key = (String, String);

/// The per-session locks.
#[derive(Debug, Default)]
pub struct Sessions {
    locks: Arc<Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Held while a turn is queued for the budget, sent, and answered.
#[derive(Debug)]
pub struct Turn {
    /// Cluster mode: the place in the session's shared line.
    shared: Option<SharedTurn>,
    guard: Option<OwnedMutexGuard<()>>,
    key: Key,
    locks: Arc<Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Sessions {
    /// Waits for every earlier turn of `session` on `agent` to finish.
    pub async fn turn(&self, agent: &str, session: &str) -> Turn {
        let key = (agent.to_string(), session.to_string());
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks.entry(key.clone()).or_default().clone()
        };
        let guard = lock.lock_owned().await;
        Turn {
            shared: None,
            guard: Some(guard),
            key,
            locks: self.locks.clone(),
        }
    }

    /// A turn served by the cluster's line.
    pub fn shared(&self, turn: SharedTurn) -> Turn {
        Turn {
            shared: Some(turn),
            guard: None,
            key: (String::new(), String::new()),
            locks: self.locks.clone(),
        }
    }

    /// Sessions with a turn in flight or waiting.
    pub fn active(&self) -> usize {
        self.locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        drop(self.shared.take());
        if self.guard.is_none() {
            return;
        }
        drop(self.guard.take());
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map holds it: no turn waits or runs.
        if locks
            .get(&self.key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn turns_of_one_session_wait_in_order() {
        let sessions = Arc::new(Sessions::default());
        let first = sessions.turn("a", "s").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for n in 1..=3 {
            let (sessions, order) = (sessions.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _turn = sessions.turn("a", "s").await;
                order.lock().unwrap().push(n);
            }));
            // Arrival order is the spawn order.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Another session is not held up.
        let _other = sessions.turn("a", "t").await;
        assert!(order.lock().unwrap().is_empty());
        drop(first);
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn finished_sessions_are_forgotten() {
        let sessions = Sessions::default();
        let turn = sessions.turn("a", "s").await;
        assert_eq!(sessions.active(), 1);
        drop(turn);
        assert_eq!(sessions.active(), 0);
    }
}
