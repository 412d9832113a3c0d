//! Roles and agent scopes: which routes a local key may send upstream.
//!
//! [`authorize`] decides from the method and the decoded path segments after
//! `/api/v1/` alone; bodies are looked at only by [`check_create`] (`POST
//! /agents` by an agent-scoped key) and [`filter_agent_list`] (the `GET
//! /agents` answer to one). A refusal is a [`Denial`], answered 403 by the
//! gateway and never sent upstream.
//!
//! Writes are allowed by listing (anything unlisted, unknown routes included,
//! is admin only). Empty segments (`//`, a trailing `/`) never match a listed
//! write; the security checks (sensitive routes, agent scope) also look at the
//! path with empty segments dropped, in case something upstream merges slashes.

use bytes::Bytes;
use http::Method;
use serde::Deserialize;
use serde_json::Value;

use super::model::Role;
use crate::error::GatewayError;
pub use crate::grant::AgentGlobs;

/// Why a request is refused (answered 403 by the gateway, never sent upstream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// API-key management, `auth/*` other than `GET auth/me`, sandbox access tokens: admin only.
    Sensitive,
    /// The role does not include this route (e.g. a `read` key POSTing).
    Role {
        /// The key's role.
        role: Role,
        /// The least role that would allow it: `invoke`, `deploy`, or
        /// `admin` when only that one would.
        would_allow: Role,
    },
    /// The route names an agent outside the key's globs.
    Agent {
        /// The agent slug named by the route (decoded, checked).
        slug: String,
        /// The key's agent globs.
        allowed: AgentGlobs,
    },
    /// Account-wide routes that would reveal other agents (e.g. `/invocations/...`) for an agent-scoped key.
    AccountWide,
    /// `POST /agents` by an agent-scoped key whose body has no `slug`, or a slug outside the globs.
    CreateSlug,
}

impl Denial {
    /// Stable machine code for the JSON error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Sensitive => "route_requires_admin",
            Self::Role { .. } => "role_forbids_route",
            Self::Agent { .. } => "agent_not_allowed",
            Self::AccountWide => "route_requires_unscoped_key",
            Self::CreateSlug => "agent_slug_not_allowed",
        }
    }

    /// The `detail`: what is refused and which key would be allowed, ending
    /// with ` (code: ...)`. Never includes request bodies.
    pub fn detail(&self, method: &Method) -> String {
        let detail = match self {
            Self::Sensitive => "API-key, auth (other than GET auth/me) and sandbox routes \
                                need a key with the admin role; ask the gateway's operator for one"
                .to_string(),
            Self::Role {
                role,
                would_allow: Role::Admin,
            } => format!(
                "This key's role ({role}) does not allow {method} on this route; only a key \
                 with role admin would"
            ),
            Self::Role { role, would_allow } => format!(
                "This key's role ({role}) does not allow {method} on this route; a key with \
                 role {would_allow} or admin would"
            ),
            Self::Agent { slug, allowed } => format!(
                "This key may use only the agents matching {allowed}, not {slug:?}; use a key \
                 whose agents include it"
            ),
            Self::AccountWide => "This route spans every agent, so a key limited to some agents \
                                  may not use it; use a key not limited to agents"
                .to_string(),
            Self::CreateSlug => "A key limited to some agents may create an agent only with a \
                                 JSON body whose \"slug\" its agent globs allow; send such a \
                                 slug, or use a key not limited to agents"
                .to_string(),
        };
        crate::error::with_code(&detail, self.code())
    }

    /// The 403 to answer with.
    pub fn forbidden(&self, method: &Method) -> GatewayError {
        GatewayError::Forbidden {
            code: self.code(),
            detail: self.detail(method),
        }
    }
}

/// Decides whether a key with `role` and `agents` may send `method` to the
/// route whose decoded path segments after `/api/v1/` are `segments`
/// (e.g. `["agents", "demo-1", "invoke"]`). Does not look at bodies.
///
/// # Errors
/// The [`Denial`] to answer with 403.
pub fn authorize<S: AsRef<str>>(
    role: Role,
    agents: &AgentGlobs,
    method: &Method,
    segments: &[S],
) -> Result<(), Denial> {
    let raw: Vec<&str> = segments.iter().map(AsRef::as_ref).collect();
    let merged: Vec<&str> = raw.iter().copied().filter(|s| !s.is_empty()).collect();

    let sensitive = is_sensitive(method, &raw, &merged);
    if sensitive && role != Role::Admin {
        return Err(Denial::Sensitive);
    }
    if !role_allows(role, method, &raw) {
        let would_allow = [Role::Invoke, Role::Deploy]
            .into_iter()
            .find(|other| role_allows(*other, method, &raw))
            .unwrap_or(Role::Admin);
        return Err(Denial::Role { role, would_allow });
    }
    if agents.is_all() {
        return Ok(());
    }
    // Upstream keys and sandbox tokens would reach past any agent scope.
    if sensitive {
        return Err(Denial::AccountWide);
    }
    for view in [&raw, &merged] {
        if let ["agents", slug, ..] = view.as_slice() {
            if !agents.allows(slug) {
                return Err(Denial::Agent {
                    slug: (*slug).to_string(),
                    allowed: agents.clone(),
                });
            }
        }
    }
    match merged.as_slice() {
        ["invocations", ..] => Err(Denial::AccountWide),
        // The list (filtered by the caller) and create (body checked by the
        // caller) only in their exact form; nothing else on the collection.
        ["agents"] => {
            let known = matches!(
                *method,
                Method::GET | Method::HEAD | Method::OPTIONS | Method::POST
            );
            if known && raw.as_slice() == ["agents"] {
                Ok(())
            } else {
                Err(Denial::AccountWide)
            }
        }
        _ => Ok(()),
    }
}

/// `api-keys/*`, `sandbox/*`, `auth/*` except exactly GET/HEAD `auth/me`.
fn is_sensitive(method: &Method, raw: &[&str], merged: &[&str]) -> bool {
    let me = matches!(*method, Method::GET | Method::HEAD) && raw == ["auth", "me"];
    !me && matches!(merged.first(), Some(&("api-keys" | "auth" | "sandbox")))
}

fn role_allows(role: Role, method: &Method, s: &[&str]) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) || role == Role::Admin {
        return true;
    }
    // No listed write has an empty segment: `agents//invoke`, `files/` are unknown.
    if s.iter().any(|segment| segment.is_empty()) {
        return false;
    }
    match role {
        Role::Read => false,
        Role::Invoke => invoke_writes(method, s),
        Role::Deploy => deploy_writes(method, s),
        Role::Admin => true,
    }
}

fn invoke_writes(method: &Method, s: &[&str]) -> bool {
    match *method {
        Method::POST => matches!(s, ["agents", _, "invoke" | "stream"]),
        Method::DELETE => matches!(s, ["agents", _, "sessions", _]),
        _ => false,
    }
}

fn deploy_writes(method: &Method, s: &[&str]) -> bool {
    match *method {
        Method::POST => matches!(
            s,
            ["agents"]
                | [
                    "agents",
                    _,
                    "deploy" | "redeploy" | "upload-code" | "stop" | "secrets" | "mounts" | "files"
                ]
                | ["agents", _, "files", "sync"]
                | ["files"]
                | ["files", "upload-url" | "confirm-upload"]
                | ["buckets"]
                | [
                    "buckets",
                    _,
                    "credentials" | "test" | "upload-url" | "download-url"
                ]
        ),
        Method::PATCH => matches!(
            s,
            ["agents", _] | ["agents", _, "mounts", _] | ["files", _] | ["buckets", _]
        ),
        Method::DELETE => matches!(
            s,
            ["agents", _]
                | ["agents", _, "sandbox"]
                | ["agents", _, "secrets" | "mounts" | "files", _]
                | ["files", _]
                | ["buckets", _]
                | ["buckets", _, "credentials"]
        ),
        _ => false,
    }
}

/// The part of a `POST /agents` body the scope check reads. A duplicated
/// `slug` key is an error (serde refuses duplicate fields), so the gateway and
/// the upstream cannot disagree on which one counts.
#[derive(Deserialize)]
struct CreateBody {
    slug: Option<Value>,
}

/// For `POST /agents` by an agent-scoped key: the JSON body's `slug` must be
/// a string allowed by `agents`. Ok for [`AgentGlobs::all`] without parsing.
///
/// # Errors
/// [`Denial::CreateSlug`] when the body is not a JSON object, has no string
/// `slug` (or more than one), or the slug is not allowed.
pub fn check_create(agents: &AgentGlobs, body: &[u8]) -> Result<(), Denial> {
    if agents.is_all() {
        return Ok(());
    }
    // A struct also deserializes from a JSON array; only an object counts.
    let is_object = body.trim_ascii_start().first() == Some(&b'{');
    let parsed = serde_json::from_slice::<CreateBody>(body).ok();
    match parsed.filter(|_| is_object).and_then(|b| b.slug) {
        Some(Value::String(slug)) if agents.allows(&slug) => Ok(()),
        _ => Err(Denial::CreateSlug),
    }
}

/// For `GET /agents` answered 200 to an agent-scoped key: removes the agents
/// whose `slug` is not allowed (or missing) from `{"agents": [...], ...}`,
/// keeping order and every other field; a numeric `meta.total` drops by the
/// number removed (saturating at 0).
///
/// Returns `None` when the body is not JSON or has no `agents` array (the
/// caller must not pass an unfiltered list on). With [`AgentGlobs::all`] the
/// body comes back unchanged, unparsed.
pub fn filter_agent_list(agents: &AgentGlobs, body: &[u8]) -> Option<Bytes> {
    if agents.is_all() {
        return Some(Bytes::copy_from_slice(body));
    }
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    let list = doc.get_mut("agents")?.as_array_mut()?;
    let before = list.len();
    list.retain(|agent| {
        agent
            .get("slug")
            .and_then(Value::as_str)
            .is_some_and(|slug| agents.allows(slug))
    });
    let removed = before - list.len();
    if removed > 0 {
        if let Some(total) = doc.get_mut("meta").and_then(|meta| meta.get_mut("total")) {
            if let Some(n) = total.as_u64() {
                *total = Value::from(n.saturating_sub(removed as u64));
            } else if let Some(n) = total.as_f64() {
                *total = Value::from((n - removed as f64).max(0.0));
            }
        }
    }
    serde_json::to_vec(&doc).ok().map(Bytes::from)
}

#[cfg(test)]
mod tests;
