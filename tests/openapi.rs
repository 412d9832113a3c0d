//! The OpenAPI description (`assets/openapi.json`, served at
//! `GET /openapi.json`) against the code, so neither drifts: every route the
//! gateway's router serves (`src/app.rs`) and every `/api/v1` route of the
//! simulator's router (`sim/src/routes/mod.rs`, the reference's routes) is
//! described, with the same methods, and the description has nothing else.
//! The routes are read from the two routers' source, the way
//! `tests/imports.rs` reads `use` lines. Also: the gateway's error codes in
//! the description are the README's error table, both ways.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeSet;

use serde_json::Value;

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

fn read(path: &str) -> String {
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"))
}

fn description() -> Value {
    serde_json::from_str(&read("assets/openapi.json")).expect("assets/openapi.json is JSON")
}

/// `(METHOD, path)` of every `.route("path", get(..).post(..)...)` in
/// `source`: the text from the path to the matching close parenthesis,
/// with the methods named in it (a `.fallback(..)` is not a method).
fn routes_in(source: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    // Test routers (`#[cfg(test)]` modules) serve nothing.
    let mut rest = source.split("#[cfg(test)]").next().unwrap_or(source);
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let open = rest.find('"').expect("a route's path is a literal");
        let close = open + 1 + rest[open + 1..].find('"').unwrap();
        let path = &rest[open + 1..close];
        // The call's arguments end at the parenthesis closing `.route(`.
        let mut depth = 1;
        let mut end = close;
        for (i, c) in rest[close..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = close + i;
                break;
            }
        }
        let handlers = &rest[close + 1..end];
        for method in METHODS {
            let named = handlers.match_indices(&format!("{method}(")).any(|(i, _)| {
                let before = handlers[..i].chars().next_back();
                !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
                    || handlers[..i].ends_with("routing::")
            });
            if named {
                found.insert((method.to_uppercase(), path.to_string()));
            }
        }
        rest = &rest[end..];
    }
    found
}

fn described(doc: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

#[test]
fn the_route_reader_reads_both_routers() {
    let sample = r#"
        .route("/a", get(x::a).fallback(method_not_allowed))
        .route(
            "/b/{id}",
            axum::routing::delete(x::b).post(y::c).fallback(method_not_allowed),
        )
        .route("/c", get(page::index).patch(z::forget_me))"#;
    let seen: Vec<(String, String)> = routes_in(sample).into_iter().collect();
    let expected = [
        ("DELETE", "/b/{id}"),
        ("GET", "/a"),
        ("GET", "/c"),
        ("PATCH", "/c"),
        ("POST", "/b/{id}"),
    ]
    .map(|(m, p)| (m.to_string(), p.to_string()));
    assert_eq!(seen, expected);
}

#[test]
fn every_served_route_is_described_and_nothing_else() {
    let doc = description();
    let gateway = routes_in(&read("src/app.rs"));
    let api: BTreeSet<_> = routes_in(&read("sim/src/routes/mod.rs"))
        .into_iter()
        .filter(|(_, path)| path.starts_with("/api/v1/"))
        .collect();
    assert!(
        gateway.len() > 20,
        "the reader found the gateway's routes: {gateway:?}"
    );
    assert!(api.len() > 40, "the reader found the API's routes: {api:?}");
    assert!(gateway.contains(&("GET".into(), "/openapi.json".into())));
    let served: BTreeSet<_> = gateway.union(&api).cloned().collect();
    let listed = described(&doc);
    let missing: Vec<_> = served.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&served).collect();
    assert!(missing.is_empty(), "served but not described: {missing:?}");
    assert!(extra.is_empty(), "described but not served: {extra:?}");
}

#[test]
fn every_operation_says_what_it_answers() {
    let doc = description();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let responses = op["responses"].as_object();
            let responses = responses.unwrap_or_else(|| panic!("{method} {path}: no responses"));
            assert!(!responses.is_empty(), "{method} {path}");
            assert!(
                !responses.contains_key("default"),
                "{method} {path}: statuses are listed, not defaulted"
            );
            assert!(
                op["operationId"].is_string(),
                "{method} {path}: operationId"
            );
        }
    }
}

/// The codes in the README's "Errors the gateway makes" table.
fn readme_codes() -> BTreeSet<String> {
    let readme = read("README.md");
    let start = readme
        .find("### Errors the gateway makes")
        .expect("the error section");
    let section = &readme[start..];
    let end = section[4..].find("\n## ").map_or(section.len(), |i| i + 4);
    let mut codes = BTreeSet::new();
    for line in section[..end].lines().filter(|l| l.starts_with('|')) {
        for cell in line.split('|') {
            for word in cell.split('`').skip(1).step_by(2) {
                let is_code = !word.is_empty()
                    && word.contains('_')
                    && word.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                if is_code {
                    codes.insert(word.to_string());
                }
            }
        }
    }
    codes
}

#[test]
fn the_error_codes_are_the_readme_table() {
    let doc = description();
    let schema = &doc["components"]["schemas"]["Error"]["properties"]["code"]["enum"];
    let described: BTreeSet<String> = schema
        .as_array()
        .expect("components.schemas.Error.properties.code.enum")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let documented = readme_codes();
    assert!(documented.len() > 20, "{documented:?}");
    let missing: Vec<_> = documented.difference(&described).collect();
    let extra: Vec<_> = described.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "in the README, not in the description: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in the description, not in the README: {extra:?}"
    );
}
