//! Route classes: which kind of work a request is, for timeouts and metrics.
//!
//! The class comes from the method and the checked path segments (after
//! `/api/v1/`). Unknown routes are `crud`: forwarded with the ordinary timeout.

use http::Method;

/// The kind of upstream work a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Ordinary reads and writes.
    Crud,
    /// Deploy, redeploy, upload-code and file uploads: minutes, big bodies.
    Long,
    /// `POST /agents/{slug}/invoke` and `/stream`: an agent run.
    Invoke,
    /// `GET /files/{id}/download` and `/content`: big response bodies.
    Download,
    /// Not an upstream route (health, metrics, unknown paths).
    Local,
}

impl RouteClass {
    /// Classifies a request by method and the segments after `/api/v1/`.
    pub fn of(method: &Method, segments: &[String]) -> Self {
        with_segments(segments, |s| match (method, s) {
            (&Method::POST, ["agents", _, "invoke" | "stream"]) => Self::Invoke,
            (&Method::POST, ["agents", _, "deploy" | "redeploy" | "upload-code"] | ["files"]) => {
                Self::Long
            }
            (&Method::GET, ["files", _, "download" | "content"]) => Self::Download,
            _ => Self::Crud,
        })
    }

    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Crud => "crud",
            Self::Long => "long",
            Self::Invoke => "invoke",
            Self::Download => "download",
            Self::Local => "local",
        }
    }
}

/// Runs `f` on `segments` as `&str`s, for the slice patterns of the route
/// tables. Paths of up to eight segments (all real ones) are viewed from
/// the stack: collecting a `Vec` cost an allocation per table per request.
pub fn with_segments<S: AsRef<str>, R>(segments: &[S], f: impl FnOnce(&[&str]) -> R) -> R {
    const ON_STACK: usize = 8;
    if segments.len() > ON_STACK {
        let all: Vec<&str> = segments.iter().map(AsRef::as_ref).collect();
        return f(&all);
    }
    let mut view = [""; ON_STACK];
    for (slot, segment) in view.iter_mut().zip(segments) {
        *slot = segment.as_ref();
    }
    f(&view[..segments.len()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(method: Method, path: &str) -> RouteClass {
        let segments: Vec<String> = path.split('/').map(String::from).collect();
        RouteClass::of(&method, &segments)
    }

    #[test]
    fn classifies_the_reference_routes() {
        assert_eq!(class(Method::POST, "agents/a/invoke"), RouteClass::Invoke);
        assert_eq!(class(Method::POST, "agents/a/stream"), RouteClass::Invoke);
        assert_eq!(class(Method::POST, "agents/a/deploy"), RouteClass::Long);
        assert_eq!(class(Method::POST, "agents/a/redeploy"), RouteClass::Long);
        assert_eq!(
            class(Method::POST, "agents/a/upload-code"),
            RouteClass::Long
        );
        assert_eq!(class(Method::POST, "files"), RouteClass::Long);
        assert_eq!(
            class(Method::GET, "files/f1/download"),
            RouteClass::Download
        );
        assert_eq!(class(Method::GET, "files/f1/content"), RouteClass::Download);
        assert_eq!(class(Method::GET, "agents/a"), RouteClass::Crud);
        assert_eq!(class(Method::GET, "agents/a/invoke"), RouteClass::Crud);
        assert_eq!(class(Method::POST, "files/upload-url"), RouteClass::Crud);
        assert_eq!(class(Method::PUT, "brand/new/route"), RouteClass::Crud);
    }

    #[test]
    fn segments_are_viewed_whole_at_any_length() {
        let long: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        for len in [0, 1, 8, 9, 12] {
            let seen = with_segments(&long[..len], |s| s.join("/"));
            assert_eq!(seen, long[..len].join("/"));
        }
    }
}
