//! The app: the layers every request goes through, and the frame that
//! sends it to the proxy or to the local endpoints. The only place the
//! layer order lives.
//!
//! Outer to inner:
//!
//! 1. `SetSensitiveRequestHeaders`: `Authorization`, `X-API-Key` and
//!    `Cookie` are marked sensitive so no debug output shows them.
//! 2. `SetRequestId` / `PropagateRequestId`: `x-request-id` is kept or
//!    generated, sent upstream and echoed back.
//! 3. [`Frame`]: the in-flight gauge, the access record (metrics and one
//!    log line per request, `telemetry::Access`), a caught panic turned
//!    into a Castari-shaped 500, and the dispatch: `/api/v1/*` straight to
//!    the proxy handler, everything else to the router of the local
//!    endpoints (`/healthz`, `/readyz`, `/metrics`, `/admin/*`; 404 for the
//!    rest).
//!
//! The frame is one hand-written service rather than a `from_fn`
//! middleware, two catch-panic layers and a fallback route around the
//! proxy: those boxed the request's future, body and continuation again at
//! each step, about a fifth of a cache hit's time (`cargo bench --bench
//! hit_path`). Every layer here is a concrete type: nothing is boxed per
//! request but the frame's one future.

use std::any::Any;
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::FutureExt;
use prometheus_client::metrics::gauge::Gauge;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::request_id::{
    PropagateRequestId, PropagateRequestIdLayer, SetRequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::{SetSensitiveRequestHeaders, SetSensitiveRequestHeadersLayer};

use crate::error::{error_response, GatewayError};
use crate::routes::{admin, health, keys, proxy};
use crate::state::AppState;
use crate::telemetry::{Access, MakeGatewayRequestId};
use crate::upstream::headers::{X_API_KEY, X_REQUEST_ID};

/// The gateway's service: the layers around the [`Frame`].
pub type App =
    SetSensitiveRequestHeaders<SetRequestId<PropagateRequestId<Frame>, MakeGatewayRequestId>>;

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
            axum::routing::post(admin::reload).fallback(method_not_allowed),
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
            axum::routing::post(keys::rotate).fallback(method_not_allowed),
        )
        .route(
            "/admin/usage",
            get(keys::usage).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(state)
}

/// Wraps the frame over `local` in the layers, outer to inner as the module
/// docs list them.
fn with_layers(local: Router, state: AppState) -> App {
    ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([
            header::AUTHORIZATION,
            X_API_KEY,
            header::COOKIE,
        ]))
        .layer(SetRequestIdLayer::new(
            X_REQUEST_ID,
            MakeGatewayRequestId::default(),
        ))
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID))
        .service(Frame { state, local })
}

/// The innermost layer: access record, in-flight gauge, panic catching and
/// dispatch (module docs).
#[derive(Clone, Debug)]
pub struct Frame {
    state: AppState,
    local: Router,
}

impl<B> Service<http::Request<B>> for Frame
where
    B: axum::body::HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let frame = self.clone();
        Box::pin(async move { Ok(frame.handle(request.map(Body::new)).await) })
    }
}

impl Frame {
    async fn handle(self, request: Request) -> Response {
        let state = &self.state;
        let access = Access::begin(state, &request);
        let in_flight = InFlight::enter(state.metrics.in_flight());
        let dispatched = AssertUnwindSafe(self.dispatch(request))
            .catch_unwind()
            .await;
        drop(in_flight);
        let response = dispatched.unwrap_or_else(panic_response);
        access.finish(state, &response);
        response
    }

    async fn dispatch(&self, request: Request) -> Response {
        if request.uri().path().starts_with("/api/v1/") {
            return proxy::proxy(State(self.state.clone()), request).await;
        }
        match self.local.clone().oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// Counts a request in flight until dropped: also when the client hangs up
/// and the request's future is dropped before it answers.
struct InFlight<'a>(&'a Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn not_found() -> Response {
    GatewayError::NotFound.into_response()
}

async fn method_not_allowed() -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method Not Allowed",
    )
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
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().contains_key(X_REQUEST_ID));
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["code"], "internal_error");
        assert_eq!(body["detail"], "Internal error");
    }
}
