//! The last stage: the shaper's turn and the upstream send, in the one
//! attempt loop of the gateway (breaker, admission, send, 429 absorption,
//! safe retries).
//!
//! Each attempt: the breaker fails fast while the upstream is down (before
//! spending budget); with shaping on, the request waits for its lane's
//! budget (`shaper/`), else it goes at once; the send mark is set; the
//! request goes upstream, an invocation from a task of its own. An upstream
//! 429 on a replayable body goes back to the head of the queue; a failure
//! the retry policy allows (`upstream/retry.rs`) is sent again after its
//! backoff. Shaping-specific pieces (holding replayable bodies, session
//! turns, `Prefer: wait`) are in `shaped.rs`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use http::{request::Parts, HeaderValue};

use super::call::Call;
use super::shaped::{self, Prepared};
use crate::error::GatewayError;
use crate::shaper::sessions::Turn;
use crate::shaper::{Lane, Ticket};
use crate::state::AppState;
use crate::upstream::retry::Attempts;
use crate::upstream::{BodyLimits, Outbound};

/// Sends `call` upstream: through its credential's shaper when shaping is
/// on, with the breaker and safe retries either way.
pub(super) async fn forward(
    state: &AppState,
    call: &Call,
    parts: Parts,
    body: Body,
) -> Result<Response, GatewayError> {
    let shaper = call.credential.shaper();
    let lane = Lane::of(call.route.class);
    let mut body = match shaper {
        Some(_) => {
            let replay_max = state.config.shaper.replay_max_bytes;
            shaped::read_replayable(body, lane, replay_max, call.limits).await?
        }
        // Without the shaper, bodies are not held: only bodiless requests
        // are retried.
        None => Prepared::unread(body),
    };
    // Only the shaper keeps it (a ticket's agent, a session's turn).
    let agent = shaper
        .and(call.path.agent())
        .map(std::sync::Arc::<str>::from);
    // Time spent waiting on others goes to `call.elsewhere`: the overhead
    // metric leaves it out, whether the request ends well or not.
    let mut turn = match (shaper, &agent) {
        (Some(shaper), Some(agent)) if lane == Lane::Invoke => {
            let asked = Instant::now();
            let turn = shaped::turn(shaper, agent, body.session()).await;
            call.elsewhere.add(asked.elapsed());
            turn
        }
        _ => None,
    };
    let uri = call
        .path
        .upstream_uri_for(state.upstream.prepared_base(), &parts.uri)
        .map_err(|_| GatewayError::Internal)?;
    let applied = shaper.and_then(|shaper| shaped::applied_wait(shaper, lane, &parts.headers));
    let mut ticket = shaper.map(|shaper| Ticket {
        lane,
        client: shaped::client_id(shaper, call, &parts.headers),
        agent,
        retry: false,
        arrived: Instant::now(),
        max_wait: applied,
    });
    let mut waited = Duration::ZERO;
    let mut queued = false;
    state.retrier.deposit();
    let mut attempts = Attempts::default();
    loop {
        // Fail fast while the upstream is down, before spending budget.
        state.breaker.admit()?;
        let asked = Instant::now();
        let admitted = match (shaper, &ticket) {
            (Some(shaper), Some(ticket)) => Some(shaper.admit(ticket.clone()).await?),
            _ => None,
        };
        if let Some(admitted) = &admitted {
            waited += admitted.waited;
            queued |= admitted.queued;
        }
        if let Some(mark) = &call.mark {
            mark.mark();
        }
        let outbound = Outbound {
            method: parts.method.clone(),
            uri: uri.clone(),
            headers: parts.headers.clone(),
            body: body.take(),
            class: call.route.class,
            authorization: call.credential.authorization().clone(),
        };
        let (result, returned) = send(state, outbound, call.limits, lane, turn.take()).await;
        call.elsewhere.add(asked.elapsed());
        turn = returned;
        state.breaker.record(&result);
        if let (None, Ok(response)) = (shaper, &result) {
            call.credential.seen().record(lane, response.headers());
        }
        if let (Some(shaper), Some(admitted), Ok(response)) = (shaper, &admitted, &result) {
            let limited = shaper.observe(
                lane,
                response.status(),
                response.headers(),
                admitted.sent_at,
            );
            if limited && body.replayable() {
                if let Some(ticket) = &mut ticket {
                    ticket.retry = true;
                }
                continue;
            }
        }
        let replayable = body.replayable();
        if let Some(delay) =
            state
                .retrier
                .again(call.route.safety, &mut attempts, &result, replayable)
        {
            drop(result);
            tokio::time::sleep(delay).await;
            call.elsewhere.add(delay);
            if let Some(ticket) = &mut ticket {
                ticket.retry = true;
            }
            continue;
        }
        let response = attempts.finish(&parts.method, result?);
        let mut response = match turn {
            Some(turn) => shaped::hold_until_done(response, turn),
            None => response,
        };
        if queued {
            response.headers_mut().insert(
                shaped::QUEUE_WAIT_HEADER,
                HeaderValue::from(waited.as_millis() as u64),
            );
        }
        if let Some(applied) = applied {
            shaped::preference_applied(&mut response, applied);
        }
        return Ok(response);
    }
}

/// Sends one attempt. Invocations go from a task of their own: once sent,
/// a client that hangs up does not abort the run (it goes on upstream and
/// is billed either way), and the task owns the session turn until the
/// upstream answers.
async fn send(
    state: &AppState,
    outbound: Outbound,
    limits: BodyLimits,
    lane: Lane,
    turn: Option<Turn>,
) -> (Result<Response, GatewayError>, Option<Turn>) {
    if lane != Lane::Invoke {
        return (state.upstream.forward(outbound, limits).await, turn);
    }
    let task_state = state.clone();
    let task = tokio::spawn(async move {
        let result = task_state.upstream.forward(outbound, limits).await;
        (result, turn)
    });
    match task.await {
        Ok(done) => done,
        Err(join_error) => {
            tracing::error!(%join_error, "invocation task failed");
            (Err(GatewayError::Internal), None)
        }
    }
}
