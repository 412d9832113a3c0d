//! Request-target checks and upstream URL construction.
//!
//! The client's path is split into segments, each checked on its decoded
//! form, and the upstream URL is built from those segments on top of the
//! configured base. Segments keep the client's original percent-encoding
//! (the upstream decodes `MY%20KEY` itself); nothing is decoded twice.
//!
//! Every decision about a request (its route class, retry safety, cache
//! policy, write effect, scope and billing: `route.rs`) reads the *decoded*
//! segments, made once here: `agents/x/%69nvoke` is an invocation wherever
//! it is looked at, as it is to an upstream that decodes it.

use std::sync::Arc;

use percent_encoding::percent_decode_str;

use crate::error::GatewayError;

/// The top-level resources of the Castari API. Used to tell the SDK 0.4 stop
/// form `DELETE /api/v1/{slug}/sandbox` from a real route.
pub const KNOWN_TOP_LEVEL: [&str; 8] = [
    "agents",
    "api-keys",
    "auth",
    "buckets",
    "files",
    "invocations",
    "sandbox",
    "usage",
];

/// A checked `/api/v1/...` path: the segments after `api/v1`, as sent
/// (still encoded, for the upstream URL) and decoded (for every decision).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiPath {
    segments: Vec<String>,
    decoded: Arc<[Box<str>]>,
}

impl ApiPath {
    /// Checks a raw request path (still percent-encoded).
    ///
    /// # Errors
    /// [`GatewayError::NotFound`] outside `/api/v1/`; [`GatewayError::BadRequest`]
    /// for a segment that decodes to `.` or `..`, contains an encoded `/` or
    /// `\`, a NUL, or is not valid UTF-8.
    pub fn parse(raw: &str) -> Result<Self, GatewayError> {
        let rest = raw.strip_prefix("/api/v1/").ok_or(GatewayError::NotFound)?;
        let segments = rest
            .split('/')
            .map(|segment| check_segment(segment).map(|()| segment.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let decoded = decode_path(&segments);
        Ok(Self { segments, decoded })
    }

    /// The encoded segments after `/api/v1/`, as sent.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The decoded segments after `/api/v1/`: what every route table reads.
    pub fn decoded(&self) -> &Arc<[Box<str>]> {
        &self.decoded
    }

    /// The agent slug of an `/agents/{slug}/...` route, decoded.
    pub fn agent(&self) -> Option<&str> {
        match &*self.decoded {
            [first, slug, ..] if &**first == "agents" && !slug.is_empty() => Some(slug),
            _ => None,
        }
    }

    /// Rewrites the SDK 0.4 stop form `DELETE /api/v1/{slug}/sandbox` to the
    /// documented `DELETE /api/v1/agents/{slug}/sandbox`. A slug equal to a
    /// known top-level resource stays as sent (it is ambiguous).
    pub fn rewrite_sdk_stop(&mut self, method: &http::Method) {
        let is_sdk_stop = method == http::Method::DELETE
            && matches!(&*self.decoded, [slug, sandbox]
                if &**sandbox == "sandbox"
                    && !slug.is_empty()
                    && !KNOWN_TOP_LEVEL.contains(&&**slug));
        if is_sdk_stop {
            self.segments.insert(0, "agents".to_string());
            self.decoded = decode_path(&self.segments);
        }
    }

    /// Builds the upstream URL: the base's own path, then `api/v1`, then the
    /// segments, then the query exactly as received.
    pub fn to_upstream_url(&self, base: &url::Url, query: Option<&str>) -> url::Url {
        let mut url = base.clone();
        let mut path = base.path().trim_end_matches('/').to_string();
        path.push_str("/api/v1");
        for segment in &self.segments {
            path.push('/');
            path.push_str(segment);
        }
        url.set_path(&path);
        url.set_query(query);
        url
    }
}

/// Decodes checked path segments (valid UTF-8 by then; lossy otherwise).
pub fn decode_path(segments: &[String]) -> Arc<[Box<str>]> {
    segments
        .iter()
        .map(|s| {
            if s.contains('%') {
                Box::from(percent_decode_str(s).decode_utf8_lossy().as_ref())
            } else {
                Box::from(s.as_str())
            }
        })
        .collect()
}

/// The upstream base URL as the fast URI build needs it: `scheme://authority`
/// and the base's own path, without a trailing slash.
#[derive(Clone, Debug)]
pub struct UpstreamBase {
    url: url::Url,
    prefix: String,
}

impl UpstreamBase {
    /// Prepares `base`.
    pub fn new(base: &url::Url) -> Self {
        let mut prefix = base[..url::Position::BeforePath].to_string();
        prefix.push_str(base.path().trim_end_matches('/'));
        Self {
            url: base.clone(),
            prefix,
        }
    }

    /// The base URL.
    pub fn url(&self) -> &url::Url {
        &self.url
    }
}

impl ApiPath {
    /// The upstream URI, as [`to_upstream_url`](Self::to_upstream_url)
    /// builds it, made as one string and parsed once when the path and
    /// query only hold characters that `url` leaves as they are (every
    /// request hyper accepts from a usual client); else through `url`.
    ///
    /// # Errors
    /// The result is not a valid URI (not for a checked path).
    pub fn to_upstream_uri(
        &self,
        base: &UpstreamBase,
        query: Option<&str>,
    ) -> Result<http::Uri, http::uri::InvalidUri> {
        let in_path = |s: &String| s.bytes().all(|b| b != b'?' && kept_by_url(b));
        let in_query = |q: &str| q.bytes().all(kept_by_url);
        if !(self.segments.iter().all(in_path) && query.is_none_or(in_query)) {
            return http::Uri::try_from(self.to_upstream_url(&base.url, query).as_str());
        }
        let len = base.prefix.len() + 8 + self.segments.iter().map(|s| s.len() + 1).sum::<usize>();
        let mut uri = String::with_capacity(len + query.map_or(0, |q| q.len() + 1));
        uri.push_str(&base.prefix);
        uri.push_str("/api/v1");
        for segment in &self.segments {
            uri.push('/');
            uri.push_str(segment);
        }
        if let Some(query) = query {
            uri.push('?');
            uri.push_str(query);
        }
        http::Uri::try_from(uri)
    }
}

/// Bytes `url` copies into a query unchanged (and into a path, but for
/// `?`): unreserved, sub-delimiters, `:`, `@`, `%`, `/`, `?`.
fn kept_by_url(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
                | b'%'
                | b'/'
                | b'?'
        )
}

fn check_segment(segment: &str) -> Result<(), GatewayError> {
    // The common case in one pass: only unreserved characters (RFC 3986),
    // so decoding changes nothing and only a dot segment can be wrong.
    let unreserved = segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'));
    if unreserved && segment != "." && segment != ".." {
        return Ok(());
    }
    let decoded = percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| GatewayError::BadRequest("Path segment is not valid UTF-8"))?;
    if decoded == "." || decoded == ".." {
        return Err(GatewayError::BadRequest(
            "Path segment '.' or '..' is not allowed",
        ));
    }
    if decoded.contains(['/', '\\']) {
        return Err(GatewayError::BadRequest(
            "Encoded '/' or '\\' in a path segment is not allowed",
        ));
    }
    // A raw tab, CR or LF would be dropped by the URL builder, turning
    // `.<TAB>.` into `..` after this check: no control characters at all.
    if decoded.chars().any(char::is_control) {
        return Err(GatewayError::BadRequest(
            "Control characters in a path segment are not allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> url::Url {
        url::Url::parse("http://127.0.0.1:9/").unwrap()
    }

    #[test]
    fn keeps_encoding_and_query_exactly() {
        let p = ApiPath::parse("/api/v1/agents/my-agent/secrets/MY%20KEY").unwrap();
        let url = p.to_upstream_url(&base(), Some("limit=5&tags=a,b&q=x%20y"));
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/api/v1/agents/my-agent/secrets/MY%20KEY?limit=5&tags=a,b&q=x%20y"
        );
    }

    #[test]
    fn the_fast_uri_is_the_url_one() {
        let bases = [
            "http://127.0.0.1:9/",
            "https://api.example:8443/castari/",
            "http://h",
        ];
        let paths = [
            "/api/v1/agents/my-agent/secrets/MY%20KEY",
            "/api/v1/agents/",
            "/api/v1/files/f1/download",
            "/api/v1/agents/a'b",
            "/api/v1/x/%7Bid%7D",
        ];
        let queries = [
            None,
            Some("limit=5&tags=a,b&q=x%20y"),
            Some("a='b'"),
            Some(""),
        ];
        for base in bases {
            let base = url::Url::parse(base).unwrap();
            let prepared = UpstreamBase::new(&base);
            for raw in paths {
                let path = ApiPath::parse(raw).unwrap();
                for query in queries {
                    let slow = path.to_upstream_url(&base, query);
                    let fast = path.to_upstream_uri(&prepared, query).unwrap();
                    assert_eq!(fast.to_string(), slow.as_str(), "{base} {raw} {query:?}");
                }
            }
        }
    }

    #[test]
    fn keeps_trailing_slash_and_base_prefix() {
        let p = ApiPath::parse("/api/v1/agents/").unwrap();
        let prefixed = url::Url::parse("http://127.0.0.1:9/castari/").unwrap();
        assert_eq!(
            p.to_upstream_url(&prefixed, None).as_str(),
            "http://127.0.0.1:9/castari/api/v1/agents/"
        );
    }

    #[test]
    fn rejects_dot_segments_and_encoded_separators() {
        for raw in [
            "/api/v1/agents/..",
            "/api/v1/agents/%2e%2E/x",
            "/api/v1/./agents",
            "/api/v1/agents/a%2Fb",
            "/api/v1/agents/a%5cb",
            "/api/v1/agents/a%00",
            "/api/v1/agents/%ff",
        ] {
            let err = ApiPath::parse(raw).unwrap_err();
            assert_eq!(err.status(), 400, "{raw}");
        }
    }

    #[test]
    fn outside_the_api_is_not_found() {
        for raw in ["/", "/api/v1", "/api/v2/agents", "/healthzx"] {
            assert_eq!(ApiPath::parse(raw).unwrap_err().status(), 404, "{raw}");
        }
    }

    #[test]
    fn rewrites_only_the_sdk_stop_form() {
        let mut p = ApiPath::parse("/api/v1/demo/sandbox").unwrap();
        p.rewrite_sdk_stop(&http::Method::DELETE);
        assert_eq!(p.segments(), ["agents", "demo", "sandbox"]);

        let mut get = ApiPath::parse("/api/v1/demo/sandbox").unwrap();
        get.rewrite_sdk_stop(&http::Method::GET);
        assert_eq!(get.segments(), ["demo", "sandbox"]);

        let mut ambiguous = ApiPath::parse("/api/v1/files/sandbox").unwrap();
        ambiguous.rewrite_sdk_stop(&http::Method::DELETE);
        assert_eq!(ambiguous.segments(), ["files", "sandbox"]);

        let mut encoded = ApiPath::parse("/api/v1/demo/%73andbox").unwrap();
        encoded.rewrite_sdk_stop(&http::Method::DELETE);
        assert_eq!(encoded.segments(), ["agents", "demo", "%73andbox"]);
        assert_eq!(
            &encoded.decoded()[..],
            ["agents", "demo", "sandbox"].map(Box::from)
        );

        let mut docs = ApiPath::parse("/api/v1/agents/demo/sandbox").unwrap();
        docs.rewrite_sdk_stop(&http::Method::DELETE);
        assert_eq!(docs.segments(), ["agents", "demo", "sandbox"]);
    }
}
