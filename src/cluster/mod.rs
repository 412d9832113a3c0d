//! Cluster mode: gateway replicas sharing one upstream account through
//! Redis (`[cluster] redis_url`).
//!
//! What is shared, and where:
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | the connection, Redis health (up, lost, regained) and key names |
//! | `budget.rs` | the upstream budgets: slots reserved atomically in Redis, on Redis time |
//! | `events.rs` | cache events (a write's invalidation, agent motion) and budget pauses, published to every replica and acknowledged |
//! | `turns.rs` | turns of one session in order across replicas (a ticket line) |
//! | `metrics.rs` | Redis health and event counts |
//!
//! The fair queue stays in each replica (`shaper`); only the decision of
//! which send may leave when is made in Redis. Entries of the response
//! cache stay in each replica; what makes them stale travels. While Redis
//! is lost, each replica shapes to its local share of every budget
//! (`limit / cluster.expected_replicas`) and serves its own cache; on
//! reconnect it writes its recent sends back into the shared log, and
//! drops its cached entries (invalidations may have been missed).

pub mod budget;
pub mod events;
pub mod metrics;
pub mod turns;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;

use crate::config::ClusterConfig;
pub use budget::{Ask, Grant, RedisBudget, SharedBudget};
pub use events::{Bus, Event};
pub use metrics::ClusterMetrics;

/// How often a replica that lost Redis tries it again.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The URL or the password file is unusable.
    #[error("cluster.redis_url: {0}")]
    Url(String),
    /// `cluster.redis_password_file` cannot be read.
    #[error("cluster.redis_password_file: cannot read it ({0})")]
    PasswordFile(std::io::Error),
    /// `cluster.redis_ca_file` cannot be read or used.
    #[error("cluster.redis_ca_file: {0}")]
    CaFile(String),
    /// Redis did not answer at start (and `cluster.start_degraded` is off).
    #[error("cluster.redis_url: Redis cannot serve the cluster ({0}); set cluster.start_degraded = true to start without it")]
    Unreachable(String),
}

/// The cluster handle: cheap to clone.
#[derive(Clone)]
pub struct Cluster(Arc<Inner>);

struct Inner {
    config: ClusterConfig,
    client: redis::Client,
    conn: ConnectionManager,
    /// This process's id, unique in the cluster.
    replica: Box<str>,
    up: AtomicBool,
    /// Bumped each time Redis comes back: shapers write their recent sends
    /// back once per epoch.
    epoch: AtomicU64,
    metrics: ClusterMetrics,
    bus: Bus,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("replica", &self.0.replica)
            .field("prefix", &self.0.config.prefix)
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to `config.redis_url`, or returns `None` when cluster mode
    /// is off. Must run inside a Tokio runtime.
    ///
    /// # Errors
    /// A bad URL or password file, or Redis unreachable while
    /// `cluster.start_degraded` is off.
    pub async fn connect(config: &ClusterConfig) -> Result<Option<Self>, ClusterError> {
        let Some(url) = &config.redis_url else {
            return Ok(None);
        };
        let mut info = url
            .expose()
            .as_str()
            .into_connection_info()
            .map_err(|e| ClusterError::Url(format!("not a Redis URL ({:?})", e.kind())))?;
        if let Some(path) = &config.redis_password_file {
            let password = std::fs::read_to_string(path).map_err(ClusterError::PasswordFile)?;
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.trim_end_matches(['\r', '\n']));
            info = info.set_redis_settings(settings);
        }
        let client = match &config.redis_ca_file {
            None => redis::Client::open(info)
                .map_err(|e| ClusterError::Url(format!("unusable ({:?})", e.kind())))?,
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| ClusterError::CaFile(format!("cannot read it ({e})")))?;
                let certificates = redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                };
                redis::Client::build_with_tls(info, certificates).map_err(|e| {
                    ClusterError::CaFile(format!("not a usable PEM certificate ({:?})", e.kind()))
                })?
            }
        };
        let timeout = Duration::from_millis(config.op_timeout_ms);
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|e| ClusterError::Url(format!("unusable ({:?})", e.kind())))?;
        let metrics = ClusterMetrics::default();
        let replica = replica_id();
        let bus = Bus::new(config, &replica, metrics.clone());
        let cluster = Self(Arc::new(Inner {
            config: config.clone(),
            client,
            conn,
            replica: replica.into(),
            up: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            metrics,
            bus,
        }));
        match cluster.ping().await {
            Ok(()) => cluster.regained(),
            Err(error) if config.start_degraded => {
                // Its first contact is a comeback: replicas may have sent
                // on their local share meanwhile.
                cluster.0.epoch.store(1, Ordering::Release);
                tracing::warn!(%error, "Redis is unreachable at start; starting degraded (cluster.start_degraded)");
                cluster.0.metrics.set_up(false);
                cluster.watch_until_back();
            }
            Err(error) => return Err(ClusterError::Unreachable(error)),
        }
        cluster.0.bus.spawn_subscriber(cluster.clone());
        Ok(Some(cluster))
    }

    /// Whether Redis can serve the cluster: it answers, takes a write (not
    /// a read-only replica, not out of memory, the user may write), and is
    /// 7.0 or later (the scripts use `PEXPIRE … GT/NX` and `TIME`).
    async fn ping(&self) -> Result<(), String> {
        let mut conn = self.conn();
        let mut probe = redis::pipe();
        probe
            .cmd("SET")
            .arg(self.key(&["probe"]))
            .arg(&*self.0.replica)
            .arg("PX")
            .arg(10_000)
            .ignore()
            .cmd("INFO")
            .arg("server");
        let answer = probe.query_async::<(String,)>(&mut conn);
        let (info,) = match tokio::time::timeout(self.op_timeout(), answer).await {
            Ok(Ok(info)) => info,
            Ok(Err(error)) => return Err(describe(&error)),
            Err(_) => return Err("no answer within cluster.op_timeout_ms".into()),
        };
        let version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .and_then(|v| v.trim().split('.').next()?.parse::<u32>().ok());
        match version {
            Some(major) if major >= 7 => Ok(()),
            _ => Err("Redis 7.0 or later is needed".into()),
        }
    }

    /// Waits (at most `within`) until this process's event subscription
    /// is live, so it hears the acknowledgements of what it publishes (a
    /// short-lived process such as `keys … --redis`). Whether it is.
    pub async fn wait_subscribed(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while !self.0.bus.is_subscribed() {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        true
    }

    /// The settings it runs with.
    pub fn config(&self) -> &ClusterConfig {
        &self.0.config
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.0.replica
    }

    /// Its metrics.
    pub fn metrics(&self) -> &ClusterMetrics {
        &self.0.metrics
    }

    /// The event bus.
    pub fn bus(&self) -> &Bus {
        &self.0.bus
    }

    /// Publishes `event` to every replica and waits for their
    /// acknowledgements ([`Bus::publish`]).
    pub async fn publish(&self, event: Event) {
        self.bus().publish(self, event).await;
    }

    /// A connection for one command (the multiplexed, reconnecting one).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.0.conn.clone()
    }

    /// The client, for dedicated (pub/sub) connections.
    pub(crate) fn client(&self) -> &redis::Client {
        &self.0.client
    }

    /// How long one command may take.
    pub fn op_timeout(&self) -> Duration {
        Duration::from_millis(self.0.config.op_timeout_ms)
    }

    /// `{prefix}:{parts…}`.
    pub fn key(&self, parts: &[&str]) -> String {
        let mut key = self.0.config.prefix.clone();
        for part in parts {
            key.push(':');
            key.push_str(part);
        }
        key
    }

    /// Whether Redis answered the last command.
    pub fn is_up(&self) -> bool {
        self.0.up.load(Ordering::Acquire)
    }

    /// How many times Redis answered after not answering: 1 after the
    /// first contact at start; more after each loss (or a degraded start).
    pub fn epoch(&self) -> u64 {
        self.0.epoch.load(Ordering::Acquire)
    }

    /// A command failed: Redis counts as lost until a ping answers. Logged
    /// once per loss.
    pub fn lost(&self, error: &str) {
        if self.0.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                error,
                "Redis lost: shaping to the local share of each budget until it is back"
            );
            self.0.metrics.lost();
            self.watch_until_back();
        }
    }

    fn regained(&self) {
        let epoch = self.0.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        if !self.0.up.swap(true, Ordering::AcqRel) {
            self.0.metrics.set_up(true);
        }
        if epoch > 1 {
            // Writes made here while Redis was lost reached no other
            // replica: they drop what they cached.
            let cluster = self.clone();
            tokio::spawn(async move { cluster.publish(Event::Resync).await });
        }
    }

    /// Pings until Redis answers, then marks it up (a new epoch).
    fn watch_until_back(&self) {
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RETRY_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let cluster = Cluster(inner);
                if cluster.ping().await.is_ok() {
                    tracing::info!("Redis is back: budgets and cache events are shared again");
                    cluster.regained();
                    return;
                }
            }
        });
    }

    /// Runs one prepared script with [`run`](Self::run)'s timeout and
    /// loss rule.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: &redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let mut conn = self.conn();
        self.run(call.invoke_async(&mut conn)).await
    }

    /// Runs one Redis command (or script) with the op timeout; a failure
    /// marks Redis lost.
    ///
    /// # Errors
    /// The command failed or timed out (described, never with the URL).
    pub async fn run<T>(
        &self,
        command: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        // Any failure counts, an error answer too (a read-only replica
        // after a failover, out of memory, no permission): the local share
        // is the safe way on; the probe says when Redis can serve again.
        let outcome = match tokio::time::timeout(self.op_timeout(), command).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => describe(&error),
            Err(_) => "no answer within cluster.op_timeout_ms".to_string(),
        };
        self.lost(&outcome);
        Err(outcome)
    }
}

/// A Redis error in words that never carry the URL or a password.
fn describe(error: &redis::RedisError) -> String {
    if error.is_timeout() {
        "timed out".into()
    } else if error.is_connection_dropped() || error.is_io_error() {
        format!("connection failed ({:?})", error.kind())
    } else {
        format!("{:?}", error.kind())
    }
}

/// A random id for this process.
fn replica_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = crate::clock::since_epoch().as_nanos();
        bytes = (nanos as u64 ^ u64::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
