//! `headers`: `Authorization`, `X-API-Key`, `X-Request-Id`, `Prefer`,
//! `Origin`/`Host` (`keys::token`, `Broker::admin_principal_in`, and the
//! private readers through the app: `keys::broker::presented`,
//! `routes::gate::same_origin`).

use std::sync::atomic::{AtomicU32, Ordering};

use axum::body::Body;
use castari_gateway::console::session::Principal;
use castari_gateway::keys::token;
use castari_gateway::types::Peer;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

use crate::gateway::{request, Gateway, ADMIN, TOKEN};
use crate::support::{ensure, inputs, long, mutated, run_corpus, run_fuzz, strung};

/// `Name: value` lines, `$TOKEN` and `$ADMIN` replaced; lines hyper would
/// refuse (no colon, a bad name or value) are left out.
fn header_map(input: &[u8]) -> HeaderMap {
    let text = replace(
        &replace(input, b"$TOKEN", TOKEN.as_bytes()),
        b"$ADMIN",
        ADMIN.as_bytes(),
    );
    let mut map = HeaderMap::new();
    for line in text.split(|b| *b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let value = line[colon + 1..].trim_ascii();
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(value),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    map
}

fn replace(input: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// The documented reading of a local key: `Authorization: Bearer X`
/// (scheme in any case, one space, trimmed) when there is an
/// `Authorization`, else `X-API-Key`, trimmed; never empty.
fn presented_model(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().ok()?.trim();
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        return (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty())
            .then(|| token.to_string());
    }
    let key = headers.get("x-api-key")?.to_str().ok()?.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// RFC 7240 `Prefer: wait=N` (whole seconds; other preferences ignored).
fn prefer_model(headers: &HeaderMap) -> Option<u64> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|preference| {
            let preference = preference.split(';').next()?.trim();
            let (name, value) = preference.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            value.trim().trim_matches('"').parse().ok()
        })
}

/// Same origin: an `Origin` that is `http://` or `https://` and the
/// `Host`, or no `Origin` and `Sec-Fetch-Site: same-origin`.
fn same_origin_model(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://") == Some(host)
                || origin.strip_prefix("https://") == Some(host)
        }
        (None, _) => text("sec-fetch-site") == Some("same-origin"),
        (Some(_), None) => false,
    }
}

/// A fresh client address per login, so the login rate never refuses.
fn next_peer() -> Peer {
    static N: AtomicU32 = AtomicU32::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let remote = std::net::Ipv4Addr::from(0x0a00_0000 | (n & 0x00ff_ffff));
    Peer {
        local: "127.0.0.1:8787".parse().unwrap(),
        remote: (remote, 40_000).into(),
    }
}

/// The headers the gateway reads, in keys mode: the key it finds is the
/// documented one (`Broker::admin_principal_in`, and a proxied request
/// that passes exactly with the declared key), `token::id_of` finds ids
/// only in the `cgw_<id>_<secret>` shape, `X-Request-Id` comes back as
/// sent, `Prefer: wait` is applied as RFC 7240 reads it, and a login is
/// refused as cross-origin exactly when `Origin`/`Host` say so.
fn headers_case(gateway: &Gateway, input: &[u8]) -> Result<String, String> {
    let headers = header_map(input);
    for value in headers.values() {
        let Ok(text) = value.to_str() else { continue };
        if let Some(id) = token::id_of(text) {
            ensure(
                token::valid_id(id) && text.starts_with(&format!("cgw_{id}_")),
                || format!("id {id:?} read from {text:?}"),
            )?;
            ensure(text.len() > 5 + id.len(), || {
                format!("{text:?} has no secret")
            })?;
        }
    }
    let presented = presented_model(&headers);
    let broker = &gateway.state.broker;
    let principal = broker.admin_principal_in(&headers);
    let expected = match presented.as_deref() {
        Some(ADMIN) => "admin key",
        Some(TOKEN) => "key decl1",
        _ => "nobody",
    };
    let found = match &principal {
        Some(Principal::AdminKey(_)) => "admin key",
        Some(Principal::Key(id)) if id == "decl1" => "key decl1",
        Some(Principal::Key(_)) => "another key",
        None => "nobody",
    };
    ensure(found == expected, || {
        format!("the broker found {found}, the headers present {presented:?}")
    })?;
    ensure(broker.is_admin(&headers) == principal.is_some(), || {
        "is_admin and admin_principal_in disagree".to_string()
    })?;

    // A proxied request with the key, request id and wait headers.
    let mut proxied = request(Method::GET, "/api/v1/agents", Body::empty());
    for (name, value) in &headers {
        let kept = [
            header::AUTHORIZATION.as_str(),
            "x-api-key",
            "x-request-id",
            "prefer",
        ];
        if kept.contains(&name.as_str()) {
            proxied.headers_mut().append(name.clone(), value.clone());
        }
    }
    let answer = gateway.send(proxied)?;
    let status = if presented.as_deref() == Some(TOKEN) {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    };
    ensure(answer.status == status, || {
        format!(
            "proxied: {} {:?}, expected {status}",
            answer.status, answer.body
        )
    })?;
    let echoed = answer.headers.get("x-request-id");
    match headers.get("x-request-id") {
        Some(given) => ensure(echoed == Some(given), || {
            format!("request id {given:?} came back as {echoed:?}")
        })?,
        None => ensure(
            echoed.is_some_and(|id| id.as_bytes().starts_with(b"gw-")),
            || format!("made request id {echoed:?}"),
        )?,
    }
    if answer.status == StatusCode::OK {
        let shaper = &gateway.state.config.shaper;
        let cap = shaper.prefer_wait_max_ms.max(shaper.crud_max_wait_ms) / 1_000;
        let expected = prefer_model(&headers).map(|n| format!("wait={}", n.min(cap)));
        let applied = answer
            .headers
            .get("preference-applied")
            .map(|v| v.to_str().unwrap_or("?").to_string());
        ensure(applied == expected, || {
            format!("Preference-Applied {applied:?}, expected {expected:?}")
        })?;
    }

    // A login with the origin headers (and a key that is not one).
    let mut login = request(Method::POST, "/ui/login", r#"{"key":"not-a-key"}"#);
    for (name, value) in &headers {
        if ["origin", "host", "sec-fetch-site"].contains(&name.as_str()) {
            login.headers_mut().append(name.clone(), value.clone());
        }
    }
    login.extensions_mut().insert(next_peer());
    let same = same_origin_model(&headers);
    let login = gateway.send(login)?;
    let (status, code) = if same {
        (StatusCode::UNAUTHORIZED, "login_failed")
    } else {
        (StatusCode::FORBIDDEN, "cross_origin")
    };
    ensure(login.status == status && login.code() == code, || {
        format!(
            "login: {} {}, expected {status} {code}",
            login.status,
            login.code()
        )
    })?;
    Ok(format!("{found} {} {}", answer.status, login.status))
}

const HEADER_DICT: &[&str] = &[
    "\n",
    "\r\n",
    "Authorization: ",
    "authorization:",
    "X-API-Key: ",
    "Bearer ",
    "bearer",
    "Basic ",
    "$TOKEN",
    "$ADMIN",
    "cgw_",
    "_",
    "decl1",
    " ",
    "\t",
    "Origin: ",
    "Host: ",
    "http://",
    "https://",
    "localhost",
    "127.0.0.1:8787",
    "Sec-Fetch-Site: same-origin",
    "X-Request-Id: ",
    "Prefer: ",
    "wait=",
    "wait=99999999999999999999",
    "\"",
    ",",
    ";",
    "é",
    "\0",
    "\u{FEFF}",
    "Bearer $TOKEN",
    "bearer  $TOKEN ",
    "Bearer $ADMIN",
    " $TOKEN",
];

/// Whole values the gateway reads.
const HEADER_VALUES: &[&str] = &[
    "Bearer $TOKEN",
    "$TOKEN",
    "Bearer $ADMIN",
    "http://localhost",
    "localhost",
    "same-origin",
    "wait=5",
    "req-1",
];

const HEADER_NAMES: &[&str] = &[
    "Authorization",
    "X-API-Key",
    "Origin",
    "Host",
    "Sec-Fetch-Site",
    "X-Request-Id",
    "Prefer",
];

/// Long header lines, made here rather than committed.
fn long_inputs() -> Vec<(String, Vec<u8>)> {
    vec![
        long(
            "long_bearer",
            format!("Authorization: Bearer cgw_decl1_{}\n", "a".repeat(64 << 10)),
        ),
        long("many_keys", "X-API-Key: nope\n".repeat(2_000)),
        long(
            "long_origin",
            format!("Origin: http://{0}\nHost: {0}\n", "h".repeat(32 << 10)),
        ),
    ]
}

#[test]
fn headers_corpus() {
    let gateway = Gateway::new(true);
    run_corpus("headers", inputs("headers", long_inputs()), |input| {
        headers_case(&gateway, input)
    });
}

#[test]
fn headers_fuzz() {
    let gateway = Gateway::new(true);
    let value = prop_oneof![
        select(HEADER_VALUES).prop_map(|v| v.as_bytes().to_vec()),
        strung("", HEADER_DICT, 4),
    ];
    let line = (select(HEADER_NAMES), value)
        .prop_map(|(name, value)| [name.as_bytes(), b": ", &value, b"\n"].concat());
    let shaped = vec(line, 0..5).prop_map(|lines| lines.concat()).boxed();
    run_fuzz(
        "headers",
        256,
        mutated("headers", HEADER_DICT, shaped),
        |input| headers_case(&gateway, input),
    );
}
