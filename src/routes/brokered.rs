//! The parts of the proxy path that belong to the key broker: the body
//! check of an agent-scoped create, the filtering of an agent-scoped agent
//! list, and the budget and ledger around an invocation.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, StatusCode};
use http_body_util::BodyExt;

use crate::error::GatewayError;
use crate::keys::broker::{Caller, InvocationUsage, Reservation};
use crate::keys::scope::{self, AgentGlobs};
use crate::state::AppState;

/// An agent create body larger than this is not inspected: refused.
const MAX_CREATE_BODY: usize = 64 << 10;
/// Agent lists and invocation answers are read whole up to this size.
const MAX_READ_BODY: usize = 16 << 20;

/// Reads a `POST /agents` body for an agent-scoped key and checks that it
/// names an allowed slug; returns the body to send on.
///
/// # Errors
/// 403 when the slug is missing or outside the globs, 413 when the body is
/// too large to inspect, 400 when it cannot be read.
pub(super) async fn check_create(globs: &AgentGlobs, body: Body) -> Result<Body, GatewayError> {
    let bytes = read(body, MAX_CREATE_BODY).await.map_err(|e| match e {
        ReadError::TooLarge => GatewayError::PayloadTooLarge {
            limit: MAX_CREATE_BODY as u64,
        },
        ReadError::Failed => GatewayError::BadRequest("Request body could not be read"),
    })?;
    scope::check_create(globs, &bytes).map_err(|denial| GatewayError::Forbidden {
        code: denial.code(),
        detail: denial.detail(&http::Method::POST),
    })?;
    Ok(Body::from(bytes))
}

/// Removes the agents outside `globs` from a 200 `GET /agents` answer.
///
/// # Errors
/// 502 when the answer is not an agent list: an unfiltered list is never
/// passed to a scoped key.
pub(super) async fn filter_list(
    globs: &AgentGlobs,
    response: Response,
) -> Result<Response, GatewayError> {
    if response.status() != StatusCode::OK {
        return Ok(response);
    }
    let (mut head, body) = response.into_parts();
    let bytes = read(body, MAX_READ_BODY)
        .await
        .map_err(|_| GatewayError::UpstreamFailed)?;
    let filtered = scope::filter_agent_list(globs, &bytes).ok_or_else(|| {
        tracing::warn!("an agent list could not be filtered for a scoped key");
        GatewayError::UpstreamFailed
    })?;
    // The cache's validators describe the unfiltered list.
    for name in [header::CONTENT_LENGTH, header::ETAG] {
        head.headers.remove(name);
    }
    Ok(Response::from_parts(head, Body::from(filtered)))
}

/// Sends an invocation with its budget reservation held, then records what
/// it cost. Runs in a task of its own, so a client that hangs up does not
/// lose the record of a run it was billed for.
pub(super) async fn invoke<F>(
    state: &AppState,
    caller: &Caller,
    agent: &str,
    streamed: bool,
    send: F,
) -> Result<Response, GatewayError>
where
    F: std::future::Future<Output = Result<Response, GatewayError>> + Send + 'static,
{
    let reservation = state.broker.reserve(caller, agent).await?;
    let (state, caller, agent) = (state.clone(), caller.clone(), agent.to_string());
    let task = tokio::spawn(async move {
        let result = send.await;
        settle(&state, &caller, &agent, reservation, streamed, result).await
    });
    match task.await {
        Ok(result) => result,
        Err(error) => {
            tracing::error!(%error, "invocation accounting task failed");
            Err(GatewayError::Internal)
        }
    }
}

async fn settle(
    state: &AppState,
    caller: &Caller,
    agent: &str,
    reservation: Option<Reservation>,
    streamed: bool,
    result: Result<Response, GatewayError>,
) -> Result<Response, GatewayError> {
    let broker = &state.broker;
    let response = match result {
        Ok(response) => response,
        Err(error) => {
            // It may have run: the reservation is kept until it expires.
            if let Some(reservation) = reservation {
                tracing::warn!(
                    held = %reservation.amount(),
                    "invocation outcome unknown; its budget reservation stays until it expires"
                );
            }
            return Err(error);
        }
    };
    let status = response.status();
    if status.is_client_error() {
        // Refused upstream (agent not active, bad body): nothing ran.
        broker
            .settle_invocation(caller, agent, reservation, None)
            .await;
        return Ok(response);
    }
    if !status.is_success() || streamed {
        // A 5xx may have run; a stream's cost is not known to the gateway.
        return Ok(response);
    }
    let (head, body) = response.into_parts();
    let bytes = match read(body, MAX_READ_BODY).await {
        Ok(bytes) => bytes,
        Err(_) => return Err(GatewayError::UpstreamFailed),
    };
    match InvocationUsage::parse(&bytes) {
        Some(usage) => {
            broker
                .settle_invocation(caller, agent, reservation, Some(usage))
                .await;
        }
        None => tracing::warn!("an invocation answer carried no readable usage"),
    }
    Ok(Response::from_parts(head, Body::from(bytes)))
}

enum ReadError {
    TooLarge,
    Failed,
}

async fn read(body: Body, max: usize) -> Result<Bytes, ReadError> {
    let limited = http_body_util::Limited::new(body, max);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooLarge),
        Err(_) => Err(ReadError::Failed),
    }
}
