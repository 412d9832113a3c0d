//! `route`: `METHOD /api/v1/...` (`route::Route::read`,
//! `cache::write_effect`, `keys::scope::authorize`).

use castari_gateway::cache::write_effect;
use castari_gateway::keys::model::Role;
use castari_gateway::keys::scope::{authorize, AgentGlobs};
use castari_gateway::route::{Route, RouteClass, Safety};
use castari_gateway::upstream::path::ApiPath;
use http::Method;
use proptest::prelude::*;
use proptest::sample::select;

use crate::path::encoded_variant;
use crate::support::{ensure, inputs, long, mutated, run_corpus, run_fuzz, strung};

/// Everything every table says of a request.
#[derive(Debug, PartialEq)]
struct Reading {
    route: Route,
    effect: String,
    scopes: Vec<bool>,
}

fn reading(method: &Method, decoded: &[Box<str>]) -> Reading {
    let scoped = AgentGlobs::parse(&["demo*".to_string()]).unwrap();
    let scopes = [Role::Read, Role::Invoke, Role::Deploy, Role::Admin]
        .into_iter()
        .flat_map(|role| {
            [AgentGlobs::all(), scoped.clone()]
                .map(|globs| authorize(role, &globs, method, decoded).is_ok())
        })
        .collect();
    Reading {
        route: Route::read(method, decoded),
        effect: format!("{:?}", write_effect(method, decoded)),
        scopes,
    }
}

/// `Route::read` and the tables beside it on `METHOD path`: the same
/// reading whatever the percent-encoding, `class` and `safety` as their own
/// tables say, an invocation exactly for `POST agents/{slug}/invoke|stream`,
/// reads always safe, only GETs cached.
fn route_case(input: &[u8]) -> Result<String, String> {
    let line = String::from_utf8_lossy(input);
    let Some((method, raw)) = line.split_once(' ') else {
        return Ok("no request line".to_string());
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Ok("no method".to_string());
    };
    let mut path = match ApiPath::parse(raw) {
        Ok(path) => path,
        Err(error) => return Ok(format!("refused {}", error.status())),
    };
    path.rewrite_sdk_stop(&method);
    let decoded = path.decoded().clone();
    let read = reading(&method, &decoded);
    let route = read.route;
    ensure(route.class == RouteClass::of(&method, &decoded), || {
        "class is not RouteClass::of".to_string()
    })?;
    ensure(route.safety == Safety::of(&method, &decoded), || {
        "safety is not Safety::of".to_string()
    })?;
    let strs: Vec<&str> = decoded.iter().map(|s| &**s).collect();
    let invoke =
        method == Method::POST && matches!(strs.as_slice(), ["agents", _, "invoke" | "stream"]);
    ensure((route.class == RouteClass::Invoke) == invoke, || {
        format!("class {:?} for {method} {strs:?}", route.class)
    })?;
    if invoke && !strs[1].is_empty() {
        ensure(path.agent() == Some(strs[1]), || {
            "agent not named".to_string()
        })?;
    }
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        ensure(route.safety == Safety::Safe, || {
            "a read is unsafe".to_string()
        })?;
    }
    if route.cache.is_some() {
        ensure(method == Method::GET, || {
            "a non-GET is cacheable".to_string()
        })?;
    }
    ensure(Route::read(&method, &strs) == route, || {
        "reading &str segments differs from Box<str> ones".to_string()
    })?;
    for upper in [false, true] {
        let variant = encoded_variant(&path, upper);
        let mut other = ApiPath::parse(&variant).map_err(|e| format!("{variant}: {e:?}"))?;
        other.rewrite_sdk_stop(&method);
        let again = reading(&method, other.decoded());
        ensure(again == reading(&method, &decoded), || {
            format!("{method} {variant} reads {again:?}")
        })?;
    }
    Ok(format!("{:?}", reading(&method, &decoded)))
}

const ROUTE_DICT: &[&str] = &[
    "GET ",
    "POST ",
    "DELETE ",
    "PATCH ",
    "HEAD ",
    "/api/v1/",
    "/",
    "//",
    "agents",
    "demo",
    "invoke",
    "%69nvoke",
    "%49NVOKE",
    "stream",
    "deploy",
    "sandbox",
    "%73andbox",
    "api-keys",
    "auth",
    "api-key",
    "files",
    "download",
    "usage",
    "buckets",
    "mounts",
    "%2e",
    "%2F",
    "%00",
    "..",
    "%C2%85",
    "%",
];

/// Long request lines, made here rather than committed.
fn long_inputs() -> Vec<(String, Vec<u8>)> {
    vec![
        long(
            "long_slug_invoke",
            format!("POST /api/v1/agents/{}/invoke", "x".repeat(100_000)),
        ),
        long(
            "many_segments",
            format!("DELETE /api/v1/agents/a{}", "/sandbox".repeat(10_000)),
        ),
    ]
}

#[test]
fn route_corpus() {
    run_corpus("route", inputs("route", long_inputs()), |input| {
        route_case(input)
    });
}

#[test]
fn route_fuzz() {
    let methods = select(&["GET", "POST", "DELETE", "PATCH", "HEAD", "PUT"][..]);
    let shaped = (methods, strung("/api/v1/", ROUTE_DICT, 8))
        .prop_map(|(method, path)| [method.as_bytes(), b" ", &path].concat())
        .boxed();
    run_fuzz(
        "route",
        512,
        mutated("route", ROUTE_DICT, shaped),
        route_case,
    );
}
