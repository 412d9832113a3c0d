//! The `/api/v1/*` handler: check the request, then forward it.
//!
//! Checks, in order: the request target (absolute-form naming another host
//! is refused), the path (`/api/v1/` prefix, no dot segments, no encoded
//! separators), the SDK 0.4 stop rewrite, the caller (the key broker: local
//! key, role, agent globs, the key's own rate; `keys/broker.rs`), and a
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
//! With shaping on (the default), the request then goes through
//! the shaped path (`routes/shaped.rs`): it waits for the upstream budget, and every answer
//! carries the gateway's `X-RateLimit-*` view instead of the upstream's.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{header, request::Parts, Method, Version};

use super::brokered;
use super::cached::{self, CachedGet, Write};
use super::shaped;
use crate::cache::flight::SendMark;
use crate::cache::key::decode_path;
use crate::cache::CacheRoute;
use crate::error::GatewayError;
use crate::keys::broker::Caller;
use crate::route::RouteClass;
use crate::shaper::Lane;
use crate::state::AppState;
use crate::types::Peer;
use crate::upstream::credential::Credential;
use crate::upstream::path::ApiPath;
use crate::upstream::retry::{Attempts, Safety};
use crate::upstream::{BodyLimits, Outbound};

/// How [`proxy`] answers.
pub enum Proxied {
    /// At once: a fresh cache hit, or a request refused before it went
    /// anywhere.
    Now(Response),
    /// When the upstream (or a coalesced fetch, or the queue) has.
    Later(Pin<Box<dyn Future<Output = Response> + Send>>),
}

/// Takes one request; every failure becomes a Castari-shaped error. The
/// route class comes back beside the answer, for the access record.
///
/// The checks, the caller's admission and a fresh cache hit need no
/// waiting, so they run here, before any future exists: a hit is answered
/// without building, boxing and moving the forwarding future (3.5 KB),
/// about a tenth of a hit's work (callgrind).
pub fn proxy(state: &AppState, request: Request, peer: Option<Peer>) -> (RouteClass, Proxied) {
    let (mut parts, body) = request.into_parts();
    let path = match check(&parts, peer) {
        Ok(path) => path,
        Err(error) => {
            let class = RouteClass::Local;
            return (class, Proxied::Now(finish(state, class, None, Err(error))));
        }
    };
    let class = RouteClass::of(&parts.method, path.segments());
    let decoded = decode_path(path.segments());
    let caller = match admit(state, &parts, &decoded) {
        Ok(caller) => caller,
        Err(error) => return (class, Proxied::Now(finish(state, class, None, Err(error)))),
    };
    if let Some(response) = hit(state, &caller, &parts, &body, &decoded) {
        state
            .broker
            .count(&caller, agent_of(&decoded), class.as_str());
        return (
            class,
            Proxied::Now(finish(state, class, Some(&caller), Ok(response))),
        );
    }
    // What waits reads the caller and the peer from the request (the
    // shaper's fairness, the cache's fetches).
    if let Some(key) = &caller.key {
        parts
            .extensions
            .insert(CallerId(Arc::from(key.record.id.as_str())));
    }
    if let Some(peer) = peer {
        parts.extensions.insert(peer);
    }
    let state = state.clone();
    let answer = Box::pin(async move {
        let sent = forward(&state, &caller, parts, body, &path, decoded.clone(), class);
        let result = sent.await;
        state
            .broker
            .count(&caller, agent_of(&decoded), class.as_str());
        finish(&state, class, Some(&caller), result)
    });
    (class, Proxied::Later(answer))
}

/// The answer to a request of `class`: an error in Castari's shape, and
/// every `/api/v1` answer (refusals of bad paths included) with the
/// gateway's `X-RateLimit-*` view of the caller's lane.
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
    let shaper = match caller {
        Some(caller) => caller.credential.shaper(),
        None => state.default_shaper(),
    };
    if let Some(shaper) = shaper {
        shaped::stamp_view(shaper, Lane::of(class), &mut response);
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
    decoded: &Arc<[Box<str>]>,
) -> Option<Response> {
    let cache = state.cache.as_ref()?;
    let plain_get = parts.method == Method::GET
        && caller.globs().is_none()
        && matches!(declared_length(parts), Ok(0))
        && axum::body::HttpBody::size_hint(body).upper() == Some(0);
    if !plain_get {
        return None;
    }
    let route = CacheRoute::of(decoded)?;
    cached::fresh_hit(cache, &caller.credential, route, decoded, parts)
}

/// The local key id of an identified caller, for the shaper's fairness.
#[derive(Clone, Debug)]
pub struct CallerId(pub Arc<str>);

fn check(parts: &Parts, peer: Option<Peer>) -> Result<ApiPath, GatewayError> {
    check_target(parts, peer)?;
    let mut path = ApiPath::parse(parts.uri.path())?;
    path.rewrite_sdk_stop(&parts.method);
    Ok(path)
}

/// Identifies the caller and checks what it may do: before the cache, so
/// a refused request never gets a cached answer.
fn admit(state: &AppState, parts: &Parts, decoded: &[Box<str>]) -> Result<Caller, GatewayError> {
    let caller = state.broker.identify(parts, &state.credentials)?;
    state.broker.authorize(&caller, &parts.method, decoded)?;
    Ok(caller)
}

/// The agent a route names (`/agents/{slug}/...`), for the ledger.
fn agent_of(decoded: &[Box<str>]) -> Option<&str> {
    match decoded {
        [first, slug, ..] if &**first == "agents" => Some(slug),
        _ => None,
    }
}

async fn forward(
    state: &AppState,
    caller: &Caller,
    mut parts: Parts,
    body: axum::body::Body,
    path: &ApiPath,
    decoded: Arc<[Box<str>]>,
    class: RouteClass,
) -> Result<Response, GatewayError> {
    let server = &state.config.server;
    let limits = BodyLimits {
        max_bytes: server.max_body_bytes,
        idle: Duration::from_millis(server.body_idle_timeout_ms),
    };
    if declared_length(&parts)? > limits.max_bytes {
        return Err(GatewayError::PayloadTooLarge {
            limit: limits.max_bytes,
        });
    }
    let Some(globs) = caller.globs() else {
        return route(state, caller, parts, body, path, decoded, class, limits).await;
    };
    // Boxed: this path reads bodies, and its future is several times the
    // size of a cache hit's, which every request would otherwise carry.
    Box::pin(async move {
        // An agent-scoped key: creates must name an allowed slug, and lists
        // show only allowed agents.
        let is_agents = matches!(&*decoded, [only] if &**only == "agents");
        let body = match (is_agents, &parts.method) {
            (true, &Method::POST) => brokered::check_create(globs, body).await?,
            _ => body,
        };
        if !(is_agents && parts.method == Method::GET) {
            return route(state, caller, parts, body, path, decoded, class, limits).await;
        }
        parts.headers.remove(header::IF_NONE_MATCH);
        let response = route(state, caller, parts, body, path, decoded, class, limits).await?;
        brokered::filter_list(globs, response).await
    })
    .await
}

/// The cached path for cacheable GETs, invalidation around writes, or a
/// plain send.
#[allow(clippy::too_many_arguments)]
async fn route(
    state: &AppState,
    caller: &Caller,
    parts: Parts,
    body: axum::body::Body,
    path: &ApiPath,
    decoded: Arc<[Box<str>]>,
    class: RouteClass,
    limits: BodyLimits,
) -> Result<Response, GatewayError> {
    let credential = &caller.credential;
    let Some(cache) = &state.cache else {
        return Box::pin(accounted(state, caller, parts, body, path, class, limits)).await;
    };
    if parts.method == Method::GET {
        // A GET with a body is unusual; it is forwarded whole, never cached.
        let bodiless = axum::body::HttpBody::size_hint(&body).upper() == Some(0);
        return match CacheRoute::of(&decoded).filter(|_| bodiless) {
            Some(route) => {
                let get = CachedGet {
                    state,
                    credential,
                    cache,
                    route,
                    decoded,
                    path,
                    class,
                    limits,
                };
                get.serve(parts).await
            }
            None => Box::pin(send(state, credential, parts, body, path, class, limits)).await,
        };
    }
    if parts.method == Method::HEAD {
        return Box::pin(send(state, credential, parts, body, path, class, limits)).await;
    }
    // Boxed: the write path's future is large and the hit path's is not.
    Box::pin(async move {
        let write = Write::of(state, credential.name(), &parts, decoded);
        let result = accounted(state, caller, parts, body, path, class, limits).await;
        write.settle(cache, result).await
    })
    .await
}

/// Sends a request; an invocation goes with its budget reservation and
/// its cost is recorded.
async fn accounted(
    state: &AppState,
    caller: &Caller,
    parts: Parts,
    body: axum::body::Body,
    path: &ApiPath,
    class: RouteClass,
    limits: BodyLimits,
) -> Result<Response, GatewayError> {
    let agent = match (class, path.agent()) {
        (RouteClass::Invoke, Some(agent)) => agent.to_string(),
        _ => return send(state, &caller.credential, parts, body, path, class, limits).await,
    };
    let streamed = path.segments().last().is_some_and(|s| s == "stream");
    let (owned, credential, path) = (state.clone(), caller.credential.clone(), path.clone());
    let sending = async move { send(&owned, &credential, parts, body, &path, class, limits).await };
    brokered::invoke(state, caller, &agent, streamed, sending).await
}

/// Sends one request upstream: through the shaper when it is on.
pub(super) async fn send(
    state: &AppState,
    credential: &Arc<Credential>,
    parts: Parts,
    body: axum::body::Body,
    path: &ApiPath,
    class: RouteClass,
    limits: BodyLimits,
) -> Result<Response, GatewayError> {
    if let Some(shaper) = credential.shaper() {
        let to = shaped::Target {
            path,
            class,
            limits,
            authorization: credential.authorization(),
        };
        return shaped::forward(state, shaper, parts, body, to).await;
    }
    // Without the shaper, bodies are not held: only bodiless requests are
    // retried.
    let url = path.to_upstream_url(state.upstream.base(), parts.uri.query());
    let replayable = axum::body::HttpBody::is_end_stream(&body);
    let safety = Safety::of(&parts.method, path.segments());
    state.retrier.deposit();
    let mut attempts = Attempts::default();
    let mut body = Some(body);
    if let Some(mark) = parts.extensions.get::<SendMark>() {
        mark.mark();
    }
    loop {
        state.breaker.admit()?;
        let outbound = Outbound {
            method: parts.method.clone(),
            url: url.clone(),
            headers: parts.headers.clone(),
            body: body.take().unwrap_or_else(axum::body::Body::empty),
            class,
            authorization: credential.authorization().clone(),
        };
        let result = state.upstream.forward(outbound, limits).await;
        state.breaker.record(&result);
        if let Some(delay) = state
            .retrier
            .again(safety, &mut attempts, &result, replayable)
        {
            drop(result);
            tokio::time::sleep(delay).await;
            continue;
        }
        return Ok(attempts.finish(&parts.method, result?));
    }
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
