//! Who may see the operator page's data and act on it.
//!
//! | client | may |
//! |---|---|
//! | `Authorization: Bearer` with the admin key or an admin-role key | see and act (scripts, `castari-gateway status`) |
//! | a login session cookie (`POST /ui/login`) whose admin is still one | see and act |
//! | open mode, a loopback peer, a loopback `Host` | see and act, no login (like `/admin/queue`) |
//! | anyone else | 401 `login_required` |
//!
//! Acting (the page's POSTs) also needs a same-origin request, unless the
//! admin key came in the `Authorization` header: a browser sends the
//! cookie (and reaches loopback) for any site's form, so the page's own
//! origin must be shown. The loopback `Host` check keeps a DNS-rebound
//! site off an open-mode page.

use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::config::AuthMode;
use crate::console::session::{token_in, Principal};
use crate::error::error_response;
use crate::state::AppState;
use crate::types::Peer;

/// How a client got in.
#[derive(Clone, Debug)]
pub(super) enum Viewer {
    /// Open mode from loopback.
    Loopback,
    /// The admin key (or an admin-role key) in `Authorization`: who, to
    /// check again while streaming.
    Bearer(Principal),
    /// A login session: its token, to check it again while streaming.
    Session(String),
}

/// Why the gate refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refused {
    /// 404 `ui_disabled`.
    Off,
    /// 401 `admin_key_required`: an `Authorization` header, not an admin's.
    NotAdmin,
    /// 401 `login_required`.
    LoginRequired,
    /// 403 `cross_origin`.
    CrossOrigin,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let (status, code, detail) = match self {
            Self::Off => (
                StatusCode::NOT_FOUND,
                "ui_disabled",
                "The operator page is off (ui.enabled = false); set ui.enabled = true to use \
                 it, or use the /admin endpoints",
            ),
            Self::NotAdmin => (
                StatusCode::UNAUTHORIZED,
                "admin_key_required",
                "The Authorization header does not carry the admin key or a key with the admin \
                 role; send one of those, or leave the header out and log in on the page",
            ),
            Self::LoginRequired => (
                StatusCode::UNAUTHORIZED,
                "login_required",
                "This needs a login: log in on the operator page (GET /) with the admin key or \
                 a key with the admin role, or send one as Authorization: Bearer",
            ),
            Self::CrossOrigin => (
                StatusCode::FORBIDDEN,
                "cross_origin",
                "This request did not come from the operator page itself (its Origin or \
                 Sec-Fetch-Site names another site); send it from the page at this gateway's \
                 address, or script the /admin endpoints with the admin key",
            ),
        };
        error_response(status, code, detail)
    }
}

/// 404 when the page is off.
pub(super) fn enabled(state: &AppState) -> Result<(), Refused> {
    if state.config.ui.enabled {
        Ok(())
    } else {
        Err(Refused::Off)
    }
}

/// Whether `request` needs a login to see the page: anything but open
/// mode from loopback.
pub(super) fn login_required(state: &AppState, request: &Parts) -> bool {
    !(state.broker.mode() == AuthMode::Open && loopback(request))
}

/// Who `request` is, or the refusal to answer.
pub(super) async fn viewer(state: &AppState, request: &Parts) -> Result<Viewer, Refused> {
    enabled(state)?;
    let headers = &request.headers;
    if headers.contains_key(header::AUTHORIZATION) {
        let admin = match state.broker.refresh_keys().await {
            Ok(()) => state.broker.admin_principal_in(headers),
            Err(_) => None,
        };
        return admin.map(Viewer::Bearer).ok_or(Refused::NotAdmin);
    }
    if let Some(token) = session_token(headers) {
        if session_valid(state, token).await {
            return Ok(Viewer::Session(token.to_string()));
        }
    }
    if !login_required(state, request) {
        return Ok(Viewer::Loopback);
    }
    Err(Refused::LoginRequired)
}

/// Like [`viewer`], for a request that changes something: also same-origin
/// unless the admin key came in `Authorization`.
pub(super) async fn actor(state: &AppState, request: &Parts) -> Result<Viewer, Refused> {
    let viewer = viewer(state, request).await?;
    if !matches!(viewer, Viewer::Bearer(_)) {
        same_origin(&request.headers)?;
    }
    Ok(viewer)
}

/// Whether `viewer` may still see the page (a stream asks before each
/// message).
pub(super) async fn still_allowed(state: &AppState, viewer: &Viewer) -> bool {
    match viewer {
        Viewer::Loopback => true,
        Viewer::Bearer(principal) => still_admin(state, principal).await,
        Viewer::Session(token) => session_valid(state, token).await,
    }
}

/// Whether the session of `token` is open and its admin still one.
pub(super) async fn session_valid(state: &AppState, token: &str) -> bool {
    match state.console.sessions.find(token) {
        Some(principal) => still_admin(state, &principal).await,
        None => false,
    }
}

/// Whether `principal` is still an admin, by the key table as it is now.
async fn still_admin(state: &AppState, principal: &Principal) -> bool {
    if matches!(principal, Principal::Key(_)) && state.broker.refresh_keys().await.is_err() {
        return false;
    }
    state.broker.still_admin(principal)
}

/// The session token the request's cookie carries.
pub(super) fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(token_in)
}

/// 403 unless the request shows it comes from a page of this origin: an
/// `Origin` naming the `Host` it was sent to, or (no `Origin`)
/// `Sec-Fetch-Site: same-origin`.
pub(super) fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let fetch_site = headers.get("sec-fetch-site").and_then(|s| s.to_str().ok());
    let same = match (origin, host) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host)
        }
        (None, _) => fetch_site == Some("same-origin"),
        (Some(_), None) => false,
    };
    if same {
        Ok(())
    } else {
        Err(Refused::CrossOrigin)
    }
}

/// A loopback peer that named a loopback host.
fn loopback(request: &Parts) -> bool {
    let peer = request
        .extensions
        .get::<Peer>()
        .is_some_and(|peer| peer.remote.ip().is_loopback());
    peer && request
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_none_or(loopback_host)
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn same_origin_needs_the_origin_of_the_host_or_the_fetch_metadata() {
        let ok = |pairs: &[(&'static str, &str)]| same_origin(&headers(pairs)).is_ok();
        assert!(ok(&[
            ("host", "127.0.0.1:8787"),
            ("origin", "http://127.0.0.1:8787")
        ]));
        assert!(ok(&[
            ("host", "gw.internal"),
            ("origin", "https://gw.internal")
        ]));
        assert!(ok(&[
            ("host", "127.0.0.1:8787"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(!ok(&[
            ("host", "127.0.0.1:8787"),
            ("origin", "http://evil.example")
        ]));
        assert!(!ok(&[("host", "127.0.0.1:8787"), ("origin", "null")]));
        assert!(!ok(&[
            ("host", "127.0.0.1:8787"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(!ok(&[("host", "127.0.0.1:8787")]));
        assert!(!ok(&[("origin", "http://127.0.0.1:8787")]));
    }

    #[test]
    fn loopback_hosts_are_names_and_addresses_of_this_machine() {
        for host in [
            "localhost",
            "localhost:8787",
            "127.0.0.1:1",
            "127.9.9.9",
            "[::1]:8787",
            "[::1]",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8787",
            "10.0.0.1:8787",
            "[::2]:80",
            "",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let map = headers(&[("cookie", "a=b"), ("cookie", "castari_gw_session=tok; c=d")]);
        assert_eq!(session_token(&map), Some("tok"));
        assert_eq!(session_token(&HeaderMap::new()), None);
    }
}
