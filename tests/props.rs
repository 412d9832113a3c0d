//! Property tests for the gateway's input handling: request paths, query
//! normalization, header filtering and config parsing (issue: "no panic, no
//! path that escapes /api/v1/ upstream, no hop-by-hop header forwarded").
//!
//! Every property runs a bounded number of cases ([`CASES`]) and writes no
//! regression files, so the whole binary stays a few seconds long. Four of
//! them found real bugs when written (a tab in a path segment that the URL
//! builder dropped, turning `.\t.` into `..`; a `Connection` value with one
//! non-ASCII token hiding the names beside it; a newline in a config error's
//! field; error line numbers one short); their doc comments keep the
//! counterexamples.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::OnceLock;

use castari_gateway::cache::key::{decode_path, normalize_query};
use castari_gateway::config::{self, Config, ConfigError, Flags, Rate};
use castari_gateway::keys::model::Role;
use castari_gateway::keys::scope::{authorize, AgentGlobs};
use castari_gateway::keys::token;
use castari_gateway::types::Secret;
use castari_gateway::upstream::headers::{sanitize_request, strip_hop_by_hop};
use castari_gateway::upstream::path::{ApiPath, UpstreamBase};
use castari_gateway::upstream::retry::Safety;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use percent_encoding::percent_decode_str;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;

/// Cases per property: enough to find the shallow bugs, small enough that
/// the whole file runs in seconds on two cores.
const CASES: u32 = 512;

fn cfg() -> ProptestConfig {
    ProptestConfig {
        cases: CASES,
        // No `proptest-regressions/` files in the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------

/// Pieces that have broken path checks in other proxies.
const PATH_PIECES: &[&str] = &[
    "/api/v1/", "/", "//", "..", ".", "%2e", "%2E", "%2E%2e", ".%2e", "%2e.", "%2f", "%2F", "%5c",
    "%5C", "\\", "%", "%zz", "%0", "%00", "%ff", "%c3%a9", "%252e", "%252f", "?", "#", ";", "..;",
    "%3b", "é", "\u{FF0E}", "\u{2215}", " ", "%20", "+", "@", ":", "agents", "sandbox", "api",
    "v1", "demo", "a", "files", "invoke",
];

/// The same pieces plus the ASCII tab, LF and CR that URL parsers drop.
fn piece(with_controls: bool) -> BoxedStrategy<String> {
    let mut pieces: Vec<&'static str> = PATH_PIECES.to_vec();
    if with_controls {
        pieces.extend(["\t", "\n", "\r", ".\t.", "%2e\t", "\r."]);
    }
    prop_oneof![
        4 => select(pieces).prop_map(String::from),
        3 => select(vec!["/", "/", "agents", "demo", "x%20y", "sandbox", "%41"])
            .prop_map(String::from),
        1 => "[a-z0-9%./]{0,4}",
        1 => any::<char>().prop_map(String::from),
    ]
    .boxed()
}

/// Raw request paths: arbitrary text, arbitrary text under `/api/v1/`, and
/// concatenations of hostile pieces (mostly under `/api/v1/`).
fn raw_path(with_controls: bool) -> BoxedStrategy<String> {
    let strategy = prop_oneof![
        1 => any::<String>(),
        1 => any::<String>().prop_map(|s| format!("/api/v1/{s}")),
        4 => prop::collection::vec(piece(with_controls), 0..10)
            .prop_map(|v| format!("/api/v1/{}", v.concat())),
        1 => prop::collection::vec(piece(with_controls), 0..10).prop_map(|v| v.concat()),
        // Longer, mostly ordinary paths with a hostile piece here and there.
        3 => prop::collection::vec(
            prop_oneof![
                3 => select(vec!["agents", "demo", "sandbox", "files", "", "x%20y", "v1"])
                    .prop_map(String::from),
                1 => piece(with_controls),
            ],
            1..8,
        )
        .prop_map(|v| format!("/api/v1/{}", v.join("/"))),
    ];
    if with_controls {
        strategy.boxed()
    } else {
        // Tab, LF and CR never reach the gateway: `http::Uri` refuses them.
        strategy
            .prop_map(|s| s.replace(['\t', '\n', '\r'], ""))
            .boxed()
    }
}

/// Upstream bases: bare hosts and bases with a path prefix (with and
/// without the trailing slash), IPv6, default and explicit ports.
fn base() -> impl Strategy<Value = url::Url> {
    select(vec![
        "http://127.0.0.1:9/",
        "https://api.castari.com",
        "http://h/prefix/",
        "http://h/prefix",
        "http://[::1]:8080/a/b/",
        "https://h:443/castari/v/",
    ])
    .prop_map(|b| url::Url::parse(b).unwrap())
}

fn method() -> impl Strategy<Value = Method> {
    select(vec![
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::TRACE,
        Method::CONNECT,
        Method::from_bytes(b"PURGE").unwrap(),
    ])
}

/// The URL built for `path` stays on `base`'s scheme, host and port, under
/// `base path + /api/v1/`, has exactly one upstream segment per checked
/// segment, none of them `.` or `..` (raw or decoded once) or hiding a `/` or
/// `\`, and serializes to a string that parses back to the same URL (what
/// the HTTP client sends is what was checked).
fn check_upstream(
    path: &ApiPath,
    base: &url::Url,
    query: Option<&str>,
) -> Result<(), TestCaseError> {
    let url = path.to_upstream_url(base, query);
    prop_assert_eq!(url.scheme(), base.scheme());
    prop_assert_eq!(url.host_str(), base.host_str());
    prop_assert_eq!(url.port_or_known_default(), base.port_or_known_default());
    prop_assert_eq!(url.username(), "");
    prop_assert_eq!(url.password(), None);
    prop_assert_eq!(url.fragment(), None);
    let prefix = format!("{}/api/v1/", base.path().trim_end_matches('/'));
    prop_assert!(
        url.path().starts_with(&prefix),
        "{} escapes {}",
        url,
        prefix
    );
    let rest: Vec<&str> = url.path()[prefix.len()..].split('/').collect();
    prop_assert_eq!(
        rest.len(),
        path.segments().len(),
        "segments merged or dropped: {}",
        url
    );
    for segment in rest {
        let decoded = percent_decode_str(segment).decode_utf8_lossy();
        prop_assert!(
            !matches!(segment, "." | "..") && !matches!(decoded.as_ref(), "." | ".."),
            "dot segment {:?} in {}",
            segment,
            url
        );
        prop_assert!(!decoded.contains(['/', '\\']), "{:?} in {}", segment, url);
    }
    let reparsed = url::Url::parse(url.as_str()).unwrap();
    prop_assert_eq!(&reparsed, &url);
    // The request path builds the URI in one string: the same one.
    let fast = path.to_upstream_uri(&UpstreamBase::new(base), query);
    prop_assert!(fast.is_ok(), "{:?} for {}", fast, url);
    prop_assert_eq!(fast.unwrap().to_string(), url.as_str());
    Ok(())
}

/// What `decode_path` gives for checked segments: never `.`/`..`, never a
/// `/`, `\` or NUL, one decoded segment per segment.
fn check_decoded(path: &ApiPath) -> Result<(), TestCaseError> {
    let decoded = decode_path(path.segments());
    prop_assert_eq!(decoded.len(), path.segments().len());
    for segment in decoded.iter() {
        prop_assert!(!matches!(&**segment, "." | ".."), "{:?}", segment);
        prop_assert!(!segment.contains(['/', '\\', '\0']), "{:?}", segment);
    }
    Ok(())
}

proptest! {
    #![proptest_config(cfg())]

    /// `ApiPath::parse` never panics; whatever it accepts (also after
    /// `rewrite_sdk_stop` under any method) builds an upstream URL that stays
    /// under `base/api/v1/` on the base's host, without dot segments, and
    /// decodes to segments without `.`, `..` or separators. Inputs are every
    /// string that can be a request path (no tab, LF or CR).
    #[test]
    fn path_never_escapes_api_v1(raw in raw_path(false), base in base(), method in method()) {
        let Ok(mut path) = ApiPath::parse(&raw) else { return Ok(()) };
        prop_assert!(raw.starts_with("/api/v1/"));
        check_upstream(&path, &base, None)?;
        check_decoded(&path)?;
        let before = path.segments();
        path.rewrite_sdk_stop(&method);
        let after = path.segments();
        if after != before {
            prop_assert_eq!(&method, &Method::DELETE);
            prop_assert_eq!(after.len(), 3);
            prop_assert_eq!(after[0].as_str(), "agents");
            prop_assert_eq!(&after[1..], before.as_slice());
        }
        check_upstream(&path, &base, None)?;
        check_decoded(&path)?;
    }

    /// The production route: a request target that `http::Uri` accepts
    /// (what hyper hands the gateway), checked by `ApiPath::parse` on
    /// `uri.path()` and sent with `uri.query()`, never escapes `/api/v1/`.
    /// The raw strategy here includes tab, LF and CR.
    #[test]
    fn uri_paths_never_escape_api_v1(
        raw in raw_path(true),
        query in proptest::option::of("[ -~]{0,12}"),
        base in base(),
    ) {
        let target = match &query {
            Some(q) => format!("{raw}?{q}"),
            None => raw,
        };
        let Ok(uri) = http::Uri::try_from(target.as_str()) else { return Ok(()) };
        let Ok(path) = ApiPath::parse(uri.path()) else { return Ok(()) };
        check_upstream(&path, &base, uri.query())?;
        check_decoded(&path)?;
    }

    /// `ApiPath::parse` on any string (tab, LF and CR included) never
    /// panics, and an accepted path never escapes `/api/v1/` upstream.
    ///
    /// Failed before the fix: the `url` crate drops ASCII tab, LF and CR while setting
    /// a path (WHATWG URL rule), *after* `check_segment` looked at the
    /// segment, so `.<TAB>.` passes as an ordinary segment and becomes `..`:
    /// `ApiPath::parse("/api/v1/.\t./.\t./x")` is `Ok`, and
    /// `to_upstream_url(http://127.0.0.1:9/)` gives `http://127.0.0.1:9/x`.
    /// Minimal: `"/api/v1/.\t."` → `http://127.0.0.1:9/api/` (and
    /// `"/api/v1/\r."` silently drops a segment). Not reachable through
    /// hyper (`http::Uri` refuses these bytes, see
    /// `uri_paths_never_escape_api_v1`), but `parse`'s contract is on a
    /// string and it is the only check before `set_path`.
    #[test]
    fn path_with_controls_never_escapes_api_v1(raw in raw_path(true), base in base()) {
        let Ok(path) = ApiPath::parse(&raw) else { return Ok(()) };
        check_upstream(&path, &base, None)?;
    }
}

// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------

/// One `k=v` (or bare `k`) pair without `&`, from hostile pieces.
fn query_pair() -> impl Strategy<Value = String> {
    let atom = prop_oneof![
        3 => select(vec![
            "", "a", "b", "A", "%41", "%61", "+", "%2B", "%20", " ", "%", "%zz", "%ff", "%c3%a9",
            "é", "=", "==", "#", "?", "/", "%26", "%3D", ";", "\u{0}", "\u{FFFD}", "%00",
        ])
        .prop_map(String::from),
        1 => "[a-z0-9%+=]{0,4}",
        1 => any::<char>().prop_filter("no &", |c| *c != '&').prop_map(String::from),
    ];
    prop::collection::vec(atom, 0..5).prop_map(|v| v.concat())
}

fn query() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        3 => prop::collection::vec(query_pair(), 0..8).prop_map(|v| v.join("&")),
    ]
}

proptest! {
    #![proptest_config(cfg())]

    /// `normalize_query` never panics and is idempotent: its output
    /// (decoded, sorted, re-encoded pairs) normalizes to itself, so a key
    /// built from a normalized query matches the original request's key.
    #[test]
    fn normalize_query_is_idempotent(q in query()) {
        let once = normalize_query(&q);
        prop_assert_eq!(normalize_query(&once), once.clone());
        if q.is_empty() {
            prop_assert_eq!(once, "");
        }
    }

    /// The order of `&`-separated pairs never changes the normalized query.
    #[test]
    fn normalize_query_ignores_pair_order(
        (pairs, shuffled) in prop::collection::vec(query_pair(), 0..8)
            .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
    ) {
        prop_assert_eq!(normalize_query(&pairs.join("&")), normalize_query(&shuffled.join("&")));
    }

    /// A query, whatever it holds (`#`, `/`, `..`, `@`, unicode), never
    /// changes the upstream URL's scheme, host, port or path and never adds
    /// a fragment; a query of plain URI characters goes up exactly as sent.
    #[test]
    fn query_never_changes_host_or_path(q in query(), base in base(), raw in raw_path(false)) {
        let path = ApiPath::parse(&raw)
            .unwrap_or_else(|_| ApiPath::parse("/api/v1/agents").unwrap());
        let plain = path.to_upstream_url(&base, None);
        let url = path.to_upstream_url(&base, Some(&q));
        prop_assert_eq!(url.scheme(), plain.scheme());
        prop_assert_eq!(url.host_str(), plain.host_str());
        prop_assert_eq!(url.port(), plain.port());
        prop_assert_eq!(url.path(), plain.path());
        prop_assert_eq!(url.fragment(), None);
        prop_assert!(url.query().is_some());
        let reparsed = url::Url::parse(url.as_str()).unwrap();
        prop_assert_eq!(reparsed.path(), plain.path());
        prop_assert_eq!(reparsed.host_str(), plain.host_str());
        let uri_plain = q
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~%!$&()*+,;=:@/?".contains(&b));
        if uri_plain {
            prop_assert_eq!(url.query(), Some(q.as_str()));
        }
    }
}

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

/// RFC 9110 §7.6.1 hop-by-hop headers plus the legacy ones the gateway drops.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// What `sanitize_request` also removes: `Host`, `Expect` and the client's
/// credentials.
const REQUEST_ONLY: &[&str] = &["host", "expect", "authorization", "x-api-key", "cookie"];

/// Header names (random ASCII case) for the map, `Connection` excluded: it
/// is generated separately so the test knows exactly which names it lists.
fn header_name() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        2 => select(
            HOP_BY_HOP
                .iter()
                .copied()
                .filter(|n| *n != "connection")
                .collect::<Vec<_>>()
        )
        .prop_map(String::from),
        2 => select(REQUEST_ONLY.to_vec()).prop_map(String::from),
        2 => select(vec![
            "accept", "content-type", "content-length", "user-agent", "x-request-id",
            "accept-encoding", "if-none-match", "set-cookie", "www-authenticate", "x-b",
        ])
        .prop_map(String::from),
        2 => "x-b-[a-z0-9]{1,2}",
        2 => "x-hop-[a-z0-9]",
    ];
    (name, any::<u64>()).prop_map(|(name, mask)| random_case(&name, mask))
}

fn random_case(name: &str, mask: u64) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if mask >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c
            }
        })
        .collect()
}

/// Header values: visible ASCII, space, tab and obs-text bytes.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![8 => 0x20u8..0x7f, 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..12,
    )
}

/// One token of a `Connection` value: a name the map may hold, a name it
/// does not, or junk that is no header name.
fn connection_token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => header_name(),
        1 => Just("close".to_string()),
        1 => select(vec!["", " ", "a b", "@", "x-hop-?", "\"q\""]).prop_map(String::from),
    ]
}

/// `Connection` header values, as lists of tokens joined with assorted
/// separators and optional whitespace.
fn connection_values() -> impl Strategy<Value = Vec<(Vec<String>, String)>> {
    let value = (
        prop::collection::vec(
            (
                connection_token(),
                select(vec![",", ", ", " ,", " , ", ",\t", ",,"]),
            ),
            0..5,
        ),
        select(vec!["", " ", "\t"]),
    )
        .prop_map(|(tokens, pad)| {
            let mut text = String::from(pad);
            for (i, (token, sep)) in tokens.iter().enumerate() {
                if i > 0 {
                    text.push_str(sep);
                }
                text.push_str(token);
            }
            text.push_str(pad);
            let names = tokens.into_iter().map(|(t, _)| t).collect();
            (names, text.trim().to_string())
        });
    prop::collection::vec(value, 0..4)
}

struct HeaderCase {
    map: HeaderMap,
    /// Every (lowercase name, value) put in, in order, `Connection` included.
    entries: Vec<(String, HeaderValue)>,
    /// Names listed by the `Connection` values (valid names only, lowercase).
    named: HashSet<String>,
}

fn header_case() -> impl Strategy<Value = HeaderCase> {
    (
        prop::collection::vec((header_name(), header_value()), 0..16),
        connection_values(),
        0usize..17,
    )
        .prop_map(|(pairs, connection, at)| {
            let mut entries: Vec<(String, HeaderValue)> = pairs
                .into_iter()
                .map(|(name, value)| {
                    (
                        name.to_ascii_lowercase(),
                        HeaderValue::from_bytes(&value).unwrap(),
                    )
                })
                .collect();
            let mut named = HashSet::new();
            for (tokens, text) in connection {
                for token in tokens {
                    if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                        named.insert(name.as_str().to_string());
                    }
                }
                let at = at.min(entries.len());
                entries.insert(
                    at,
                    (
                        "connection".to_string(),
                        HeaderValue::from_str(&text).unwrap(),
                    ),
                );
            }
            let mut map = HeaderMap::new();
            for (name, value) in &entries {
                map.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.clone(),
                );
            }
            HeaderCase {
                map,
                entries,
                named,
            }
        })
}

impl std::fmt::Debug for HeaderCase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderCase")
            .field("entries", &self.entries)
            .field("named", &self.named)
            .finish()
    }
}

/// After filtering, no name in `removed` (nor any `Connection`-listed name)
/// is left, and every other header is still there with all its values in
/// order, and nothing else.
fn check_filtered(
    case: &HeaderCase,
    after: &HeaderMap,
    removed: &[&str],
) -> Result<(), TestCaseError> {
    let gone = |name: &str| removed.contains(&name) || case.named.contains(name);
    for name in removed
        .iter()
        .copied()
        .chain(case.named.iter().map(String::as_str))
    {
        prop_assert!(!after.contains_key(name), "{} forwarded: {:?}", name, after);
    }
    let mut expected: HashMap<&str, Vec<&HeaderValue>> = HashMap::new();
    for (name, value) in &case.entries {
        if !gone(name) {
            expected.entry(name).or_default().push(value);
        }
    }
    for (name, values) in &expected {
        let kept: Vec<&HeaderValue> = after.get_all(*name).iter().collect();
        prop_assert_eq!(&kept, values, "{} lost values", name);
    }
    prop_assert_eq!(after.len(), expected.values().map(Vec::len).sum::<usize>());
    Ok(())
}

proptest! {
    #![proptest_config(cfg())]

    /// `sanitize_request` (client → upstream) removes every hop-by-hop
    /// header, `Upgrade`, every header a `Connection` value names (any case,
    /// any whitespace), `Host`, `Expect` and the client credentials
    /// (`Authorization`, `X-Api-Key`, `Cookie`), and keeps every other
    /// header with all its values in order.
    #[test]
    fn sanitize_request_forwards_no_hop_by_hop_or_credential(case in header_case()) {
        let mut after = case.map.clone();
        sanitize_request(&mut after);
        let removed: Vec<&str> = HOP_BY_HOP.iter().chain(REQUEST_ONLY).copied().collect();
        check_filtered(&case, &after, &removed)?;
    }

    /// `strip_hop_by_hop` (upstream → client) removes every hop-by-hop
    /// header, `Upgrade` and every header a `Connection` value names, and
    /// keeps everything else (`Set-Cookie`, `WWW-Authenticate`, ...) intact.
    #[test]
    fn strip_hop_by_hop_forwards_no_hop_by_hop(case in header_case()) {
        let mut after = case.map.clone();
        strip_hop_by_hop(&mut after);
        check_filtered(&case, &after, HOP_BY_HOP)?;
    }

    /// A header named in a `Connection` value is removed even when another
    /// token of the same value is not ASCII (obs-text, which hyper accepts).
    ///
    /// Failed before the fix: `strip_hop_by_hop` reads each `Connection` value with
    /// `HeaderValue::to_str`, which refuses the whole value when any byte is
    /// ≥ 0x80, so none of its names are stripped. Minimal counterexample:
    /// `Connection: x-hop, \xE9` plus `x-hop: 1` → `x-hop: 1` is forwarded
    /// (both ways: request and response).
    #[test]
    fn connection_named_headers_go_even_beside_obs_text(
        name in "x-hop-[a-z0-9]{1,4}",
        junk in prop::collection::vec(0x80u8..=0xff, 1..4),
        junk_first in any::<bool>(),
    ) {
        let mut listed = Vec::new();
        if junk_first {
            listed.extend_from_slice(&junk);
            listed.extend_from_slice(b", ");
            listed.extend_from_slice(name.as_bytes());
        } else {
            listed.extend_from_slice(name.as_bytes());
            listed.extend_from_slice(b", ");
            listed.extend_from_slice(&junk);
        }
        let mut map = HeaderMap::new();
        map.append(http::header::CONNECTION, HeaderValue::from_bytes(&listed).unwrap());
        map.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_static("1"));
        let mut request = map.clone();
        sanitize_request(&mut request);
        prop_assert!(!request.contains_key(name.as_str()), "{} forwarded upstream", name);
        strip_hop_by_hop(&mut map);
        prop_assert!(!map.contains_key(name.as_str()), "{} forwarded to the client", name);
    }
}

// ---------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------

const EXAMPLE: &str = include_str!("../config/gateway.toml");

/// TOML value texts: wrong types, out-of-range numbers, odd strings, rates
/// and URLs at the edges.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => select(vec![
            "0", "-1", "1", "4294967296", "18446744073709551615", "18446744073709551616",
            "9223372036854775807", "-9223372036854775808", "1e400", "nan", "inf", "-0.0", "1.5",
            "true", "false", "\"\"", "\"x\"", "\" \"", "\"\\n\"", "\"a\\nb\"", "\"\\u0000\"",
            "\"0/0s\"", "\"1/0s\"", "\"4294967296/1s\"", "\"1/18446744073709551615h\"",
            "\"18446744073709551615/1ms\"", "\"5/1500ms\"", "\"30/min\"", "\"/\"", "\"1/\"",
            "\"::\"", "\"http://h\"", "\"ftp://h\"", "\"http://u:p@h/\"", "\"http://h/?q#f\"",
            "\"socks5://h:1\"", "\"0.0.0.0:80\"", "\"[::]:0\"", "\"open\"", "\"keys\"",
            "\"json\"", "\"trace,a=b\"", "\"a=\\n[\"", "\"0.10\"", "\"-0.10\"", "\"1e9\"",
            "\"20/month\"", "\"2.50/day\"", "\"x/week\"", "[]", "[1, \"a\"]",
            "[\"demo-*\", \"BAD\"]",
            "{}", "{ a = 1 }", "1979-05-27T07:32:00Z", "'''multi\nline'''", "\"\"\"a\nb\"\"\"",
            "", "=", "[", "\"unterminated",
        ])
        .prop_map(String::from),
        1 => any::<String>().prop_map(|s| toml::Value::String(s).to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>().prop_map(|n| toml::Value::Float(n).to_string()),
    ]
}

/// Lines to insert: section headers (valid, unknown, nested, quoted with a
/// newline), declared keys, credentials, random `key = value`.
fn toml_line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec![
            "[server]", "[upstream]", "[upstream.credentials.team-b]",
            "[upstream.credentials.\"Bad Name\"]", "[upstream.credentials.default]",
            "[upstream.credentials.\"a\\nb\"]", "[[auth.keys]]", "[auth]", "[cache.ttl_secs]",
            "[nope]", "[server.listen]", "[[server]]", "key_env = \"CASTARI_TEAM_B_KEY\"",
            "key_file = \"/nonexistent/k\"", "id = \"abc123\"", "id = \"ABC\"",
            "sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"",
            "sha256 = \"zz\"", "role = \"invoke\"", "role = \"root\"", "name = \"ci\"",
            "agents = [\"demo-*\", \"BAD\"]", "agents = []", "rate = \"30/min\"",
            "budget_usd = \"20/month\"", "budget_usd = \"-1/day\"", "budget_usd = \"1e309/year\"",
            "expires_at = -1", "expires_at = 99999999999999999999", "upstream = \"team-b\"",
            "upstream = \"nope\"", "\"a\\nb\" = 1", "a.b.c = 1", "listen = 1",
        ])
        .prop_map(String::from),
        2 => ("[a-z_]{1,24}", toml_value()).prop_map(|(k, v)| format!("{k} = {v}")),
    ]
}

#[derive(Clone, Debug)]
enum Mutation {
    /// Replace the value of the n-th `key = value` line (commented or not,
    /// uncommenting it).
    Value(usize, String),
    /// Insert a line before line n.
    Insert(usize, String),
    /// Delete line n.
    Delete(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), toml_value()).prop_map(|(i, v)| Mutation::Value(i, v)),
        2 => (any::<usize>(), toml_line()).prop_map(|(i, l)| Mutation::Insert(i, l)),
        1 => any::<usize>().prop_map(Mutation::Delete),
    ]
}

fn mutate(text: &str, mutations: &[Mutation], truncate: Option<f64>) -> String {
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let assignments = |lines: &[String]| -> Vec<usize> {
        lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains(" = "))
            .map(|(i, _)| i)
            .collect()
    };
    for m in mutations {
        match m {
            Mutation::Value(n, value) => {
                let targets = assignments(&lines);
                if targets.is_empty() {
                    continue;
                }
                let i = targets[n % targets.len()];
                let line = lines[i].trim_start_matches(['#', ' ']).to_string();
                let key = line.split(" = ").next().unwrap_or_default();
                lines[i] = format!("{key} = {value}");
            }
            Mutation::Insert(n, line) => {
                let i = n % (lines.len() + 1);
                lines.insert(i, line.clone());
            }
            Mutation::Delete(n) => {
                if !lines.is_empty() {
                    let i = n % lines.len();
                    lines.remove(i);
                }
            }
        }
    }
    let mut out = lines.join("\n");
    if let Some(fraction) = truncate {
        let mut at = ((out.len() as f64) * fraction) as usize;
        while !out.is_char_boundary(at) {
            at -= 1;
        }
        out.truncate(at);
    }
    out
}

/// Replaces the values of uncommented `key = value` lines of the example
/// with values of the same TOML type (integers with integers, strings with
/// strings, ...), so the file parses and `validate` is what is exercised.
fn typed_mutation(text: &str, picks: &[(usize, usize)]) -> String {
    const INTS: &[&str] = &["0", "1", "2", "11", "4294967295", "9223372036854775807"];
    const FLOATS: &[&str] = &["0.0", "0.5", "1.0", "1.5", "-0.1", "nan", "inf", "-inf"];
    const BOOLS: &[&str] = &["true", "false"];
    const STRINGS: &[&str] = &[
        "\"\"",
        "\" \"",
        "\"x\"",
        "\"0\"",
        "\"0.0\"",
        "\"-1\"",
        "\"1e-30\"",
        "\"0.0.0.0:80\"",
        "\"[::1]:0\"",
        "\"ftp://h\"",
        "\"http://u@h\"",
        "\"http://h/?q\"",
        "\"http://h#f\"",
        "\"socks4://p\"",
        "\"http://p:1\"",
        "\"json\"",
        "\"text\"",
        "\"off\"",
        "\"info,a=b\"",
        "\"[\"",
        "\"a=\\n[\"",
        "\"keys\"",
        "\"open\"",
        "\"0/0s\"",
        "\"1/1ms\"",
        "\"4294967295/1ms\"",
        "\"1/5124095576030431h\"",
    ];
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let targets: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.starts_with('#') && l.contains(" = "))
        .map(|(i, _)| i)
        .collect();
    for &(n, v) in picks {
        let i = targets[n % targets.len()];
        let (key, old) = lines[i].split_once(" = ").unwrap();
        let old = old.split('#').next().unwrap().trim();
        let pool = if old.starts_with('"') {
            STRINGS
        } else if old == "true" || old == "false" {
            BOOLS
        } else if old.contains('.') {
            FLOATS
        } else {
            INTS
        };
        lines[i] = format!("{key} = {}", pool[v % pool.len()]);
    }
    lines.join("\n")
}

fn toml_text() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        2 => prop::collection::vec(toml_line(), 0..12).prop_map(|v| v.join("\n")),
        3 => prop::collection::vec((any::<usize>(), any::<usize>()), 1..3)
            .prop_map(|picks| typed_mutation(EXAMPLE, &picks)),
        4 => (
            prop::collection::vec(mutation(), 0..6),
            proptest::option::weighted(0.2, 0.0..1.0f64),
        )
            .prop_map(|(m, t)| mutate(EXAMPLE, &m, t)),
    ]
}

/// The shape every config error promises: a field and a one-line message.
fn check_error(e: &ConfigError) -> Result<(), TestCaseError> {
    prop_assert!(!e.field.is_empty(), "{:?}", e);
    prop_assert!(!e.message.is_empty(), "{:?}", e);
    prop_assert!(!e.message.contains(['\n', '\r']), "{:?}", e);
    Ok(())
}

proptest! {
    #![proptest_config(cfg())]

    /// `Config::from_toml` never panics, on arbitrary text, on lines of
    /// TOML-ish fragments, and on `config/gateway.toml` with values replaced
    /// (comment lines uncommented), lines inserted or deleted, and the text
    /// truncated; every error has a field and a one-line message. What
    /// parses also goes through `validate` (with an upstream key set) without
    /// panicking, and its errors have the same shape.
    #[test]
    fn from_toml_never_panics_and_errors_are_one_line(text in toml_text()) {
        match Config::from_toml(&text) {
            Err(e) => check_error(&e)?,
            Ok(mut config) => {
                config.upstream_key = Some(Secret::new("k".to_string()));
                if let Err(e) = config.validate() {
                    check_error(&e)?;
                }
            }
        }
    }

    /// The whole rendered error (`field: message`, as printed at startup)
    /// is one line, as the config module promises ("every error names the
    /// field it is about, on one line").
    ///
    /// Failed before the fix: the field is `serde_path_to_error`'s path, which holds
    /// map keys verbatim, and TOML quoted keys may contain a newline.
    /// Minimal: the one-line file `"a\nb" = 1` → field `"a\nb"`; in a map,
    /// `[upstream.credentials."a\nb"]` + `foo = 1` → field
    /// `"upstream.credentials.a\nb.foo"`. The message is already flattened;
    /// the field is not.
    #[test]
    fn config_errors_render_on_one_line(text in toml_text()) {
        if let Err(e) = Config::from_toml(&text) {
            prop_assert!(!e.to_string().contains(['\n', '\r']), "{:?}", e);
        }
    }
}

/// `config/gateway.toml` with an unknown key inserted somewhere in a
/// section: the text, the section's name and the inserted line (1-based).
fn unknown_key_case() -> impl Strategy<Value = (String, String, usize)> {
    let lines: Vec<&'static str> = EXAMPLE.lines().collect();
    let sections: Vec<(usize, usize)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with('[') && !l.starts_with("[["))
        .map(|(i, _)| i)
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| (w[0], w[1]))
        .chain(std::iter::once((
            lines.iter().rposition(|l| l.starts_with('[')).unwrap(),
            lines.len(),
        )))
        .collect();
    (select(sections), any::<usize>(), " {0,2}").prop_map(move |((header, next), k, indent)| {
        let at = header + 1 + k % (next - header);
        let mut text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        text.insert(at, format!("{indent}zz_unknown = 1"));
        let section = lines[header].trim_matches(['[', ']']).to_string();
        (text.join("\n"), section, at + 1)
    })
}

proptest! {
    #![proptest_config(cfg())]

    /// An unknown key anywhere in a section of `config/gateway.toml` is
    /// reported as `section.key` with the line it is on.
    ///
    /// Failed before the fix: `from_toml` counts `text[..span.start].lines()`, which is
    /// one short when the span starts a line (the prefix ends with `\n`), so
    /// an unknown key at column 0, the usual case, is reported on the line
    /// above. Minimal: `zz_unknown = 1` inserted right after `[server]`
    /// (line 7 of the example) → `server.zz_unknown: unknown field ...
    /// (line 6)`; also `"[server]\nlisen = 3"` → `(line 1)`. An indented key
    /// gets the right line.
    #[test]
    fn unknown_key_errors_name_the_right_line((text, section, line) in unknown_key_case()) {
        let e = Config::from_toml(&text).unwrap_err();
        prop_assert_eq!(e.field, format!("{section}.zz_unknown"));
        let suffix = format!("(line {line})");
        prop_assert!(e.message.ends_with(&suffix), "{} should end with {}", e.message, suffix);
    }
}

/// A config file declaring a second credential read from the environment,
/// written once per test binary.
fn credentials_file() -> PathBuf {
    static FILE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    FILE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(
            &path,
            "[upstream.credentials.team-b]\nkey_env = \"CASTARI_TEAM_B_KEY\"\n",
        )
        .unwrap();
        (dir, path)
    })
    .1
    .clone()
}

/// A secret value: a distinctive core (what must never be echoed), wrapped
/// in whitespace, control characters or text that makes it unusable.
fn secret() -> impl Strategy<Value = (String, String)> {
    let wrap = prop_oneof![
        3 => select(vec!["", " ", "\t", "\n", "\r\n", "\u{0}", "\u{7f}", "é", "\"", " x "])
            .prop_map(String::from),
        1 => any::<String>(),
    ];
    ("[A-Za-z0-9_-]{2,40}", wrap.clone(), wrap).prop_map(|(core, before, after)| {
        let core = format!("SeCrEt{core}");
        (format!("{before}{core}{after}"), core)
    })
}

fn env_value(plausible: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        4 => select(plausible.to_vec()).prop_map(String::from),
        1 => any::<String>(),
    ])
}

#[derive(Debug)]
struct EnvCase {
    env: HashMap<String, String>,
    /// The cores of the secrets given.
    secrets: Vec<String>,
}

fn env_case() -> impl Strategy<Value = EnvCase> {
    (
        env_value(&[
            "127.0.0.1:8787",
            "0.0.0.0:80",
            "[::1]:1",
            "127.0.0.1:0",
            "localhost:1",
            "",
            " ",
        ]),
        env_value(&[
            "http://127.0.0.1:9",
            "https://h/p/",
            "https://api.castari.com",
            "ftp://h",
            "http://u:p@h",
            "http://h/?q",
            "::",
        ]),
        env_value(&["open", "keys", "keys", "OPEN", "", "none"]),
        env_value(&["true", "false", "1", "0", "yes", ""]),
        proptest::option::weighted(0.8, secret()),
        proptest::option::of(secret()),
        proptest::option::of(secret()),
        select(vec![0u8, 0, 0, 0, 1, 1, 1, 1, 2]),
    )
        .prop_map(|(listen, url, mode, allow, api, admin, team, file)| {
            let mut env = HashMap::new();
            let mut secrets = Vec::new();
            let mut set = |key: &str, value: Option<String>| {
                if let Some(value) = value {
                    env.insert(key.to_string(), value);
                }
            };
            set(config::ENV_LISTEN, listen);
            set(config::ENV_UPSTREAM_URL, url);
            set(config::ENV_AUTH_MODE, mode);
            set(config::ENV_ALLOW_OPEN_ON_NETWORK, allow);
            for (key, value) in [
                (config::ENV_API_KEY, api),
                (config::ENV_ADMIN_KEY, admin),
                ("CASTARI_TEAM_B_KEY", team),
            ] {
                if let Some((value, core)) = value {
                    set(key, Some(value));
                    secrets.push(core);
                }
            }
            match file {
                1 => set(
                    config::ENV_CONFIG,
                    Some(credentials_file().display().to_string()),
                ),
                2 => set(
                    config::ENV_CONFIG,
                    Some(
                        credentials_file()
                            .with_file_name("missing.toml")
                            .display()
                            .to_string(),
                    ),
                ),
                _ => {}
            }
            EnvCase { env, secrets }
        })
}

proptest! {
    #![proptest_config(cfg())]

    /// `config::load` with arbitrary `CASTARI_*` values (and a config file
    /// that reads a second credential from `CASTARI_TEAM_B_KEY`) never
    /// panics; its errors have a field and a one-line message and never
    /// contain a secret given in `CASTARI_API_KEY`,
    /// `CASTARI_GATEWAY_ADMIN_KEY` or `CASTARI_TEAM_B_KEY`; a loaded
    /// config's `Debug` never shows them either, and it holds the trimmed
    /// upstream key.
    #[test]
    fn load_never_echoes_secrets(case in env_case()) {
        match config::load(&Flags::default(), &case.env) {
            Err(e) => {
                check_error(&e)?;
                let shown = format!("{e} {e:?}");
                for core in &case.secrets {
                    prop_assert!(!shown.contains(core.as_str()), "{} echoed in {}", core, shown);
                }
            }
            Ok(loaded) => {
                let shown = format!("{loaded:?}");
                for core in &case.secrets {
                    prop_assert!(!shown.contains(core.as_str()), "{} in Debug", core);
                }
                let given = case.env[config::ENV_API_KEY].trim();
                prop_assert_eq!(loaded.upstream_key.as_ref().unwrap().expose().as_str(), given);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Keys, scopes, retries, rates
// ---------------------------------------------------------------------------

/// Textbook glob matching by dynamic programming (`*` any run, `?` one
/// char), the reference for [`AgentGlobs::allows`].
fn glob_reference(pattern: &[u8], slug: &[char]) -> bool {
    let mut row = vec![false; slug.len() + 1];
    row[0] = true;
    for &p in pattern {
        let mut next = vec![false; slug.len() + 1];
        next[0] = row[0] && p == b'*';
        for j in 1..=slug.len() {
            next[j] = match p {
                b'*' => next[j - 1] || row[j],
                b'?' => row[j - 1],
                b => row[j - 1] && char::from(b) == slug[j - 1],
            };
        }
        row = next;
    }
    row[slug.len()]
}

fn slug() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z0-9._*?-]{0,10}", 1 => any::<String>()]
}

fn segments() -> impl Strategy<Value = Vec<String>> {
    let segment = prop_oneof![
        3 => select(vec![
            "", "agents", "invoke", "stream", "sandbox", "api-keys", "auth", "me", "api-key",
            "invocations", "sessions", "secrets", "files", "sync", "buckets", "credentials",
            "stop", "deploy", "mounts", "confirm-upload", "demo", "demo-1", "prod-x", "*",
        ])
        .prop_map(String::from),
        1 => slug(),
    ];
    prop::collection::vec(segment, 0..6)
}

proptest! {
    #![proptest_config(cfg())]

    /// `AgentGlobs::parse` never panics and accepts exactly non-empty globs
    /// of `[a-z0-9-_.*?]`; `allows` never panics and agrees with a
    /// reference matcher; `*` alone (and `all()`) allows every slug.
    #[test]
    fn agent_globs_match_like_the_reference(
        globs in prop::collection::vec(
            prop_oneof![3 => "[a-z0-9._*?-]{1,8}", 1 => any::<String>()],
            0..4,
        ),
        slug in slug(),
    ) {
        let valid = globs.iter().all(|g| {
            !g.is_empty()
                && g.bytes().all(|b| {
                    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' | b'?')
                })
        });
        let parsed = AgentGlobs::parse(&globs);
        prop_assert_eq!(parsed.is_ok(), valid);
        let chars: Vec<char> = slug.chars().collect();
        if let Ok(parsed) = parsed {
            let expected =
                globs.is_empty() || globs.iter().any(|g| glob_reference(g.as_bytes(), &chars));
            prop_assert_eq!(parsed.allows(&slug), expected);
        }
        prop_assert!(AgentGlobs::parse(&["*".to_string()]).unwrap().allows(&slug));
        prop_assert!(AgentGlobs::all().allows(&slug));
    }

    /// `authorize` never panics; a `read` key never writes; only an admin
    /// reaches `api-keys/*`, `sandbox/*` and `auth/*` (bar `GET auth/me`),
    /// with or without empty segments; an agent-scoped key never reaches an
    /// agent its globs refuse, in the raw or the slash-merged path.
    #[test]
    fn authorize_never_exceeds_role_or_scope(
        role in select(vec![Role::Read, Role::Invoke, Role::Deploy, Role::Admin]),
        globs in prop::collection::vec("[a-z0-9*?-]{1,6}", 0..3),
        method in method(),
        segments in segments(),
    ) {
        let agents = AgentGlobs::parse(&globs).unwrap();
        let result = authorize(role, &agents, &method, &segments);
        if result.is_err() {
            return Ok(());
        }
        let merged: Vec<&str> =
            segments.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
        if role == Role::Read {
            prop_assert!(matches!(method, Method::GET | Method::HEAD | Method::OPTIONS));
        }
        if role != Role::Admin {
            let me = matches!(method, Method::GET | Method::HEAD) && segments == ["auth", "me"];
            prop_assert!(me || !matches!(merged.first(), Some(&("api-keys" | "auth" | "sandbox"))));
        }
        let raw: Vec<&str> = segments.iter().map(String::as_str).collect();
        for view in [&raw, &merged] {
            if let ["agents", slug, ..] = view.as_slice() {
                prop_assert!(agents.allows(slug), "{:?} reached with {:?}", slug, globs);
            }
        }
    }

    /// `token::id_of` never panics, and what it returns is a valid id that
    /// the token really starts with (`cgw_<id>_` + a non-empty secret); a
    /// well-formed token always yields its id.
    #[test]
    fn token_id_of_is_sound(
        text in prop_oneof![any::<String>(), "cgw_[a-z0-9A-Z_]{0,8}_?[ -~]{0,6}"],
        id in "[a-z0-9]{1,32}",
        secret in "[ -~]{1,16}",
    ) {
        if let Some(found) = token::id_of(&text) {
            prop_assert!(token::valid_id(found));
            let prefix = format!("{}{found}_", token::PREFIX);
            prop_assert!(text.starts_with(&prefix) && text.len() > prefix.len());
        }
        let minted = format!("{}{id}_{secret}", token::PREFIX);
        prop_assert_eq!(token::id_of(&minted), Some(id.as_str()));
    }

    /// `token::parse_hash_hex` never panics, round-trips `hex` in either
    /// case, and whatever it accepts is the hex it was given.
    #[test]
    fn hash_hex_round_trips(
        bytes in any::<[u8; 32]>(),
        upper in any::<bool>(),
        text in prop_oneof![any::<String>(), "[0-9a-fA-F]{62,66}", "[0-9a-fA-Fé ]{60,66}"],
    ) {
        let hex = token::hex(&bytes);
        let shown = if upper { hex.to_uppercase() } else { hex.clone() };
        prop_assert_eq!(token::parse_hash_hex(&shown), Some(bytes));
        if let Some(parsed) = token::parse_hash_hex(&text) {
            prop_assert_eq!(token::hex(&parsed), text.trim().to_ascii_lowercase());
        }
    }

    /// `Safety::of` never panics; a POST to `.../invoke` or `.../stream` is
    /// never safe to retry, and neither is any method outside
    /// GET/HEAD/OPTIONS/DELETE/PATCH/POST.
    #[test]
    fn invocations_are_never_retried_as_safe(
        method in method(),
        mut segments in segments(),
        last in select(vec!["invoke", "stream"]),
    ) {
        let _ = Safety::of(&method, &segments);
        segments.push(last.to_string());
        prop_assert_eq!(Safety::of(&Method::POST, &segments), Safety::Unsafe);
        if !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS" | "DELETE" | "PATCH" | "POST") {
            prop_assert_eq!(Safety::of(&method, &segments), Safety::Unsafe);
        }
    }

    /// `Rate` parsing never panics, and a parsed rate's `Display` parses
    /// back to the same rate (the shortest form is still valid config).
    #[test]
    fn rates_round_trip(text in prop_oneof![
        any::<String>(),
        "[0-9 ]{0,12}/[0-9 ]{0,21}(ms|s|sec|m|min|h|hour|x)?",
    ]) {
        if let Ok(rate) = text.parse::<Rate>() {
            prop_assert!(rate.max > 0 && !rate.window.is_zero());
            prop_assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
        }
    }
}
