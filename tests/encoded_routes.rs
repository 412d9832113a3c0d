//! One reading of the path (issue #21, item 5): a route written with
//! percent-encoded characters is the same route to every table that
//! classifies it: route class (lane, timeout, billing), retry safety, cache
//! policy, write effect and scope. The upstream decodes paths, so
//! `POST /agents/x/%69nvoke` is an invocation there; it must be one here too.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use castari_gateway::cache::{write_effect, CacheRoute};
use castari_gateway::keys::model::Role;
use castari_gateway::keys::scope::{authorize, AgentGlobs};
use castari_gateway::route::Route;
use castari_gateway::upstream::path::ApiPath;
use http::Method;

/// Every reference route (`docs/`), with `a` for a slug and `f1` for an id.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "auth/me"),
    ("GET", "agents"),
    ("POST", "agents"),
    ("GET", "agents/a"),
    ("PATCH", "agents/a"),
    ("DELETE", "agents/a"),
    ("POST", "agents/a/deploy"),
    ("POST", "agents/a/redeploy"),
    ("POST", "agents/a/upload-code"),
    ("POST", "agents/a/stop"),
    ("DELETE", "agents/a/sandbox"),
    ("POST", "agents/a/invoke"),
    ("POST", "agents/a/stream"),
    ("GET", "agents/a/invocations"),
    ("GET", "agents/a/secrets"),
    ("POST", "agents/a/secrets"),
    ("DELETE", "agents/a/secrets/K"),
    ("GET", "agents/a/sessions"),
    ("DELETE", "agents/a/sessions/s1"),
    ("GET", "agents/a/mounts"),
    ("POST", "agents/a/mounts"),
    ("PATCH", "agents/a/mounts/m1"),
    ("DELETE", "agents/a/mounts/m1"),
    ("GET", "agents/a/files"),
    ("POST", "agents/a/files"),
    ("POST", "agents/a/files/sync"),
    ("DELETE", "agents/a/files/f1"),
    ("GET", "files"),
    ("POST", "files"),
    ("GET", "files/usage"),
    ("POST", "files/upload-url"),
    ("POST", "files/confirm-upload"),
    ("GET", "files/f1"),
    ("PATCH", "files/f1"),
    ("DELETE", "files/f1"),
    ("GET", "files/f1/download"),
    ("GET", "files/f1/content"),
    ("GET", "buckets"),
    ("POST", "buckets"),
    ("GET", "buckets/b1"),
    ("PATCH", "buckets/b1"),
    ("DELETE", "buckets/b1"),
    ("POST", "buckets/b1/credentials"),
    ("DELETE", "buckets/b1/credentials"),
    ("POST", "buckets/b1/test"),
    ("GET", "buckets/b1/files"),
    ("POST", "buckets/b1/upload-url"),
    ("POST", "buckets/b1/download-url"),
    ("GET", "usage"),
    ("GET", "usage/daily"),
    ("GET", "api-keys"),
    ("POST", "api-keys"),
    ("DELETE", "api-keys/k1"),
    ("DELETE", "auth/api-key"),
    ("POST", "sandbox/token"),
    ("GET", "invocations/i1"),
];

fn encode_byte(b: u8) -> String {
    format!("%{b:02x}")
}

/// Ways to write `segment` with the same decoded value: its first byte
/// encoded, its last byte encoded (upper-case hex), every byte encoded.
fn variants(segment: &str) -> Vec<String> {
    let bytes = segment.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return Vec::new();
    };
    let mut out = vec![format!(
        "{}{}",
        encode_byte(first),
        std::str::from_utf8(rest).unwrap()
    )];
    let (&last, init) = bytes.split_last().unwrap();
    out.push(format!(
        "{}{}",
        std::str::from_utf8(init).unwrap(),
        encode_byte(last).to_uppercase()
    ));
    out.push(bytes.iter().map(|&b| encode_byte(b)).collect());
    out
}

/// What every table says of `method` on `raw` (a path after `/api/v1/`).
#[derive(Debug, PartialEq)]
struct Reading {
    route: Route,
    cache: Option<CacheRoute>,
    effect: String,
    scopes: Vec<bool>,
}

fn read(method: &Method, raw: &str) -> Reading {
    let path = ApiPath::parse(&format!("/api/v1/{raw}")).unwrap();
    let decoded = path.decoded();
    let scoped = AgentGlobs::parse(&["a".to_string()]).unwrap();
    let scopes = [Role::Read, Role::Invoke, Role::Deploy, Role::Admin]
        .into_iter()
        .flat_map(|role| {
            [AgentGlobs::all(), scoped.clone()]
                .map(|globs| authorize(role, &globs, method, decoded).is_ok())
        })
        .collect();
    Reading {
        route: Route::read(method, decoded),
        cache: (method == Method::GET)
            .then(|| CacheRoute::of(decoded))
            .flatten(),
        effect: format!("{:?}", write_effect(method, decoded)),
        scopes,
    }
}

#[test]
fn encoded_segments_are_the_same_route_to_every_table() {
    let mut checked = 0;
    for (method, plain) in ROUTES {
        let method: Method = method.parse().unwrap();
        let expected = read(&method, plain);
        let segments: Vec<&str> = plain.split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            for variant in variants(segment) {
                let mut raw: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
                raw[i] = variant;
                let raw = raw.join("/");
                assert_eq!(read(&method, &raw), expected, "{method} {raw} vs {plain}");
                checked += 1;
            }
        }
    }
    assert!(checked > 300, "{checked}");
}

#[test]
fn an_encoded_invoke_is_an_invocation() {
    for raw in [
        "agents/a/%69nvoke",
        "agents/a/invok%65",
        "%61gents/a/invoke",
    ] {
        let path = ApiPath::parse(&format!("/api/v1/{raw}")).unwrap();
        let route = Route::read(&Method::POST, path.decoded());
        assert_eq!(route.class.as_str(), "invoke", "{raw}");
        assert_eq!(path.agent(), Some("a"), "{raw}");
    }
}
