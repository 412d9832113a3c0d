//! Settings only a restart can change.
//!
//! A reload keeps their running values and names each one whose file value
//! differs, so `GET /admin/config` can say what waits for a restart:
//!
//! | setting | why it is fixed |
//! |---|---|
//! | `server.listen` | the socket is bound |
//! | `server.max_connections`, `server.header_read_timeout_ms` | the accept loop's cap and hyper's timer are set up once |
//! | `telemetry.log_format` | the log writer is installed once (`log_level` does reload) |
//! | `auth.mode`, `auth.db_path`, `auth.ledger_flush_ms` | the key store and the ledger's writer are opened once |
//! | `cluster` (all of it) | the Redis connection, its subscriptions and every shaper's shared budget are set up once |
//! | `cache.enabled`, `cache.max_bytes` | the store's byte limit is fixed when it is built, and a new store would let a write in flight under the old version miss a read cached under the new one |

use crate::config::Config;

/// Copies into `next` the running value of every restart-only setting that
/// `next` changes, and returns their names.
pub fn pin(running: &Config, next: &mut Config) -> Vec<&'static str> {
    let mut pending = Vec::new();
    macro_rules! keep {
        ($name:literal, $($field:ident).+) => {
            if next.$($field).+ != running.$($field).+ {
                next.$($field).+ = running.$($field).+.clone();
                pending.push($name);
            }
        };
    }
    keep!("server.listen", server.listen);
    keep!("server.max_connections", server.max_connections);
    keep!(
        "server.header_read_timeout_ms",
        server.header_read_timeout_ms
    );
    keep!("telemetry.log_format", telemetry.log_format);
    keep!("auth.mode", auth.mode);
    keep!("auth.db_path", auth.db_path);
    keep!("auth.ledger_flush_ms", auth.ledger_flush_ms);
    keep!("cache.enabled", cache.enabled);
    keep!("cache.max_bytes", cache.max_bytes);
    keep!("cluster", cluster);
    pending
}

/// The sections (and secrets, by name only) that differ, for the log line
/// of an applied reload.
pub fn changed(running: &Config, next: &Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! section {
        ($name:literal, $field:ident) => {
            if next.$field != running.$field {
                changed.push($name);
            }
        };
    }
    section!("server", server);
    section!("upstream", upstream);
    section!("telemetry", telemetry);
    section!("shaper", shaper);
    section!("cache", cache);
    section!("auth", auth);
    section!("cluster", cluster);
    section!("retry", retry);
    section!("breaker", breaker);
    section!("reload", reload);
    section!("ui", ui);
    section!("upstream key", upstream_key);
    section!("named upstream keys", named_keys);
    section!("admin key", admin_key);
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_only_settings_keep_their_running_values() {
        let running = Config::default();
        let mut next = Config::default();
        next.server.listen = "0.0.0.0:9999".parse().unwrap();
        next.cache.max_bytes = 1 << 20;
        next.retry.max_attempts = 5;
        let pending = pin(&running, &mut next);
        assert_eq!(pending, ["server.listen", "cache.max_bytes"]);
        assert_eq!(next.server.listen, running.server.listen);
        assert_eq!(next.cache.max_bytes, running.cache.max_bytes);
        assert_eq!(next.retry.max_attempts, 5, "live settings are not pinned");
        assert_eq!(changed(&running, &next), ["retry"]);
    }

    #[test]
    fn a_new_secret_is_named_but_not_shown() {
        let running = Config::default();
        let next = Config {
            upstream_key: Some(crate::types::Secret::new("k2".to_string())),
            ..Config::default()
        };
        assert_eq!(changed(&running, &next), ["upstream key"]);
    }
}
