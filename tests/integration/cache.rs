//! The response cache over real sockets: what the client got (X-Cache, Age,
//! ETag, bodies) and what the simulator saw (how many GETs reached it).

use std::time::Duration;

use castari_sim::{Faults, Simulator};
use serde_json::Value;

use crate::support::*;

fn x_cache(response: &reqwest::Response) -> &str {
    response
        .headers()
        .get("x-cache")
        .map_or("", |v| v.to_str().unwrap())
}

fn age(response: &reqwest::Response) -> u64 {
    response.headers()["age"].to_str().unwrap().parse().unwrap()
}

async fn get(gw: &TestGateway, path: &str) -> reqwest::Response {
    client().get(gw.url(path)).send().await.unwrap()
}

/// The agent's status as the simulator has it right now.
async fn sim_status(sim: &Simulator, slug: &str) -> String {
    let agent: Value = client()
        .get(format!("{}/api/v1/agents/{slug}", sim.url()))
        .bearer_auth(UPSTREAM_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    agent["status"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn hits_come_from_memory_and_spend_no_upstream_budget() {
    let sim = sim().await;
    // Three upstream requests a minute: a cache that spent budget on hits
    // would have to refuse most of what follows.
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.shaper.crud_limit = "3/60s".parse().unwrap();
        c.shaper.crud_max_wait_ms = 100;
    })
    .await;
    let first = get(&gw, "/api/v1/agents").await;
    assert_eq!(first.status(), 200);
    assert_eq!(x_cache(&first), "MISS");
    assert_eq!(age(&first), 0);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let first_id = first.headers()["x-request-id"].clone();
    let body = first.text().await.unwrap();

    for _ in 0..30 {
        let hit = get(&gw, "/api/v1/agents").await;
        assert_eq!(hit.status(), 200);
        assert_eq!(x_cache(&hit), "HIT");
        assert_eq!(hit.headers()["etag"], etag.as_str());
        assert!(hit.headers().contains_key("x-ratelimit-remaining"));
        assert_ne!(
            hit.headers()["x-request-id"],
            first_id,
            "ids are per request"
        );
        assert_eq!(hit.text().await.unwrap(), body);
    }
    let not_modified = client()
        .get(gw.url("/api/v1/agents"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(x_cache(&not_modified), "HIT");
    assert!(not_modified.text().await.unwrap().is_empty());
    assert_eq!(upstream_gets(&sim, "/api/v1/agents").await, 1);
    // Hits are answered without a future (`routes/proxy.rs`); the access
    // record still counts every one.
    let metrics = get_text(&gw.url("/metrics")).await;
    for counted in [
        r#"castari_gateway_requests_total{class="crud",method="GET",status="200",code=""} 31"#,
        r#"castari_gateway_requests_total{class="crud",method="GET",status="304",code=""} 1"#,
        r#"castari_gateway_cache_lookups_total{route="agents",result="hit"} 31"#,
    ] {
        assert!(metrics.contains(counted), "{counted} in {metrics}");
    }
}

#[tokio::test]
async fn fifty_concurrent_misses_make_one_upstream_request() {
    let sim = sim().await;
    sim.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let gw = TestGateway::start(&sim.url()).await;
    let url = gw.url("/api/v1/agents?limit=5");
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let response = client().get(url).send().await.unwrap();
                (response.status().as_u16(), response.text().await.unwrap())
            })
        })
        .collect();
    let mut bodies = Vec::new();
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200);
        bodies.push(body);
    }
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(upstream_gets(&sim, "/api/v1/agents").await, 1);
    let metrics = get_text(&gw.url("/metrics")).await;
    assert!(
        metrics.contains("castari_gateway_cache_coalesced_total 49"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_write_drops_what_it_changed_before_it_answers() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let slug = create_agent(&gw, "Writer").await;
    let secrets = format!("/api/v1/agents/{slug}/secrets");
    assert_eq!(x_cache(&get(&gw, &secrets).await), "MISS");
    assert_eq!(x_cache(&get(&gw, &secrets).await), "HIT");

    let put = client()
        .post(gw.url(&secrets))
        .json(&serde_json::json!({"key": "TOKEN", "value": "s3cret"}))
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success());
    let after = get(&gw, &secrets).await;
    assert_eq!(x_cache(&after), "MISS", "read after write is fresh");
    let listed: Value = after.json().await.unwrap();
    assert!(listed.to_string().contains("TOKEN"), "{listed}");

    // A 5xx means the write may have happened: drop anyway.
    assert_eq!(x_cache(&get(&gw, &secrets).await), "HIT");
    sim.set_faults(Faults {
        fail_next: 1,
        error_statuses: vec![500],
        path_prefix: Some(secrets.clone()),
        ..Faults::default()
    });
    let failed = client()
        .post(gw.url(&secrets))
        .json(&serde_json::json!({"key": "OTHER", "value": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 500);
    assert_eq!(x_cache(&get(&gw, &secrets).await), "MISS");

    // A 4xx write changed nothing: the entry stays.
    let rejected = client()
        .post(gw.url(&secrets))
        .json(&serde_json::json!({"nope": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 422);
    assert_eq!(x_cache(&get(&gw, &secrets).await), "HIT");

    // Deleting the agent drops its entry: the next read is the upstream's 404.
    let agent = format!("/api/v1/agents/{slug}");
    assert_eq!(get(&gw, &agent).await.status(), 200);
    let deleted = client().delete(gw.url(&agent)).send().await.unwrap();
    assert!(deleted.status().is_success());
    assert_eq!(get(&gw, &agent).await.status(), 404);
    assert_eq!(upstream_gets(&sim, &secrets).await, 3);
}

#[tokio::test]
async fn agent_status_is_never_older_than_the_simulators_during_a_deploy() {
    let sim = sim_with(|c| {
        c.sync_deploy = false;
        c.deploy_delay_ms = 1500;
    })
    .await;
    let gw = TestGateway::start(&sim.url()).await;
    let slug = create_agent(&gw, "Deployer").await;
    let path = format!("/api/v1/agents/{slug}");
    let rank = |s: &str| match s {
        "draft" => 0,
        "deploying" => 1,
        "active" => 2,
        other => panic!("unexpected status {other}"),
    };
    // Cached while settled (written through by the create).
    assert_eq!(x_cache(&get(&gw, &path).await), "HIT");
    assert_eq!(x_cache(&get(&gw, &path).await), "HIT");

    let deploy = client()
        .post(gw.url(&format!("{path}/deploy")))
        .send()
        .await
        .unwrap();
    assert!(deploy.status().is_success());
    let deploying: Value = deploy.json().await.unwrap();
    assert_eq!(deploying["status"], "deploying");

    // Twenty pollers at once share one upstream call: in motion, an entry
    // older than `motion_refresh_ms` (1 s) is not used, and every poller
    // joins the one fetch that leaves after they arrived. A slow upstream
    // makes the fetch much longer than the pollers' arrival spread.
    sim.set_faults(Faults {
        latency_ms: 300,
        path_prefix: Some(path.clone()),
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = upstream_gets(&sim, &path).await;
    let pollers: Vec<_> = (0..20)
        .map(|_| {
            let url = gw.url(&path);
            tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
        })
        .collect();
    for poller in pollers {
        assert_eq!(poller.await.unwrap(), 200);
    }
    let calls = upstream_gets(&sim, &path).await - before;
    assert_eq!(calls, 1, "{calls} upstream calls for 20 pollers");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut saw_active = false;
    while tokio::time::Instant::now() < deadline && !saw_active {
        let upstream_before = sim_status(&sim, &slug).await;
        let response = get(&gw, &path).await;
        // In motion, a hit is at most the refresh (1 s) old.
        let hit = x_cache(&response) == "HIT";
        if hit {
            assert_eq!(response.headers()["age"], "0", "a hit in motion is fresh");
        }
        let agent: Value = response.json().await.unwrap();
        let ours = agent["status"].as_str().unwrap().to_string();
        assert_ne!(ours, "draft", "never the status from before the deploy");
        assert!(
            hit || rank(&ours) >= rank(&upstream_before),
            "a fetch said {ours} after the simulator said {upstream_before}"
        );
        saw_active = ours == "active";
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(saw_active, "the deploy finished within 5 s");
}

#[tokio::test]
async fn no_cache_revalidates_and_no_store_bypasses() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    assert_eq!(x_cache(&get(&gw, "/api/v1/usage").await), "MISS");
    let revalidated = client()
        .get(gw.url("/api/v1/usage"))
        .header("cache-control", "no-cache")
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&revalidated), "MISS");
    assert_eq!(upstream_gets(&sim, "/api/v1/usage").await, 2);
    let bypass = client()
        .get(gw.url("/api/v1/usage"))
        .header("cache-control", "no-store")
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&bypass), "BYPASS");
    assert_eq!(upstream_gets(&sim, "/api/v1/usage").await, 3);
    assert_eq!(x_cache(&get(&gw, "/api/v1/usage").await), "HIT");
    assert_eq!(upstream_gets(&sim, "/api/v1/usage").await, 3);
}

#[tokio::test]
async fn an_expired_entry_is_served_stale_when_the_upstream_fails() {
    let sim = sim().await;
    // The breaker would answer for the upstream after a few failures;
    // here the failures themselves are under test.
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.cache.ttl_secs.buckets = 1;
        c.breaker.enabled = false;
    })
    .await;
    let fresh = get(&gw, "/api/v1/buckets").await;
    assert_eq!(x_cache(&fresh), "MISS");
    let body = fresh.text().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;

    sim.set_faults(Faults {
        fail_next: 10,
        error_statuses: vec![503],
        ..Faults::default()
    });
    let stale = get(&gw, "/api/v1/buckets").await;
    assert_eq!(stale.status(), 200);
    assert_eq!(x_cache(&stale), "STALE");
    assert!(age(&stale) >= 1);
    assert_eq!(stale.text().await.unwrap(), body);
    // The first fetch, then three attempts of the refresh (retried 503s).
    assert_eq!(upstream_gets(&sim, "/api/v1/buckets").await, 4);

    // Upstream gone altogether.
    sim.shutdown().await;
    let stale = get(&gw, "/api/v1/buckets").await;
    assert_eq!(stale.status(), 200);
    assert_eq!(x_cache(&stale), "STALE");
    // Nothing cached for this one: the error goes through, Castari-shaped.
    let missing = get(&gw, "/api/v1/files").await;
    assert_eq!(missing.status(), 502);
    let error: Value = missing.json().await.unwrap();
    assert_eq!(error["code"], "upstream_unreachable");
}

#[tokio::test]
async fn stale_is_not_served_past_its_window() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.cache.ttl_secs.buckets = 1;
        c.cache.stale_if_error_secs = 0;
    })
    .await;
    assert_eq!(get(&gw, "/api/v1/buckets").await.status(), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    sim.set_faults(Faults {
        fail_next: 10,
        error_statuses: vec![503],
        ..Faults::default()
    });
    let failed = get(&gw, "/api/v1/buckets").await;
    assert_eq!(failed.status(), 503);
    assert_eq!(x_cache(&failed), "MISS");
}

#[tokio::test]
async fn the_byte_limit_holds_and_big_entries_are_not_stored() {
    let sim = sim().await;
    let limit = 64 * 1024;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.cache.max_bytes = limit;
        c.cache.max_entry_bytes = 16 * 1024;
    })
    .await;
    for n in 0..3 {
        create_agent(&gw, &format!("Big {n}")).await;
    }
    // 300 distinct keys of about 1.5 KiB each: several times the limit.
    for batch in 0..10 {
        let tasks: Vec<_> = (0..30)
            .map(|i| {
                let url = gw.url(&format!("/api/v1/agents?offset=0&q={}", batch * 30 + i));
                tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 200);
        }
    }
    let summary = get_json(&gw.url("/admin/cache")).await;
    let bytes = summary["bytes"].as_u64().unwrap();
    assert!(bytes <= limit, "{summary}");
    assert!(bytes > limit / 2, "the cache is used: {summary}");
    assert!(summary["evicted_size"].as_u64().unwrap() > 0, "{summary}");

    // An entry over max_entry_bytes is relayed, not stored.
    let small = TestGateway::start_with(&sim.url(), |c| c.cache.max_entry_bytes = 256).await;
    let before = upstream_gets(&sim, "/api/v1/agents").await;
    for _ in 0..2 {
        let response = get(&small, "/api/v1/agents").await;
        assert_eq!(x_cache(&response), "MISS");
        let list: Value = response.json().await.unwrap();
        assert_eq!(list["agents"].as_array().unwrap().len(), 3);
    }
    assert_eq!(upstream_gets(&sim, "/api/v1/agents").await, before + 2);
}

#[tokio::test]
async fn keys_route_classes_and_representations() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    // Never cached: the upstream's API keys, unknown routes.
    for path in ["/api/v1/api-keys", "/api/v1/brand/new"] {
        for _ in 0..2 {
            let response = get(&gw, path).await;
            assert_eq!(x_cache(&response), "", "{path}");
        }
        assert_eq!(upstream_gets(&sim, path).await, 2, "{path}");
    }
    // A GET with a body goes upstream whole, every time.
    for _ in 0..2 {
        let with_body = client()
            .get(gw.url("/api/v1/usage"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(x_cache(&with_body), "");
    }
    let usage: Vec<_> = seen(&sim)
        .await
        .into_iter()
        .filter(|r| r.path == "/api/v1/usage")
        .collect();
    assert_eq!(usage.len(), 2);
    assert!(usage.iter().all(|r| r.body_len == 2));
    // Query order does not matter; Accept does.
    assert_eq!(
        x_cache(&get(&gw, "/api/v1/agents?limit=5&offset=0").await),
        "MISS"
    );
    assert_eq!(
        x_cache(&get(&gw, "/api/v1/agents?offset=0&limit=5").await),
        "HIT"
    );
    let other = client()
        .get(gw.url("/api/v1/agents?offset=0&limit=5"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(x_cache(&other), "MISS");
    assert_eq!(upstream_gets(&sim, "/api/v1/agents").await, 2);
}

#[tokio::test]
async fn the_admin_page_summarises_and_purges() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let slug = create_agent(&gw, "Admin").await;
    for path in ["/api/v1/agents", "/api/v1/files"] {
        get(&gw, path).await;
        get(&gw, path).await;
    }
    get(&gw, &format!("/api/v1/agents/{slug}")).await;
    let summary = get_json(&gw.url("/admin/cache")).await;
    assert_eq!(summary["entries"], 3, "{summary}");
    // The agent was written through by its create: a hit.
    assert_eq!(summary["hits"], 3, "{summary}");
    assert_eq!(summary["misses"], 2, "{summary}");
    assert!(!summary.to_string().contains(UPSTREAM_KEY));

    let purge = client()
        .delete(gw.url("/admin/cache?prefix=/api/v1/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    let purged: Value = purge.json().await.unwrap();
    assert_eq!(purged["purged"], 2, "{purged}");
    assert_eq!(x_cache(&get(&gw, "/api/v1/agents").await), "MISS");
    assert_eq!(x_cache(&get(&gw, "/api/v1/files").await), "HIT");
    let all = client()
        .delete(gw.url("/admin/cache"))
        .send()
        .await
        .unwrap();
    assert_eq!(all.status(), 200);
    assert_eq!(x_cache(&get(&gw, "/api/v1/files").await), "MISS");

    let metrics = get_text(&gw.url("/metrics")).await;
    for line in [
        r#"castari_gateway_cache_lookups_total{route="agents",result="hit"} 1"#,
        r#"castari_gateway_cache_lookups_total{route="files",result="miss"} 2"#,
        "castari_gateway_cache_entries",
        "castari_gateway_cache_bytes",
        "castari_gateway_cache_invalidations_total",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test]
async fn a_created_agent_is_written_through_to_its_entry() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    let created = client()
        .post(gw.url("/api/v1/agents"))
        .json(&serde_json::json!({"name": "Fresh", "slug": "fresh", "source_type": "git", "git_repo_url": "https://example.invalid/r"}))
        .send()
        .await
        .unwrap();
    assert!(created.status().is_success());
    let created: Value = created.json().await.unwrap();
    let read = get(&gw, "/api/v1/agents/fresh").await;
    assert_eq!(x_cache(&read), "HIT");
    assert!(read.headers().get("location").is_none());
    assert_eq!(read.json::<Value>().await.unwrap(), created);
    assert_eq!(upstream_gets(&sim, "/api/v1/agents/fresh").await, 0);
    // The list was dropped by the create, not written through.
    assert_eq!(x_cache(&get(&gw, "/api/v1/agents").await), "MISS");
}

#[tokio::test]
async fn a_stream_drops_what_it_changed_again_when_it_ends() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        c.breaker.enabled = false;
        c.retry.enabled = false;
    })
    .await;
    assert_eq!(x_cache(&get(&gw, "/api/v1/usage").await), "MISS");
    // The stream's head arrives at once, its end 800 ms later.
    sim.set_faults(Faults {
        stall_next: 1,
        stall_ms: 800,
        path_prefix: Some("/api/v1/agents/s/stream".into()),
        ..Faults::default()
    });
    let response = client()
        .post(gw.url("/api/v1/agents/s/stream"))
        .json(&serde_json::json!({"prompt": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Dropped when the head came; read again while the stream runs, the
    // usage is cached as it is mid-invocation.
    assert_eq!(x_cache(&get(&gw, "/api/v1/usage").await), "MISS");
    assert_eq!(x_cache(&get(&gw, "/api/v1/usage").await), "HIT");
    let _ = response.bytes().await;
    // The stream is over: what it changed is read fresh.
    assert_eq!(x_cache(&get(&gw, "/api/v1/usage").await), "MISS");
    assert_eq!(upstream_gets(&sim, "/api/v1/usage").await, 3);
}
