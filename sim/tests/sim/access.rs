//! Who may call: rate-limit headers on refusals (S7) and revoking the key
//! in use (S9).

use super::*;

async fn get_with(sim: &Simulator, key: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = client().get(format!("{}/api/v1{path}", sim.url()));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap()
}

fn rate(h: &reqwest::header::HeaderMap) -> (u64, u64, u64) {
    let read = |n: &str| h[n].to_str().unwrap().parse::<u64>().unwrap();
    (
        read("x-ratelimit-limit"),
        read("x-ratelimit-remaining"),
        read("x-ratelimit-reset"),
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// S7: a 401 carries `X-RateLimit-*`: the route's limit, untouched.
#[tokio::test]
async fn refusals_carry_rate_limit_headers() {
    let sim = sim_with(|c| {
        c.crud_limit = "7/60s".parse().unwrap();
        c.invoke_limit = "3/60s".parse().unwrap();
    })
    .await;
    for key in [None, Some("cast_nope")] {
        let r = get_with(&sim, key, "/agents").await;
        assert_eq!(r.status(), 401);
        let (limit, remaining, reset) = rate(r.headers());
        assert_eq!((limit, remaining), (7, 7), "{key:?}");
        assert!(reset >= unix_now() + 58 && reset <= unix_now() + 61);
    }
    let r = client()
        .post(format!("{}/api/v1/agents/x/invoke", sim.url()))
        .json(&json!({"prompt": "p"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        rate(r.headers()).0,
        3,
        "invoke routes show the invoke limit"
    );
    let s = stats(&sim).await;
    assert_eq!((s.unauthorized, s.classes["crud"].admitted), (3, 0));
    // A wrong method keeps them too (and its Allow).
    let (s, h, b) = call(&sim, Method::PUT, "/agents", None).await;
    assert_eq!(
        (s.as_u16(), b),
        (405, json!({"detail": "Method Not Allowed"}))
    );
    assert_eq!(rate(&h).1, 6);
    assert!(h.contains_key("allow"));
}

async fn revoke_in_use(sim: &Simulator, key: &str) {
    let r = client()
        .delete(format!("{}/api/v1/auth/api-key", sim.url()))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(r.bytes().await.unwrap().is_empty());
}

/// S9, configured keys: the legacy revoke refuses the key in use from then
/// on; other keys, `/_sim/*`, and (after a reset) the key itself work.
#[tokio::test]
async fn the_legacy_revoke_revokes_the_key_in_use() {
    let sim = sim_with(|c| c.api_keys = vec![KEY.into(), "cast_other_key".into()]).await;
    assert_eq!(get_with(&sim, Some(KEY), "/auth/me").await.status(), 200);
    revoke_in_use(&sim, KEY).await;
    let r = get_with(&sim, Some(KEY), "/auth/me").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("x-ratelimit-limit"));
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"detail": "Invalid API key"})
    );
    let again = client()
        .delete(format!("{}/api/v1/auth/api-key", sim.url()))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        401,
        "a revoked key cannot revoke itself again"
    );
    assert_eq!(
        get_with(&sim, Some("cast_other_key"), "/agents")
            .await
            .status(),
        200
    );
    assert_eq!(
        stats(&sim).await.unauthorized,
        2,
        "introspection still works"
    );
    let reset = client()
        .post(format!("{}/_sim/reset", sim.url()))
        .send()
        .await
        .unwrap();
    assert!(reset.status().is_success());
    assert_eq!(get_with(&sim, Some(KEY), "/agents").await.status(), 200);
}

/// S9, any key accepted: revoked keys are remembered all the same, by the
/// legacy route and by id; a key listed in the account leaves the list.
#[tokio::test]
async fn revoked_keys_stay_refused_when_any_key_is_accepted() {
    let sim = sim_with(|c| c.api_keys.clear()).await;
    revoke_in_use(&sim, "anything-at-all").await;
    assert_eq!(
        get_with(&sim, Some("anything-at-all"), "/agents")
            .await
            .status(),
        401
    );
    assert_eq!(
        get_with(&sim, Some("something-else"), "/agents")
            .await
            .status(),
        200
    );

    let mint = || async {
        let (s, _, created) =
            call(&sim, Method::POST, "/api-keys", Some(json!({"name": "m"}))).await;
        assert_eq!(s, 200);
        (
            created["key"].as_str().unwrap().to_string(),
            created["api_key"]["id"].as_str().unwrap().to_string(),
        )
    };
    let (minted, _) = mint().await;
    assert_eq!(
        get_with(&sim, Some(&minted), "/api-keys").await.status(),
        200
    );
    revoke_in_use(&sim, &minted).await;
    assert_eq!(get_with(&sim, Some(&minted), "/agents").await.status(), 401);
    let (_, _, list) = call(&sim, Method::GET, "/api-keys", None).await;
    assert_eq!(list["api_keys"], json!([]), "its record went with it");

    let (by_id, id) = mint().await;
    let (s, _, _) = call(&sim, Method::DELETE, &format!("/api-keys/{id}"), None).await;
    assert_eq!(s, 204);
    assert_eq!(get_with(&sim, Some(&by_id), "/agents").await.status(), 401);
}
