//! Request validation in FastAPI's manner: every field of a JSON body is
//! checked, every problem becomes one pydantic v2 item, and the request
//! gets a single 422 listing them all.
//!
//! Getters of [`Body`] return placeholder values (`""`, `0`) for fields
//! that failed; handlers call [`Body::done`] before using any of them.

pub(crate) mod form;
pub(crate) mod int;
pub(crate) mod query;
pub(crate) mod slug;

use std::collections::HashMap;

use axum::response::Response;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::error::{
    item, loc, missing, not_a_string, not_one_of, unparsable_body, unprocessable, Loc,
};
use int::Bounds;

/// A JSON object body under validation.
#[derive(Debug)]
pub struct Body {
    fields: Map<String, Value>,
    /// Source text of each top-level value, for integers past 64 bits.
    raw: HashMap<String, Box<RawValue>>,
    issues: Vec<Value>,
}

impl Body {
    /// Reads a body declared as a required model: no body at all is
    /// `missing` at `["body"]`, broken JSON is `json_invalid`, anything but
    /// an object is `model_attributes_type` — each a 422 at once, as in
    /// FastAPI. Bytes that are not UTF-8 are FastAPI's 400.
    pub fn parse(bytes: &[u8]) -> Result<Self, Response> {
        if bytes.is_empty() {
            return Err(unprocessable(vec![missing(&loc(&["body"]), Value::Null)]));
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Err(unparsable_body());
        };
        let value: Value = serde_json::from_str(text).map_err(|e| json_invalid(text, &e))?;
        if value.is_null() {
            // FastAPI reads a `null` body as no body.
            return Err(unprocessable(vec![missing(&loc(&["body"]), Value::Null)]));
        }
        let Value::Object(fields) = value else {
            return Err(unprocessable(vec![item(
                "model_attributes_type",
                &loc(&["body"]),
                "Input should be a valid dictionary or object to extract fields from",
                value,
                None,
            )]));
        };
        let raw = serde_json::from_str(text).unwrap_or_default();
        Ok(Self {
            fields,
            raw,
            issues: Vec::new(),
        })
    }

    /// 422 listing every problem found so far, if any.
    pub fn done(&self) -> Result<(), Response> {
        if self.issues.is_empty() {
            Ok(())
        } else {
            Err(unprocessable(self.issues.clone()))
        }
    }

    /// Records a problem.
    pub fn push(&mut self, issue: Value) {
        self.issues.push(issue);
    }

    /// Whether the field was sent (even as `null`): PATCH semantics.
    pub fn sent(&self, field: &str) -> bool {
        self.fields.contains_key(field)
    }

    /// The field's value unless absent or `null`.
    pub fn value(&self, field: &str) -> Option<&Value> {
        self.fields.get(field).filter(|v| !v.is_null())
    }

    /// The whole body, for `missing` items.
    pub fn whole(&self) -> Value {
        Value::Object(self.fields.clone())
    }

    /// A required string.
    pub fn str(&mut self, field: &str) -> String {
        match self.fields.get(field) {
            None => {
                let issue = missing(&at(field), self.whole());
                self.push(issue);
                String::new()
            }
            Some(Value::Null) => {
                let issue = not_a_string(&at(field), &Value::Null);
                self.push(issue);
                String::new()
            }
            Some(_) => self.opt_str(field).unwrap_or_default(),
        }
    }

    /// A required string from a closed set.
    pub fn choice(&mut self, field: &str, allowed: &[&str]) -> String {
        match self.fields.get(field) {
            None => {
                let issue = missing(&at(field), self.whole());
                self.push(issue);
                String::new()
            }
            Some(Value::Null) => {
                let issue = not_one_of(&at(field), &Value::Null, allowed);
                self.push(issue);
                String::new()
            }
            Some(_) => self.opt_choice(field, allowed).unwrap_or_default(),
        }
    }

    /// An optional string (`null` is absent).
    pub fn opt_str(&mut self, field: &str) -> Option<String> {
        match self.value(field)? {
            Value::String(s) => Some(s.clone()),
            other => {
                let issue = not_a_string(&at(field), other);
                self.push(issue);
                None
            }
        }
    }

    /// An optional string from a closed set.
    pub fn opt_choice(&mut self, field: &str, allowed: &[&str]) -> Option<String> {
        let value = self.value(field)?;
        match value.as_str().filter(|s| allowed.contains(s)) {
            Some(s) => Some(s.to_string()),
            None => {
                let issue = not_one_of(&at(field), value, allowed);
                self.push(issue);
                None
            }
        }
    }

    /// A required integer within `bounds`.
    pub fn int(&mut self, field: &str, bounds: Bounds) -> u64 {
        if !self.fields.contains_key(field) {
            let issue = missing(&at(field), self.whole());
            self.push(issue);
            return 0;
        }
        self.int_at(field, bounds).unwrap_or(0)
    }

    /// An optional integer within `bounds` (`null` is absent).
    pub fn opt_int(&mut self, field: &str, bounds: Bounds) -> Option<u64> {
        self.value(field)?;
        self.int_at(field, bounds)
    }

    fn int_at(&mut self, field: &str, bounds: Bounds) -> Option<u64> {
        let value = self.fields.get(field).cloned().unwrap_or(Value::Null);
        let raw = self.raw.get(field).map(|r| r.get());
        let place = at(field);
        let checked = int::from_json(&value, raw, &place)
            .and_then(|n| bounds.check(&n, &place, &value).map(|()| n));
        match checked {
            Ok(n) => Some(n.saturating_u64()),
            Err(issue) => {
                self.push(issue);
                None
            }
        }
    }

    /// An optional boolean, lax: `true`/`false`, 0/1, and the strings
    /// pydantic takes (`yes`, `off`, ...).
    pub fn opt_bool(&mut self, field: &str) -> Option<bool> {
        let value = self.value(field)?.clone();
        match lax_bool(&value) {
            Ok(b) => Some(b),
            Err(kind) => {
                let msg = if kind == "bool_type" {
                    "Input should be a valid boolean"
                } else {
                    "Input should be a valid boolean, unable to interpret input"
                };
                self.push(item(kind, &at(field), msg, value, None));
                None
            }
        }
    }

    /// An optional list of strings; each bad item is its own problem.
    pub fn opt_str_list(&mut self, field: &str) -> Option<Vec<String>> {
        let value = self.value(field)?.clone();
        let Value::Array(items) = value else {
            self.push(not_a_list(&at(field), &value));
            return None;
        };
        let mut out = Vec::new();
        for (i, v) in items.iter().enumerate() {
            match v {
                Value::String(s) => out.push(s.clone()),
                other => self.push(not_a_string(&at(field).at(i), other)),
            }
        }
        Some(out)
    }
}

/// `["body", field]`.
pub fn at(field: &str) -> Loc {
    loc(&["body", field])
}

/// `list_type`.
pub fn not_a_list(at: &Loc, input: &Value) -> Value {
    item(
        "list_type",
        at,
        "Input should be a valid list",
        input.clone(),
        None,
    )
}

/// pydantic's lax boolean; the error type when it is none.
pub fn lax_bool(value: &Value) -> Result<bool, &'static str> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) => match n.as_f64() {
            Some(0.0) => Ok(false),
            Some(1.0) => Ok(true),
            _ => Err("bool_parsing"),
        },
        Value::String(s) => str_bool(s).ok_or("bool_parsing"),
        _ => Err("bool_type"),
    }
}

/// pydantic's `str_as_bool`.
pub fn str_bool(s: &str) -> Option<bool> {
    const NO: [&str; 6] = ["0", "f", "n", "no", "off", "false"];
    const YES: [&str; 6] = ["1", "t", "y", "on", "yes", "true"];
    if NO.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(false)
    } else if YES.iter().any(|w| s.eq_ignore_ascii_case(w)) {
        Some(true)
    } else {
        None
    }
}

/// FastAPI's answer to a body that is not JSON: `json_invalid` at
/// `["body", char offset]`, with Python's `json` message in `ctx.error`.
fn json_invalid(text: &str, e: &serde_json::Error) -> Response {
    let line_start: usize = text
        .split_inclusive('\n')
        .take(e.line().saturating_sub(1))
        .map(|l| l.chars().count())
        .sum();
    // Python points at the offending character, or past the end at EOF.
    let pos = if e.is_eof() {
        text.chars().count()
    } else {
        line_start + e.column().saturating_sub(1)
    };
    let shown = e.to_string();
    let message = if shown.starts_with("trailing characters") {
        "Extra data"
    } else if shown.starts_with("key must be a string") {
        "Expecting property name enclosed in double quotes"
    } else if shown.starts_with("expected `,` or") {
        "Expecting ',' delimiter"
    } else if shown.starts_with("expected `:`") {
        "Expecting ':' delimiter"
    } else if shown.starts_with("EOF while parsing a string") {
        "Unterminated string starting at"
    } else {
        "Expecting value"
    };
    unprocessable(vec![item(
        "json_invalid",
        &loc(&["body"]).at(pos),
        "JSON decode error",
        json!({}),
        Some(json!({ "error": message })),
    )])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_problem_in_field_order() {
        let mut b =
            Body::parse(br#"{"name": 5, "n": -1, "flag": "maybe", "tags": ["a", 2]}"#).unwrap();
        assert_eq!(b.str("name"), "");
        assert_eq!(b.str("other"), "");
        assert_eq!(b.opt_int("n", Bounds::ge(0)), None);
        assert_eq!(b.opt_bool("flag"), None);
        assert_eq!(b.opt_str_list("tags"), Some(vec!["a".to_string()]));
        let kinds: Vec<String> = b
            .issues
            .iter()
            .map(|i| i["type"].as_str().unwrap_or("").to_string())
            .collect();
        assert_eq!(
            kinds,
            [
                "string_type",
                "missing",
                "greater_than_equal",
                "bool_parsing",
                "string_type"
            ]
        );
        assert_eq!(b.issues[4]["loc"], json!(["body", "tags", 1]));
        assert!(b.done().is_err());
    }

    #[test]
    fn bodies_that_are_not_objects() {
        for (bytes, status) in [
            (&b""[..], 422),
            (b"  ", 422),
            (b"[1]", 422),
            (b"null", 422),
            (b"{\"a\":", 422),
            (b"\xc3\x28", 400),
        ] {
            let status_of = Body::parse(bytes)
                .map(|_| 200)
                .unwrap_or_else(|r| r.status().as_u16());
            assert_eq!(status_of, status, "{bytes:?}");
        }
    }
}
