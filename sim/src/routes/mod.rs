//! The Castari surface under `/api/v1`, plus `/_sim/*`.
//!
//! Every `/api/v1` route sits behind [`crate::gate::gate`] (record, faults,
//! auth, limits). `/_sim/*` is outside it: no auth, no limits, not recorded.

mod account;
mod agents;
mod buckets;
pub(crate) mod files;
mod invoke;
mod secrets;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;

pub use invoke::FAIL_MARKER;

use crate::error::{detail, invalid};
use crate::Shared;

/// Builds the simulator's router.
pub(crate) fn router(sim: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/api/v1/auth/me", get(account::me))
        .route(
            "/api/v1/auth/api-key",
            post(account::legacy_create).delete(account::legacy_revoke),
        )
        .route(
            "/api/v1/api-keys",
            get(account::list_keys).post(account::create_key),
        )
        .route("/api/v1/api-keys/{id}", delete(account::delete_key))
        .route("/api/v1/usage", get(account::usage))
        .route("/api/v1/usage/daily", get(account::daily))
        .route("/api/v1/agents", get(agents::list).post(agents::create))
        .route(
            "/api/v1/agents/{slug}",
            get(agents::get).patch(agents::patch).delete(agents::delete),
        )
        .route("/api/v1/agents/{slug}/deploy", post(agents::deploy))
        .route("/api/v1/agents/{slug}/redeploy", post(agents::deploy))
        .route(
            "/api/v1/agents/{slug}/upload-code",
            post(agents::upload_code),
        )
        .route("/api/v1/agents/{slug}/sandbox", delete(agents::stop))
        .route("/api/v1/agents/{slug}/stop", post(agents::stop))
        .route("/api/v1/agents/{slug}/invoke", post(invoke::invoke))
        .route("/api/v1/agents/{slug}/invocations", get(invoke::history))
        .route("/api/v1/agents/{slug}/sessions", get(invoke::sessions))
        .route(
            "/api/v1/agents/{slug}/sessions/{id}",
            delete(invoke::delete_session),
        )
        .route(
            "/api/v1/agents/{slug}/secrets",
            get(secrets::list).post(secrets::upsert),
        )
        .route(
            "/api/v1/agents/{slug}/secrets/{key}",
            delete(secrets::delete),
        )
        .route(
            "/api/v1/agents/{slug}/mounts",
            get(buckets::mounts).post(buckets::create_mount),
        )
        .route(
            "/api/v1/agents/{slug}/mounts/{id}",
            get(buckets::get_mount)
                .patch(buckets::patch_mount)
                .delete(buckets::delete_mount),
        )
        .route(
            "/api/v1/agents/{slug}/files",
            get(files::agent_files).post(files::attach),
        )
        .route("/api/v1/agents/{slug}/files/sync", post(files::sync))
        .route(
            "/api/v1/agents/{slug}/files/{file_id}",
            delete(files::detach),
        )
        .route("/api/v1/buckets", get(buckets::list).post(buckets::create))
        .route(
            "/api/v1/buckets/{slug}",
            get(buckets::get)
                .patch(buckets::patch)
                .delete(buckets::delete),
        )
        .route(
            "/api/v1/buckets/{slug}/credentials",
            post(buckets::set_credentials).delete(buckets::delete_credentials),
        )
        .route("/api/v1/buckets/{slug}/test", post(buckets::test))
        .route("/api/v1/buckets/{slug}/upload-url", post(buckets::presign))
        .route(
            "/api/v1/buckets/{slug}/download-url",
            post(buckets::presign),
        )
        .route("/api/v1/buckets/{slug}/files", get(buckets::files))
        .route("/api/v1/files", get(files::list).post(files::upload))
        .route("/api/v1/files/usage", get(files::usage))
        .route("/api/v1/files/upload-url", post(files::upload_url))
        .route("/api/v1/files/confirm-upload", post(files::confirm))
        .route(
            "/api/v1/files/{id}",
            get(files::get).patch(files::patch).delete(files::delete),
        )
        .route("/api/v1/files/{id}/download", get(files::download))
        .route("/api/v1/files/{id}/content", get(files::content))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            crate::gate::gate,
        ));
    let sim_routes = Router::new()
        .route("/_sim/requests", get(crate::introspect::requests))
        .route("/_sim/stats", get(crate::introspect::stats))
        .route("/_sim/reset", post(crate::introspect::reset))
        .route(
            "/_sim/faults",
            get(crate::introspect::get_faults).post(crate::introspect::set_faults),
        )
        .route("/_sim/uploads/{file_id}", put(files::presigned_put))
        .route("/_sim/blobs/{file_id}", get(files::blob));
    api.merge(sim_routes)
        .layer(DefaultBodyLimit::disable())
        .with_state(sim)
}

async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

/// `limit` (1..=100, default `default`) and `offset` (≥ 0, default 0).
pub(crate) fn page(
    q: &HashMap<String, String>,
    default: usize,
) -> Result<(usize, usize), Response> {
    let limit = match q.get("limit") {
        None => default,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| {
                invalid(
                    &["query", "limit"],
                    "ensure this value is between 1 and 100",
                    "value_error.number",
                )
            })?,
    };
    let offset = match q.get("offset") {
        None => 0,
        Some(v) => v.parse::<usize>().map_err(|_| {
            invalid(
                &["query", "offset"],
                "ensure this value is greater than or equal to 0",
                "value_error.number",
            )
        })?,
    };
    Ok((limit, offset))
}
