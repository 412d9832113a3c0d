//! `GET /` and `/ui/*`: the operator page's files, compiled into the
//! binary (`assets/ui/`: plain HTML, CSS and JavaScript, no build step),
//! served with a strict Content-Security-Policy: scripts and styles from
//! this origin only, nothing inline, no frames, no other hosts.
//!
//! The files carry no data: everything shown comes from
//! `/admin/events` after the gate (`gate.rs`), so they need no login.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::state::AppState;

/// The page's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
base-uri 'none'";

/// `(path, content type, bytes)` of every file.
pub const ASSETS: [(&str, &str, &[u8]); 4] = [
    (
        "/ui",
        "text/html; charset=utf-8",
        include_bytes!("../../assets/ui/index.html"),
    ),
    (
        "/ui/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/ui/app.js"),
    ),
    (
        "/ui/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/ui/app.css"),
    ),
    (
        "/ui/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../assets/ui/favicon.svg"),
    ),
];

/// `GET /` and `GET /ui`: the page.
pub async fn index(State(state): State<AppState>) -> Response {
    file(&state, "/ui")
}

/// `GET /ui/app.js`.
pub async fn script(State(state): State<AppState>) -> Response {
    file(&state, "/ui/app.js")
}

/// `GET /ui/app.css`.
pub async fn style(State(state): State<AppState>) -> Response {
    file(&state, "/ui/app.css")
}

/// `GET /ui/favicon.svg`.
pub async fn icon(State(state): State<AppState>) -> Response {
    file(&state, "/ui/favicon.svg")
}

fn file(state: &AppState, path: &str) -> Response {
    if let Err(off) = super::gate::enabled(state) {
        return off.into_response();
    }
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(p, _, _)| *p == path) else {
        return crate::error::GatewayError::NotFound.into_response();
    };
    let mut response = (StatusCode::OK, *bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Revalidated each time: a new binary's files are seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(headers);
    response
}

/// The headers every page response carries.
pub(super) fn secure(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_files_are_small_and_nothing_runs_inline() {
        let total: usize = ASSETS.iter().map(|(_, _, b)| b.len()).sum();
        assert!(total < 250 * 1024, "assets are {total} bytes");
        let html = std::str::from_utf8(ASSETS[0].2).unwrap();
        assert!(!html.contains("style="), "inline style in index.html");
        assert!(!html.contains("<style"), "inline style element");
        for script in html.split("<script").skip(1) {
            let tag = script.split('>').next().unwrap();
            assert!(
                tag.contains("src=\"/ui/"),
                "inline or foreign script: {tag}"
            );
        }
        for (path, _, bytes) in ASSETS {
            // The SVG namespace is a name, not a place the page loads from.
            let text = String::from_utf8_lossy(bytes).replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{path} names another host"
            );
            assert!(
                !text.contains("localStorage") && !text.contains("sessionStorage"),
                "{path}"
            );
        }
    }
}
