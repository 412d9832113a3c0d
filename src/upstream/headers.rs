//! Header names, the rules for which headers cross the gateway, and the
//! reuse of header values answers render again and again.

use std::cell::RefCell;
use std::thread::LocalKey;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use smallvec::SmallVec;

/// The request id header, passed on or generated.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// Legacy credential header some old tools still send; never forwarded.
pub const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
/// The rate limit headers: the upstream's on the way in, the gateway's own
/// view on the way out.
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// See [`X_RATELIMIT_LIMIT`].
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// See [`X_RATELIMIT_LIMIT`].
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// On an answer that waited for the budget: the milliseconds it waited.
pub const QUEUE_WAIT: HeaderName = HeaderName::from_static("x-gateway-queue-wait-ms");
/// RFC 7240's answer to a `Prefer` that was honoured.
pub const PREFERENCE_APPLIED: HeaderName = HeaderName::from_static("preference-applied");

/// The hop-by-hop names (RFC 9110 §7.6.1), plus `Proxy-*`, `Keep-Alive`
/// and `Upgrade`, lowercase, as a pattern: the one list for every check
/// below. A `match` on a name tests its length and compares at most a
/// couple of them; a walk over a list compared nine per header, both ways.
macro_rules! hop_by_hop {
    () => {
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    };
}

/// Removes hop-by-hop headers, `Upgrade`, and every header that
/// `Connection` names. Applied both ways.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    strip(headers, is_hop_by_hop);
}

/// Prepares client request headers for the upstream: hop-by-hop headers,
/// `Host`, `Expect` and every client credential are removed. The caller then sets the
/// upstream `Authorization`.
pub fn sanitize_request(headers: &mut HeaderMap) {
    strip(headers, |name| {
        matches!(
            name.as_str(),
            hop_by_hop!() | "host" | "authorization" | "x-api-key" | "cookie"
            // The gateway's own server already answered any
            // `100-continue`.
            | "expect"
        )
    });
}

/// The value `render` makes of `key`, or the one it made last on this
/// thread (kept in `last`) when `key` is the same. Answers in a row mostly
/// show the same numbers (`Age`, the `X-RateLimit-*` view): cloning a
/// shared value costs no new buffer.
pub fn reuse_rendered<K: PartialEq, V: Clone>(
    last: &'static LocalKey<RefCell<Option<(K, V)>>>,
    key: K,
    render: impl FnOnce(&K) -> V,
) -> V {
    last.with_borrow_mut(|last| match last {
        Some((shown, value)) if *shown == key => value.clone(),
        _ => {
            let value = render(&key);
            *last = Some((key, value.clone()));
            value
        }
    })
}

thread_local! {
    /// The last `X-RateLimit-*` numbers set on this thread, and their values.
    static RATE_LIMIT: RefCell<Option<([u64; 3], [HeaderValue; 3])>> = const { RefCell::new(None) };
}

/// Sets `X-RateLimit-Limit`, `-Remaining` and `-Reset` (Unix seconds),
/// replacing any there. The same numbers in a row (they change once a
/// second at most) share their values: no new buffers.
pub fn set_rate_limit(headers: &mut HeaderMap, limit: u64, remaining: u64, reset: u64) {
    let [limit, remaining, reset] = reuse_rendered(&RATE_LIMIT, [limit, remaining, reset], |n| {
        n.map(HeaderValue::from)
    });
    // Constant names: a `&str` name is parsed again on every insert.
    headers.insert(X_RATELIMIT_LIMIT, limit);
    headers.insert(X_RATELIMIT_REMAINING, remaining);
    headers.insert(X_RATELIMIT_RESET, reset);
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    // Header names are lowercase.
    matches!(name.as_str(), hop_by_hop!())
}

/// `name` in any case (as `Connection` may list it) is a hop-by-hop name.
fn is_hop_by_hop_name(name: &str) -> bool {
    const LONGEST: usize = "proxy-authorization".len();
    if name.len() > LONGEST {
        return false;
    }
    let mut lower = [0u8; LONGEST];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name.as_bytes());
    lower.make_ascii_lowercase();
    matches!(std::str::from_utf8(lower), Ok(hop_by_hop!()))
}

/// Removes every header `drop` picks (`Connection` among them) and every
/// header `Connection` names.
///
/// One pass over the names present, then a removal for each found, in the
/// order found (removals reorder what is left, and the order stays as it
/// always was): a lookup per name that might be there cost about 20 hash
/// probes per proxied request, for maps that mostly hold one or two of
/// them. The names `Connection` lists are looked up as written (a `&str`
/// name is matched without a copy), not made into header names.
fn strip(headers: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    enum Gone {
        Name(HeaderName),
        Listed(HeaderValue),
    }
    // On the stack: most maps hold none or one or two of them.
    let mut gone: SmallVec<[Gone; 4]> = SmallVec::new();
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            gone.push(Gone::Listed(value.clone()));
        }
        let seen = || gone.iter().any(|g| matches!(g, Gone::Name(n) if n == name));
        if drop(name) && !seen() {
            gone.push(Gone::Name(name.clone()));
        }
    }
    for gone in gone {
        match gone {
            Gone::Name(name) => {
                headers.remove(name);
            }
            // Bytes, not `to_str`: one non-ASCII token must not hide the
            // names listed beside it. A token that is no header name names
            // nothing here.
            Gone::Listed(value) => {
                for token in value.as_bytes().split(|b| *b == b',') {
                    let Ok(name) = std::str::from_utf8(token.trim_ascii()) else {
                        continue;
                    };
                    // `keep-alive` (what most servers list) and the other
                    // hop-by-hop names went above when present: no lookup.
                    if !name.is_empty() && !is_hop_by_hop_name(name) {
                        headers.remove(name);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn strips_hop_by_hop_credentials_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("host", "127.0.0.1:8787"),
            ("authorization", "Bearer local"),
            ("x-api-key", "local"),
            ("cookie", "a=b"),
            ("expect", "100-continue"),
            ("accept", "application/json"),
            ("content-type", "application/json"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        sanitize_request(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept", "content-type"]);
    }

    #[test]
    fn hop_by_hop_names_match_in_any_case_and_nothing_else() {
        for name in [
            "connection",
            "Keep-Alive",
            "PROXY-AUTHORIZATION",
            "proxy-authenticate",
            "Proxy-Connection",
            "te",
            "Trailer",
            "Transfer-Encoding",
            "upgrade",
        ] {
            assert!(is_hop_by_hop_name(name), "{name}");
        }
        let others = ["", "t", "tea", "x-te", "proxy-authorizations", "host", "é"];
        for name in others {
            assert!(!is_hop_by_hop_name(name), "{name}");
        }
        assert!(is_hop_by_hop(&header::TRANSFER_ENCODING));
        assert!(!is_hop_by_hop(&header::CONTENT_LENGTH));
    }

    #[test]
    fn every_connection_value_counts_wherever_it_sits() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-a"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-b, \xff, not a name, ,X-C").unwrap(),
        );
        h.append("x-b", HeaderValue::from_static("2"));
        h.append("x-c", HeaderValue::from_static("3"));
        h.append(header::TE, HeaderValue::from_static("trailers"));
        h.append(header::TE, HeaderValue::from_static("gzip"));
        h.append(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }
}
