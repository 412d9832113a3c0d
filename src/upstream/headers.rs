//! Header names and the rules for which headers cross the gateway.

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
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        // Bytes, not `to_str`: one non-ASCII token must not hide the
        // names listed beside it.
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// Prepares client request headers for the upstream: hop-by-hop headers,
/// `Host`, `Expect` and every client credential are removed. The caller then sets the
/// upstream `Authorization`.
pub fn sanitize_request(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::HOST);
    headers.remove(header::AUTHORIZATION);
    headers.remove(X_API_KEY);
    headers.remove(header::COOKIE);
    // The gateway's own server already answered any `100-continue`.
    headers.remove(header::EXPECT);
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
}
