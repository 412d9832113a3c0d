//! The simulated account: every resource, in memory.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use crate::util::{id, iso, now_ms};

/// The fixed user every simulator serves.
pub const USER_ID: &str = "usr_sim";
/// The account's email in `GET /auth/me`.
pub const USER_EMAIL: &str = "sim@castari.local";

/// An agent and its lifecycle timing.
#[derive(Clone, Debug, Serialize)]
pub struct Agent {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub slug: String,
    pub description: Option<String>,
    pub source_type: String,
    pub git_repo_url: Option<String>,
    pub git_branch: String,
    pub source_hash: Option<String>,
    pub default_model: String,
    pub max_turns: u64,
    pub timeout_seconds: u64,
    pub status: String,
    pub status_message: Option<String>,
    pub sandbox_id: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// When a `deploying` agent becomes `active`.
    #[serde(skip)]
    pub ready_at: Option<Instant>,
}

impl Agent {
    /// Applies a finished deploy, if its time has come.
    pub fn settle(&mut self, now: Instant) {
        if self.status == "deploying" && self.ready_at.is_some_and(|t| now >= t) {
            self.status = "active".into();
            self.ready_at = None;
            self.updated_at = iso(now_ms());
        }
    }

    /// Starts a deploy: `deploying` (or `active` at once), or `error` when a
    /// local agent has no code.
    pub fn deploy(&mut self, delay: Duration, sync: bool, now: Instant) {
        self.updated_at = iso(now_ms());
        if self.source_type == "local" && self.source_hash.is_none() {
            self.status = "error".into();
            self.status_message = Some("No code uploaded: upload code before deploying".into());
            self.sandbox_id = None;
            self.ready_at = None;
            return;
        }
        self.status_message = None;
        self.sandbox_id = Some(id("sbx_"));
        if sync || delay.is_zero() {
            self.status = "active".into();
            self.ready_at = None;
        } else {
            self.status = "deploying".into();
            self.ready_at = Some(now + delay);
        }
    }
}

/// A secret; the value is kept and never returned.
#[derive(Clone, Debug)]
pub struct Secret {
    /// Kept as the upstream keeps it; no route ever returns it.
    #[allow(dead_code)]
    pub value: String,
    pub created_at: String,
}

/// A session of an agent.
#[derive(Clone, Debug, Serialize)]
pub struct Session {
    pub id: String,
    pub agent_id: String,
    pub sandbox_id: Option<String>,
    pub created_at: String,
    pub last_invocation_at: Option<String>,
}

/// One recorded invocation.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub id: String,
    pub agent_id: String,
    pub slug: String,
    pub session_id: String,
    pub prompt: String,
    pub response_content: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost_micros: u64,
    pub duration_ms: u64,
    pub status: String,
    pub created_ms: u64,
}

/// An upstream API key record.
#[derive(Clone, Debug, Serialize)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
    /// The full key, never serialized: revoking the record revokes it.
    #[serde(skip)]
    pub key: String,
}

/// A storage bucket.
#[derive(Clone, Debug, Serialize)]
pub struct Bucket {
    pub id: String,
    pub user_id: String,
    pub name: String,
    pub slug: String,
    pub provider: String,
    pub bucket_name: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub has_credentials: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// A bucket mounted into an agent's sandbox.
#[derive(Clone, Debug)]
pub struct Mount {
    pub id: String,
    pub bucket_slug: String,
    pub agent_slug: String,
    pub mount_path: String,
    pub source_prefix: String,
    pub permission_rules: serde_json::Value,
    pub cache_enabled: bool,
    pub cache_ttl_seconds: u64,
    pub enabled: bool,
    pub created_at: String,
    pub updated_at: String,
}

/// A managed file and its bytes.
#[derive(Clone, Debug)]
pub struct File {
    pub id: String,
    pub file_id: String,
    pub filename: String,
    pub content_type: Option<String>,
    pub size_bytes: u64,
    pub sha256_hash: String,
    pub description: Option<String>,
    pub tags: Vec<String>,
    pub upload_status: String,
    pub created_at: String,
    pub updated_at: String,
    pub content: Bytes,
    /// Signature of the presigned upload URL (pending files only).
    pub upload_sig: Option<String>,
    /// Signature of the download redirect target.
    pub download_sig: String,
}

/// A file attached to an agent.
#[derive(Clone, Debug, Serialize)]
pub struct AgentFile {
    pub id: String,
    pub file_id: String,
    pub filename: String,
    pub mount_path: String,
    pub read_only: bool,
    pub size_bytes: u64,
    pub created_at: String,
}

/// Everything the account holds.
#[derive(Debug, Default)]
pub struct Account {
    /// Agents by slug.
    pub agents: BTreeMap<String, Agent>,
    /// Secrets by agent slug, then key.
    pub secrets: BTreeMap<String, BTreeMap<String, Secret>>,
    /// Sessions by agent slug.
    pub sessions: BTreeMap<String, Vec<Session>>,
    /// Every invocation, oldest first.
    pub invocations: Vec<Invocation>,
    /// API keys.
    pub api_keys: Vec<ApiKey>,
    /// Buckets by slug.
    pub buckets: BTreeMap<String, Bucket>,
    /// Mounts, any agent.
    pub mounts: Vec<Mount>,
    /// Managed files by file id.
    pub files: BTreeMap<String, File>,
    /// Files attached to agents, by agent slug.
    pub agent_files: BTreeMap<String, Vec<AgentFile>>,
}

impl Account {
    /// Removes an agent and everything that belongs to it.
    pub fn delete_agent(&mut self, slug: &str) -> bool {
        if self.agents.remove(slug).is_none() {
            return false;
        }
        self.secrets.remove(slug);
        self.sessions.remove(slug);
        self.invocations.retain(|i| i.slug != slug);
        self.mounts.retain(|m| m.agent_slug != slug);
        self.agent_files.remove(slug);
        true
    }

    /// Ends every session sandbox of an agent (deploy, redeploy, stop).
    pub fn reset_sessions(&mut self, slug: &str) {
        if let Some(sessions) = self.sessions.get_mut(slug) {
            for session in sessions {
                session.sandbox_id = None;
            }
        }
    }

    /// Bytes held by confirmed files.
    pub fn storage_bytes(&self) -> u64 {
        self.files
            .values()
            .filter(|f| f.upload_status == "confirmed")
            .map(|f| f.size_bytes)
            .sum()
    }
}
