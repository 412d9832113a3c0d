//! Query parameters in FastAPI's manner: every parameter is checked and
//! the request gets one 422 listing all problems, with the string as sent
//! in `input`.

use std::collections::HashMap;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::int::{self, Bounds};
use super::str_bool;
use crate::error::{item, loc, not_one_of, unprocessable, Loc};

/// The query of one request, under validation.
#[derive(Debug)]
pub struct Params<'a> {
    query: &'a HashMap<String, String>,
    issues: Vec<Value>,
}

impl<'a> Params<'a> {
    /// Starts validating `query`.
    pub fn new(query: &'a HashMap<String, String>) -> Self {
        Self {
            query,
            issues: Vec::new(),
        }
    }

    /// The problems found so far (to merge with a body's).
    pub fn into_issues(self) -> Vec<Value> {
        self.issues
    }

    /// 422 listing every problem found so far, if any.
    pub fn done(&self) -> Result<(), Response> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(unprocessable(self.issues.clone()))
        }
    }

    fn at(name: &str) -> Loc {
        loc(&["query", name])
    }

    /// An integer within `bounds`, `default` when absent. `None` when it
    /// failed (the problem is recorded).
    pub fn int(&mut self, name: &str, default: u64, bounds: Bounds) -> Option<int::Int> {
        let Some(text) = self.query.get(name) else {
            let default = default.to_string();
            return int::parse_str(&default, &Self::at(name), &Value::Null).ok();
        };
        let input = json!(text);
        let at = Self::at(name);
        let checked = int::parse_str(text, &at, &input)
            .and_then(|n| bounds.check(&n, &at, &input).map(|()| n));
        match checked {
            Ok(n) => Some(n),
            Err(issue) => {
                self.issues.push(issue);
                None
            }
        }
    }

    /// A lax boolean, `default` when absent.
    pub fn bool(&mut self, name: &str, default: bool) -> bool {
        let Some(text) = self.query.get(name) else {
            return default;
        };
        str_bool(text).unwrap_or_else(|| {
            self.issues.push(item(
                "bool_parsing",
                &Self::at(name),
                "Input should be a valid boolean, unable to interpret input",
                json!(text),
                None,
            ));
            default
        })
    }

    /// An optional value from a closed set.
    pub fn choice(&mut self, name: &str, allowed: &[&str]) -> Option<String> {
        let text = self.query.get(name)?;
        if allowed.contains(&text.as_str()) {
            return Some(text.clone());
        }
        self.issues
            .push(not_one_of(&Self::at(name), &json!(text), allowed));
        None
    }

    /// `limit` (1..=100, default `default`) and `offset` (≥ 0, default 0).
    ///
    /// The reference bounds `limit` (1–100) but gives `offset` no upper
    /// bound, so, as pydantic would, any large offset is accepted (an empty
    /// page) and echoed exactly in `meta`.
    pub fn page(&mut self, default: u64) -> Page {
        let limit = self.int("limit", default, Bounds::between(1, 100));
        let offset = self.int("offset", 0, Bounds::ge(0));
        Page {
            limit: limit.map_or(default, |l| l.saturating_u64()) as usize,
            offset: offset.as_ref().map_or(0, |o| {
                usize::try_from(o.saturating_u64()).unwrap_or(usize::MAX)
            }),
            offset_text: offset.map_or_else(|| "0".to_string(), |o| o.text()),
        }
    }
}

/// A validated page request.
#[derive(Clone, Debug)]
pub struct Page {
    /// Items per page.
    pub limit: usize,
    /// Items to skip (saturated to `usize::MAX`).
    pub offset: usize,
    /// The offset exactly as pydantic would echo it.
    offset_text: String,
}

impl Page {
    /// `{"<key>": items, "meta": {has_more, limit, offset, total}}`, keys
    /// sorted as elsewhere, `offset` written exactly even past 64 bits.
    pub fn reply(&self, key: &str, items: Vec<Value>, total: usize) -> Response {
        let has_more = self.offset.saturating_add(self.limit) < total;
        let items = Value::Array(items).to_string();
        let key = Value::String(key.to_string()).to_string();
        let body = format!(
            r#"{{{key}:{items},"meta":{{"has_more":{has_more},"limit":{},"offset":{},"total":{total}}}}}"#,
            self.limit, self.offset_text
        );
        let mut response = body.into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn pages_report_every_problem() {
        let query = q(&[("limit", "-1"), ("offset", "x")]);
        let mut p = Params::new(&query);
        p.page(20);
        let issues = p.into_issues();
        assert_eq!(issues.len(), 2);
        assert_eq!(issues[0]["type"], "greater_than_equal");
        assert_eq!(issues[0]["input"], "-1");
        assert_eq!(issues[1]["type"], "int_parsing");
        assert_eq!(issues[1]["loc"], json!(["query", "offset"]));
    }

    #[test]
    fn huge_offsets_are_kept_exactly() {
        let query = q(&[("offset", "123456789012345678901234567890")]);
        let mut p = Params::new(&query);
        let page = p.page(20);
        assert!(p.done().is_ok());
        assert_eq!(page.offset, usize::MAX);
        assert_eq!(page.offset_text, "123456789012345678901234567890");
    }
}
