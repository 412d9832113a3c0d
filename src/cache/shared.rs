//! Cluster mode: a write's effects on every replica's cache. The one
//! choke point of cache events is [`ResponseCache::written`]: it drops what
//! the write changed here (and starts the agent's motion), then publishes
//! the write so every other replica does the same before the write's
//! response leaves (bounded by `cluster.event_ack_ms`). Entries stay in
//! each replica; only what makes them stale travels.

use std::sync::{Arc, Weak};

use http::Method;

use super::{write_effect, Core, ResponseCache, WriteEffect};
use crate::cluster::events::{Event, Sink};

impl ResponseCache {
    /// A write went through (or may have): drops what it changed, here and
    /// on every replica. Returns its effect.
    pub async fn written(
        &self,
        principal: &Arc<str>,
        method: &Method,
        path: &[Box<str>],
    ) -> WriteEffect {
        let effect = write_effect(method, path);
        self.invalidate(principal, &effect);
        if let Some(cluster) = self.core.cluster.as_ref().filter(|_| touches(&effect)) {
            cluster.publish(event(principal, method, path)).await;
        }
        effect
    }

    /// Like [`written`](Self::written) where nothing can wait (a write
    /// dropped in flight): the other replicas hear of it shortly after.
    pub fn written_now(&self, principal: &Arc<str>, method: &Method, path: &[Box<str>]) {
        let effect = write_effect(method, path);
        self.invalidate(principal, &effect);
        let Some(cluster) = self.core.cluster.clone().filter(|_| touches(&effect)) else {
            return;
        };
        let event = event(principal, method, path);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { cluster.publish(event).await });
        }
    }

    /// Puts the cache on its cluster's bus, if any.
    pub(super) fn join_cluster(core: &Arc<Core>) {
        let Some(cluster) = &core.cluster else {
            return;
        };
        let sink: Arc<dyn Sink> = Arc::new(CacheSink(Arc::downgrade(core)));
        cluster.bus().register(Arc::downgrade(&sink));
        let _ = core.sink.set(sink);
    }
}

fn touches(effect: &WriteEffect) -> bool {
    !effect.drops.is_empty() || effect.agent.is_some()
}

fn event(principal: &Arc<str>, method: &Method, path: &[Box<str>]) -> Event {
    Event::Write {
        principal: principal.to_string(),
        method: method.as_str().to_string(),
        path: path.iter().map(ToString::to_string).collect(),
    }
}

/// Applies the writes other replicas publish.
struct CacheSink(Weak<Core>);

impl Sink for CacheSink {
    fn apply(&self, event: &Event) {
        let Event::Write {
            principal,
            method,
            path,
        } = event
        else {
            return;
        };
        let (Some(core), Ok(method)) = (self.0.upgrade(), Method::from_bytes(method.as_bytes()))
        else {
            return;
        };
        let path: Vec<Box<str>> = path.iter().map(|s| Box::from(s.as_str())).collect();
        let effect = write_effect(&method, &path);
        ResponseCache::apply(&core, &Arc::from(principal.as_str()), &effect);
    }

    fn resync(&self) {
        if let Some(core) = self.0.upgrade() {
            // Said only when it drops something (not at every start).
            if core.store.entry_count() > 0 {
                tracing::info!("cluster events may have been missed: every cached entry is stale");
            }
            ResponseCache::forget_all(&core);
        }
    }
}
