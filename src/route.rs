//! What a request is: its route class (timeouts, lanes, metrics, billing),
//! its retry safety and, for a GET, its cacheable route, read once from the
//! method and the *decoded* path segments after `/api/v1/`
//! (`upstream/path.rs` decodes them once) into a [`Route`].
//!
//! Two tables stay beside their rules, reading the same decoded segments:
//! write effects (`cache/policy.rs`: which cached reads a write makes
//! stale, with the slug in the patterns) and scopes (`keys/scope.rs`: the
//! writes each role may make, with the agent-glob checks). So
//! `POST /agents/x/%69nvoke` is an invocation to every table, as it is to
//! an upstream that decodes it (`tests/encoded_routes.rs`,
//! `tests/integration/encoded.rs`). Unknown routes are `crud`: forwarded
//! with the ordinary timeout, and never retried once sent.

use http::Method;

/// What the gateway reads from a request's route, once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The kind of upstream work: its lane in the shaper, its timeout, its
    /// metrics label, and (`Invoke`) its billing against a key's budget.
    pub class: RouteClass,
    /// Whether it may be sent again after it may have reached the upstream.
    pub safety: Safety,
    /// For a GET, the cacheable route it names.
    pub cache: Option<CacheRoute>,
    /// Whether it mints, changes or revokes the account's own credentials
    /// (`routes/guard.rs` decides who may).
    pub credential: Option<CredentialRoute>,
}

impl Route {
    /// Reads `method` on the decoded `segments` after `/api/v1/`.
    pub fn read<S: AsRef<str>>(method: &Method, segments: &[S]) -> Self {
        Self {
            class: RouteClass::of(method, segments),
            safety: Safety::of(method, segments),
            cache: (method == Method::GET)
                .then(|| CacheRoute::of(segments))
                .flatten(),
            credential: CredentialRoute::of(method, segments),
        }
    }
}

/// A write that mints, changes or revokes the account's own upstream
/// credentials (gateway-notes §6): what a local tool should never do by
/// accident, and the gateway's own key least of all.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialRoute {
    /// Makes a new upstream credential: `POST /api-keys`, the legacy
    /// `POST /auth/api-key`, a sandbox access token (`POST /sandbox/{id}/access`).
    Mints,
    /// Revokes the key that sends it: the legacy `DELETE /auth/api-key`.
    /// Through the gateway, that is always the gateway's own key.
    RevokesKeyInUse,
    /// Revokes the key with the id in the path: `DELETE /api-keys/{id}`.
    RevokesById,
    /// Any other write under `api-keys`, `auth` or `sandbox` (routes the
    /// reference does not list): treated like minting.
    Other,
}

impl CredentialRoute {
    /// Reads `method` on the decoded `segments` after `/api/v1/`. Reads
    /// (`GET`, `HEAD`, `OPTIONS`) are never credential routes: listing keys
    /// shows their prefixes only. Empty segments are dropped first, in case
    /// something upstream merges slashes (as `keys/scope.rs` does).
    pub fn of<S: AsRef<str>>(method: &Method, segments: &[S]) -> Option<Self> {
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return None;
        }
        let first = segments.iter().map(AsRef::as_ref).find(|s| !s.is_empty())?;
        if !matches!(first, "api-keys" | "auth" | "sandbox") {
            return None;
        }
        let merged: Vec<&str> = segments
            .iter()
            .map(AsRef::as_ref)
            .filter(|s| !s.is_empty())
            .collect();
        // Methods in any case: an upstream that read `delete` as DELETE must
        // not find a way around the guard.
        let method = method.as_str().to_ascii_uppercase();
        Some(match (method.as_str(), merged.as_slice()) {
            ("POST", ["api-keys"] | ["auth", "api-key"] | ["sandbox", _, "access"]) => Self::Mints,
            // Any other write on the key in use, or on one key by id, is
            // judged as its revoke would be: the gateway's key is at stake.
            (_, ["auth", "api-key", ..]) => Self::RevokesKeyInUse,
            (_, ["api-keys", _, ..]) => Self::RevokesById,
            _ => Self::Other,
        })
    }
}

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
    /// Classifies a request by method and the decoded segments after
    /// `/api/v1/`.
    pub fn of<S: AsRef<str>>(method: &Method, segments: &[S]) -> Self {
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

/// A cacheable route: which GETs the cache keeps, each with its own TTL
/// (`cache/policy.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CacheRoute {
    /// `GET /auth/me`.
    AuthMe,
    /// `GET /agents`.
    Agents,
    /// `GET /agents/{slug}`.
    Agent,
    /// `GET /agents/{slug}/secrets`.
    Secrets,
    /// `GET /agents/{slug}/sessions`.
    Sessions,
    /// `GET /agents/{slug}/invocations`.
    Invocations,
    /// `GET /usage`, `/usage/daily`.
    Usage,
    /// `GET /buckets`, `/buckets/{slug}`.
    Buckets,
    /// `GET /buckets/{slug}/files`.
    BucketFiles,
    /// `GET /agents/{slug}/mounts`, `/mounts/{id}`.
    Mounts,
    /// `GET /files`, `/files/usage`, `/files/{id}`.
    Files,
    /// `GET /agents/{slug}/files`.
    AgentFiles,
}

impl CacheRoute {
    /// The cacheable route a GET names, if any. API keys, downloads,
    /// capability URLs and unknown routes are never cached.
    pub fn of<S: AsRef<str>>(segments: &[S]) -> Option<Self> {
        if segments.iter().any(|s| s.as_ref().is_empty()) {
            return None;
        }
        with_segments(segments, |s| {
            Some(match s {
                ["auth", "me"] => Self::AuthMe,
                ["agents"] => Self::Agents,
                ["agents", _] => Self::Agent,
                ["agents", _, "secrets"] => Self::Secrets,
                ["agents", _, "sessions"] => Self::Sessions,
                ["agents", _, "invocations"] => Self::Invocations,
                ["agents", _, "mounts"] | ["agents", _, "mounts", _] => Self::Mounts,
                ["agents", _, "files"] => Self::AgentFiles,
                ["usage"] | ["usage", "daily"] => Self::Usage,
                ["buckets"] | ["buckets", _] => Self::Buckets,
                ["buckets", _, "files"] => Self::BucketFiles,
                ["files"] | ["files", _] => Self::Files,
                _ => return None,
            })
        })
    }

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthMe => "auth_me",
            Self::Agents => "agents",
            Self::Agent => "agent",
            Self::Secrets => "secrets",
            Self::Sessions => "sessions",
            Self::Invocations => "invocations",
            Self::Usage => "usage",
            Self::Buckets => "buckets",
            Self::BucketFiles => "bucket_files",
            Self::Mounts => "mounts",
            Self::Files => "files",
            Self::AgentFiles => "agent_files",
        }
    }
}

/// Whether a route may be sent again after it may have reached the upstream
/// (gateway-notes §5; `upstream/retry.rs` decides when).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Safety {
    /// Idempotent: may be retried on 502/503/504 and broken connections.
    Safe,
    /// Only when nothing was sent (connection refused) or on a 429.
    Unsafe,
}

impl Safety {
    /// The route table of gateway-notes §2, on the decoded segments after
    /// `/api/v1/`. Unknown writes are unsafe.
    pub fn of<S: AsRef<str>>(method: &Method, segments: &[S]) -> Self {
        let safe = with_segments(segments, |s| {
            matches!(
                (method.as_str(), s),
                ("GET" | "HEAD" | "OPTIONS", _)
                    | (
                        "DELETE",
                        ["api-keys", _]
                            | ["auth", "api-key"]
                            | ["agents", _]
                            | ["agents", _, "sandbox"]
                            | ["agents", _, "secrets" | "sessions" | "mounts" | "files", _]
                            | ["buckets", _]
                            | ["buckets", _, "credentials"]
                            | ["files", _]
                    )
                    | (
                        "PATCH",
                        ["agents", _] | ["agents", _, "mounts", _] | ["buckets", _] | ["files", _]
                    )
                    | (
                        "POST",
                        ["agents", _, "secrets" | "stop"]
                            | ["agents", _, "files", "sync"]
                            | [
                                "buckets",
                                _,
                                "credentials" | "test" | "upload-url" | "download-url"
                            ]
                            | ["files", "confirm-upload"]
                    )
            )
        });
        if safe {
            Self::Safe
        } else {
            Self::Unsafe
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
    fn finds_the_credential_routes() {
        let of = |method: Method, path: &str| {
            let segments: Vec<&str> = path.split('/').collect();
            CredentialRoute::of(&method, &segments)
        };
        use CredentialRoute::*;
        assert_eq!(of(Method::POST, "api-keys"), Some(Mints));
        assert_eq!(of(Method::POST, "auth/api-key"), Some(Mints));
        assert_eq!(of(Method::POST, "sandbox/sb_1/access"), Some(Mints));
        assert_eq!(of(Method::DELETE, "auth/api-key"), Some(RevokesKeyInUse));
        assert_eq!(of(Method::DELETE, "auth//api-key"), Some(RevokesKeyInUse));
        assert_eq!(of(Method::DELETE, "api-keys/ak_1"), Some(RevokesById));
        assert_eq!(of(Method::DELETE, "/api-keys/ak_1/"), Some(RevokesById));
        assert_eq!(of(Method::PUT, "api-keys/ak_1"), Some(RevokesById));
        assert_eq!(of(Method::POST, "api-keys/ak_1/revoke"), Some(RevokesById));
        let lower = Method::from_bytes(b"delete").unwrap();
        assert_eq!(of(lower.clone(), "auth/api-key"), Some(RevokesKeyInUse));
        assert_eq!(of(lower, "api-keys/ak_1"), Some(RevokesById));
        assert_eq!(of(Method::PATCH, "auth/api-key"), Some(RevokesKeyInUse));
        assert_eq!(of(Method::POST, "auth/whatever"), Some(Other));
        // A read only in its own spelling; anything else is judged a write.
        assert_eq!(
            of(Method::from_bytes(b"get").unwrap(), "api-keys"),
            Some(Other)
        );
        assert_eq!(of(Method::GET, "api-keys"), None);
        assert_eq!(of(Method::GET, "auth/me"), None);
        assert_eq!(of(Method::DELETE, "agents/api-keys"), None);
        assert_eq!(of(Method::POST, "agents/a/invoke"), None);
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
