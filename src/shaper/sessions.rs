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
    /// The session's entry in the map, `None` for a shared turn.
    key: Option<Key>,
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
        // Made before the wait: a turn whose caller goes away while it
        // waits (or as the lock is handed to it) is dropped like a finished
        // one, and the session's entry goes with the last turn. The wait,
        // made after it, is dropped before it, and with the wait its hold
        // on the lock.
        let mut turn = Turn {
            shared: None,
            guard: None,
            key: Some(key),
            locks: self.locks.clone(),
        };
        let wait = lock.lock_owned();
        turn.guard = Some(wait.await);
        turn
    }

    /// A turn served by the cluster's line.
    pub fn shared(&self, turn: SharedTurn) -> Turn {
        Turn {
            shared: Some(turn),
            guard: None,
            key: None,
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
        let Some(key) = self.key.take() else {
            return;
        };
        drop(self.guard.take());
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        // Only the map holds it: no turn waits or runs.
        if locks
            .get(&key)
            .is_some_and(|lock| Arc::strong_count(lock) == 1)
        {
            locks.remove(&key);
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
    async fn a_turn_whose_caller_left_while_it_waited_is_forgotten_too() {
        let sessions = Arc::new(Sessions::default());
        // Left while the turn before it runs.
        let first = sessions.turn("a", "s").await;
        let waiting = {
            let sessions = sessions.clone();
            tokio::spawn(async move { drop(sessions.turn("a", "s").await) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        waiting.abort();
        assert!(waiting.await.unwrap_err().is_cancelled());
        drop(first);
        assert_eq!(sessions.active(), 0, "left while the one before ran");

        // Left as the turn is handed to it: the lock is its, but it never
        // ran to take it.
        let first = sessions.turn("a", "s").await;
        let mut next = Box::pin(sessions.turn("a", "s"));
        assert!(futures_util::poll!(next.as_mut()).is_pending());
        drop(first);
        assert_eq!(sessions.active(), 1, "the next turn still waits");
        drop(next);
        assert_eq!(sessions.active(), 0, "left as its turn came");
        // And the session goes on for whoever comes next.
        let again = sessions.turn("a", "s").await;
        assert_eq!(sessions.active(), 1);
        drop(again);
        assert_eq!(sessions.active(), 0);
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
