//! `/_sim/*`: what the simulator saw, and its fault knobs.
//!
//! | route | what |
//! |---|---|
//! | `GET /_sim/requests` | `{"requests": [RecordedRequest...]}`, oldest first |
//! | `GET /_sim/stats` | [`crate::Stats`] |
//! | `POST /_sim/reset` | clear state, log, counters, windows, faults, revoked keys |
//! | `GET /_sim/faults` | the current [`crate::Faults`] |
//! | `POST /_sim/faults` | replace them with the JSON body |

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde_json::json;

use crate::config::Faults;
use crate::error::detail;
use crate::Shared;

pub(crate) async fn requests(State(sim): State<Arc<Shared>>) -> Response {
    let log: Vec<_> = sim.lock().log.iter().cloned().collect();
    Json(json!({ "requests": log })).into_response()
}

pub(crate) async fn stats(State(sim): State<Arc<Shared>>) -> Response {
    Json(sim.stats()).into_response()
}

pub(crate) async fn reset(State(sim): State<Arc<Shared>>) -> Response {
    sim.reset();
    StatusCode::NO_CONTENT.into_response()
}

pub(crate) async fn get_faults(State(sim): State<Arc<Shared>>) -> Response {
    Json(sim.lock().faults.clone()).into_response()
}

pub(crate) async fn set_faults(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            sim.lock().faults = faults.clone();
            Json(faults).into_response()
        }
        Err(e) => detail(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid faults: {e}"),
        ),
    }
}
