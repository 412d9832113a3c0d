//! The app: the layers every request goes through, and the frame that
//! sends it to the proxy or to the local endpoints. The only place the
//! layer order lives.
//!
//! Outer to inner:
//!
//! 1. `SetSensitiveRequestHeaders`: `Authorization`, `X-API-Key` and
//!    `Cookie` are marked sensitive so no debug output shows them.
//! 2. [`Frame`]: the request id (`x-request-id` kept or generated, sent
//!    upstream and echoed back), the in-flight gauge, the access record
//!    (metrics and one log line per request, `telemetry::Access`), a caught
//!    panic turned into a Castari-shaped 500, and the dispatch: `/api/v1/*`
//!    straight to the proxy handler, everything else to the router of the
//!    local endpoints (`/healthz`, `/readyz`, `/metrics`, `/admin/*`, the
//!    operator page at `/` and `/ui/*`; 404 for the rest).
//!
//! The frame is one hand-written service rather than a `from_fn`
//! middleware, two catch-panic layers, tower-http's two request-id layers
//! and a fallback route around the proxy: those wrapped or boxed the
//! request's future again at each step and put the id in an extension no
//! one read, about a quarter of a cache hit's time (`cargo bench --bench
//! hit_path`, callgrind). Every layer here is a concrete type. What the
//! proxy answers without waiting (a fresh cache hit, a refusal) is answered
//! inside `call`, with a ready future; anything else is one boxed future.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::header::{self, Entry};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::future::Either;
use tower::{Layer, Service, ServiceExt};
use tower_http::sensitive_headers::{SetSensitiveRequestHeaders, SetSensitiveRequestHeadersLayer};

use crate::error::GatewayError;
use crate::routes::proxy::{self, Proxied};
use crate::routes::{actions, admin, events, health, keys, login, openapi, page};
use crate::state::AppState;
use crate::telemetry::{Access, RequestIds};
use crate::types::Peer;
use crate::upstream::headers::{X_API_KEY, X_REQUEST_ID};

/// The gateway's service: the layers around the [`Frame`].
pub type App = SetSensitiveRequestHeaders<Frame>;

/// Builds the gateway's service over `state`.
pub fn build_app(state: AppState) -> App {
    let local = local_routes(state.clone());
    with_layers(local, state)
}

/// The gateway's own endpoints; anything else that reaches this router
/// (not `/api/v1/*`) is a 404.
fn local_routes(state: AppState) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(health::healthz).fallback(method_not_allowed),
        )
        .route("/readyz", get(health::readyz).fallback(method_not_allowed))
        .route(
            "/openapi.json",
            get(openapi::description).fallback(method_not_allowed),
        )
        .route(
            "/metrics",
            get(health::metrics).fallback(method_not_allowed),
        )
        .route(
            "/admin/queue",
            get(admin::queue).fallback(method_not_allowed),
        )
        .route(
            "/admin/cache",
            get(admin::cache_summary)
                .delete(admin::cache_purge)
                .fallback(method_not_allowed),
        )
        .route(
            "/admin/config",
            get(admin::config).fallback(method_not_allowed),
        )
        .route(
            "/admin/config/reload",
            post(admin::reload).fallback(method_not_allowed),
        )
        .route(
            "/admin/keys",
            get(keys::list)
                .post(keys::create)
                .fallback(method_not_allowed),
        )
        .route(
            "/admin/keys/{id}",
            axum::routing::delete(keys::revoke).fallback(method_not_allowed),
        )
        .route(
            "/admin/keys/{id}/rotate",
            post(keys::rotate).fallback(method_not_allowed),
        )
        .route(
            "/admin/usage",
            get(keys::usage).fallback(method_not_allowed),
        )
        .route(
            "/admin/events",
            get(events::events).fallback(method_not_allowed),
        )
        .route(
            "/admin/snapshot",
            get(events::snapshot).fallback(method_not_allowed),
        )
        .route("/", get(page::index).fallback(method_not_allowed))
        .route("/ui", get(page::index).fallback(method_not_allowed))
        .route("/ui/app.js", get(page::script).fallback(method_not_allowed))
        .route("/ui/app.css", get(page::style).fallback(method_not_allowed))
        .route(
            "/ui/favicon.svg",
            get(page::icon).fallback(method_not_allowed),
        )
        .route(
            "/ui/session",
            get(login::session).fallback(method_not_allowed),
        )
        .route("/ui/login", post(login::login).fallback(method_not_allowed))
        .route(
            "/ui/logout",
            post(login::logout).fallback(method_not_allowed),
        )
        .route(
            "/ui/actions/revoke",
            post(actions::revoke).fallback(method_not_allowed),
        )
        .route(
            "/ui/actions/purge",
            post(actions::purge).fallback(method_not_allowed),
        )
        .route(
            "/ui/actions/reload",
            post(actions::reload).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(state)
}

/// Wraps the frame over `local` in the layers, outer to inner as the module
/// docs list them.
fn with_layers(local: Router, state: AppState) -> App {
    SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION, X_API_KEY, header::COOKIE]).layer(
        Frame {
            state,
            local,
            ids: RequestIds::default(),
            peer: None,
        },
    )
}

/// The innermost layer: request id, access record, in-flight gauge, panic
/// catching and dispatch (module docs).
#[derive(Clone, Debug)]
pub struct Frame {
    state: AppState,
    local: Router,
    ids: RequestIds,
    /// The connection the requests come on, when the server set it
    /// ([`Frame::on_connection`]). Without it (tests, benches), a
    /// request's own [`Peer`] extension, if any, is used.
    peer: Option<Peer>,
}

impl Frame {
    /// Serves the requests of one connection: their [`Peer`] travels in
    /// the frame. It goes into a request's extensions only when the request
    /// waits (the shaper and the cache's fetches read it there): the
    /// extension map, allocated per request, cost about 2% of a cache hit.
    pub fn on_connection(&mut self, peer: Peer) {
        self.peer = Some(peer);
    }
}

/// The frame's future: ready at once for an answer made without waiting
/// (a cache hit, a refusal), else [`Later`].
pub type FrameFuture = Either<std::future::Ready<Result<Response, Infallible>>, Later>;

impl<B> Service<http::Request<B>> for Frame
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = FrameFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let id = match request.headers_mut().entry(X_REQUEST_ID) {
            Entry::Occupied(given) => given.get().clone(),
            Entry::Vacant(slot) => slot.insert(self.ids.next()).clone(),
        };
        let mut request = request.map(Body::new);
        let mut access = Access::begin(&self.state, &request);
        let peer = match self.peer {
            Some(peer) => Some(peer),
            None => request.extensions().get::<Peer>().copied(),
        };
        if !request.uri().path().starts_with("/api/v1/") {
            if let Some(peer) = self.peer {
                request.extensions_mut().insert(peer);
            }
            let local = self.local.clone().oneshot(request);
            let answer = Box::pin(async move {
                match local.await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            });
            return Either::Right(Later::new(&self.state, access, id, answer));
        }
        let proxied = std::panic::catch_unwind(AssertUnwindSafe(|| {
            proxy::proxy(&self.state, request, peer)
        }));
        match proxied {
            Ok((taken, proxied)) => {
                access.taken(taken.class, taken.key, peer);
                match proxied {
                    Proxied::Later(answer) => {
                        Either::Right(Later::new(&self.state, access, id, answer))
                    }
                    Proxied::Now(response) => Either::Left(std::future::ready(Ok(finish(
                        &self.state,
                        access,
                        id,
                        response,
                    )))),
                }
            }
            Err(panic) => Either::Left(std::future::ready(Ok(finish(
                &self.state,
                access,
                id,
                panic_response(panic),
            )))),
        }
    }
}

/// Records the access and echoes the request id.
fn finish(state: &AppState, access: Access, id: HeaderValue, mut response: Response) -> Response {
    access.finish(state, &response);
    if let Entry::Vacant(slot) = response.headers_mut().entry(X_REQUEST_ID) {
        slot.insert(id);
    }
    response
}

/// The answer that waits, in the frame's hands: counted in flight until it
/// is answered or dropped (also when the client hangs up first), a panic
/// caught, the access recorded. A plain struct around the one boxed
/// future, not a second boxed `async` block: every request that waits
/// would pay an allocation and a copy for it.
pub struct Later {
    answer: Pin<Box<dyn Future<Output = Response> + Send>>,
    /// Until answered: what the answer is stamped and recorded with.
    record: Option<Record>,
}

struct Record {
    state: AppState,
    access: Access,
    id: HeaderValue,
}

impl Later {
    fn new(
        state: &AppState,
        access: Access,
        id: HeaderValue,
        answer: Pin<Box<dyn Future<Output = Response> + Send>>,
    ) -> Self {
        state.metrics.in_flight().inc();
        Self {
            answer,
            record: Some(Record {
                state: state.clone(),
                access,
                id,
            }),
        }
    }
}

impl Future for Later {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // Polled again after its answer (a caller's bug): a 500, with the
        // finished answer left alone and no second record.
        if this.record.is_none() {
            return Poll::Ready(Ok(GatewayError::Internal.into_response()));
        }
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| this.answer.as_mut().poll(cx)));
        let response = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(response)) => response,
            Err(panic) => panic_response(panic),
        };
        let Some(Record { state, access, id }) = this.record.take() else {
            return Poll::Ready(Ok(GatewayError::Internal.into_response()));
        };
        state.metrics.in_flight().dec();
        Poll::Ready(Ok(finish(&state, access, id, response)))
    }
}

impl Drop for Later {
    fn drop(&mut self) {
        if let Some(record) = &self.record {
            record.state.metrics.in_flight().dec();
        }
    }
}

async fn not_found() -> Response {
    GatewayError::NotFound.into_response()
}

async fn method_not_allowed() -> Response {
    GatewayError::MethodNotAllowed.into_response()
}

fn panic_response(_panic: Box<dyn Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    GatewayError::Internal.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::types::Secret;
    use axum::extract::Request;

    fn answer_later(
        state: &AppState,
        id: &'static str,
        answer: impl Future<Output = Response> + Send + 'static,
    ) -> Later {
        let request = Request::builder()
            .uri("/api/v1/agents")
            .body(axum::body::Body::empty())
            .unwrap();
        let access = Access::begin(state, &request);
        Later::new(
            state,
            access,
            HeaderValue::from_static(id),
            Box::pin(answer),
        )
    }

    #[tokio::test]
    async fn a_waiting_answer_counts_in_flight_until_answered_dropped_or_panicked() {
        let key = Secret::new("k".to_string());
        let state = crate::build_state(Config {
            upstream_key: Some(key),
            ..Config::default()
        })
        .unwrap();
        let in_flight = || state.metrics.in_flight().get();

        // A client that hangs up drops the answer before it comes.
        let never = answer_later(&state, "a", std::future::pending());
        assert_eq!(in_flight(), 1);
        drop(never);
        assert_eq!(in_flight(), 0);

        let answered = answer_later(&state, "b", async {
            tokio::task::yield_now().await;
            Response::new(axum::body::Body::empty())
        });
        assert_eq!(in_flight(), 1);
        let response = answered.await.unwrap();
        assert_eq!(in_flight(), 0);
        assert_eq!(response.headers()[X_REQUEST_ID], "b");

        let panicked = answer_later(&state, "c", async {
            if std::hint::black_box(true) {
                panic!("answer bug");
            }
            Response::new(axum::body::Body::empty())
        });
        let response = panicked.await.unwrap();
        assert_eq!(in_flight(), 0);
        assert_eq!(
            response.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(response.headers()[X_REQUEST_ID], "c");

        // Polled again after its answer: a 500, no second record, the
        // finished answer not polled again (this one would never answer).
        let mut answered = false;
        let mut done = answer_later(
            &state,
            "d",
            std::future::poll_fn(move |_| {
                if std::mem::replace(&mut answered, true) {
                    Poll::Pending
                } else {
                    Poll::Ready(Response::new(axum::body::Body::empty()))
                }
            }),
        );
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let first = Pin::new(&mut done).poll(&mut cx);
        assert!(matches!(&first, Poll::Ready(Ok(r)) if r.status() == 200));
        let again = Pin::new(&mut done).poll(&mut cx);
        assert!(matches!(&again, Poll::Ready(Ok(r)) if r.status() == 500));
        assert_eq!(in_flight(), 0);
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_a_castari_shaped_500_with_a_request_id() {
        let key = Secret::new("k".to_string());
        let config = Config {
            upstream_key: Some(key.clone()),
            ..Config::default()
        };
        let state = crate::build_state(config).unwrap();
        let routes = Router::new().route(
            "/boom",
            get(|| async {
                if std::hint::black_box(true) {
                    panic!("handler bug");
                }
                "unreachable"
            }),
        );
        let app = with_layers(routes, state);
        let request = Request::builder()
            .uri("/boom")
            .body(axum::body::Body::empty())
            .unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        assert!(response.headers().contains_key(X_REQUEST_ID));
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "internal_error");
        assert_eq!(body["detail"], GatewayError::Internal.detail());
    }
}
