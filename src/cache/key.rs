//! Cache keys: whose data (the upstream credential), which request (method,
//! decoded path, normalized query) and which representation (`Accept`,
//! `Accept-Encoding`).

use std::sync::Arc;

use http::{header, HeaderMap, Method};

/// Identifies one cached response.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// The upstream credential the response was fetched with. Entries are
    /// never shared across credentials.
    pub principal: Arc<str>,
    /// Always GET today; part of the key so that never changes silently.
    pub method: Method,
    /// Decoded segments after `/api/v1/`.
    pub path: Arc<[Box<str>]>,
    /// Query pairs, decoded, sorted and re-encoded.
    pub query: Box<str>,
    /// The client's `Accept`, as sent (empty when absent).
    pub accept: Box<str>,
    /// The client's `Accept-Encoding`, as sent (empty when absent).
    pub encoding: Box<str>,
}

impl CacheKey {
    /// Builds the key of a GET of `path` (decoded segments) for `principal`.
    pub fn new(
        principal: &Arc<str>,
        path: Arc<[Box<str>]>,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Self {
        Self {
            principal: principal.clone(),
            method: Method::GET,
            path,
            query: normalize_query(query.unwrap_or("")).into(),
            accept: header_text(headers, &header::ACCEPT),
            encoding: header_text(headers, &header::ACCEPT_ENCODING),
        }
    }

    /// The same resource as `self` at another path (write-through).
    pub fn with_path(&self, path: Arc<[Box<str>]>) -> Self {
        Self {
            path,
            query: "".into(),
            ..self.clone()
        }
    }

    /// `/api/v1/...?...`, for the admin page.
    pub fn display_path(&self) -> String {
        let mut out = String::from("/api/v1/");
        out.push_str(&self.path.join("/"));
        if !self.query.is_empty() {
            out.push('?');
            out.push_str(&self.query);
        }
        out
    }

    /// Bytes the key itself holds, for the weigher.
    pub fn weight(&self) -> usize {
        self.path.iter().map(|s| s.len() + 16).sum::<usize>()
            + self.query.len()
            + self.accept.len()
            + self.encoding.len()
            + 96
    }
}

pub use crate::upstream::path::decode_path;

/// `b=2&a=1&a=0` → `a=0&a=1&b=2`; `%41` and `A` are the same; empty pairs
/// go.
pub fn normalize_query(query: &str) -> String {
    if query.is_empty() {
        return String::new();
    }
    let mut pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .filter(|(k, v)| !(k.is_empty() && v.is_empty()))
        .collect();
    pairs.sort();
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

fn header_text(headers: &HeaderMap, name: &header::HeaderName) -> Box<str> {
    let mut values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
    let Some(first) = values.next() else {
        return Box::default();
    };
    // One value (the common case) without the list and the join.
    let mut text = String::from(first);
    for value in values {
        text.push_str(", ");
        text.push_str(value);
    }
    text.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_normalize() {
        assert_eq!(normalize_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(
            normalize_query("limit=%31%30&&offset=0"),
            "limit=10&offset=0"
        );
        assert_eq!(normalize_query(""), "");
    }

    #[test]
    fn keys_differ_by_principal_path_query_and_accept() {
        let one: Arc<str> = Arc::from("one");
        let two: Arc<str> = Arc::from("two");
        let segs = decode_path(&["agents".to_string(), "MY%20AGENT".to_string()]);
        let mut headers = HeaderMap::new();
        let a = CacheKey::new(&one, segs.clone(), None, &headers);
        assert_eq!(&*a.path[1], "MY AGENT");
        assert_ne!(a, CacheKey::new(&two, segs.clone(), None, &headers));
        assert_ne!(a, CacheKey::new(&one, segs.clone(), Some("x=1"), &headers));
        headers.insert(header::ACCEPT, "text/plain".parse().unwrap());
        assert_ne!(a, CacheKey::new(&one, segs.clone(), None, &headers));
        assert_eq!(
            CacheKey::new(&one, segs.clone(), Some("b=1&a=2"), &HeaderMap::new()),
            CacheKey::new(&one, segs.clone(), Some("a=2&b=1"), &HeaderMap::new())
        );
    }
}
