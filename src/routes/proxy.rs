//! The `/api/v1/*` handler, stage 2 of `lib.rs`'s list (admission): check
//! the request, read its route once, admit the caller, answer a fresh hit,
//! and pass the rest on as one `Call` (`call.rs`) to the cache (`cached.rs`) or
//! straight to the last stage (`forward.rs`); stamp and count the answer.
//!
//! Checks, in order: the request target (absolute-form naming another host
//! is refused), the path (`/api/v1/` prefix, no dot segments, no encoded
//! separators), the SDK 0.4 stop rewrite, the caller (the key broker: local
//! key, role, agent globs, the key's own rate; `keys/broker.rs`), the
//! account's own credentials (minting and revoking upstream keys, and the
//! gateway's own key above all: `guard.rs`), and a
//! declared `Content-Length` over the limit (413 before anything is sent
//! upstream). Everything else is the upstream's to judge: its answers,
//! errors included, are relayed as-is. The caller's upstream credential
//! decides the key sent, the shaper and the cache partition.
//!
//! For an agent-scoped key, `POST /agents` must name an allowed slug and
//! `GET /agents` is filtered; invocations go with a budget reservation and
//! their cost is recorded (`routes/brokered.rs`).
//!
//! With caching on (the default), GETs of cacheable routes go through the
//! cached path (`routes/cached.rs`), and every other request except HEAD
//! drops the cached reads it changes once it went through. A fresh hit is
//! answered before any future is made ([`Proxied::Now`]).
//!
//! The last stage (`routes/forward.rs`) is the one attempt loop: with
//! shaping on (the default) the request waits for the upstream budget
//! there, and every answer carries the gateway's `X-RateLimit-*` view
//! instead of the upstream's. If the key table may be behind the store,
//! admission waits for a reload off the runtime first (`keys/ring.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{header, request::Parts, Method, Version};

use super::brokered;
use super::cached::{self, CachedGet, Write};
use super::call::{Call, Elsewhere};
use super::forward::forward;
use super::{guard, shaped};
use crate::cache::flight::SendMark;
use crate::error::GatewayError;
use crate::keys::broker::{Caller, Keys, Unidentified};
use crate::route::{CredentialRoute, Route, RouteClass};
use crate::shaper::Lane;
use crate::state::AppState;
use crate::types::Peer;
use crate::upstream::path::ApiPath;
use crate::upstream::{BodyLimits, Timing};

/// How [`proxy`] answers.
pub enum Proxied {
    /// At once: a fresh cache hit, or a request refused before it went
    /// anywhere.
    Now(Response),
    /// When the upstream (or a coalesced fetch, or the queue) has.
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

impl Proxied {
    /// The answer, waiting for it if it comes later.
    pub async fn answer(self) -> Response {
        match self {
            Self::Now(response) => response,
            Self::Later(answer) => answer.await,
        }
    }
}

/// Takes one request; every failure becomes a Castari-shaped error. The
/// route class comes back beside the answer, for the access record.
///
/// The checks, the caller's admission and a fresh cache hit need no
/// waiting, so they run here, before any future exists: a hit is answered
/// without building, boxing and moving the forwarding future (3.5 KB),
/// about a tenth of a hit's work (callgrind).
pub fn proxy(state: &AppState, request: Request, peer: Option<Peer>) -> (Taken, Proxied) {
    let (parts, body) = request.into_parts();
    let path = match check(&parts, peer) {
        Ok(path) => path,
        Err(error) => {
            let taken = Taken::anonymous(RouteClass::Local);
            let class = taken.class;
            return (taken, Proxied::Now(finish(state, class, None, Err(error))));
        }
    };
    let route = Route::read(&parts.method, path.decoded());
    let class = route.class;
    let caller = match admit(state, &parts, path.decoded(), route, Keys::Current) {
        Ok(caller) => caller,
        Err(Unidentified::Refused(error)) => {
            let answer = Proxied::Now(finish(state, class, None, Err(error)));
            return (Taken::anonymous(class), answer);
        }
        Err(Unidentified::Stale) => {
            // The key table may be behind the store: reload it off the
            // runtime, then admit against it.
            let state = state.clone();
            let answer = Box::pin(async move {
                if let Err(error) = state.broker.refresh_keys().await {
                    return finish(&state, class, None, Err(error));
                }
                match admit(&state, &parts, path.decoded(), route, Keys::Loaded) {
                    Ok(caller) => {
                        rated(&state, parts, body, path, route, caller, peer)
                            .answer()
                            .await
                    }
                    Err(Unidentified::Refused(error)) => finish(&state, class, None, Err(error)),
                    Err(Unidentified::Stale) => {
                        finish(&state, class, None, Err(GatewayError::StoreUnavailable))
                    }
                }
            });
            return (Taken::anonymous(class), Proxied::Later(answer));
        }
    };
    let taken = Taken {
        class,
        key: caller.key.as_ref().map(|key| key.id.clone()),
    };
    (taken, rated(state, parts, body, path, route, caller, peer))
}

/// What the frame's access record learns of a request at once: its route
/// class and, once admitted, the local key that sent it.
#[derive(Debug)]
pub struct Taken {
    /// The route class.
    pub class: RouteClass,
    /// The caller's local key id (keys mode, admitted at once).
    pub key: Option<Arc<str>>,
}

impl Taken {
    fn anonymous(class: RouteClass) -> Self {
        Self { class, key: None }
    }
}

/// An admitted request; in cluster mode, one whose key has a rate of its
/// own first takes it from Redis (shared by every replica), cache hits
/// too.
fn rated(
    state: &AppState,
    parts: Parts,
    body: axum::body::Body,
    path: ApiPath,
    route: Route,
    caller: Caller,
    peer: Option<Peer>,
) -> Proxied {
    if !state.broker.shares_rate(&caller) {
        return admitted(state, parts, body, path, route, caller, peer);
    }
    let state = state.clone();
    Proxied::Later(Box::pin(async move {
        if let Err(error) = state.broker.take_shared_rate(&caller).await {
            return finish(&state, route.class, None, Err(error));
        }
        admitted(&state, parts, body, path, route, caller, peer)
            .answer()
            .await
    }))
}

/// An admitted request: a fresh hit at once, else the future that passes
/// it on.
fn admitted(
    state: &AppState,
    parts: Parts,
    body: axum::body::Body,
    path: ApiPath,
    route: Route,
    caller: Caller,
    peer: Option<Peer>,
) -> Proxied {
    let class = route.class;
    if let Some(response) = hit(state, &caller, &parts, &body, &path, route) {
        state.broker.count(&caller, path.agent(), class.as_str());
        return Proxied::Now(finish(state, class, Some(&caller), Ok(response)));
    }
    let server = &state.config.server;
    let call = Call {
        credential: caller.credential.clone(),
        path,
        route,
        limits: BodyLimits {
            max_bytes: server.max_body_bytes,
            idle: Duration::from_millis(server.body_idle_timeout_ms),
        },
        key_id: caller.key.as_ref().map(|key| key.id.clone()),
        peer,
        mark: None,
        elsewhere: Elsewhere::default(),
    };
    let state = state.clone();
    Proxied::Later(Box::pin(async move {
        let result = pass(&state, &caller, &call, parts, body).await;
        state
            .broker
            .count(&caller, call.path.agent(), class.as_str());
        let mut response = finish(&state, class, Some(&caller), result);
        // Also on a refusal or an error: time spent waiting is not overhead.
        let waited = call.elsewhere.total();
        match response.extensions_mut().get_mut::<Timing>() {
            Some(timing) => timing.waited = waited,
            None => {
                response.extensions_mut().insert(Timing {
                    upstream: None,
                    waited,
                });
            }
        }
        response
    }))
}

/// The answer to a request of `class`: an error in Castari's shape, and
/// every `/api/v1` answer (refusals of bad paths included) with the
/// gateway's `X-RateLimit-*` view of the caller's lane; with shaping off,
/// the upstream's last view where the answer has none of its own
/// (`upstream/seen.rs`).
fn finish(
    state: &AppState,
    class: RouteClass,
    caller: Option<&Caller>,
    result: Result<Response, GatewayError>,
) -> Response {
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            log_error(&error, class);
            error.into_response()
        }
    };
    let credential = match caller {
        Some(caller) => &caller.credential,
        None => state.credentials.default_credential(),
    };
    let lane = Lane::of(class);
    match credential.shaper() {
        Some(shaper) => shaped::stamp_view(shaper, lane, &mut response),
        None => {
            let shaping = &state.config.shaper;
            let budget = match lane {
                Lane::Crud => shaping.crud_limit,
                Lane::Invoke => shaping.invoke_limit,
            };
            credential
                .seen()
                .stamp(lane, budget, response.headers_mut());
        }
    }
    response
}

/// A fresh cache hit for a GET that the forwarding path would answer from
/// the cache: no body, no agent-scoped list filtering, caching on and a
/// cacheable route (`cached::fresh_hit` has the rest).
fn hit(
    state: &AppState,
    caller: &Caller,
    parts: &Parts,
    body: &axum::body::Body,
    path: &ApiPath,
    route: Route,
) -> Option<Response> {
    let cache = state.cache.as_ref()?;
    let cached = route.cache?;
    let plain_get = parts.method == Method::GET
        && caller.globs().is_none()
        && matches!(declared_length(parts), Ok(0))
        && axum::body::HttpBody::size_hint(body).upper() == Some(0);
    if !plain_get {
        return None;
    }
    cached::fresh_hit(cache, &caller.credential, cached, path.decoded(), parts)
}

/// The longest path and query forwarded. The upstream's server reads a
/// request head of at most 16 KiB (h11's default), and an upstream URL
/// must stay under `http::Uri`'s 65,534 bytes with the base in front.
const MAX_TARGET_BYTES: usize = 16 * 1024;

fn check(parts: &Parts, peer: Option<Peer>) -> Result<ApiPath, GatewayError> {
    let target = parts.uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target > MAX_TARGET_BYTES {
        return Err(GatewayError::UriTooLong {
            limit: MAX_TARGET_BYTES,
        });
    }
    check_target(parts, peer)?;
    let mut path = ApiPath::parse(parts.uri.path())?;
    path.rewrite_sdk_stop(&parts.method);
    Ok(path)
}

/// Identifies the caller and checks what it may do (its key's role and
/// agents, then the account's own credentials: `guard.rs`): before the
/// cache, so a refused request never gets a cached answer.
fn admit(
    state: &AppState,
    parts: &Parts,
    decoded: &[Box<str>],
    route: Route,
    keys: Keys,
) -> Result<Caller, Unidentified> {
    let caller = state.broker.identify(parts, &state.credentials, keys)?;
    state.broker.authorize(&caller, &parts.method, decoded)?;
    guard::admit(&state.config.auth, &caller, route)?;
    Ok(caller)
}

/// Past the checks and the broker: an agent-scoped key's create and list
/// rules, then the cache or the send.
async fn pass(
    state: &AppState,
    caller: &Caller,
    call: &Call,
    mut parts: Parts,
    body: axum::body::Body,
) -> Result<Response, GatewayError> {
    if declared_length(&parts)? > call.limits.max_bytes {
        return Err(GatewayError::PayloadTooLarge {
            limit: call.limits.max_bytes,
        });
    }
    if call.route.credential == Some(CredentialRoute::RevokesById) {
        // Boxed: a rare route's lookup, kept out of every request's future.
        Box::pin(guard::confirm(state, call, &parts)).await?;
    }
    let Some(globs) = caller.globs() else {
        return route(state, caller, call, parts, body).await;
    };
    // Boxed: this path reads bodies, and its future is several times the
    // size of a cache hit's, which every request would otherwise carry.
    Box::pin(async move {
        // An agent-scoped key: creates must name an allowed slug, and lists
        // show only allowed agents.
        let is_agents = matches!(&**call.path.decoded(), [only] if &**only == "agents");
        let body = match (is_agents, &parts.method) {
            (true, &Method::POST) => brokered::check_create(globs, body).await?,
            _ => body,
        };
        if !(is_agents && parts.method == Method::GET) {
            return route(state, caller, call, parts, body).await;
        }
        parts.headers.remove(header::IF_NONE_MATCH);
        let response = route(state, caller, call, parts, body).await?;
        brokered::filter_list(globs, response).await
    })
    .await
}

/// The cached path for cacheable GETs, invalidation around writes, or a
/// plain send.
async fn route(
    state: &AppState,
    caller: &Caller,
    call: &Call,
    parts: Parts,
    body: axum::body::Body,
) -> Result<Response, GatewayError> {
    // Not boxed: the cached path's future is the largest of these, and
    // this one holds it anyway (a box is an allocation and a copy of the
    // whole future, about 3.4 KB, on every request).
    let Some(cache) = &state.cache else {
        return accounted(state, caller, call, parts, body).await;
    };
    if parts.method == Method::GET {
        // A GET with a body is unusual; it is forwarded whole, never cached.
        let bodiless = axum::body::HttpBody::size_hint(&body).upper() == Some(0);
        return match call.route.cache.filter(|_| bodiless) {
            Some(route) => {
                let get = CachedGet {
                    state,
                    cache,
                    route,
                    call,
                };
                get.serve(parts).await
            }
            None => forward(state, call, parts, body).await,
        };
    }
    if parts.method == Method::HEAD {
        return forward(state, call, parts, body).await;
    }
    // Boxed: the write path's future is large and the hit path's is not.
    Box::pin(async move {
        let decoded = call.path.decoded().clone();
        let write = Write::of(state, call.credential.name(), &parts, decoded);
        let result = accounted(state, caller, call, parts, body).await;
        write.settle(cache, result).await
    })
    .await
}

/// Sends a request; an invocation goes with its budget reservation and
/// its cost is recorded.
async fn accounted(
    state: &AppState,
    caller: &Caller,
    call: &Call,
    parts: Parts,
    body: axum::body::Body,
) -> Result<Response, GatewayError> {
    let agent = match (call.route.class, call.path.agent()) {
        (RouteClass::Invoke, Some(agent)) => agent.to_string(),
        _ => return forward(state, call, parts, body).await,
    };
    let streamed = call.path.decoded().last().is_some_and(|s| &**s == "stream");
    // Marked as it leaves: until then, a client that hangs up takes it back.
    let sent = SendMark::default();
    let call = Call {
        mark: Some(sent.clone()),
        ..call.clone()
    };
    let owned = state.clone();
    let sending = async move { forward(&owned, &call, parts, body).await };
    brokered::invoke(state, caller, &agent, streamed, sent, sending).await
}

/// HTTP/1 absolute-form targets (`GET http://host/path`) are accepted only
/// when they name this gateway itself: the connection's local address, or
/// `localhost` on a loopback listener, with the same port. Anything else is
/// what an open-proxy probe looks like; it is refused, never followed.
fn check_target(parts: &Parts, peer: Option<Peer>) -> Result<(), GatewayError> {
    if parts.version >= Version::HTTP_2 {
        return Ok(());
    }
    let Some(authority) = parts.uri.authority() else {
        return Ok(());
    };
    let local = peer.map(|p| p.local);
    let names_us = local.is_some_and(|local| {
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let host_is_us = match host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip == local.ip(),
            Err(_) => host.eq_ignore_ascii_case("localhost") && local.ip().is_loopback(),
        };
        host_is_us && port == local.port()
    });
    if names_us {
        return Ok(());
    }
    Err(GatewayError::BadRequest(
        "Absolute-form request target naming another host is not allowed",
    ))
}

fn declared_length(parts: &Parts) -> Result<u64, GatewayError> {
    match parts.headers.get(header::CONTENT_LENGTH) {
        None => Ok(0),
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or(GatewayError::BadRequest("Invalid Content-Length")),
    }
}

fn log_error(error: &GatewayError, class: RouteClass) {
    match error.origin() {
        crate::error::Origin::Client => {
            tracing::debug!(
                code = error.code(),
                class = class.as_str(),
                "request refused"
            );
        }
        crate::error::Origin::Upstream | crate::error::Origin::Gateway => {
            tracing::warn!(code = error.code(), class = class.as_str(), "{error}");
        }
    }
}
