//! A stored response and how it is served: `X-Cache`, `Age`, a strong
//! `ETag`, and 304 for a matching `If-None-Match`.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::policy::CacheRoute;
use crate::upstream::headers::{
    reuse_rendered, PREFERENCE_APPLIED, QUEUE_WAIT, X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING,
    X_RATELIMIT_RESET, X_REQUEST_ID,
};

/// The `X-Cache` header.
pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// How a cached route's answer came about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from memory.
    Hit,
    /// Fetched upstream (and stored if it could be).
    Miss,
    /// Served from memory past its TTL because the upstream failed.
    Stale,
    /// Not looked up: the client said `no-store` or sent `Range`.
    Bypass,
}

impl CacheStatus {
    /// The header value and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Stale => "STALE",
            Self::Bypass => "BYPASS",
        }
    }

    /// The status an `X-Cache` value names, if it is one of the gateway's
    /// own: an upstream's header of that name (a CDN's "Hit from …")
    /// names none.
    pub fn of_header(value: &HeaderValue) -> Option<Self> {
        [Self::Hit, Self::Miss, Self::Stale, Self::Bypass]
            .into_iter()
            .find(|status| value.as_bytes() == status.as_str().as_bytes())
    }
}

/// One stored 200 response.
#[derive(Debug)]
pub struct Entry {
    /// Response headers, minus per-request ones.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// Strong validator: the upstream's strong `ETag`, or one made from the body.
    pub etag: HeaderValue,
    /// When it was fetched.
    pub stored: Instant,
    /// Its invalidation stamp (taken when the fetch started).
    pub seq: u64,
    /// Fresh for this long.
    pub ttl: Duration,
    /// Which route class (for metrics and the admin page).
    pub route: CacheRoute,
}

/// A copy of `headers` that owns its values, in a map of its own size. A
/// header value parsed off the wire can be a slice of the connection's
/// whole read buffer: stored as is, every entry would keep such a buffer
/// alive, many times its own size. Sized for the `ETag` and for what each
/// answer adds.
fn compact(headers: &HeaderMap) -> HeaderMap {
    let mut owned = HeaderMap::with_capacity(headers.len() + 1 + ADDED_HEADERS);
    for (name, value) in headers {
        let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
        copy.set_sensitive(value.is_sensitive());
        owned.append(name.clone(), copy);
    }
    owned
}

/// Headers never stored: they belong to one exchange.
const PER_EXCHANGE: [HeaderName; 8] = [
    X_REQUEST_ID,
    PREFERENCE_APPLIED,
    QUEUE_WAIT,
    X_RATELIMIT_LIMIT,
    X_RATELIMIT_REMAINING,
    X_RATELIMIT_RESET,
    header::AGE,
    header::SET_COOKIE,
];

/// Room for the headers every answer gets on top of the stored ones:
/// `Age`, `X-Cache`, the three `X-RateLimit-*` and `x-request-id`.
const ADDED_HEADERS: usize = 6;

impl Entry {
    /// Makes an entry of a 200 response's head and body.
    pub fn new(
        mut headers: HeaderMap,
        body: Bytes,
        seq: u64,
        ttl: Duration,
        route: CacheRoute,
    ) -> Self {
        for name in PER_EXCHANGE {
            headers.remove(name);
        }
        let mut headers = compact(&headers);
        let etag = match headers.get(header::ETAG) {
            Some(tag) if !tag.as_bytes().starts_with(b"W/") => tag.clone(),
            _ => body_etag(&body),
        };
        headers.insert(header::ETAG, etag.clone());
        Self {
            headers,
            body,
            etag,
            stored: Instant::now(),
            seq,
            ttl,
            route,
        }
    }

    /// Seconds since it was fetched.
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored)
    }

    /// Whether it is within its TTL.
    pub fn fresh(&self, now: Instant) -> bool {
        self.age(now) < self.ttl
    }

    /// Bytes it holds, for the weigher.
    ///
    /// Counted as allocated: each header's name and value plus its slot in
    /// the map (about 100 bytes), as much for each of the slots kept free
    /// for the headers an answer adds, and a fixed 512 bytes for the entry,
    /// its map and moka's own bookkeeping (measured with `bench/soak.sh`).
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 100)
            .sum();
        self.body.len() + headers + ADDED_HEADERS * 100 + self.etag.len() + 512
    }

    /// The response for a client: the stored one, or 304 when the client's
    /// `If-None-Match` names this entry.
    pub fn respond(&self, status: CacheStatus, request: &HeaderMap, now: Instant) -> Response {
        let age = age_value(self.age(now).as_secs());
        let mut response = if not_modified(request, &self.etag) {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            let headers = response.headers_mut();
            headers.insert(header::ETAG, self.etag.clone());
            for name in [header::CACHE_CONTROL, header::VARY, header::DATE] {
                if let Some(value) = self.headers.get(&name) {
                    headers.insert(name, value.clone());
                }
            }
            response
        } else {
            let mut response = Response::new(Body::from(self.body.clone()));
            // The stored map's table has room for what is added on the way
            // out (`compact`), and a clone keeps it: no rehash per answer.
            *response.headers_mut() = self.headers.clone();
            response
        };
        let headers = response.headers_mut();
        headers.insert(header::AGE, age);
        headers.insert(X_CACHE, HeaderValue::from_static(status.as_str()));
        response
    }
}

thread_local! {
    /// The `Age` value rendered last on this thread: hits in a row mostly
    /// show the same whole second (two allocations saved each).
    static AGE: RefCell<Option<(u64, HeaderValue)>> = const { RefCell::new(None) };
}

fn age_value(secs: u64) -> HeaderValue {
    reuse_rendered(&AGE, secs, |secs| HeaderValue::from(*secs))
}

/// Whether a response with `headers` may be stored: no `no-store`,
/// `private` or `no-cache` from the upstream, no cookie, no `Vary` beyond
/// what the key holds.
pub fn storable(headers: &HeaderMap) -> bool {
    let directives = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|d| d.trim().to_ascii_lowercase());
    for directive in directives {
        let name = directive.split('=').next().unwrap_or("");
        if matches!(name, "no-store" | "private" | "no-cache") {
            return false;
        }
    }
    if headers.contains_key(header::SET_COOKIE) {
        return false;
    }
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .all(|v| {
            let v = v.trim();
            v.eq_ignore_ascii_case("accept") || v.eq_ignore_ascii_case("accept-encoding")
        })
}

/// `"c-<64-bit hash>-<length>"`: the standard library's SipHash with fixed
/// keys, so the tag is the same across restarts for the same bytes.
fn body_etag(body: &[u8]) -> HeaderValue {
    let mut hasher = std::hash::DefaultHasher::new();
    body.hash(&mut hasher);
    let tag = format!("\"c-{:016x}-{:x}\"", hasher.finish(), body.len());
    HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"c\""))
}

/// `If-None-Match` (weak comparison, as RFC 9110 says for this header).
fn not_modified(request: &HeaderMap, etag: &HeaderValue) -> bool {
    let ours = strip_weak(etag.as_bytes());
    request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || strip_weak(tag.as_bytes()) == ours
        })
}

fn strip_weak(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: &'static str) -> Entry {
        Entry::new(
            HeaderMap::new(),
            Bytes::from(body),
            1,
            Duration::from_secs(5),
            CacheRoute::Agents,
        )
    }

    #[test]
    fn only_the_gateways_own_x_cache_values_name_a_status() {
        for status in [
            CacheStatus::Hit,
            CacheStatus::Miss,
            CacheStatus::Stale,
            CacheStatus::Bypass,
        ] {
            let value = HeaderValue::from_static(status.as_str());
            assert_eq!(CacheStatus::of_header(&value), Some(status));
        }
        for foreign in ["Hit from cloudfront", "hit", "HIT, MISS", ""] {
            let value = HeaderValue::from_static(foreign);
            assert_eq!(CacheStatus::of_header(&value), None, "{foreign}");
        }
    }

    #[test]
    fn shared_age_values_follow_the_seconds() {
        for secs in [5, 5, 6, 0, 3600, 3600] {
            assert_eq!(age_value(secs), secs.to_string().as_str());
        }
    }

    #[test]
    fn stored_headers_do_not_keep_the_read_buffer_alive() {
        // As hyper parses them: values are slices of one big read buffer.
        let buffer = Bytes::from(vec![b'a'; 64 << 10]);
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_maybe_shared(buffer.slice(0..10)).unwrap();
        headers.insert(header::CONTENT_TYPE, value);
        let e = Entry::new(
            headers,
            Bytes::from_static(b"{}"),
            1,
            Duration::from_secs(5),
            CacheRoute::Agents,
        );
        let stored = e.headers[header::CONTENT_TYPE].as_bytes();
        assert_eq!(stored, b"aaaaaaaaaa");
        let range = buffer.as_ptr_range();
        assert!(
            !range.contains(&stored.as_ptr()),
            "a copy, not a slice of the buffer"
        );
        assert!(e.weight() >= 512 + 100);
    }

    #[test]
    fn etags_are_stable_and_differ_by_body() {
        assert_eq!(entry("{}").etag, entry("{}").etag);
        assert_ne!(entry("{}").etag, entry("[]").etag);
    }

    #[test]
    fn if_none_match_gives_304() {
        let e = entry("{\"a\":1}");
        let mut request = HeaderMap::new();
        request.insert(header::IF_NONE_MATCH, e.etag.clone());
        let now = Instant::now();
        assert_eq!(
            e.respond(CacheStatus::Hit, &request, now).status(),
            StatusCode::NOT_MODIFIED
        );
        request.insert(header::IF_NONE_MATCH, "\"other\"".parse().unwrap());
        assert_eq!(
            e.respond(CacheStatus::Hit, &request, now).status(),
            StatusCode::OK
        );
    }

    #[test]
    fn no_store_private_cookies_and_vary_are_not_stored() {
        let with = |name: HeaderName, value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static(value));
            storable(&h)
        };
        assert!(storable(&HeaderMap::new()));
        assert!(!with(header::CACHE_CONTROL, "no-store"));
        assert!(!with(header::CACHE_CONTROL, "max-age=5, private"));
        assert!(!with(header::SET_COOKIE, "a=b"));
        assert!(!with(header::VARY, "Authorization"));
        assert!(with(header::VARY, "Accept, Accept-Encoding"));
        assert!(with(header::CACHE_CONTROL, "max-age=60"));
    }
}
