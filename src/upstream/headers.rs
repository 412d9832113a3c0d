//! Header names, the rules for which headers cross the gateway, and the
//! reuse of header values answers render again and again.

use std::cell::RefCell;
use std::thread::LocalKey;

use http::header::{self, HeaderMap, HeaderName};

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

/// Hop-by-hop headers (RFC 9110 §7.6.1), plus `Proxy-*` and `Keep-Alive`.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

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
        is_hop_by_hop(name)
            || name == header::HOST
            || name == header::AUTHORIZATION
            || name == X_API_KEY
            || name == header::COOKIE
            // The gateway's own server already answered any `100-continue`.
            || name == header::EXPECT
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

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::UPGRADE
}

/// Removes every header `drop` picks (`Connection` among them) and every
/// header `Connection` names.
///
/// One pass over the names present, then a removal for each found: a
/// lookup per name that might be there cost about 20 hash probes per
/// proxied request, for maps that mostly hold one or two of them.
fn strip(headers: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    let mut found: Vec<HeaderName> = Vec::new();
    for (name, value) in headers.iter() {
        if name == header::CONNECTION {
            // Bytes, not `to_str`: one non-ASCII token must not hide the
            // names listed beside it.
            let named = value
                .as_bytes()
                .split(|b| *b == b',')
                .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok());
            found.extend(named);
        }
        if drop(name) && !found.contains(name) {
            found.push(name.clone());
        }
    }
    for name in found {
        headers.remove(name);
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
    fn every_connection_value_counts_wherever_it_sits() {
        let mut h = HeaderMap::new();
        h.append("x-a", HeaderValue::from_static("1"));
        h.append(header::CONNECTION, HeaderValue::from_static("x-a"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_bytes(b"x-b, \xff, x-c").unwrap(),
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
