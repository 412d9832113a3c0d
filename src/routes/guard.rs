//! The account's own credentials, guarded in every mode (part of stage 2,
//! admission): the routes that mint or revoke upstream keys
//! ([`CredentialRoute`], read from the route table) and the key the gateway
//! itself holds.
//!
//! - **Open mode** refuses every credential route unless
//!   `auth.open_mode_credential_routes` allows them: without it, any local
//!   tool could take a brand-new full upstream key (`POST /api-keys`) or
//!   revoke the one the whole team relies on. In keys mode they need an
//!   admin-role key (`keys/scope.rs`), which is checked before this.
//! - **The gateway's own key** is never revoked unless
//!   `auth.allow_revoking_gateway_key` allows it: the legacy
//!   `DELETE /auth/api-key` revokes the key that sends it, which through the
//!   gateway is always the gateway's; `DELETE /api-keys/{id}` is checked by
//!   listing the account's keys (`GET /api-keys`, through the shaper like any
//!   request) and comparing the named key's prefix with every credential the
//!   gateway holds. When that cannot be told, the request is refused: a
//!   wrong guess here takes every tool offline.

use axum::body::Body;
use http::{request::Parts, Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde::Deserialize;

use super::call::Call;
use super::forward::forward;
use crate::config::auth::AuthConfig;
use crate::error::GatewayError;
use crate::keys::broker::Caller;
use crate::route::{CredentialRoute, Route};
use crate::state::AppState;
use crate::upstream::path::ApiPath;

/// The most of a `GET /api-keys` answer read for the check.
const LIST_MAX_BYTES: usize = 1 << 20;

/// The checks that need no upstream: open mode's refusal and the legacy
/// revoke of the key in use. Runs after the broker's role checks.
///
/// # Errors
/// 403 `credential_route_refused` or `gateway_key_protected`.
pub(super) fn admit(auth: &AuthConfig, caller: &Caller, route: Route) -> Result<(), GatewayError> {
    let Some(credential) = route.credential else {
        return Ok(());
    };
    if caller.key.is_none() && !auth.open_mode_credential_routes {
        return Err(GatewayError::Forbidden {
            code: "credential_route_refused",
            detail: "Open mode does not send requests that mint or revoke the account's API \
                     keys or sandbox tokens, so local tools never hold or destroy the shared \
                     credential. Use keys mode with an admin-role key, or set \
                     auth.open_mode_credential_routes = true (code: credential_route_refused)"
                .to_string(),
        });
    }
    if credential == CredentialRoute::RevokesKeyInUse && !auth.allow_revoking_gateway_key {
        return Err(protected(format!(
            "DELETE /api/v1/auth/api-key revokes the key that sends it, which through the \
             gateway is the gateway's own upstream key (credential {:?}): every tool behind \
             the gateway would go offline.",
            &**caller.credential.name()
        )));
    }
    Ok(())
}

/// `DELETE /api-keys/{id}`: refused when `{id}` is a key this gateway
/// holds, or when that cannot be told.
///
/// # Errors
/// 403 `gateway_key_protected` or `gateway_key_unconfirmed` (also when the
/// upstream answered the list with anything but 200); the gateway's own
/// refusals of the lookup (503 `circuit_open`, 429, 502 unreachable) as
/// they are.
pub(super) async fn confirm(
    state: &AppState,
    call: &Call,
    parts: &Parts,
) -> Result<(), GatewayError> {
    let revokes_by_id = call.route.credential == Some(CredentialRoute::RevokesById);
    if !revokes_by_id || state.config.auth.allow_revoking_gateway_key {
        return Ok(());
    }
    // `api-keys/{id}[/...]`, empty segments dropped as the route table
    // drops them.
    let mut named = call.path.decoded().iter().filter(|s| !s.is_empty());
    let Some(id) = named.nth(1) else {
        return Ok(());
    };
    let listed = list_keys(state, call, parts).await?;
    let Some(prefix) = listed.prefix_of(id) else {
        // Not a key of this account: the upstream answers 404 itself.
        return Ok(());
    };
    let held = state
        .credentials
        .iter()
        .find(|credential| credential.key_starts_with(prefix));
    match held {
        Some(credential) => Err(protected(format!(
            "API key {id:?} is the upstream key this gateway holds (credential {:?}); \
             revoking it would take every tool behind the gateway offline.",
            &**credential.name()
        ))),
        None if prefix.len() < MIN_PREFIX => Err(unconfirmed(id)),
        None => Ok(()),
    }
}

/// Shorter prefixes could name more than one key.
const MIN_PREFIX: usize = 8;

fn protected(what: String) -> GatewayError {
    GatewayError::Forbidden {
        code: "gateway_key_protected",
        detail: format!(
            "{what} Rotate the gateway's key first, or set auth.allow_revoking_gateway_key = true \
             (code: gateway_key_protected)"
        ),
    }
}

fn unconfirmed(id: &str) -> GatewayError {
    GatewayError::Forbidden {
        code: "gateway_key_unconfirmed",
        detail: format!(
            "The gateway could not tell whether API key {id:?} is the one it holds (the account's \
             key list gave no usable prefix for it), so it did not send the revoke. Revoke it \
             elsewhere, or set auth.allow_revoking_gateway_key = true \
             (code: gateway_key_unconfirmed)"
        ),
    }
}

/// The account's key list could not be read, so the revoke was not sent.
fn list_unread(what: &str) -> GatewayError {
    GatewayError::Forbidden {
        code: "gateway_key_unconfirmed",
        detail: format!(
            "Before revoking an API key the gateway reads the account's key list, to be sure it \
             is not the key the gateway holds; GET /api/v1/api-keys {what}, so the revoke was \
             not sent. Try again shortly, or set auth.allow_revoking_gateway_key = true \
             (code: gateway_key_unconfirmed)"
        ),
    }
}

/// `{"api_keys": [{"id", "prefix"}, ...]}`, the parts read.
#[derive(Deserialize)]
struct Listed {
    api_keys: Vec<Listing>,
}

#[derive(Deserialize)]
struct Listing {
    id: String,
    #[serde(default)]
    prefix: Option<String>,
}

impl Listed {
    /// The named key's prefix: `Some("")` when it is listed without one
    /// (so it cannot be told apart), `None` when it is not listed.
    fn prefix_of(&self, id: &str) -> Option<&str> {
        let listing = self.api_keys.iter().find(|key| key.id == id)?;
        Some(listing.prefix.as_deref().unwrap_or(""))
    }
}

/// Reads the account's key list with the caller's credential, through the
/// last stage like any request (shaper, breaker, retries).
async fn list_keys(state: &AppState, call: &Call, parts: &Parts) -> Result<Listed, GatewayError> {
    let path = ApiPath::parse("/api/v1/api-keys")?;
    let route = Route::read(&Method::GET, path.decoded());
    let lookup = Call {
        path,
        route,
        mark: None,
        ..call.clone()
    };
    let (mut head, ()) = Request::get("/api/v1/api-keys")
        .body(())
        .map_err(|_| GatewayError::Internal)?
        .into_parts();
    if let Some(id) = parts.headers.get(crate::upstream::headers::X_REQUEST_ID) {
        head.headers
            .insert(crate::upstream::headers::X_REQUEST_ID, id.clone());
    }
    let response = forward(state, &lookup, head, Body::empty()).await?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), LIST_MAX_BYTES)
        .collect()
        .await
        .map_err(|_| list_unread("broke off"))?
        .to_bytes();
    if status != StatusCode::OK {
        tracing::warn!(%status, "listing the account's API keys failed; refusing a key revoke");
        return Err(list_unread(&format!("answered {status}")));
    }
    serde_json::from_slice(&body).map_err(|_| {
        tracing::warn!("the account's API key list did not parse; refusing a key revoke");
        list_unread("answered a list the gateway could not read")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_prefix_from_the_list() {
        let listed: Listed = serde_json::from_str(
            r#"{"api_keys":[{"id":"ak_1","name":"a","prefix":"cast_abc12345"},{"id":"ak_2"}]}"#,
        )
        .unwrap();
        assert_eq!(listed.prefix_of("ak_1"), Some("cast_abc12345"));
        assert_eq!(listed.prefix_of("ak_2"), Some(""));
        assert_eq!(listed.prefix_of("ak_3"), None);
    }
}
