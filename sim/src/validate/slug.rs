//! Slugs of agents and buckets.
//!
//! Reference: lowercase alphanumerics and hyphens, unique per user; the CLI
//! derives one from a name (lowercase, non-`[a-z0-9]` runs become `-`,
//! trimmed, at most 100 characters). A given slug must be what that rule
//! produces: the pattern below, at most 100 characters.

use serde_json::{json, Value};

use super::{at, Body};
use crate::error::{item, value_error};
use crate::util::slugify;

/// The canonical form: no leading, trailing or doubled hyphens.
pub const PATTERN: &str = "^[a-z0-9]+(?:-[a-z0-9]+)*$";
/// Longest slug.
pub const MAX_LEN: usize = 100;

fn canonical(slug: &str) -> bool {
    !slug.is_empty()
        && slug.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// Checks the optional `slug` field as a constrained string (length first,
/// then pattern, as pydantic does). Returns it when sent and valid.
pub fn given(body: &mut Body) -> Option<String> {
    let slug = body.opt_str("slug")?;
    let input = json!(slug);
    if slug.chars().count() > MAX_LEN {
        body.push(item(
            "string_too_long",
            &at("slug"),
            format!("String should have at most {MAX_LEN} characters"),
            input,
            Some(json!({ "max_length": MAX_LEN })),
        ));
        return None;
    }
    if !canonical(&slug) {
        body.push(item(
            "string_pattern_mismatch",
            &at("slug"),
            format!("String should match pattern '{PATTERN}'"),
            input,
            Some(json!({ "pattern": PATTERN })),
        ));
        return None;
    }
    Some(slug)
}

/// The slug derived from `name` when none was sent.
///
/// Decision (the reference is silent): a name with no letter or digit
/// would derive the empty slug, which no URL can address, so it is refused
/// with a 422 on `name` instead of creating an unreachable resource.
pub fn derived(body: &mut Body, name: &str) -> String {
    let slug = slugify(name);
    if slug.is_empty() {
        body.push(value_error(
            &at("name"),
            &Value::String(name.to_string()),
            "a slug cannot be derived from this name (it has no letter or digit); send a slug",
        ));
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_slugs() {
        for good in ["a", "my-agent", "a1-b2-c3", "0"] {
            assert!(canonical(good), "{good}");
        }
        for bad in ["", "Ab*", "-a", "a-", "a--b", "a b", "a_b", "Ä"] {
            assert!(!canonical(bad), "{bad}");
        }
    }
}
