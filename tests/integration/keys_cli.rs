//! The `keys` commands as an operator runs them, against a running gateway
//! process on the same store file.

use serde_json::Value;

use crate::binary::{command, GatewayProcess};
use crate::support::*;

fn keys(args: &[&str]) -> std::process::Output {
    command().arg("keys").args(args).output().unwrap()
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn cli_changes_reach_a_running_gateway_at_once() {
    let sim = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("keys.db");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nmode = \"keys\"\ndb_path = {:?}\n",
            db.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();

    let created = keys(&[
        "--config", config, "create", "--name", "cli-bot", "--role", "read", "--rate", "100/min",
        "--json",
    ]);
    assert_eq!(created.status.code(), Some(0), "{created:?}");
    let created: Value = serde_json::from_str(&stdout(&created)).unwrap();
    let token = created["key"].as_str().unwrap().to_string();
    let id = created["info"]["id"].as_str().unwrap().to_string();
    assert_eq!(created["info"]["role"], "read");

    let admin = "cli-test-admin-key-0123456789";
    let gateway = GatewayProcess::start_with(
        &sim.url(),
        &[
            ("CASTARI_GATEWAY_CONFIG", config),
            ("CASTARI_GATEWAY_ADMIN_KEY", admin),
        ],
    );
    let get = |key: &str| {
        client()
            .get(gateway.url("/api/v1/usage"))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(get(&token).await.unwrap().status(), 200);
    assert_eq!(get("cgw_nope_x").await.unwrap().status(), 401);

    // A key created while the gateway runs works at once.
    let second = keys(&[
        "--db",
        db.to_str().unwrap(),
        "create",
        "--name",
        "late",
        "--role",
        "read",
    ]);
    assert_eq!(second.status.code(), Some(0));
    let late = stdout(&second).trim().to_string();
    assert!(late.starts_with("cgw_"));
    assert!(String::from_utf8_lossy(&second.stderr).contains("shown once"));
    assert_eq!(get(&late).await.unwrap().status(), 200);

    // Revoked by the CLI: refused on the next request.
    let revoked = keys(&["--config", config, "revoke", &id]);
    assert_eq!(revoked.status.code(), Some(0), "{revoked:?}");
    let response = get(&token).await.unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "key_revoked");

    let listed = stdout(&keys(&["--config", config, "list"]));
    assert!(
        listed.contains(&id) && listed.contains("revoked"),
        "{listed}"
    );
    assert!(
        !listed.contains(&token[token.len() - 20..]),
        "list never shows a secret"
    );

    // Usage reaches the ledger (request counts are flushed every second).
    tokio::time::sleep(std::time::Duration::from_millis(1_300)).await;
    let csv = stdout(&keys(&["--config", config, "usage", "--csv"]));
    assert!(csv.starts_with("day,key_id,"), "{csv}");
    assert!(
        csv.contains(&format!(",{id},cli-bot,,crud,1,0,0,0,0\n")),
        "{csv}"
    );

    let missing = keys(&["--config", config, "revoke", "nosuchkey"]);
    assert_eq!(missing.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nosuchkey"));
    let logs = gateway.logs().join("\n");
    assert!(!logs.contains(&token[5..]) && !logs.contains(&late[5..]));

    // A key the admin API acknowledged survives the process being killed
    // (SIGKILL, no shutdown) right after.
    let made: Value = client()
        .post(gateway.url("/admin/keys"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"name": "survivor", "role": "read"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let survivor = made["info"]["id"].as_str().unwrap().to_string();
    drop(gateway);
    let listed = stdout(&keys(&["--config", config, "list", "--json"]));
    assert!(listed.contains(&survivor), "{listed}");
}

#[test]
fn print_config_emits_a_block_the_config_check_accepts() {
    let out = keys(&[
        "create",
        "--name",
        "gitops",
        "--role",
        "invoke",
        "--agents",
        "demo-*",
        "--budget-usd",
        "5/day",
        "--print-config",
    ]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let token = stdout(&out).trim().to_string();
    let block = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        block.contains("[[auth.keys]]") && block.contains("budget_usd = \"5/day\""),
        "{block}"
    );
    let hash = castari_gateway::keys::token::hex(&castari_gateway::keys::token::hash(&token));
    assert!(
        block.contains(&hash),
        "the block carries the token's SHA-256"
    );
    assert!(!block.contains(&token), "the block never carries the token");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gitops.toml");
    let toml: String = block
        .lines()
        .filter(|l| !l.starts_with("# "))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&file, toml).unwrap();
    let check = command()
        .args(["check-config", "--config", file.to_str().unwrap()])
        .env("CASTARI_API_KEY", UPSTREAM_KEY)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{check:?}");

    let bad = keys(&["create", "--name", "x", "--role", "root", "--print-config"]);
    assert_eq!(bad.status.code(), Some(2), "clap refuses an unknown role");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("root"));
}
