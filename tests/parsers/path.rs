//! `path`: the raw request path (`upstream::path::ApiPath`), read alone
//! and through the app.

use axum::body::Body;
use castari_gateway::cache::key::decode_path;
use castari_gateway::upstream::path::{ApiPath, UpstreamBase};
use http::{Method, StatusCode};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;

use crate::gateway::{request, Gateway, MAX_TARGET_BYTES};
use crate::support::{ensure, inputs, long, mutated, run_corpus, run_fuzz, strung};

const PATH_DICT: &[&str] = &[
    "/",
    "//",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "%00",
    "%0a",
    "%0D",
    "%09",
    "%C2%85",
    "%c0%af",
    "%c0%ae",
    "%ff",
    "%EF%BB%BF",
    "%",
    "%zz",
    "%2",
    "?",
    "#",
    ";",
    "\t",
    " ",
    "\\",
    "agents",
    "invoke",
    "%69nvoke",
    "stream",
    "sandbox",
    "api",
    "v1",
    "/api/v1/",
    "é",
    "\u{2215}",
    "\u{FF0E}",
    "\u{85}",
    "\0",
];

/// Long paths, made here rather than committed: the 16 KiB target limit
/// from both sides, by path and by query, and far past it (past 65,534
/// bytes `http::Uri`, so hyper, refuses them: only `path_case` reads
/// those).
fn long_inputs() -> Vec<(String, Vec<u8>)> {
    vec![
        long("many_segments", format!("/api/v1/{}", "a/".repeat(20_000))),
        long(
            "long_escapes",
            format!("/api/v1/agents/{}", "%41".repeat(30_000)),
        ),
        long(
            "many_dots",
            format!("/api/v1/{}", "%2e%2e%2f".repeat(10_000)),
        ),
        long(
            "long_unicode",
            format!("/api/v1/agents/{}", "é".repeat(5_000)),
        ),
        // Refused by `ApiPath` too: the 414 comes first.
        long(
            "dots_over_limit",
            format!("/api/v1/{}", "%2e%2e%2f".repeat(1_820)),
        ),
        long("target_at_limit", long_path(MAX_TARGET_BYTES)),
        long("target_over_limit", long_path(MAX_TARGET_BYTES + 1)),
        long("query_over_limit", {
            let path = "/api/v1/agents?q=";
            format!("{path}{}", "x".repeat(MAX_TARGET_BYTES + 1 - path.len()))
        }),
        long("uri_limit", uri_limit_path()),
    ]
}

/// `/api/v1/agents/aaa...`, `len` bytes.
pub(crate) fn long_path(len: usize) -> String {
    let path = "/api/v1/agents/";
    format!("{path}{}", "a".repeat(len - path.len()))
}

/// A path `http::Uri` (so hyper) takes, 65,534 bytes: the longest.
pub(crate) fn uri_limit_path() -> String {
    long_path(65_534)
}

/// The upstream bases a path is joined to.
fn bases() -> [url::Url; 2] {
    [
        url::Url::parse("http://127.0.0.1:9/").unwrap(),
        url::Url::parse("https://api.example:8443/castari/").unwrap(),
    ]
}

/// `segment` with every unreserved character percent-encoded (escapes
/// already there kept): the same decoded segment, written another way.
fn encode_unreserved(segment: &str, upper: bool) -> String {
    let bytes = segment.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let escape = b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
        if escape {
            out.push_str(&segment[i..i + 3]);
            i += 3;
            continue;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push_str(&if upper {
                format!("%{b:02X}")
            } else {
                format!("%{b:02x}")
            });
            i += 1;
            continue;
        }
        let len = segment[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&segment[i..i + len]);
        i += len;
    }
    out
}

/// The same path with every segment's unreserved characters encoded.
pub(crate) fn encoded_variant(path: &ApiPath, upper: bool) -> String {
    let segments: Vec<String> = path
        .segments()
        .iter()
        .map(|s| encode_unreserved(s, upper))
        .collect();
    format!("/api/v1/{}", segments.join("/"))
}

/// `ApiPath::parse` on a raw path: 404 outside `/api/v1/`, 400 for a bad
/// segment, else segments kept as sent, decoded ones with no separator,
/// NUL or dot segment, raw ones with no control character, an upstream
/// URL with exactly those segments under the base (the fast URI the same
/// as `url`'s for every path the gateway forwards), and the same reading
/// when unreserved characters are percent-encoded.
fn path_case(input: &[u8]) -> Result<String, String> {
    let raw = String::from_utf8_lossy(input);
    let under_api = raw.starts_with("/api/v1/");
    let path = match ApiPath::parse(&raw) {
        Err(error) => {
            let status = error.status();
            let expected = if under_api { 400 } else { 404 };
            ensure(status == expected, || {
                format!("refused with {status}, expected {expected}: {error:?}")
            })?;
            return Ok(format!("refused {status}"));
        }
        Ok(path) => path,
    };
    ensure(under_api, || "accepted outside /api/v1/".to_string())?;
    let rest = &raw["/api/v1/".len()..];
    ensure(path.segments().join("/") == rest, || {
        format!("segments {:?} are not the path as sent", path.segments())
    })?;
    let decoded = path.decoded();
    ensure(decoded.len() == path.segments().len(), || {
        "one decoded segment per segment".to_string()
    })?;
    for (segment, raw) in decoded.iter().zip(path.segments()) {
        ensure(
            !segment.contains(['/', '\\', '\0']) && &**segment != "." && &**segment != "..",
            || format!("decoded segment {segment:?} should have been refused"),
        )?;
        // A raw tab or newline is dropped by the URL builder (`.<TAB>.`
        // would become `..`); encoded ones are forwarded encoded.
        ensure(!raw.chars().any(char::is_control), || {
            format!("raw segment {raw:?} should have been refused")
        })?;
    }
    ensure(decode_path(path.segments()) == *decoded, || {
        "cache::key::decode_path reads it otherwise".to_string()
    })?;
    // Only for a path hyper can hand over (an `http::Uri`: else the client
    // got its 400 or 414 from hyper already) that the gateway forwards
    // (longer ones are its own 414: `path_app_case`).
    let forwarded = raw.len() <= MAX_TARGET_BYTES
        && http::Uri::try_from(&*raw).is_ok_and(|uri| uri.path() == raw);
    for base in bases() {
        let url = path.to_upstream_url(&base, None);
        if forwarded {
            let uri = path
                .to_upstream_uri(&UpstreamBase::new(&base), None)
                .map_err(|e| format!("no upstream URI for a forwarded path ({e}): a 500"))?
                .to_string();
            ensure(uri == url.as_str(), || {
                format!("fast URI {uri} is not the url one {url}")
            })?;
        }
        let prefix = format!("{}/api/v1/", base.path().trim_end_matches('/'));
        let sent = url
            .path()
            .strip_prefix(&prefix)
            .ok_or_else(|| format!("upstream path {} escapes {prefix}", url.path()))?;
        let upstream: Vec<String> = sent
            .split('/')
            .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
            .collect();
        let ours: Vec<&str> = decoded.iter().map(|s| &**s).collect();
        ensure(upstream == ours, || {
            format!("the upstream reads {upstream:?}, the gateway {ours:?}")
        })?;
    }
    for upper in [false, true] {
        let variant = encoded_variant(&path, upper);
        let other = ApiPath::parse(&variant).map_err(|e| format!("{variant} refused: {e:?}"))?;
        ensure(other.decoded() == decoded, || {
            format!("{variant} decodes to {:?}", other.decoded())
        })?;
        ensure(other.agent() == path.agent(), || {
            format!("{variant} names another agent")
        })?;
    }
    let mut stop = path.clone();
    stop.rewrite_sdk_stop(&Method::DELETE);
    ensure(decode_path(stop.segments()) == *stop.decoded(), || {
        "the SDK stop rewrite left segments and decoded apart".to_string()
    })?;
    Ok(format!("{decoded:?}"))
}

/// `GET <raw>` through the app, for a target hyper hands over under
/// `/api/v1/`: over 16 KiB of path and query, 414 `uri_too_long` before
/// anything else and nothing sent; else never a 414 or a 500, a path
/// `ApiPath` refuses gets its status and nothing is sent, and what is sent
/// goes to the upstream path `to_upstream_url` makes.
fn path_app_case(gateway: &Gateway, input: &[u8]) -> Result<String, String> {
    let raw = String::from_utf8_lossy(input);
    let Ok(uri) = http::Uri::try_from(&*raw) else {
        return Ok("not a URI".to_string());
    };
    if !uri.path().starts_with("/api/v1/") || uri.authority().is_some() {
        return Ok("not proxied".to_string());
    }
    let target = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    let answer = gateway.send(request(Method::GET, &raw, Body::empty()))?;
    let sent = gateway.sent();
    let shown = || format!("{} {} {:?}", answer.status, answer.code(), answer.detail());
    if target > MAX_TARGET_BYTES {
        ensure(
            answer.status == StatusCode::URI_TOO_LONG && answer.code() == "uri_too_long",
            || {
                format!(
                    "{target}-byte target: {}, expected 414 uri_too_long",
                    shown()
                )
            },
        )?;
        ensure(sent.is_empty(), || "sent over the limit".to_string())?;
        return Ok(format!("{}", answer.status));
    }
    ensure(
        ![StatusCode::URI_TOO_LONG, StatusCode::INTERNAL_SERVER_ERROR].contains(&answer.status),
        || format!("{target}-byte target: {}", shown()),
    )?;
    match ApiPath::parse(uri.path()) {
        Err(error) => {
            ensure(answer.status == error.status(), || {
                format!("{}, expected {} ({error:?})", shown(), error.status())
            })?;
            ensure(sent.is_empty(), || "sent a refused path".to_string())?;
        }
        Ok(path) if answer.status == StatusCode::OK => {
            let [one] = sent.as_slice() else {
                return Err(format!("{} sends", sent.len()));
            };
            let base = &gateway.state.config.upstream.url;
            let expected = path.to_upstream_url(base, None);
            let got = http::Uri::try_from(&one.uri).map_err(|e| format!("{}: {e}", one.uri))?;
            ensure(got.path() == expected.path(), || {
                format!("sent to {}, expected the path of {expected}", one.uri)
            })?;
        }
        Ok(_) => ensure(sent.is_empty(), || format!("sent, then {}", shown()))?,
    }
    Ok(format!("{}", answer.status))
}

#[test]
fn path_corpus() {
    let gateway = Gateway::new(false);
    run_corpus("path", inputs("path", long_inputs()), |input| {
        let read = path_case(input)?;
        Ok((read, path_app_case(&gateway, input)?))
    });
}

#[test]
fn path_fuzz() {
    let gateway = Gateway::new(false);
    // Short paths of hostile pieces, and long ones around the limit.
    let around_limit =
        (MAX_TARGET_BYTES - 64..MAX_TARGET_BYTES + 64, any::<bool>()).prop_map(|(len, query)| {
            let mut path = long_path(len).into_bytes();
            if query {
                path[len / 2] = b'?';
            }
            path
        });
    let shaped = prop_oneof![
        4 => strung("/api/v1/", PATH_DICT, 12),
        1 => around_limit,
    ]
    .boxed();
    run_fuzz("path", 512, mutated("path", PATH_DICT, shaped), |input| {
        path_case(input)?;
        path_app_case(&gateway, input)
    });
}

/// Fixed: a path near `http::Uri`'s limit was accepted, then had no
/// upstream URI: a 500. Now a path and query over 16 KiB is 414
/// `uri_too_long`, before the key is even looked at, and nothing is sent;
/// 16 KiB is forwarded.
#[test]
fn regression_path_target_over_16_kib() {
    for keys in [false, true] {
        let gateway = Gateway::new(keys);
        for raw in [
            uri_limit_path(),
            long_path(MAX_TARGET_BYTES + 1),
            format!("/api/v1/agents?q={}", "x".repeat(MAX_TARGET_BYTES)),
        ] {
            let answer = gateway
                .send(request(Method::GET, &raw, Body::empty()))
                .unwrap();
            assert_eq!(answer.status, StatusCode::URI_TOO_LONG, "{answer:?}");
            assert_eq!(answer.code(), "uri_too_long");
            assert!(answer.detail().contains("16384 bytes"), "{answer:?}");
            assert!(gateway.sent().is_empty());
        }
    }
    let gateway = Gateway::new(false);
    let raw = long_path(MAX_TARGET_BYTES);
    let answer = gateway
        .send(request(Method::GET, &raw, Body::empty()))
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let [sent] = gateway.sent().try_into().unwrap();
    assert!(sent.uri.ends_with(&raw), "{}", sent.uri);
}
