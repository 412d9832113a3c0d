//! What the operator page (`GET /`), its event stream (`/admin/events`) and
//! `castari-gateway status` show, kept apart from the request path.
//!
//! This module holds the state those views need that no other part keeps:
//! the last requests ([`recent`]), fifteen minutes of once-a-second points
//! ([`Console::record_point`]), the page's login sessions ([`session`]) and
//! the feed the event streams read ([`Feed`]). The picture itself is built
//! from the gateway's own state once a second by one sampler task (`view`),
//! not per page (a page builds one only when it opens): twenty open pages
//! cost one snapshot a second, serialized once.
//!
//! The request path touches this module once per request: the access
//! record pushes one entry into [`recent::Recent`] (a short lock, no
//! await). Nothing here waits on the request path or the other way round.

pub mod recent;
pub mod session;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{broadcast, watch};

/// Points kept: fifteen minutes at one a second.
pub const HISTORY_POINTS: usize = 900;

/// The views' own state, shared by every configuration version.
#[derive(Debug)]
pub struct Console {
    /// The last requests.
    pub recent: recent::Recent,
    /// The page's login sessions.
    pub sessions: session::Sessions,
    history: Mutex<VecDeque<Arc<str>>>,
    feed: broadcast::Sender<Message>,
    closed: watch::Sender<bool>,
    /// The configuration version serving new requests.
    version: AtomicU64,
}

/// One server-sent event, serialized once for every stream.
#[derive(Clone, Debug)]
pub struct Message {
    /// The SSE `event:` name.
    pub event: &'static str,
    /// The JSON `data:`.
    pub data: Arc<str>,
}

/// A stream's view of the feed.
pub type Feed = broadcast::Receiver<Message>;

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl Console {
    /// Empty.
    pub fn new() -> Self {
        let (feed, _) = broadcast::channel(64);
        Self {
            recent: recent::Recent::default(),
            sessions: session::Sessions::new(),
            history: Mutex::new(VecDeque::with_capacity(HISTORY_POINTS)),
            feed,
            closed: watch::Sender::new(false),
            version: AtomicU64::new(1),
        }
    }

    /// Adds the newest point (JSON), dropping the oldest past
    /// [`HISTORY_POINTS`].
    pub fn record_point(&self, point: Arc<str>) {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if history.len() == HISTORY_POINTS {
            history.pop_front();
        }
        history.push_back(point);
    }

    /// The points kept, oldest first, as one JSON array.
    pub fn history_json(&self) -> String {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::with_capacity(2 + history.iter().map(|p| p.len() + 1).sum::<usize>());
        out.push('[');
        for (i, point) in history.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(point);
        }
        out.push(']');
        out
    }

    /// Sends `message` to every open stream; none open is fine.
    pub fn publish(&self, event: &'static str, data: String) {
        let _ = self.feed.send(Message {
            event,
            data: Arc::from(data),
        });
    }

    /// A new stream's view of the feed: every message from now on.
    pub fn subscribe(&self) -> Feed {
        self.feed.subscribe()
    }

    /// Streams open now: the sampler builds snapshots only when one is.
    pub fn watchers(&self) -> usize {
        self.feed.receiver_count()
    }

    /// Configuration version `version` now serves new requests.
    pub fn installed(&self, version: u64) {
        self.version.fetch_max(version, Ordering::Release);
    }

    /// Whether a stream opened on configuration `version` is behind the
    /// one serving now: it ends, and the page reconnects to the new one
    /// (its admin key, its settings).
    pub fn outdated(&self, version: u64) -> bool {
        self.version.load(Ordering::Acquire) > version
    }

    /// Shutdown began: every stream ends, so connections can drain.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Resolves once [`close`](Self::close) was called.
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut closed = self.closed.subscribe();
        async move {
            let _ = closed.wait_for(|closed| *closed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keeps_the_last_fifteen_minutes_as_one_array() {
        let console = Console::new();
        assert_eq!(console.history_json(), "[]");
        for i in 0..HISTORY_POINTS + 5 {
            console.record_point(Arc::from(i.to_string()));
        }
        let all: Vec<usize> = serde_json::from_str(&console.history_json()).unwrap();
        assert_eq!(all.len(), HISTORY_POINTS);
        assert_eq!(all[0], 5);
        assert_eq!(*all.last().unwrap(), HISTORY_POINTS + 4);
    }

    #[tokio::test]
    async fn close_ends_waiters_also_those_that_start_late() {
        let console = Console::new();
        let early = console.closed();
        console.close();
        early.await;
        console.closed().await;
    }
}
