//! The parts of the proxy path that belong to the key broker: the body
//! check of an agent-scoped create, the filtering of an agent-scoped agent
//! list, and the budget and ledger around an invocation.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, StatusCode};
use http_body_util::BodyExt;
use tokio::sync::oneshot;

use crate::cache::flight::SendMark;
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
        ReadError::TooLarge => GatewayError::HeldBodyTooLarge {
            limit: MAX_CREATE_BODY as u64,
            held: "to check the slug of an agent created by a key limited to some agents; send \
                   a smaller body, or create the agent with a key not limited to agents",
        },
        ReadError::Failed => GatewayError::BadRequest("The request body could not be read whole"),
    })?;
    scope::check_create(globs, &bytes).map_err(|denial| denial.forbidden(&http::Method::POST))?;
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
/// it cost. It runs in a task of its own, so a client that hangs up once
/// it is sent (`sent` marked) does not lose the record of a run it is
/// billed for. Before that, nothing has run: a client that hangs up while
/// the invocation waits for its lane's budget or its session's turn takes
/// it back (it is never sent and leaves the queue), and a refusal or
/// failure before the send (the queue, the breaker, the client's body)
/// frees the reservation at once too. An invocation sent once and waiting
/// again (after an upstream 429 or a retry's backoff) stays marked: it runs
/// to its end.
pub(super) async fn invoke<F>(
    state: &AppState,
    caller: &Caller,
    agent: &str,
    streamed: bool,
    sent: SendMark,
    send: F,
) -> Result<Response, GatewayError>
where
    F: std::future::Future<Output = Result<Response, GatewayError>> + Send + 'static,
{
    let (state, caller, agent) = (state.clone(), caller.clone(), agent.to_string());
    // Dropped with this future when the client hangs up.
    let (_client, gone) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        // Reserved in the task: a hang-up during the store's write cannot
        // lose the reservation it makes.
        let reservation = match state.broker.reserve(&caller, &agent).await {
            Ok(reservation) => reservation,
            Err(error) => return Some(Err(error)),
        };
        match unless_left_unsent(send, &sent, gone).await {
            Some(result) if sent.sent().is_some() => {
                Some(settle(&state, &caller, &agent, reservation, streamed, result).await)
            }
            // Never sent (the client left, or it was refused first): nothing
            // ran, and the reservation goes back at once.
            unsent => {
                let broker = &state.broker;
                broker
                    .settle_invocation(&caller, &agent, reservation, None)
                    .await;
                unsent
            }
        }
    });
    match task.await {
        Ok(Some(result)) => result,
        // Only once the client is gone, when nobody reads this.
        Ok(None) => Err(GatewayError::Internal),
        Err(error) => {
            tracing::error!(%error, "invocation accounting task failed");
            Err(GatewayError::Internal)
        }
    }
}

/// Runs `send` to its end, unless the client leaves (`gone`) before `sent`
/// is marked: then `send` is dropped where it waits, and `None`.
///
/// `gone` is looked at first, so a send the queue has just let go is not
/// started for a client that already left. `send` only moves when this
/// polls it, so the mark read after `gone` cannot change under the read:
/// unmarked, nothing has gone upstream.
async fn unless_left_unsent<F: std::future::Future>(
    send: F,
    sent: &SendMark,
    mut gone: oneshot::Receiver<()>,
) -> Option<F::Output> {
    let mut send = std::pin::pin!(send);
    tokio::select! {
        biased;
        _ = &mut gone => {}
        output = &mut send => return Some(output),
    }
    // Unmarked: nothing has gone upstream, so nothing is lost by leaving.
    sent.sent()?;
    Some(send.await)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A send that waits `wait`, marks itself sent, then runs `run`.
    async fn waiting_send(mark: SendMark, wait: Duration, run: Duration) -> &'static str {
        tokio::time::sleep(wait).await;
        mark.mark();
        tokio::time::sleep(run).await;
        "ran"
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_leaving_before_the_send_drops_it() {
        let mark = SendMark::default();
        let (client, gone) = oneshot::channel::<()>();
        let send = waiting_send(mark.clone(), Duration::from_secs(5), Duration::from_secs(1));
        let task = tokio::spawn(async move { unless_left_unsent(send, &mark, gone).await });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(client);
        assert_eq!(task.await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_leaving_after_the_send_lets_it_finish() {
        let mark = SendMark::default();
        let (client, gone) = oneshot::channel::<()>();
        let send = waiting_send(mark.clone(), Duration::from_secs(1), Duration::from_secs(5));
        let task = tokio::spawn(async move { unless_left_unsent(send, &mark, gone).await });
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(client);
        assert_eq!(task.await.unwrap(), Some("ran"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stays_gets_the_answer() {
        let mark = SendMark::default();
        let (_client, gone) = oneshot::channel::<()>();
        let send = waiting_send(mark.clone(), Duration::from_secs(1), Duration::from_secs(1));
        assert_eq!(unless_left_unsent(send, &mark, gone).await, Some("ran"));
    }
}
