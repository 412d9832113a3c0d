//! The Castari surface under `/api/v1`, plus `/_sim/*`.
//!
//! Every `/api/v1` route sits behind [`crate::gate::gate`] (record, faults,
//! auth, limits). `/_sim/*` is outside it: no auth, no limits, not recorded.

mod account;
mod agent_files;
mod agents;
mod buckets;
mod files;
mod invoke;
mod mounts;
mod secrets;
mod transfer;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::Router;

pub use invoke::FAIL_MARKER;

use crate::error::detail;
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
            get(mounts::list).post(mounts::create),
        )
        .route(
            "/api/v1/agents/{slug}/mounts/{id}",
            get(mounts::get).patch(mounts::patch).delete(mounts::delete),
        )
        .route(
            "/api/v1/agents/{slug}/files",
            get(agent_files::list).post(agent_files::attach),
        )
        .route(
            "/api/v1/agents/{slug}/files/sync",
            as_attached_file_id("sync").post(agent_files::sync),
        )
        .route(
            "/api/v1/agents/{slug}/files/{file_id}",
            delete(agent_files::detach),
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
        .route(
            "/api/v1/files/usage",
            as_file_id("usage", Method::GET).get(files::usage),
        )
        .route(
            "/api/v1/files/upload-url",
            as_file_id("upload-url", Method::POST).post(files::upload_url),
        )
        .route(
            "/api/v1/files/confirm-upload",
            as_file_id("confirm-upload", Method::POST).post(files::confirm),
        )
        .route(
            "/api/v1/files/{id}",
            get(files::get).patch(files::patch).delete(files::delete),
        )
        .route("/api/v1/files/{id}/download", get(transfer::download))
        .route("/api/v1/files/{id}/content", get(transfer::content))
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
        .route("/_sim/uploads/{file_id}", put(transfer::presigned_put))
        .route("/_sim/blobs/{file_id}", get(transfer::blob));
    api.merge(sim_routes)
        .layer(DefaultBodyLimit::disable())
        .with_state(sim)
}

/// What `/files/{id}` answers with `word` as the id, for each of its
/// methods but `taken` (the static route's own).
///
/// Starlette takes the first route whose path *and* method match, and
/// answers 405 only when no route does: `GET /files/upload-url` goes on to
/// `GET /files/{id}` and is a 404 (no such file). axum stops at the static
/// route, so its missing methods are spelled out here (outside the
/// route table above: they are the `{id}` route's operations, and
/// `tests/openapi.rs` reads the served operations from the table).
///
/// A method neither route has is 405, and its `Allow` names only the static
/// route's methods: Starlette answers from the first route whose path
/// matched, and the `{id}` route's methods are not the static path's.
fn as_file_id(word: &'static str, taken: Method) -> MethodRouter<Arc<Shared>> {
    let id = move || Seg(word.to_owned());
    let allow = if taken == Method::GET {
        "GET,HEAD"
    } else {
        "POST"
    };
    let mut router = MethodRouter::new().fallback(move || method_not_allowed(allow));
    if taken != Method::GET {
        router = router.get(move |state| files::get(state, id()));
    }
    if taken != Method::PATCH {
        router = router.patch(move |state, body| files::patch(state, id(), body));
    }
    if taken != Method::DELETE {
        router = router.delete(move |state| files::delete(state, id()));
    }
    router
}

/// `DELETE /agents/{slug}/files/{file_id}` with `word` as the file id: see
/// [`as_file_id`].
fn as_attached_file_id(word: &'static str) -> MethodRouter<Arc<Shared>> {
    MethodRouter::new()
        .delete(move |state, Seg(slug): Seg<String>| {
            agent_files::detach(state, Seg((slug, word.to_owned())))
        })
        .fallback(|| method_not_allowed("POST"))
}

/// 405 `{"detail": "Method Not Allowed"}` with `Allow: allow` (written as
/// axum writes it on every other route).
async fn method_not_allowed(allow: &'static str) -> Response {
    let mut response = detail(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

async fn not_found() -> Response {
    detail(StatusCode::NOT_FOUND, "Not Found")
}

/// Path parameters, decoded the way uvicorn and Starlette do it: each
/// `{name}` segment of the matched template is percent-decoded, and bytes
/// that are not UTF-8 become U+FFFD (axum's `Path` would answer a
/// plain-text 400 instead; FastAPI routes the request and answers 404).
#[derive(Debug)]
pub(crate) struct Seg<T>(pub T);

fn segments(parts: &Parts) -> Vec<String> {
    let Some(template) = parts.extensions.get::<MatchedPath>() else {
        return Vec::new();
    };
    template
        .as_str()
        .split('/')
        .zip(parts.uri.path().split('/'))
        .filter(|(t, _)| t.starts_with('{'))
        .map(|(_, raw)| decode(raw))
        .collect()
}

fn decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl<S: Send + Sync> FromRequestParts<S> for Seg<String> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let mut segs = segments(parts).into_iter();
        Ok(Self(segs.next().unwrap_or_default()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Seg<(String, String)> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let mut segs = segments(parts).into_iter();
        let first = segs.next().unwrap_or_default();
        Ok(Self((first, segs.next().unwrap_or_default())))
    }
}

#[cfg(test)]
mod tests {
    use super::decode;

    #[test]
    fn decodes_like_starlette() {
        assert_eq!(decode("MY%20KEY"), "MY KEY");
        assert_eq!(decode("a%2Fb"), "a/b");
        assert_eq!(decode("%FF"), "\u{fffd}");
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
    }
}
