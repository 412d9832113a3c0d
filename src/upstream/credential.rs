//! Upstream credentials: the real keys the gateway holds, by name.
//!
//! `default` is `CASTARI_API_KEY` (or `upstream.api_key_file`); further
//! ones come from `[upstream.credentials.NAME]`. Each has its own rate
//! shaper (the upstream budgets each key separately) and its own cache
//! partition (its name is the cache key's principal). Local keys are bound
//! to one credential by name.

use std::sync::Arc;

use http::HeaderValue;

use crate::cluster::{Cluster, RedisBudget};
use crate::config::{Config, DEFAULT_CREDENTIAL};
use crate::shaper::metrics::ShaperMetrics;
use crate::shaper::{Shaper, Shared};
use crate::types::Secret;
use crate::upstream::seen::SeenLimits;

/// One upstream key, ready to send, and its shaper.
pub struct Credential {
    name: Arc<str>,
    authorization: HeaderValue,
    shaper: Option<Shaper>,
    seen: SeenLimits,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("authorization", &"*****")
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// A credential named `name` with `key`; shaped when `shaper` is given.
    pub fn new(name: &str, key: &Secret<String>, shaper: Option<Shaper>) -> Self {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
            .unwrap_or_else(|_| HeaderValue::from_static(""));
        authorization.set_sensitive(true);
        Self {
            name: Arc::from(name),
            authorization,
            shaper,
            seen: SeenLimits::default(),
        }
    }

    /// Its name (`default`, `team-a`): the cache principal and metric label.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// The outbound `Authorization` value, marked sensitive.
    pub fn authorization(&self) -> &HeaderValue {
        &self.authorization
    }

    /// Whether this credential's key begins with `prefix`: how the API
    /// names a key without its secret (`ApiKeyInfo.prefix`, e.g.
    /// `cast_abc12345`). An empty prefix names nothing.
    pub fn key_starts_with(&self, prefix: &str) -> bool {
        let bytes = self.authorization.as_bytes();
        let key = bytes.strip_prefix(b"Bearer ").unwrap_or(bytes);
        !prefix.is_empty() && key.starts_with(prefix.as_bytes())
    }

    /// The upstream's last `X-RateLimit-*` view of this key: what answers
    /// carry when shaping is off.
    pub fn seen(&self) -> &SeenLimits {
        &self.seen
    }

    /// Its rate shaper, unless shaping is off.
    pub fn shaper(&self) -> Option<&Shaper> {
        self.shaper.as_ref()
    }
}

/// The shaper of credential `name`: its budget shared through `cluster`
/// in cluster mode.
fn new_shaper(
    config: &Config,
    metrics: &ShaperMetrics,
    cluster: Option<&Cluster>,
    name: &str,
) -> Shaper {
    let metrics = metrics.for_upstream(name);
    let Some(cluster) = cluster else {
        return Shaper::new(&config.shaper, metrics);
    };
    let budget = Arc::new(RedisBudget::new(cluster, name));
    let shared = Shared::new(
        budget,
        Some(cluster.clone()),
        name,
        cluster.replica(),
        cluster.config().expected_replicas,
    );
    Shaper::clustered(&config.shaper, metrics, shared)
}

/// Every configured credential.
#[derive(Debug)]
pub struct Credentials {
    default: Arc<Credential>,
    named: Vec<Arc<Credential>>,
}

impl Credentials {
    /// Builds the credentials of `config`, each with a shaper when shaping
    /// is on (which must then run inside a Tokio runtime).
    /// In cluster mode (`cluster`), each shaper's budget is shared.
    pub fn new(config: &Config, metrics: &ShaperMetrics, cluster: Option<&Cluster>) -> Self {
        Self::build(config, |name| {
            config
                .shaper
                .enabled
                .then(|| new_shaper(config, metrics, cluster, name))
        })
    }

    fn build(config: &Config, shaper: impl Fn(&str) -> Option<Shaper>) -> Self {
        let default_key = config
            .upstream_key
            .clone()
            .unwrap_or_else(|| Secret::new(String::new()));
        let default = Arc::new(Credential::new(
            DEFAULT_CREDENTIAL,
            &default_key,
            shaper(DEFAULT_CREDENTIAL),
        ));
        let named = (config.named_keys.iter())
            .map(|(name, key)| Arc::new(Credential::new(name, key, shaper(name))))
            .collect();
        Self { default, named }
    }

    /// The credentials of `config` (a reload), each keeping the shaper of
    /// the credential of the same name, reconfigured: its send log and its
    /// queue carry over, so the upstream budget holds across the reload.
    /// A changed key is used from now on; a credential no longer named is
    /// dropped once the requests holding it finish.
    pub fn reconfigured(
        &self,
        config: &Config,
        metrics: &ShaperMetrics,
        cluster: Option<&Cluster>,
    ) -> Self {
        let shaper = |name: &str| {
            if !config.shaper.enabled {
                return None;
            }
            match self.get(name).and_then(|old| old.shaper()) {
                Some(kept) => {
                    kept.reconfigure(&config.shaper);
                    Some(kept.clone())
                }
                None => Some(new_shaper(config, metrics, cluster, name)),
            }
        };
        Self::build(config, shaper)
    }

    /// The `default` credential.
    pub fn default_credential(&self) -> &Arc<Credential> {
        &self.default
    }

    /// The credential named `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Credential>> {
        self.iter().find(|c| &*c.name == name)
    }

    /// All of them, `default` first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Credential>> {
        std::iter::once(&self.default).chain(&self.named)
    }
}
