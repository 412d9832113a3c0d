//! The typed value a request carries through the stages after admission:
//! who sent it, where it goes and what it is. One value, built once in
//! `proxy.rs`, instead of request extensions read three modules away and
//! long argument lists.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cache::flight::SendMark;
use crate::route::Route;
use crate::types::Peer;
use crate::upstream::credential::Credential;
use crate::upstream::path::ApiPath;
use crate::upstream::BodyLimits;

/// One admitted `/api/v1` request, past the checks and the broker.
#[derive(Clone, Debug)]
pub(super) struct Call {
    /// The upstream credential: the key sent, the shaper, the cache
    /// partition.
    pub credential: Arc<Credential>,
    /// The checked path, as sent and decoded.
    pub path: ApiPath,
    /// What the route is (class, retry safety), read from the decoded path.
    pub route: Route,
    /// Limits on the client's body.
    pub limits: BodyLimits,
    /// The caller's local key id (keys mode): its identity in the fair
    /// queue, for its own sends and the fetches it starts alike.
    pub key_id: Option<Arc<str>>,
    /// The connection it came on: the identity of a client without a key.
    pub peer: Option<Peer>,
    /// Set when the request leaves for the upstream: a coalesced fetch's,
    /// which later readers may join while it is unsent, and an
    /// invocation's, which its client may take back while it is unsent.
    pub mark: Option<SendMark>,
    /// Time the request waited on others, added to by the stages that wait
    /// (clones share it); the access record leaves it out of the overhead.
    pub elsewhere: Elsewhere,
}

impl Call {
    /// The same request for a coalesced fetch it starts: the fetch counts
    /// its own waits, and the readers count the whole fetch as waited.
    pub(super) fn for_fetch(&self, mark: SendMark) -> Self {
        Self {
            mark: Some(mark),
            elsewhere: Elsewhere::default(),
            ..self.clone()
        }
    }
}

/// Time waited on the upstream, the queue, a backoff or a shared fetch,
/// summed across the tasks a request's stages run in.
#[derive(Clone, Debug, Default)]
pub(super) struct Elsewhere(Arc<AtomicU64>);

impl Elsewhere {
    /// Adds `waited`.
    pub(super) fn add(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The time added so far.
    pub(super) fn total(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}
