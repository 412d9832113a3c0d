//! `GET /admin/events` (server-sent events) and `GET /admin/snapshot`
//! (the same picture once, as JSON, for scripts and `status`).
//!
//! A stream starts with `hello` (fifteen minutes of history and a fresh
//! snapshot, which carries the newest 100 requests), then relays the sampler's messages:
//! `snapshot` about once a second, and `queue`, `breaker` and `reload`
//! events. Every stream reads the same serialized messages: an open page
//! costs no snapshot of its own and nothing upstream. A stream ends when
//! its session ends (logout, expiry), when the key it was opened with is
//! no admin's any more (an admin-role key revoked, expired or moved to
//! another role), after a reload (the page reconnects within a second to
//! the new version, where a changed admin key ends its session), or when
//! the gateway shuts down.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::broadcast::error::RecvError;

use crate::console::Feed;
use crate::state::AppState;

use super::gate::{self, Viewer};
use super::reply::no_store;

/// `GET /admin/snapshot`.
pub async fn snapshot(State(state): State<AppState>, request: Request) -> Response {
    let (request, _) = request.into_parts();
    if let Err(refused) = gate::viewer(&state, &request).await {
        return refused.into_response();
    }
    no_store(axum::Json(crate::view::full(&state).await).into_response())
}

/// `GET /admin/events`.
pub async fn events(State(state): State<AppState>, request: Request) -> Response {
    let (request, _) = request.into_parts();
    let viewer = match gate::viewer(&state, &request).await {
        Ok(viewer) => viewer,
        Err(refused) => return refused.into_response(),
    };
    // Subscribed before the hello is built: nothing falls between.
    let feed = state.console.subscribe();
    let snapshot = crate::view::full(&state).await;
    let hello = serde_json::json!({
        "history": {
            "step_ms": crate::view::sampler::EVERY.as_millis() as u64,
            "points": serde_json::value::RawValue::from_string(state.console.history_json()).ok(),
        },
        "snapshot": snapshot,
    });
    let stream = Stream {
        state: state.clone(),
        viewer,
        feed,
        closed: Box::pin(state.console.closed()),
        hello: Some(
            Event::default()
                .event("hello")
                .retry(RECONNECT)
                .data(hello.to_string()),
        ),
        ending: false,
    };
    let mut response = Sse::new(futures_util::stream::unfold(stream, Stream::next))
        .keep_alive(KeepAlive::default())
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies in front must pass each event on at once.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// How soon a page's `EventSource` reconnects after a stream ends.
const RECONNECT: std::time::Duration = std::time::Duration::from_secs(1);

struct Stream {
    /// The configuration version the stream was opened on.
    state: AppState,
    viewer: Viewer,
    feed: Feed,
    closed: Pin<Box<dyn Future<Output = ()> + Send>>,
    hello: Option<Event>,
    /// A newer configuration serves: this was the last message.
    ending: bool,
}

impl Stream {
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Self)> {
        if let Some(hello) = self.hello.take() {
            return Some((Ok(hello), self));
        }
        if self.ending {
            return None;
        }
        loop {
            let message = tokio::select! {
                () = &mut self.closed => return None,
                message = self.feed.recv() => message,
            };
            match message {
                Ok(message) => {
                    if !gate::still_allowed(&self.state, &self.viewer).await {
                        return None;
                    }
                    // Checked by the version it was opened on: after a
                    // reload it sends this message and ends, and the page
                    // comes back to the new version (a changed admin key
                    // ends its session there).
                    self.ending = self.state.console.outdated(self.state.version);
                    let event = Event::default().event(message.event).data(&*message.data);
                    return Some((Ok(event), self));
                }
                // A slow reader missed some: the next snapshot is whole.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
