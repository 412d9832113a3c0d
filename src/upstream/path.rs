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

use http::uri::{Authority, PathAndQuery, Scheme};
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
///
/// A path without a `%` (nearly every one) decodes to itself: its segments
/// are kept once, as the decoded ones. Only a path with something encoded
/// keeps its sent form beside them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiPath {
    decoded: Arc<[Box<str>]>,
    /// The segments as sent, when any of them holds a `%`.
    encoded: Option<Arc<[Box<str>]>>,
}

impl ApiPath {
    /// Checks a raw request path (still percent-encoded).
    ///
    /// # Errors
    /// [`GatewayError::NotFound`] outside `/api/v1/`; [`GatewayError::BadRequest`]
    /// for a segment that decodes to `.` or `..`, contains an encoded `/` or
    /// `\`, an encoded NUL or a raw control character, or is not valid
    /// UTF-8. Other encoded control characters are forwarded encoded.
    pub fn parse(raw: &str) -> Result<Self, GatewayError> {
        let rest = raw.strip_prefix("/api/v1/").ok_or(GatewayError::NotFound)?;
        let mut count = 0;
        for segment in rest.split('/') {
            check_segment(segment)?;
            count += 1;
        }
        // Counted first: collected from a range, the segments go straight
        // into the `Arc`, not through a `Vec` first.
        let mut segments = rest.split('/');
        let sent = (0..count)
            .map(|_| Box::from(segments.next().unwrap_or_default()))
            .collect();
        let path = Self::of_sent(sent);
        // An agent slug never holds a control character upstream, and the
        // slug travels on to the queue's view, `status` and the ledger:
        // there, unlike in ids that go no further than the upstream, it is
        // refused.
        if let [first, slug, ..] = &*path.decoded {
            if &**first == "agents" && slug.chars().any(char::is_control) {
                return Err(GatewayError::BadRequest(
                    "Control characters in an agent slug are not allowed",
                ));
            }
        }
        Ok(path)
    }

    /// The path of checked segments as sent.
    fn of_sent(sent: Arc<[Box<str>]>) -> Self {
        if sent.iter().any(|segment| segment.contains('%')) {
            Self {
                decoded: decode_path(&*sent),
                encoded: Some(sent),
            }
        } else {
            Self {
                decoded: sent,
                encoded: None,
            }
        }
    }

    /// The segments as sent (still encoded).
    fn sent(&self) -> &[Box<str>] {
        self.encoded.as_deref().unwrap_or(&self.decoded)
    }

    /// The encoded segments after `/api/v1/`, as sent, as owned strings
    /// (for tests and diagnostics; the request path reads them in place).
    pub fn segments(&self) -> Vec<String> {
        self.sent()
            .iter()
            .map(|segment| segment.to_string())
            .collect()
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
                    && !slug.chars().any(char::is_control)
                    && !KNOWN_TOP_LEVEL.contains(&&**slug));
        if is_sdk_stop {
            let sent = std::iter::once(Box::from("agents"))
                .chain(self.sent().iter().cloned())
                .collect();
            *self = Self::of_sent(sent);
        }
    }

    /// Builds the upstream URL: the base's own path, then `api/v1`, then the
    /// segments, then the query exactly as received.
    pub fn to_upstream_url(&self, base: &url::Url, query: Option<&str>) -> url::Url {
        let mut url = base.clone();
        let mut path = base.path().trim_end_matches('/').to_string();
        path.push_str("/api/v1");
        for segment in self.sent() {
            path.push('/');
            path.push_str(segment);
        }
        url.set_path(&path);
        url.set_query(query);
        url
    }
}

/// Decodes checked path segments (valid UTF-8 by then; lossy otherwise).
pub fn decode_path<S: AsRef<str>>(segments: impl IntoIterator<Item = S>) -> Arc<[Box<str>]> {
    segments
        .into_iter()
        .map(|s| {
            let s = s.as_ref();
            if s.contains('%') {
                Box::from(percent_decode_str(s).decode_utf8_lossy().as_ref())
            } else {
                Box::from(s)
            }
        })
        .collect()
}

/// The upstream base URL as the fast URI build needs it: its scheme and
/// authority parsed once, and its own path without a trailing slash.
#[derive(Clone, Debug)]
pub struct UpstreamBase {
    url: url::Url,
    /// `None` only for a base `http::Uri` cannot hold (the slow build then
    /// says why, per request).
    origin: Option<(Scheme, Authority)>,
    path: String,
}

impl UpstreamBase {
    /// Prepares `base`.
    pub fn new(base: &url::Url) -> Self {
        let origin = http::Uri::try_from(&base[..url::Position::BeforePath])
            .ok()
            .and_then(|uri| {
                let parts = uri.into_parts();
                Some((parts.scheme?, parts.authority?))
            });
        Self {
            url: base.clone(),
            origin,
            path: base.path().trim_end_matches('/').to_string(),
        }
    }

    /// The base URL.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// `path_and_query` on this base's scheme and authority.
    fn uri(&self, path_and_query: PathAndQuery) -> Option<Result<http::Uri, http::Error>> {
        let (scheme, authority) = self.origin.as_ref()?;
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(scheme.clone());
        parts.authority = Some(authority.clone());
        parts.path_and_query = Some(path_and_query);
        Some(http::Uri::from_parts(parts).map_err(http::Error::from))
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
    ) -> Result<http::Uri, http::Error> {
        if !self.kept_by_url(query) {
            return self.through_url(base, query);
        }
        let len = base.path.len() + 8 + self.sent().iter().map(|s| s.len() + 1).sum::<usize>();
        let mut target = String::with_capacity(len + query.map_or(0, |q| q.len() + 1));
        target.push_str(&base.path);
        target.push_str("/api/v1");
        for segment in self.sent() {
            target.push('/');
            target.push_str(segment);
        }
        if let Some(query) = query {
            target.push('?');
            target.push_str(query);
        }
        let path_and_query = PathAndQuery::try_from(target)?;
        match base.uri(path_and_query) {
            Some(uri) => uri,
            None => self.through_url(base, query),
        }
    }

    /// [`to_upstream_uri`](Self::to_upstream_uri) for the request whose
    /// target was `sent` (the one this path was parsed from): when the
    /// upstream's path and query are the ones sent (a base without a path
    /// of its own, no SDK stop rewrite, nothing `url` would change), the
    /// sent ones are reused as they are, without a new string or parse.
    ///
    /// # Errors
    /// As [`to_upstream_uri`](Self::to_upstream_uri).
    pub fn upstream_uri_for(
        &self,
        base: &UpstreamBase,
        sent: &http::Uri,
    ) -> Result<http::Uri, http::Error> {
        let query = sent.query();
        let unchanged = base.path.is_empty()
            // The rewrite only ever adds a segment: the same length is the
            // same segments.
            && sent.path().len()
                == "/api/v1".len() + self.sent().iter().map(|s| s.len() + 1).sum::<usize>()
            && self.kept_by_url(query);
        let reused = match sent.path_and_query() {
            Some(path_and_query) if unchanged => base.uri(path_and_query.clone()),
            _ => None,
        };
        reused.unwrap_or_else(|| self.to_upstream_uri(base, query))
    }

    /// Whether `url` leaves every segment and `query` as they are.
    fn kept_by_url(&self, query: Option<&str>) -> bool {
        let in_path = |s: &str| s.bytes().all(|b| b != b'?' && kept_by_url(b));
        let in_query = |q: &str| q.bytes().all(kept_by_url);
        self.sent().iter().all(|s| in_path(s)) && query.is_none_or(in_query)
    }

    fn through_url(
        &self,
        base: &UpstreamBase,
        query: Option<&str>,
    ) -> Result<http::Uri, http::Error> {
        let url = self.to_upstream_url(&base.url, query);
        Ok(http::Uri::try_from(url.as_str())?)
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
    // `.<TAB>.` into `..` after this check: no raw control characters (the
    // HTTP parser refuses them first). Encoded ones are forwarded as sent,
    // still encoded: the upstream takes such ids in bodies (a session id
    // `s\u{85}x` is listed), so refusing them here left a session that
    // could be made but not deleted through the gateway. They cannot change
    // the path's shape, and logs show the path encoded. A NUL stays refused:
    // no stored id holds one, and it truncates in C-string tools.
    if segment.chars().any(char::is_control) {
        return Err(GatewayError::BadRequest(
            "Raw control characters in a path segment are not allowed; percent-encode them",
        ));
    }
    if decoded.contains('\0') {
        return Err(GatewayError::BadRequest(
            "An encoded NUL (%00) in a path segment is not allowed",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_without_escapes_is_kept_once_and_an_escaped_one_in_both_forms() {
        let plain = ApiPath::parse("/api/v1/agents/demo").unwrap();
        assert!(plain.encoded.is_none());
        assert_eq!(plain.segments(), ["agents", "demo"]);
        assert_eq!(plain.decoded().join("/"), "agents/demo");

        let mut stop = ApiPath::parse("/api/v1/my%20agent/sandbox").unwrap();
        assert_eq!(stop.segments(), ["my%20agent", "sandbox"]);
        assert_eq!(stop.decoded().join("/"), "my agent/sandbox");
        stop.rewrite_sdk_stop(&http::Method::DELETE);
        assert_eq!(stop.segments(), ["agents", "my%20agent", "sandbox"]);
        assert_eq!(stop.agent(), Some("my agent"));
        // The same path, read either way, is equal.
        assert_eq!(
            stop,
            ApiPath::parse("/api/v1/agents/my%20agent/sandbox").unwrap()
        );
    }

    fn base() -> url::Url {
        url::Url::parse("http://127.0.0.1:9/").unwrap()
    }

    #[test]
    fn the_sent_target_is_reused_only_when_it_is_the_upstream_one() {
        let bases = [
            "http://127.0.0.1:9/",
            "https://up.example/base/",
            "http://[::1]:8/",
        ];
        let targets = [
            "/api/v1/agents/a/invoke",
            "/api/v1/agents?limit=5&tags=a,b",
            "/api/v1/agents/x/secrets/MY%20KEY?q=x%20y",
            "/api/v1/my-agent/sandbox",
            "/api/v1/agents/%C3%A9t%C3%A9",
            "/api/v1/files/a%7Cb?x=%7B%7D&y=%22z%22&w={}",
            "/api/v1/agents?",
        ];
        for base in bases {
            let base = UpstreamBase::new(&url::Url::parse(base).unwrap());
            for target in targets {
                let sent: http::Uri = target.parse().unwrap();
                let mut path = ApiPath::parse(sent.path()).unwrap();
                path.rewrite_sdk_stop(&http::Method::DELETE);
                let reused = path.upstream_uri_for(&base, &sent).unwrap();
                let built = path.to_upstream_uri(&base, sent.query()).unwrap();
                let url = path.to_upstream_url(base.url(), sent.query());
                assert_eq!(reused, built, "{target} on {}", base.url());
                assert_eq!(reused.to_string(), url.as_str(), "{target}");
            }
        }
        // The rewrite is seen: the stop goes to the documented route.
        let base = UpstreamBase::new(&base());
        let sent: http::Uri = "/api/v1/my-agent/sandbox".parse().unwrap();
        let mut path = ApiPath::parse(sent.path()).unwrap();
        path.rewrite_sdk_stop(&http::Method::DELETE);
        let uri = path.upstream_uri_for(&base, &sent).unwrap();
        assert_eq!(uri.path(), "/api/v1/agents/my-agent/sandbox");
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
    fn forwards_encoded_control_characters_encoded() {
        let base = base();
        for (raw, decoded) in [
            ("/api/v1/agents/a/sessions/s%C2%85x", "s\u{85}x"),
            ("/api/v1/agents/a/sessions/s%09x", "s\tx"),
            ("/api/v1/agents/a/sessions/%0d%0a", "\r\n"),
        ] {
            let path = ApiPath::parse(raw).unwrap();
            assert_eq!(&*path.decoded()[3], decoded);
            assert_eq!(path.to_upstream_url(&base, None).path(), raw);
        }
        for raw in [
            "/api/v1/agents/a\tb",
            "/api/v1/agents/a\u{85}b",
            // A slug goes on to the queue's view, `status` and the ledger.
            "/api/v1/agents/%1B%5D0%3Bx%07/invoke",
            "/api/v1/agents/a%C2%85",
        ] {
            assert_eq!(ApiPath::parse(raw).unwrap_err().status(), 400, "{raw:?}");
        }
        let mut stop = ApiPath::parse("/api/v1/a%1Bb/sandbox").unwrap();
        stop.rewrite_sdk_stop(&http::Method::DELETE);
        assert_eq!(stop.agent(), None, "not rewritten into an agent route");
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
