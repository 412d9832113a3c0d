//! No import circles in `src/`: a test over the `crate::` and `super::`
//! paths of every file, so a circle fails `cargo test` the day it appears.
//!
//! Modules are compared with their siblings: in each folder (and at the
//! crate's top), each child module stands for its whole subtree, and a
//! child uses another when any file under it names a path into the other.
//! Those "uses" must form no circle. A module's own `mod.rs` is left out of
//! its children's comparison: declaring and re-exporting children is what it
//! is for. Test code (`#[cfg(test)]` onwards, `tests.rs` files) and comments
//! are not read.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Module = Vec<String>;

/// Every source file's module path and the code it would compile outside
/// tests, comments dropped.
fn sources() -> BTreeMap<Module, String> {
    let mut out = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !name.ends_with(".rs") || name == "tests.rs" {
                continue;
            }
            let relative = path.strip_prefix(&root).unwrap();
            let mut module: Module = relative
                .iter()
                .map(|part| part.to_string_lossy().trim_end_matches(".rs").to_string())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            if module.is_empty() {
                continue; // the crate root composes everything
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            let code: Vec<&str> = code
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
                .collect();
            out.insert(module, code.join("\n"));
        }
    }
    out
}

/// The module paths `code` (in `module`) names through `crate::` and
/// `super::`, groups (`use crate::a::{b, c::d}`) expanded one level.
fn named_paths(module: &Module, is_dir_module: bool, code: &str) -> Vec<Module> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        // Paths are ASCII; a character of several bytes (`·` in a format
        // string) is stepped over.
        if !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &code[i..];
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let (mut base, skip) = if boundary && rest.starts_with("crate::") {
            (Vec::new(), "crate::".len())
        } else if boundary && rest.starts_with("super::") {
            // `super` of `a/b.rs` is `a`; of `a/mod.rs` (module `a`) it is the crate root
            // or `a`'s parent.
            let mut parent = module.clone();
            if !is_dir_module || !parent.is_empty() {
                parent.pop();
            }
            (parent, "super::".len())
        } else {
            i += 1;
            continue;
        };
        let mut j = i + skip;
        while code[j..].starts_with("super::") {
            base.pop();
            j += "super::".len();
        }
        let (segments, end) = read_path(code, j);
        let mut prefix = base.clone();
        prefix.extend(segments);
        if code[end..].starts_with('{') {
            let close = code[end..].find('}').map_or(code.len(), |k| end + k);
            for item in code[end + 1..close].split(',') {
                let first = item.trim().split("::").next().unwrap_or("");
                let first = first.split_whitespace().next().unwrap_or("");
                if !first.is_empty() && first != "self" {
                    let mut path = prefix.clone();
                    path.push(first.to_string());
                    found.push(path);
                }
            }
        }
        found.push(prefix);
        i = end.max(i + 1);
    }
    found
}

/// `a::b::c` from `start`; returns the segments and the index after the
/// last `::` (where a group's `{` would be).
fn read_path(code: &str, start: usize) -> (Vec<String>, usize) {
    let mut segments = Vec::new();
    let mut at = start;
    loop {
        let len = code[at..]
            .bytes()
            .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
            .count();
        if len == 0 {
            return (segments, at);
        }
        segments.push(code[at..at + len].to_string());
        at += len;
        if code[at..].starts_with("::") {
            at += 2;
        } else {
            return (segments, at);
        }
    }
}

/// The longest prefix of `path` that is a module.
fn resolve(modules: &BTreeSet<Module>, path: &[String]) -> Option<Module> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|prefix| modules.contains(prefix))
}

/// Every use between sibling modules: (folder, from child, to child).
fn sibling_uses() -> BTreeSet<(Module, String, String)> {
    let sources = sources();
    let modules: BTreeSet<Module> = sources.keys().cloned().collect();
    let dir_modules: BTreeSet<Module> = {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        modules
            .iter()
            .filter(|m| root.join(m.join("/")).join("mod.rs").exists())
            .cloned()
            .collect()
    };
    let mut uses = BTreeSet::new();
    for (module, code) in &sources {
        for named in named_paths(module, dir_modules.contains(module), code) {
            let Some(target) = resolve(&modules, &named) else {
                continue;
            };
            // The folder both sit in, and the child of it each is under.
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common == module.len() || common == target.len() {
                continue; // a module and its own parent or child
            }
            uses.insert((
                module[..common].to_vec(),
                module[common].clone(),
                target[common].clone(),
            ));
        }
    }
    uses
}

/// A circle among the children of one folder, if any.
fn find_circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_circles_in_src() {
    let mut folders: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (folder, from, to) in sibling_uses() {
        folders
            .entry(folder)
            .or_default()
            .entry(from)
            .or_default()
            .insert(to);
    }
    let circles: Vec<String> = folders
        .iter()
        .filter_map(|(folder, edges)| {
            let circle = find_circle(edges)?;
            let at = if folder.is_empty() {
                "src".to_string()
            } else {
                format!("src/{}", folder.join("/"))
            };
            Some(format!("{at}: {}", circle.join(" -> ")))
        })
        .collect();
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

#[test]
fn the_reader_sees_the_uses_it_must() {
    let uses = sibling_uses();
    let top = |from: &str, to: &str| uses.contains(&(Vec::new(), from.into(), to.into()));
    // Known uses, so a reader that misses paths cannot pass the test above.
    assert!(top("routes", "cache"), "{uses:#?}");
    assert!(top("keys", "config"));
    assert!(top("config", "grant"));
    let routes = vec!["routes".to_string()];
    assert!(uses.contains(&(routes.clone(), "proxy".into(), "cached".into())));
    assert!(uses.contains(&(routes, "cached".into(), "forward".into())));
}
