//! What an invocation cost, read exactly from the upstream's answer.

use rust_decimal::Decimal;

/// Tokens and cost of one `InvocationResponse`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InvocationUsage {
    /// `input_tokens`.
    pub input_tokens: u64,
    /// `output_tokens`.
    pub output_tokens: u64,
    /// `total_cost_usd`, exact.
    pub cost_usd: Decimal,
}

impl InvocationUsage {
    /// Reads tokens and cost from an `InvocationResponse` body.
    /// `total_cost_usd` may be a JSON number or a decimal string; its
    /// digits are read as written, never through a float.
    pub fn parse(body: &[u8]) -> Option<Self> {
        #[derive(serde::Deserialize)]
        struct Wire<'a> {
            #[serde(default)]
            input_tokens: Option<u64>,
            #[serde(default)]
            output_tokens: Option<u64>,
            #[serde(borrow)]
            total_cost_usd: Option<&'a serde_json::value::RawValue>,
        }
        let wire: Wire<'_> = serde_json::from_slice(body).ok()?;
        let cost = match wire.total_cost_usd.map(|raw| raw.get().trim()) {
            None | Some("null") => Decimal::ZERO,
            Some(text) => exact_decimal(text.trim_matches('"'))?,
        };
        Some(Self {
            input_tokens: wire.input_tokens.unwrap_or(0),
            output_tokens: wire.output_tokens.unwrap_or(0),
            cost_usd: cost,
        })
    }
}

/// `"0.001"`, `0.001`, `1e-3`: the exact decimal written (rounded only
/// past the 28 significant digits a `Decimal` holds).
fn exact_decimal(text: &str) -> Option<Decimal> {
    use std::str::FromStr;
    Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .or_else(|_| Decimal::from_str(text))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invocation_cost_is_read_exactly_from_numbers_and_strings() {
        let parse = |body: &str| InvocationUsage::parse(body.as_bytes()).unwrap();
        let a = parse(r#"{"input_tokens":12,"output_tokens":9,"total_cost_usd":"0.000171"}"#);
        assert_eq!(a.cost_usd, Decimal::new(171, 6));
        assert_eq!((a.input_tokens, a.output_tokens), (12, 9));
        let b = parse(r#"{"total_cost_usd":0.123456789012345678}"#);
        assert_eq!(b.cost_usd.to_string(), "0.123456789012345678");
        assert_eq!(
            parse(r#"{"total_cost_usd":1e-3}"#).cost_usd,
            Decimal::new(1, 3)
        );
        assert_eq!(parse(r#"{"total_cost_usd":null}"#).cost_usd, Decimal::ZERO);
        assert!(InvocationUsage::parse(br#"{"total_cost_usd":"lots"}"#).is_none());
        assert!(InvocationUsage::parse(b"not json").is_none());
    }
}
