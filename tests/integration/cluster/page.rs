//! The operator page's picture in cluster mode, read with the real
//! `castari-gateway status` against real replicas: Redis answering and
//! the replicas alive, a stopped one gone within seconds.

use std::time::Duration;

use serde_json::Value;

use super::{replica_config, RedisServer};
use crate::binary::{command, GatewayProcess};
use crate::support::*;

/// `castari-gateway status --json --url BASE`, parsed.
fn status_json(base: &str) -> Value {
    let output = command()
        .args(["status", "--json", "--url", base])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The status once `count` replicas are listed, or the last one read
/// after ten seconds.
async fn replicas_seen(base: &str, count: usize) -> Value {
    let mut status = Value::Null;
    for _ in 0..50 {
        status = status_json(base);
        if status["cluster"]["replicas"].as_array().map(Vec::len) == Some(count) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_redis_and_the_replicas_alive() {
    let redis = RedisServer::start();
    let sim = sim().await;
    let file = |n: &str| replica_config(n, &redis.url(), "100/60s", 100, "");
    let a = GatewayProcess::start_with_config(&sim.url(), &file("page"));
    let mut b = Some(GatewayProcess::start_with_config(&sim.url(), &file("page")));
    let base = a.url("");
    let two = replicas_seen(&base, 2).await;
    assert_eq!(two["cluster"]["redis"], "up", "{two}");
    let replicas = two["cluster"]["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2, "{two}");
    assert!(replicas.contains(&two["replica"]), "this replica is listed");

    // The text picture names them too.
    let output = command().args(["status", "--url", &base]).output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("redis up"), "{text}");
    assert!(text.contains("default/crud"), "{text}");
    assert!(text.contains(two["replica"].as_str().unwrap()), "{text}");

    // A replica that stops is gone within the liveness window.
    drop(b.take());
    let one = replicas_seen(&base, 1).await;
    assert_eq!(
        one["cluster"]["replicas"],
        serde_json::json!([one["replica"]]),
        "{one}"
    );
}

#[tokio::test]
async fn status_without_the_admin_key_says_which_setting_to_use() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gateway.toml");
    let db = dir.path().join("keys.db");
    std::fs::write(
        &file,
        format!(
            "[auth]\nmode = \"keys\"\ndb_path = {:?}\n",
            db.display().to_string()
        ),
    )
    .unwrap();
    let gw = GatewayProcess::start_with_config_env(
        &sim.url(),
        &file,
        &[("CASTARI_GATEWAY_ADMIN_KEY", crate::keys::ADMIN_KEY)],
    );
    let refused = command()
        .args(["status", "--url", &gw.url("")])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("CASTARI_GATEWAY_ADMIN_KEY"),
        "{stderr}"
    );
    let allowed = command()
        .args(["status", "--url", &gw.url("")])
        .env("CASTARI_GATEWAY_ADMIN_KEY", crate::keys::ADMIN_KEY)
        .output()
        .unwrap();
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
    let text = String::from_utf8_lossy(&allowed.stdout);
    assert!(
        text.contains("keys mode") && text.contains("default/crud"),
        "{text}"
    );
    let unreachable = command()
        .args(["status", "--url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("cannot reach"));
}
