//! Integers the way pydantic v2 (lax mode) reads them: strings and JSON
//! numbers of any size, then `ge`/`le` constraints.
//!
//! pydantic parses arbitrarily large integers (Python ints); a constraint
//! then refuses them, and a field without an upper bound accepts them.

use std::cmp::Ordering;

use serde_json::{json, Value};

use crate::error::{item, Loc};

/// An exact integer of any size, in canonical decimal form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Int {
    negative: bool,
    /// No leading zeros; `"0"` for zero (never negative).
    digits: String,
}

impl Int {
    /// `[+-]?[0-9]+`, else `None`.
    fn parse_plain(s: &str) -> Option<Self> {
        let (negative, digits) = match s.as_bytes().first()? {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = digits.trim_start_matches('0');
        let digits = if digits.is_empty() { "0" } else { digits };
        Some(Self {
            negative: negative && digits != "0",
            digits: digits.to_string(),
        })
    }

    /// Compares with a machine integer.
    fn cmp_i64(&self, other: i64) -> Ordering {
        let theirs = Int {
            negative: other < 0,
            digits: other.unsigned_abs().to_string(),
        };
        match (self.negative, theirs.negative) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (negative, _) => {
                let magnitude = self
                    .digits
                    .len()
                    .cmp(&theirs.digits.len())
                    .then_with(|| self.digits.cmp(&theirs.digits));
                if negative {
                    magnitude.reverse()
                } else {
                    magnitude
                }
            }
        }
    }

    /// The value when it is in `0..=u64::MAX`.
    pub fn to_u64(&self) -> Option<u64> {
        if self.negative {
            return None;
        }
        self.digits.parse().ok()
    }

    /// The value, or `u64::MAX` when it is larger (never negative once a
    /// `ge >= 0` bound has passed).
    pub fn saturating_u64(&self) -> u64 {
        self.to_u64().unwrap_or(u64::MAX)
    }

    /// Canonical decimal text, e.g. `-12` or `100000000000000000000000`.
    pub fn text(&self) -> String {
        if self.negative {
            format!("-{}", self.digits)
        } else {
            self.digits.clone()
        }
    }
}

/// pydantic's `str_as_int`: plain digits, else with trailing `.000`
/// stripped, else with single underscores between digits removed. Longer
/// than 4300 characters is `int_parsing_size`.
pub fn parse_str(text: &str, at: &Loc, input: &Value) -> Result<Int, Value> {
    let s = text.trim();
    if s.len() > 4300 {
        return Err(too_big(at, input));
    }
    let parsing = || {
        item(
            "int_parsing",
            at,
            "Input should be a valid integer, unable to parse string as an integer",
            input.clone(),
            None,
        )
    };
    if let Some(int) = Int::parse_plain(s) {
        return Ok(int);
    }
    if let Some(dot) = s.find('.') {
        if s[dot + 1..].bytes().all(|b| b == b'0') {
            return Int::parse_plain(&s[..dot]).ok_or_else(parsing);
        }
    }
    if s.contains('_') && !s.starts_with('_') && !s.ends_with('_') && !s.contains("__") {
        return Int::parse_plain(&s.replace('_', "")).ok_or_else(parsing);
    }
    Err(parsing())
}

/// An integer from a JSON value. `raw` is the value's source text when it
/// is a number (serde_json keeps only an `f64` of integers past 64 bits).
pub fn from_json(value: &Value, raw: Option<&str>, at: &Loc) -> Result<Int, Value> {
    match value {
        Value::Number(n) => {
            let text = raw.map_or_else(|| n.to_string(), str::to_string);
            if !text.contains(['.', 'e', 'E']) {
                if let Some(int) = Int::parse_plain(&text) {
                    return Ok(int);
                }
            }
            let float = n.as_f64().unwrap_or(f64::NAN);
            if !float.is_finite() {
                Err(item(
                    "finite_number",
                    at,
                    "Input should be a finite number",
                    value.clone(),
                    None,
                ))
            } else if float.fract() != 0.0 {
                Err(item(
                    "int_from_float",
                    at,
                    "Input should be a valid integer, got a number with a fractional part",
                    value.clone(),
                    None,
                ))
            } else if float.abs() < 9.2e18 {
                Ok(Int::parse_plain(&format!("{float:.0}")).unwrap_or(Int {
                    negative: false,
                    digits: "0".into(),
                }))
            } else {
                Err(too_big(at, value))
            }
        }
        Value::String(s) => parse_str(s, at, value),
        Value::Bool(b) => Ok(Int {
            negative: false,
            digits: if *b { "1" } else { "0" }.into(),
        }),
        _ => Err(item(
            "int_type",
            at,
            "Input should be a valid integer",
            value.clone(),
            None,
        )),
    }
}

fn too_big(at: &Loc, input: &Value) -> Value {
    item(
        "int_parsing_size",
        at,
        "Unable to parse input string as an integer, exceeded maximum size",
        input.clone(),
        None,
    )
}

/// `ge` and optional `le` of an integer field.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Smallest accepted value.
    pub ge: i64,
    /// Largest accepted value, if any.
    pub le: Option<i64>,
}

/// Where the reference gives no upper bound but the simulator must store
/// the value: a decision, not upstream fact. The largest value a Postgres
/// BIGINT column (the backend's store) holds.
pub const BIGINT_MAX: i64 = i64::MAX;

impl Bounds {
    /// `ge` only.
    pub const fn ge(ge: i64) -> Self {
        Self { ge, le: None }
    }

    /// `ge` and `le`.
    pub const fn between(ge: i64, le: i64) -> Self {
        Self { ge, le: Some(le) }
    }

    /// Checks `int`; pydantic tests `ge` before `le`.
    pub fn check(&self, int: &Int, at: &Loc, input: &Value) -> Result<(), Value> {
        if int.cmp_i64(self.ge) == Ordering::Less {
            return Err(item(
                "greater_than_equal",
                at,
                format!("Input should be greater than or equal to {}", self.ge),
                input.clone(),
                Some(json!({ "ge": self.ge })),
            ));
        }
        if let Some(le) = self.le {
            if int.cmp_i64(le) == Ordering::Greater {
                return Err(item(
                    "less_than_equal",
                    at,
                    format!("Input should be less than or equal to {le}"),
                    input.clone(),
                    Some(json!({ "le": le })),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::loc;

    fn s(text: &str) -> Result<String, String> {
        let at = loc(&["query", "offset"]);
        parse_str(text, &at, &json!(text))
            .map(|i| i.text())
            .map_err(|e| e["type"].as_str().unwrap_or("").to_string())
    }

    #[test]
    fn strings_parse_like_pydantic() {
        assert_eq!(s("42"), Ok("42".into()));
        assert_eq!(s("-0"), Ok("0".into()));
        assert_eq!(s("+7"), Ok("7".into()));
        assert_eq!(s("007"), Ok("7".into()));
        assert_eq!(s("5.000"), Ok("5".into()));
        assert_eq!(s("1_000"), Ok("1000".into()));
        assert_eq!(
            s("123456789012345678901234567890"),
            Ok("123456789012345678901234567890".into())
        );
        for bad in ["", "abc", "1.5", "1__0", "_1", "1e3", "--1", "0x10"] {
            assert_eq!(s(bad), Err("int_parsing".into()), "{bad}");
        }
        assert_eq!(s(&"9".repeat(4301)), Err("int_parsing_size".into()));
    }

    #[test]
    fn bounds_compare_exactly() {
        let at = loc(&["query", "limit"]);
        let b = Bounds::between(1, 100);
        let check = |t: &str| {
            let i = parse_str(t, &at, &json!(t)).unwrap();
            b.check(&i, &at, &json!(t))
                .map_err(|e| (e["type"].clone(), e["msg"].clone(), e["ctx"].clone()))
        };
        assert!(check("1").is_ok() && check("100").is_ok());
        assert_eq!(
            check("-5").unwrap_err(),
            (
                json!("greater_than_equal"),
                json!("Input should be greater than or equal to 1"),
                json!({"ge": 1})
            )
        );
        assert_eq!(check("101").unwrap_err().0, "less_than_equal");
        assert_eq!(
            check("99999999999999999999999").unwrap_err().0,
            "less_than_equal"
        );
        assert_eq!(
            check("-99999999999999999999999").unwrap_err().0,
            "greater_than_equal"
        );
        let big = parse_str("99999999999999999999999", &at, &json!(null)).unwrap();
        assert!(Bounds::ge(0).check(&big, &at, &json!(null)).is_ok());
        assert_eq!(big.saturating_u64(), u64::MAX);
    }

    #[test]
    fn json_numbers() {
        let at = loc(&["body", "n"]);
        let kind = |v: Value, raw: Option<&str>| match from_json(&v, raw, &at) {
            Ok(i) => i.text(),
            Err(e) => e["type"].as_str().unwrap_or("").to_string(),
        };
        assert_eq!(kind(json!(3), None), "3");
        assert_eq!(kind(json!(3.0), Some("3.0")), "3");
        assert_eq!(kind(json!(3.5), Some("3.5")), "int_from_float");
        assert_eq!(kind(json!(1e30), Some("1e30")), "int_parsing_size");
        assert_eq!(
            kind(json!(1e23), Some("100000000000000000000000")),
            "100000000000000000000000"
        );
        // Whole-number floats are read exactly as Python's `json` reads
        // them (correctly rounded), then taken as ints.
        for (text, int) in [
            ("1876117744596165.0", "1876117744596165"),
            ("12345678901234567.0", "12345678901234568"),
            ("9007199254740993.0", "9007199254740992"),
        ] {
            let value: Value = serde_json::from_str(text).unwrap();
            assert_eq!(kind(value, Some(text)), int, "{text}");
        }
        assert_eq!(kind(json!("12"), None), "12");
        assert_eq!(kind(json!(true), None), "1");
        assert_eq!(kind(json!([1]), None), "int_type");
    }
}
