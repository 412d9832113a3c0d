//! The typed value a request carries through the stages after admission:
//! who sent it, where it goes and what it is. One value, built once in
//! `proxy.rs`, instead of request extensions read three modules away and
//! long argument lists.

use std::sync::Arc;

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
    /// which later readers may join while it is unsent.
    pub mark: Option<SendMark>,
}
