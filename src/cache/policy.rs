//! Which GETs are cached for how long, and which writes make which of them
//! stale (`gateway-notes.md` §2–§4).
//!
//! Both work on the decoded path segments after `/api/v1/`, so `MY%20KEY`
//! and `MY KEY` name the same resource.

use http::Method;

use super::agents::Action;
use super::invalidate::Pattern;
use crate::config::TtlConfig;

pub use crate::route::CacheRoute;

/// The TTLs of the cacheable routes (`route.rs` reads which route a GET
/// names; the cache decides how long it lives).
impl CacheRoute {
    /// The configured time to live, in seconds (0: not cached).
    pub fn ttl_secs(self, ttl: &TtlConfig) -> u64 {
        match self {
            Self::AuthMe => ttl.auth_me,
            Self::Agents => ttl.agents,
            Self::Agent => ttl.agent,
            Self::Secrets => ttl.secrets,
            Self::Sessions => ttl.sessions,
            Self::Invocations => ttl.invocations,
            Self::Usage => ttl.usage,
            Self::Buckets => ttl.buckets,
            Self::BucketFiles => ttl.bucket_files,
            Self::Mounts => ttl.mounts,
            Self::Files => ttl.files,
            Self::AgentFiles => ttl.agent_files,
        }
    }
}

/// What an agent write means for that agent's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentWrite {
    /// `POST /agents`: the `Agent` in the response is the new agent's
    /// entry, written through under its slug.
    Created,
    /// Deploy, redeploy, upload-code, stop or PATCH: the status is in motion
    /// until the gateway sees the action land (`agents.rs`); an `Agent` in
    /// the response is written through.
    Settling(String, Action),
    /// The agent is gone.
    Deleted(String),
}

/// The effect of one write on the cache.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct WriteEffect {
    /// Entries to drop.
    pub drops: Vec<Pattern>,
    /// The agent whose status the write touches.
    pub agent: Option<AgentWrite>,
    /// The write goes on while its response streams (`/stream`): what it
    /// changes (usage, invocations, sessions) is only complete when the
    /// stream ends, so the drops are made again then.
    pub again_at_end: bool,
}

/// The invalidation map: what a non-GET request makes stale. Unknown writes
/// drop everything under their first segment: safe, if blunt.
pub fn write_effect(method: &Method, segments: &[Box<str>]) -> WriteEffect {
    let s: Vec<&str> = segments.iter().map(AsRef::as_ref).collect();
    let exact = |parts: &[&str]| Pattern::exact(parts);
    let below = |parts: &[&str]| Pattern::below(parts);
    let mut agent = None;
    let drops = match (method, s.as_slice()) {
        (&Method::HEAD | &Method::OPTIONS, _) => vec![],
        (&Method::POST, ["agents"]) => {
            agent = Some(AgentWrite::Created);
            vec![exact(&["agents"])]
        }
        (&Method::PATCH, ["agents", slug]) => {
            agent = Some(AgentWrite::Settling(slug.to_string(), Action::Plain));
            vec![exact(&["agents"]), exact(&["agents", slug])]
        }
        (&Method::DELETE, ["agents", slug]) => {
            agent = Some(AgentWrite::Deleted(slug.to_string()));
            vec![
                exact(&["agents"]),
                below(&["agents", slug]),
                exact(&["files"]),
                below(&["usage"]),
            ]
        }
        (
            &Method::POST,
            ["agents", slug, action @ ("deploy" | "redeploy" | "upload-code" | "stop")],
        )
        | (&Method::DELETE, ["agents", slug, action @ "sandbox"]) => {
            let action = match *action {
                "deploy" | "redeploy" | "upload-code" => Action::Deploy,
                _ => Action::Plain,
            };
            agent = Some(AgentWrite::Settling(slug.to_string(), action));
            vec![
                exact(&["agents"]),
                exact(&["agents", slug]),
                exact(&["agents", slug, "sessions"]),
                exact(&["agents", slug, "files"]),
            ]
        }
        (&Method::POST, ["agents", slug, "invoke" | "stream"]) => vec![
            exact(&["agents", slug, "invocations"]),
            exact(&["agents", slug, "sessions"]),
            below(&["usage"]),
            exact(&["agents", slug]),
            exact(&["files"]),
            exact(&["files", "usage"]),
        ],
        (_, ["agents", slug, "secrets", ..]) => vec![exact(&["agents", slug, "secrets"])],
        (_, ["agents", slug, "sessions", ..]) => vec![exact(&["agents", slug, "sessions"])],
        (_, ["agents", slug, "mounts", ..]) => vec![below(&["agents", slug, "mounts"])],
        (&Method::POST, ["agents", slug, "files", "sync"]) => {
            vec![exact(&["agents", slug, "files"])]
        }
        (_, ["agents", slug, "files"]) => {
            vec![exact(&["agents", slug, "files"]), exact(&["files"])]
        }
        (_, ["agents", slug, "files", file]) => vec![
            exact(&["agents", slug, "files"]),
            exact(&["files"]),
            exact(&["files", file]),
        ],
        (_, ["api-keys", ..] | ["auth", "api-key"]) => {
            vec![below(&["api-keys"]), exact(&["auth", "me"])]
        }
        (&Method::POST, ["buckets"]) => vec![exact(&["buckets"])],
        // Read-like POSTs: a connectivity test and presigned URLs.
        (&Method::POST, ["buckets", _, "test" | "upload-url" | "download-url"]) => vec![],
        (_, ["buckets", slug, "credentials"]) => vec![
            exact(&["buckets"]),
            exact(&["buckets", slug]),
            exact(&["buckets", slug, "files"]),
        ],
        (_, ["buckets", slug]) => vec![
            exact(&["buckets"]),
            below(&["buckets", slug]),
            Pattern::any_agent(&["mounts"]),
        ],
        (&Method::POST, ["files"] | ["files", "upload-url" | "confirm-upload"]) => {
            vec![exact(&["files"]), exact(&["files", "usage"])]
        }
        (&Method::PATCH, ["files", id]) => vec![
            exact(&["files"]),
            exact(&["files", id]),
            Pattern::any_agent(&["files"]),
        ],
        (&Method::DELETE, ["files", id]) => vec![
            exact(&["files"]),
            below(&["files", id]),
            exact(&["files", "usage"]),
            Pattern::any_agent(&["files"]),
        ],
        // Minting a sandbox access token changes nothing that is cached.
        (&Method::POST, ["sandbox", _, "access"]) => vec![],
        (_, [first, ..]) => vec![below(&[first])],
        (_, []) => vec![],
    };
    let again_at_end = matches!(
        (method, s.as_slice()),
        (&Method::POST, ["agents", _, "stream"])
    );
    WriteEffect {
        drops,
        agent,
        again_at_end,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(path: &str) -> Vec<Box<str>> {
        path.split('/').map(Box::from).collect()
    }

    fn route(path: &str) -> Option<CacheRoute> {
        CacheRoute::of(&segs(path))
    }

    #[test]
    fn caches_the_listed_reads_only() {
        assert_eq!(route("agents"), Some(CacheRoute::Agents));
        assert_eq!(route("agents/a"), Some(CacheRoute::Agent));
        assert_eq!(route("agents/a/mounts/m1"), Some(CacheRoute::Mounts));
        assert_eq!(route("files/usage"), Some(CacheRoute::Files));
        assert_eq!(route("usage/daily"), Some(CacheRoute::Usage));
        assert_eq!(route("auth/me"), Some(CacheRoute::AuthMe));
        for never in [
            "api-keys",
            "files/f1/download",
            "files/f1/content",
            "agents/a/invoke",
            "sandbox/s/access",
            "agents/",
            "brand/new",
        ] {
            assert_eq!(route(never), None, "{never}");
        }
    }

    fn drops(method: Method, path: &str) -> Vec<String> {
        write_effect(&method, &segs(path))
            .drops
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn only_a_stream_drops_again_when_its_response_ends() {
        let at_end = |method: Method, path: &str| write_effect(&method, &segs(path)).again_at_end;
        assert!(at_end(Method::POST, "agents/a/stream"));
        assert!(!at_end(Method::POST, "agents/a/invoke"));
        assert!(!at_end(Method::POST, "agents/a/deploy"));
        assert!(!at_end(Method::DELETE, "agents/a/stream"));
        assert_eq!(
            write_effect(&Method::POST, &segs("agents")).agent,
            Some(AgentWrite::Created)
        );
    }

    #[test]
    fn follows_the_invalidation_map() {
        assert_eq!(drops(Method::POST, "agents"), ["agents"]);
        assert_eq!(
            drops(Method::POST, "agents/a/deploy"),
            ["agents", "agents/a", "agents/a/sessions", "agents/a/files"]
        );
        assert_eq!(
            drops(Method::DELETE, "agents/a"),
            ["agents", "agents/a/**", "files", "usage/**"]
        );
        assert_eq!(
            drops(Method::DELETE, "files/f1"),
            ["files", "files/f1/**", "files/usage", "agents/*/files/**"]
        );
        assert_eq!(
            drops(Method::PATCH, "buckets/b"),
            ["buckets", "buckets/b/**", "agents/*/mounts/**"]
        );
        assert_eq!(
            drops(Method::DELETE, "agents/a/secrets/K"),
            ["agents/a/secrets"]
        );
        assert!(drops(Method::POST, "buckets/b/test").is_empty());
        assert_eq!(drops(Method::PUT, "brand/new"), ["brand/**"]);
        let effect = write_effect(&Method::DELETE, &segs("agents/a/sandbox"));
        assert_eq!(
            effect.agent,
            Some(AgentWrite::Settling("a".into(), Action::Plain))
        );
        let effect = write_effect(&Method::POST, &segs("agents/a/redeploy"));
        assert_eq!(
            effect.agent,
            Some(AgentWrite::Settling("a".into(), Action::Deploy))
        );
    }
}
