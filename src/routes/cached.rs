//! The cached path: GETs of cacheable routes, and the invalidation that
//! follows every write.
//!
//! A GET is answered from memory when its entry is fresh and nothing forces
//! a fetch; otherwise it joins or starts one fetch per key (coalescing),
//! which goes through the shaper like any request. While an agent is in
//! motion (`cache/agents.rs`), reads of it and of the list use entries and
//! fetches at most `motion_refresh_ms` old instead of their TTL, so any
//! number of pollers cost about one upstream read per refresh.
//!
//! When the fetch fails (unreachable, timeout, 5xx) an entry up to
//! `stale_if_error_secs` past its TTL is served instead; when the shaper
//! would refuse it (queue full, wait too long), an entry up to
//! `stale_if_limited_secs` old. Both are marked `X-Cache: STALE` with a
//! `Warning`, except for an agent in motion, whose status is never served
//! stale.
//!
//! A write drops what it changed (the invalidation map) before its response
//! is released, when it went through (2xx) or may have (5xx, timeout, lost
//! connection); an `Agent` returned by a create, deploy, stop or PATCH is
//! written through to that agent's entry. A `/stream` invocation drops
//! again when its stream ends, since what it changes is only complete then.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{header, request::Parts, HeaderMap, HeaderValue, Method, StatusCode};
use tokio::sync::oneshot;

use super::call::Call;
use super::forward::forward;
use crate::body::DropAtEnd;
use crate::cache::agents::AgentStatus;
use crate::cache::flight::SendMark;
use crate::cache::{
    entry, AgentWrite, CacheKey, CacheRoute, CacheStatus, Directive, Entry, Fetched, Need, Passed,
    Pattern, ResponseCache, Role, X_CACHE,
};
use crate::error::{GatewayError, Origin};
use crate::state::AppState;
use crate::upstream::credential::Credential;
use crate::upstream::Timing;

/// A fresh entry for a plain GET of `route`, answered at once: no future,
/// no fetch. The same answer [`CachedGet::serve`] gives a hit; `None` when
/// anything calls for that path instead: a bypass or revalidation, no entry
/// or one past its TTL, an agent in motion, or a lookup that would wait.
pub(super) fn fresh_hit(
    cache: &ResponseCache,
    credential: &Credential,
    route: CacheRoute,
    decoded: &Arc<[Box<str>]>,
    parts: &Parts,
) -> Option<Response> {
    if Directive::of(&parts.headers) != Directive::Normal || cache.ttl(route).is_zero() {
        return None;
    }
    let principal = credential.name();
    let key = CacheKey::new(
        principal,
        decoded.clone(),
        parts.uri.query(),
        &parts.headers,
    );
    let arrived = Instant::now();
    let entry = cache.lookup_now(&key)?;
    let moving = in_motion(cache, route, decoded, principal);
    if !usable(cache, &entry, moving, arrived) {
        return None;
    }
    cache.metrics().lookup(route, CacheStatus::Hit);
    Some(entry.respond(CacheStatus::Hit, &parts.headers, arrived))
}

/// A GET of a cacheable route.
pub(super) struct CachedGet<'a> {
    pub state: &'a AppState,
    pub cache: &'a ResponseCache,
    /// Which cacheable route: its TTL and metric label.
    pub route: CacheRoute,
    /// The request; its credential's name is the cache partition.
    pub call: &'a Call,
}

impl CachedGet<'_> {
    /// Answers from memory, or fetches (coalesced), or serves stale.
    pub(super) async fn serve(self, parts: Parts) -> Result<Response, GatewayError> {
        let cache = self.cache;
        let directive = Directive::of(&parts.headers);
        let ttl = cache.ttl(self.route);
        if directive == Directive::Bypass || ttl.is_zero() {
            let mut response = Box::pin(self.send_own(parts)).await?;
            if !ttl.is_zero() {
                cache.metrics().lookup(self.route, CacheStatus::Bypass);
                mark(&mut response, CacheStatus::Bypass);
            }
            return Ok(response);
        }
        let principal = self.call.credential.name().clone();
        let decoded = self.call.path.decoded();
        let key = CacheKey::new(
            &principal,
            decoded.clone(),
            parts.uri.query(),
            &parts.headers,
        );
        let arrived = Instant::now();
        let stored = cache.lookup(&key).await;
        let moving = in_motion(cache, self.route, decoded, &principal);
        let revalidate = directive == Directive::Revalidate;
        if let Some(entry) = stored
            .as_ref()
            .filter(|e| !revalidate && usable(cache, e, moving, arrived))
        {
            cache.metrics().lookup(self.route, CacheStatus::Hit);
            return Ok(entry.respond(CacheStatus::Hit, &parts.headers, arrived));
        }
        // A fetch may be shared if it leaves after this read arrived (a
        // revalidation), or at most a refresh ago (an agent in motion).
        let sent_after = if revalidate {
            Some(arrived)
        } else if moving {
            Some(
                arrived
                    .checked_sub(motion_refresh(cache))
                    .unwrap_or(arrived),
            )
        } else {
            None
        };
        let miss = Miss {
            key,
            stored,
            moving,
            revalidate,
            sent_after,
            ttl,
        };
        // The miss path's future is large; boxing it keeps the hit path's
        // future (moved on every poll setup) small.
        Box::pin(self.miss(parts, miss)).await
    }

    /// Joins or starts the fetch for `key`, then answers from it, or from
    /// `stored` (stale) if it failed or the budget would refuse it.
    async fn miss(self, parts: Parts, miss: Miss) -> Result<Response, GatewayError> {
        let Miss {
            key,
            stored,
            moving,
            revalidate,
            sent_after,
            ttl,
        } = miss;
        let cache = self.cache;
        let (leader_tx, leader_rx) = oneshot::channel();
        let current = |seq| cache.current(&key, seq);
        let need = Need {
            sent_after,
            current: &current,
        };
        let fetch = Fetch {
            state: self.state.clone(),
            call: self.call.clone(),
            head: Head::of(&parts),
            key: key.clone(),
            route: self.route,
            ttl,
            leader: leader_tx,
        };
        let stamp = || cache.invalidations().stamp();
        let asked = Instant::now();
        let (fetched, role) = cache
            .flights()
            .run(&key, need, stamp, move |seq, mark| fetch.run(seq, mark))
            .await;
        // Led or joined, the fetch is time waited on the upstream.
        self.call.elsewhere.add(asked.elapsed());
        if role == Role::Joined {
            cache.metrics().coalesced();
        }
        // An agent in motion is never served stale.
        let now = Instant::now();
        let stored = stored.filter(|_| !moving);
        let stale = |why: Stale| {
            let window = match why {
                Stale::Error => Duration::from_secs(cache.config().stale_if_error_secs),
                Stale::Limited => Duration::from_secs(cache.config().stale_if_limited_secs),
            };
            stored.clone().filter(|e| match why {
                Stale::Error => e.age(now) <= e.ttl + window,
                // A client that asked to revalidate gets the refusal.
                Stale::Limited => !revalidate && !window.is_zero() && e.age(now) <= window,
            })
        };
        let respond = |fallback, failed| stale_or(cache, fallback, &parts.headers, now, failed);
        let (status, result) = match fetched {
            Fetched::Stored(entry) => (
                CacheStatus::Miss,
                Ok(entry.respond(CacheStatus::Miss, &parts.headers, now)),
            ),
            Fetched::Passed(passed) if passed.head.status.is_server_error() => {
                respond(stale(Stale::Error), Ok(passed.respond()))
            }
            Fetched::Passed(passed) => (CacheStatus::Miss, Ok(passed.respond())),
            Fetched::Failed(error) if error.origin() == Origin::Upstream => {
                respond(stale(Stale::Error), Err(error))
            }
            Fetched::Failed(error) if error.is_budget_refusal() => {
                respond(stale(Stale::Limited), Err(error))
            }
            Fetched::Failed(error) => (CacheStatus::Miss, Err(error)),
            Fetched::Oversize => {
                let response = match (role, leader_rx.await) {
                    (Role::Leader, Ok(response)) => Ok(response),
                    _ => self.send_own(parts).await,
                };
                (CacheStatus::Miss, response)
            }
        };
        cache.metrics().lookup(self.route, status);
        result.map(|mut response| {
            if status == CacheStatus::Miss {
                mark(&mut response, CacheStatus::Miss);
                response
                    .headers_mut()
                    .entry(header::AGE)
                    .or_insert(HeaderValue::from_static("0"));
            }
            response
        })
    }

    /// Sends this request alone, past the cache.
    async fn send_own(&self, parts: Parts) -> Result<Response, GatewayError> {
        forward(self.state, self.call, parts, Body::empty()).await
    }
}

/// Whether an agent a read of `route` shows is in motion (then: fetch
/// fresh).
fn in_motion(
    cache: &ResponseCache,
    route: CacheRoute,
    decoded: &[Box<str>],
    principal: &Arc<str>,
) -> bool {
    let agents = cache.agents();
    match route {
        CacheRoute::Agent => decoded
            .get(1)
            .is_some_and(|slug| agents.moving(principal, slug)),
        CacheRoute::Agents => agents.any_moving(principal),
        _ => false,
    }
}

fn motion_refresh(cache: &ResponseCache) -> Duration {
    Duration::from_millis(cache.config().motion_refresh_ms)
}

/// Whether `entry` may answer a plain read now: within its TTL, or, for an
/// agent in motion, within the motion refresh.
fn usable(cache: &ResponseCache, entry: &Entry, moving: bool, now: Instant) -> bool {
    if moving {
        entry.age(now) < motion_refresh(cache).min(entry.ttl)
    } else {
        entry.fresh(now)
    }
}

/// What a miss carries from the lookup to the fetch.
struct Miss {
    key: CacheKey,
    stored: Option<Arc<Entry>>,
    moving: bool,
    /// The client asked to revalidate (`no-cache`).
    revalidate: bool,
    sent_after: Option<Instant>,
    ttl: Duration,
}

/// Why a stale entry may stand in for a fetch.
#[derive(Clone, Copy)]
enum Stale {
    /// The upstream failed: `stale_if_error_secs` past the TTL.
    Error,
    /// The shaper would refuse the fetch: up to `stale_if_limited_secs` old.
    Limited,
}

/// The `Warning` on a stale answer (RFC 7234's codes; the header is gone
/// from RFC 9111, but clients and people still read it).
const WARNING_LIMITED: HeaderValue = HeaderValue::from_static(
    "110 castari-gateway \"Response is Stale: the upstream budget is spent\"",
);
const WARNING_ERROR: HeaderValue =
    HeaderValue::from_static("111 castari-gateway \"Revalidation Failed: the upstream failed\"");

/// The stale entry if there is one, else what the upstream (or the
/// shaper) said.
fn stale_or(
    cache: &ResponseCache,
    fallback: Option<Arc<Entry>>,
    request: &HeaderMap,
    now: Instant,
    failed: Result<Response, GatewayError>,
) -> (CacheStatus, Result<Response, GatewayError>) {
    let Some(entry) = fallback else {
        return (CacheStatus::Miss, failed);
    };
    let (reason, warning) = match &failed {
        Err(error) if error.is_budget_refusal() => ("limited", WARNING_LIMITED),
        _ => ("error", WARNING_ERROR),
    };
    tracing::warn!(
        route = entry.route.as_str(),
        reason,
        "serving a stale cache entry instead of the upstream's answer"
    );
    cache.metrics().stale_served(entry.route, reason);
    let mut response = entry.respond(CacheStatus::Stale, request, now);
    response.headers_mut().insert(header::WARNING, warning);
    (CacheStatus::Stale, Ok(response))
}

fn mark(response: &mut Response, status: CacheStatus) {
    response
        .headers_mut()
        .insert(X_CACHE, HeaderValue::from_static(status.as_str()));
}

/// What a fetch needs of the request head that started it. The caller's
/// key id and peer travel in the fetch's [`Call`], so the fetch waits in
/// the fair queue as the same client as that caller's own sends.
struct Head {
    uri: http::Uri,
    version: http::Version,
    headers: HeaderMap,
}

impl Head {
    fn of(parts: &Parts) -> Self {
        Self {
            uri: parts.uri.clone(),
            version: parts.version,
            headers: without_validators(&parts.headers),
        }
    }

    fn into_parts(self) -> Parts {
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = Method::GET;
        parts.uri = self.uri;
        parts.version = self.version;
        parts.headers = self.headers;
        parts
    }
}

/// The leader's own conditional and cache headers are not sent upstream:
/// the fetch serves every waiter, so it asks for the full representation.
fn without_validators(headers: &HeaderMap) -> HeaderMap {
    let mut headers = headers.clone();
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::CACHE_CONTROL,
        header::PRAGMA,
        // One waiter's own wait must not set everyone's.
        http::HeaderName::from_static("prefer"),
    ] {
        headers.remove(name);
    }
    headers
}

/// One upstream fetch on behalf of every waiter on a key.
struct Fetch {
    state: AppState,
    /// The request that started it; the fetch's send mark goes in.
    call: Call,
    head: Head,
    key: CacheKey,
    route: CacheRoute,
    ttl: Duration,
    /// Gets the response when it is too large to store or share.
    leader: oneshot::Sender<Response>,
}

impl Fetch {
    async fn run(self, seq: u64, mark: SendMark) -> Fetched {
        let Some(cache) = self.state.cache.as_ref() else {
            return Fetched::Failed(GatewayError::Internal);
        };
        let call = self.call.for_fetch(mark.clone());
        let parts = self.head.into_parts();
        let sent = forward(&self.state, &call, parts, Body::empty()).await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return Fetched::Failed(error),
        };
        let max = cache.config().max_entry_bytes;
        let (mut head, body) = response.into_parts();
        // Recorded here, once for all waiters (the access log sees none).
        let timing = head.extensions.get_mut::<Timing>();
        if let Some(latency) = timing.and_then(|timing| timing.upstream.take()) {
            self.state.readiness.mark_ok();
            self.state
                .metrics
                .upstream_latency(self.call.route.class.as_str(), latency);
        }
        let body = match read_up_to(body, max).await {
            Read::All(body) => body,
            Read::Over(rest) => {
                // The leader may have gone; then nobody needs it.
                let _ = self.leader.send(Response::from_parts(head, rest));
                return Fetched::Oversize;
            }
            Read::Failed => return Fetched::Failed(GatewayError::UpstreamFailed),
        };
        let ok = head.status == StatusCode::OK;
        if ok && cache.current(&self.key, seq) {
            observe_agents(cache, self.route, &self.key.principal, &body, mark.sent());
        }
        if ok && entry::storable(&head.headers) {
            let entry = Arc::new(Entry::new(head.headers, body, seq, self.ttl, self.route));
            cache.insert(self.key, entry.clone()).await;
            return Fetched::Stored(entry);
        }
        Fetched::Passed(Arc::new(Passed { head, body }))
    }
}

/// Tells the agent watch what a read of `route` showed. When that ends an
/// agent's motion, the other cached view of it (the list, or the single
/// agent) may still show it moving: it is dropped.
fn observe_agents(
    cache: &ResponseCache,
    route: CacheRoute,
    principal: &Arc<str>,
    body: &[u8],
    sent: Option<Instant>,
) {
    if !matches!(route, CacheRoute::Agent | CacheRoute::Agents) {
        return;
    }
    let observed = cache.agents().observe(principal, body, sent);
    if observed.landed.is_empty() {
        return;
    }
    let others: Vec<Pattern> = match route {
        CacheRoute::Agent => vec![Pattern::exact(&["agents"])],
        _ => observed
            .landed
            .iter()
            .map(|slug| Pattern::exact(&["agents", slug]))
            .collect(),
    };
    cache.invalidations().record(Some(principal), &others);
}

enum Read {
    All(Bytes),
    /// Over the limit: the bytes read so far, then the rest, as one body.
    Over(Body),
    Failed,
}

/// Reads a body of at most `max` bytes into memory.
async fn read_up_to(body: Body, max: u64) -> Read {
    let mut stream = body.into_data_stream();
    let mut buf = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return Read::Failed;
        };
        buf.extend_from_slice(&chunk);
        if buf.len() as u64 > max {
            let head = futures_util::stream::once(async move { Ok(buf.freeze()) });
            return Read::Over(Body::from_stream(head.chain(stream)));
        }
    }
    Read::All(buf.freeze())
}

/// Whether `slug`, taken from an upstream body, is one path segment the
/// gateway itself would route as `GET /agents/{slug}`.
fn valid_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 128
        && slug
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What a write needs to invalidate, captured before it is sent. If the
/// request is dropped before it settles (the client hung up while the write
/// was in flight), the write may still happen upstream: dropping
/// invalidates too.
pub(super) struct Write {
    state: AppState,
    principal: Arc<str>,
    method: Method,
    decoded: Arc<[Box<str>]>,
    headers: HeaderMap,
    settled: bool,
}

impl Drop for Write {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Some(cache) = &self.state.cache {
            cache.written_now(&self.principal, &self.method, &self.decoded);
        }
    }
}

impl Write {
    /// Captures the write's credential (`principal`), method, decoded path
    /// and `Accept` headers.
    pub(super) fn of(
        state: &AppState,
        principal: &Arc<str>,
        parts: &Parts,
        decoded: Arc<[Box<str>]>,
    ) -> Self {
        let mut headers = HeaderMap::new();
        for name in [header::ACCEPT, header::ACCEPT_ENCODING] {
            for value in parts.headers.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
        Self {
            state: state.clone(),
            principal: principal.clone(),
            method: parts.method.clone(),
            decoded,
            headers,
            settled: false,
        }
    }

    /// Drops what the write changed, if it went through or may have, and
    /// writes a returned `Agent` through. Runs before the response leaves.
    pub(super) async fn settle(
        mut self,
        cache: &ResponseCache,
        result: Result<Response, GatewayError>,
    ) -> Result<Response, GatewayError> {
        self.settled = true;
        let happened = match &result {
            Ok(response) => response.status().is_success() || response.status().is_server_error(),
            Err(error) => error.origin() == Origin::Upstream,
        };
        if !happened {
            return result;
        }
        let principal = self.principal.clone();
        let effect = cache.written(&principal, &self.method, &self.decoded).await;
        let status = result.as_ref().map(Response::status).ok();
        match (effect.agent, result) {
            (Some(AgentWrite::Settling(slug, _)), Ok(response))
                if status == Some(StatusCode::OK) =>
            {
                self.write_through(cache, &principal, Some(&slug), response)
                    .await
            }
            (Some(AgentWrite::Created), Ok(response))
                if matches!(status, Some(StatusCode::OK | StatusCode::CREATED)) =>
            {
                self.write_through(cache, &principal, None, response).await
            }
            (_, Ok(response)) if effect.again_at_end => {
                // Dropped when the stream ends: `Drop` invalidates again.
                self.settled = false;
                Ok(response.map(|body| Body::new(DropAtEnd::new(body, self))))
            }
            (_, result) => result,
        }
    }

    /// Tells the agent watch what an action on `slug` answered, and stores
    /// the `Agent` in a write's response as `GET /agents/{slug}`: under
    /// `slug`, or (a create) under the slug the body names.
    async fn write_through(
        &self,
        cache: &ResponseCache,
        principal: &Arc<str>,
        slug: Option<&str>,
        response: Response,
    ) -> Result<Response, GatewayError> {
        let max = cache.config().max_entry_bytes;
        let small = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|len| len <= max);
        if !small {
            return Ok(response);
        }
        let (head, body) = response.into_parts();
        let body = match read_up_to(body, max).await {
            Read::All(body) => body,
            Read::Over(rest) => return Ok(Response::from_parts(head, rest)),
            Read::Failed => return Err(GatewayError::UpstreamFailed),
        };
        let agents = cache.agents();
        let agent = match slug {
            // An action's own answer: evidence of where the status is.
            Some(slug) => {
                agents.answered(principal, slug, &body);
                serde_json::from_slice::<AgentStatus>(&body)
                    .ok()
                    .filter(|agent| agent.slug == slug)
            }
            // A create's answer: the agent as it is now.
            None => agents
                .observe(principal, &body, Some(Instant::now()))
                .one
                .filter(|agent| valid_slug(&agent.slug)),
        };
        let ttl = cache.ttl(CacheRoute::Agent);
        if let Some(agent) = agent.filter(|_| !ttl.is_zero() && entry::storable(&head.headers)) {
            let path: Arc<[Box<str>]> = Arc::from([Box::from("agents"), Box::from(agent.slug)]);
            let key = CacheKey::new(principal, path, None, &self.headers);
            let seq = cache.invalidations().stamp();
            let mut headers = head.headers.clone();
            // A create's answer points at the new agent; a read's does not.
            headers.remove(header::LOCATION);
            let entry = Entry::new(headers, body.clone(), seq, ttl, CacheRoute::Agent);
            cache.insert(key, Arc::new(entry)).await;
        }
        Ok(Response::from_parts(head, Body::from(body)))
    }
}
