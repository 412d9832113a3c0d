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
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method, s.as_slice()) {
            (&Method::POST, ["agents", _, "invoke" | "stream"]) => Self::Invoke,
            (&Method::POST, ["agents", _, "deploy" | "redeploy" | "upload-code"] | ["files"]) => {
                Self::Long
            }
            (&Method::GET, ["files", _, "download" | "content"]) => Self::Download,
            _ => Self::Crud,
        }
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
}
