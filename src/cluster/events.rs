//! Events every replica must apply: a write's cache invalidation (and the
//! agent motion it starts) and an upstream pause. Published on one Redis
//! channel; each replica applies what others publish and acknowledges it,
//! and a write's response waits (at most `cluster.event_ack_ms`) until
//! every replica that received the event has applied it. A replica that
//! loses its subscription may have missed events: when it is back, its
//! sinks resynchronise (the cache drops every entry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use super::{Cluster, ClusterMetrics, RETRY_EVERY};
use crate::config::ClusterConfig;

/// What replicas tell each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// A write went through (or may have): drop what it changed.
    Write {
        /// The upstream credential's name.
        principal: String,
        /// Its method.
        method: String,
        /// Its decoded path segments after `/api/v1/`.
        path: Vec<String>,
    },
    /// A local key was created, revoked or rotated: reload the key table.
    Keys,
    /// The sender lost Redis for a while: writes it made then reached no
    /// other replica, so every replica drops what it cached.
    Resync,
    /// The upstream answered 429: no sends of `lane` for `ms`.
    Pause {
        /// The upstream credential's name.
        credential: String,
        /// `crud` or `invoke`.
        lane: String,
        /// How long.
        ms: u64,
    },
}

impl Event {
    fn kind(&self) -> &'static str {
        match self {
            Self::Write { .. } => "write",
            Self::Pause { .. } => "pause",
            Self::Keys => "keys",
            Self::Resync => "resync",
        }
    }
}

/// Where a replica applies the events of others.
pub trait Sink: Send + Sync {
    /// Applies one event published by another replica.
    fn apply(&self, event: &Event);
    /// Events may have been missed (the subscription was lost).
    fn resync(&self);
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    from: String,
    id: u64,
    event: Event,
}

#[derive(Default)]
struct Acks {
    got: usize,
    needed: Option<usize>,
    done: Arc<Notify>,
}

/// The event bus of one replica.
pub struct Bus {
    channel: String,
    acks_channel: String,
    replica: String,
    prefix: String,
    ack_wait: Duration,
    next_id: AtomicU64,
    /// Whether this replica's own subscription is live (it then counts
    /// among a publish's receivers).
    subscribed: AtomicBool,
    pending: Mutex<HashMap<u64, Acks>>,
    sinks: Mutex<Vec<Weak<dyn Sink>>>,
    metrics: ClusterMetrics,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

impl Bus {
    pub(super) fn new(config: &ClusterConfig, replica: &str, metrics: ClusterMetrics) -> Self {
        Self {
            channel: format!("{}:events", config.prefix),
            acks_channel: format!("{}:acks:{replica}", config.prefix),
            replica: replica.to_string(),
            prefix: config.prefix.clone(),
            ack_wait: Duration::from_millis(config.event_ack_ms),
            next_id: AtomicU64::new(1),
            subscribed: AtomicBool::new(false),
            pending: Mutex::new(HashMap::new()),
            sinks: Mutex::new(Vec::new()),
            metrics,
        }
    }

    /// Whether this replica's subscription is live.
    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Acquire)
    }

    /// Adds a sink; it is dropped from the bus when the last `Arc` goes.
    pub fn register(&self, sink: Weak<dyn Sink>) {
        let mut sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        sinks.retain(|s| s.strong_count() > 0);
        sinks.push(sink);
    }

    fn sinks(&self) -> Vec<Arc<dyn Sink>> {
        let sinks = self.sinks.lock().unwrap_or_else(PoisonError::into_inner);
        sinks.iter().filter_map(Weak::upgrade).collect()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Acks>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes `event` and waits until every other replica subscribed
    /// has applied it, or `cluster.event_ack_ms`. Redis lost: returns at
    /// once (the others resynchronise when they are back).
    pub async fn publish(&self, cluster: &Cluster, event: Event) {
        let kind = event.kind();
        if !cluster.is_up() {
            return;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let done = Arc::new(Notify::new());
        self.pending().insert(
            id,
            Acks {
                done: done.clone(),
                ..Acks::default()
            },
        );
        let envelope = Envelope {
            from: self.replica.clone(),
            id,
            event,
        };
        let Ok(payload) = serde_json::to_string(&envelope) else {
            self.pending().remove(&id);
            return;
        };
        let mut conn = cluster.conn();
        let mut command = redis::cmd("PUBLISH");
        command.arg(&self.channel).arg(payload);
        let publish = command.query_async::<usize>(&mut conn);
        let Ok(receivers) = cluster.run(publish).await else {
            self.pending().remove(&id);
            return;
        };
        self.metrics.event(kind, "sent");
        let own = usize::from(self.subscribed.load(Ordering::Acquire));
        let others = receivers.saturating_sub(own);
        let complete = {
            let mut pending = self.pending();
            pending.get_mut(&id).is_none_or(|acks| {
                acks.needed = Some(others);
                acks.got >= others
            })
        };
        if !complete {
            let waited = tokio::time::timeout(self.ack_wait, done.notified()).await;
            if waited.is_err() {
                self.metrics.event(kind, "unacknowledged");
                tracing::warn!(
                    kind,
                    "a replica did not confirm a cluster event within cluster.event_ack_ms"
                );
            }
        }
        self.pending().remove(&id);
    }

    fn acked(&self, id: u64) {
        let mut pending = self.pending();
        if let Some(acks) = pending.get_mut(&id) {
            acks.got += 1;
            if acks.needed.is_some_and(|needed| acks.got >= needed) {
                acks.done.notify_one();
            }
        }
    }

    /// Starts the subscriber: applies others' events, counts acks, and
    /// resubscribes after a loss.
    pub(super) fn spawn_subscriber(&self, cluster: Cluster) {
        let weak = Arc::downgrade(&cluster.0);
        drop(cluster);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let cluster = Cluster(inner);
                if let Ok(pubsub) = subscribe(&cluster).await {
                    cluster.bus().subscribed.store(true, Ordering::Release);
                    // Events may have been missed before this subscription
                    // (a loss, or a start without Redis): drop what was
                    // cached. At a normal start the cache is empty anyway.
                    for sink in cluster.bus().sinks() {
                        sink.resync();
                    }
                    let mut messages = pubsub.into_on_message();
                    drop(cluster);
                    while let Some(message) = messages.next().await {
                        let Some(inner) = weak.upgrade() else { return };
                        Cluster(inner).bus().receive(&weak, &message);
                    }
                    // The subscription ended: Redis is gone, or the
                    // connection is; either way events may be missed.
                    let Some(inner) = weak.upgrade() else { return };
                    let cluster = Cluster(inner);
                    cluster.bus().subscribed.store(false, Ordering::Release);
                    cluster.lost("the event subscription closed");
                } else {
                    drop(cluster);
                }
                tokio::time::sleep(RETRY_EVERY).await;
            }
        });
    }

    fn receive(&self, weak: &Weak<super::Inner>, message: &redis::Msg) {
        let channel = message.get_channel_name();
        if channel == self.acks_channel {
            if let Some(id) = std::str::from_utf8(message.get_payload_bytes())
                .ok()
                .and_then(|s| s.parse().ok())
            {
                self.acked(id);
            }
            return;
        }
        let Ok(envelope) = serde_json::from_slice::<Envelope>(message.get_payload_bytes()) else {
            return;
        };
        if envelope.from == self.replica {
            return;
        }
        for sink in self.sinks() {
            match &envelope.event {
                Event::Resync => sink.resync(),
                event => sink.apply(event),
            }
        }
        self.metrics.event(envelope.event.kind(), "applied");
        let Some(inner) = weak.upgrade() else { return };
        let cluster = Cluster(inner);
        let channel = format!("{}:acks:{}", self.prefix, envelope.from);
        // Sent on its own task: the next event is applied meanwhile.
        tokio::spawn(async move {
            let mut conn = cluster.conn();
            let mut command = redis::cmd("PUBLISH");
            command.arg(channel).arg(envelope.id);
            let ack = command.query_async::<usize>(&mut conn);
            let _ = cluster.run(ack).await;
        });
    }
}

async fn subscribe(cluster: &Cluster) -> Result<redis::aio::PubSub, String> {
    let bus = cluster.bus();
    let connect = async {
        let mut pubsub = cluster.client().get_async_pubsub().await?;
        pubsub.subscribe(&bus.channel).await?;
        pubsub.subscribe(&bus.acks_channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(cluster.op_timeout(), connect).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(error)) => Err(super::describe(&error)),
        Err(_) => Err("timed out".into()),
    }
}
