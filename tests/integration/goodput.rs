//! Goodput around deploys (issue 20): pollers of agents that were just
//! deployed are answered from the cache once the gateway has seen the
//! deploys land, pollers of an agent in motion share one upstream read per
//! refresh, a read right after a deploy never shows the old status, and a
//! read the budget would refuse is answered stale instead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use castari_gateway::config::Config;
use castari_sim::{Simulator, WindowKind};
use serde_json::Value;

use crate::support::*;

/// A simulator with a sliding CRUD window of `crud` and deploys that take
/// `deploy_ms` (0: at once).
async fn deploying_sim(crud: &str, deploy_ms: u64) -> Simulator {
    sim_with(|c| {
        c.crud_limit = crud.parse().unwrap();
        c.window = WindowKind::Sliding;
        c.sync_deploy = deploy_ms == 0;
        c.deploy_delay_ms = deploy_ms;
    })
    .await
}

fn limited(config: &mut Config, crud: &str) {
    config.shaper.crud_limit = crud.parse().unwrap();
    config.shaper.safety_margin_ms = 100;
}

async fn upstream_429s(sim: &Simulator) -> u64 {
    let stats = get_json(&format!("{}/_sim/stats", sim.url())).await;
    stats["classes"]["crud"]["limited"].as_u64().unwrap()
}

async fn status_of(gw: &TestGateway, slug: &str) -> (String, String) {
    let response = client()
        .get(gw.url(&format!("/api/v1/agents/{slug}")))
        .send()
        .await
        .unwrap();
    let cache = response.headers()["x-cache"].to_str().unwrap().to_string();
    let agent: Value = response.json().await.unwrap();
    (agent["status"].as_str().unwrap().to_string(), cache)
}

/// Deploys `slug` through `gw` and polls it until `active` (bounded).
async fn deploy_and_wait(gw: &TestGateway, slug: &str) {
    deploy_agent(gw, slug).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(gw, slug).await.0 != "active" {
        assert!(Instant::now() < deadline, "{slug} never became active");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The issue's case, scaled: three agents deployed through the gateway,
/// then four dashboards poll the list and the three agents every 200 ms.
/// With a fixed settle timer every read went upstream and most were
/// refused; now all are answered, mostly from the cache, and once the
/// gateway has seen the deploys land the four views cost what their 5 s
/// TTL says, not one read per second each as while in motion.
#[tokio::test]
async fn four_pollers_after_deploys_are_answered_from_the_cache() {
    let sim = deploying_sim("20/3s", 300).await;
    let gw = TestGateway::start_with(&sim.url(), |c| {
        limited(c, "20/3s");
        c.shaper.crud_max_wait_ms = 2000;
    })
    .await;
    let mut slugs = Vec::new();
    for name in ["Alpha", "Beta", "Gamma"] {
        let slug = create_agent(&gw, name).await;
        deploy_and_wait(&gw, &slug).await;
        slugs.push(slug);
    }
    // Let the budget the setup spent come back.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let before = upstream_429s(&sim).await;
    let sent_before = seen(&sim).await.len();
    let started = Instant::now();
    let mut paths = vec!["/api/v1/agents".to_string()];
    paths.extend(slugs.iter().map(|s| format!("/api/v1/agents/{s}")));
    let paths = Arc::new(paths);
    let dashboards: Vec<_> = (0..4)
        .map(|i| {
            let (gw_url, paths) = (gw.url(""), paths.clone());
            tokio::spawn(async move {
                let c = client();
                let (mut answered, mut cached, mut other) = (0, 0, Vec::new());
                for _ in 0..30 {
                    for path in paths.iter() {
                        let response = c
                            .get(format!("{gw_url}{path}"))
                            .bearer_auth(format!("dashboard-{i}"))
                            .send()
                            .await
                            .unwrap();
                        match response.status().as_u16() {
                            200 => answered += 1,
                            status => other.push(status),
                        }
                        if response.headers()["x-cache"] == "HIT" {
                            cached += 1;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                (answered, cached, other)
            })
        })
        .collect();
    let (mut answered, mut cached) = (0, 0);
    for dashboard in dashboards {
        let (a, c, other) = dashboard.await.unwrap();
        assert!(other.is_empty(), "statuses other than 200: {other:?}");
        answered += a;
        cached += c;
    }
    assert_eq!(answered, 4 * 30 * 4);
    assert!(
        cached * 100 >= answered * 70,
        "{cached} of {answered} reads from the cache"
    );
    assert_eq!(upstream_429s(&sim).await, before, "no upstream 429");
    let reads = seen(&sim).await.len() - sent_before;
    let ttl_rounds = (started.elapsed().as_secs_f64() / 5.0).ceil() as usize + 1;
    assert!(
        reads <= 4 * ttl_rounds,
        "{reads} upstream reads in {:.1} s for four views with a 5 s TTL",
        started.elapsed().as_secs_f64()
    );
}

/// Ten pollers of a deploying agent, each every 100 ms for 2.5 s: about
/// one upstream read per `motion_refresh_ms`, each answer at most that old.
#[tokio::test]
async fn pollers_of_an_agent_in_motion_share_one_read_per_refresh() {
    let sim = deploying_sim("10000/60s", 5000).await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.cache.motion_refresh_ms = 1000).await;
    let slug = create_agent(&gw, "Moving").await;
    deploy_agent(&gw, &slug).await;
    let path = format!("/api/v1/agents/{slug}");
    let before = upstream_gets(&sim, &path).await;
    let started = Instant::now();
    let pollers: Vec<_> = (0..10)
        .map(|_| {
            let url = gw.url(&path);
            tokio::spawn(async move {
                let c = client();
                let mut ages = Vec::new();
                for _ in 0..25 {
                    let response = c.get(&url).send().await.unwrap();
                    assert_eq!(response.status(), 200);
                    let age: u64 = response.headers()["age"].to_str().unwrap().parse().unwrap();
                    ages.push(age);
                    let agent: Value = response.json().await.unwrap();
                    assert_eq!(agent["status"], "deploying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                ages
            })
        })
        .collect();
    for poller in pollers {
        let ages = poller.await.unwrap();
        assert!(ages.iter().all(|age| *age == 0), "ages {ages:?}");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let reads = upstream_gets(&sim, &path).await - before;
    // One per started second, plus one for a fetch at the edge.
    let most = elapsed.ceil() as usize + 1;
    assert!(
        (1..=most).contains(&reads),
        "{reads} upstream reads for 250 polls in {elapsed:.1} s"
    );
}

/// A redeploy of an agent cached as `active`: a read right after the
/// redeploy's answer shows `deploying`, never the old status, and once the
/// gateway has seen it land the agent is cached again.
#[tokio::test]
async fn a_read_right_after_a_deploy_shows_deploying_then_it_settles() {
    let sim = deploying_sim("10000/60s", 600).await;
    let gw = TestGateway::start(&sim.url()).await;
    let slug = create_agent(&gw, "Redeployed").await;
    deploy_and_wait(&gw, &slug).await;
    let (status, _) = status_of(&gw, &slug).await;
    assert_eq!(status, "active");
    let in_list = |list: Value| {
        let agents = list["agents"].as_array().unwrap().clone();
        let agent = agents.into_iter().find(|a| a["slug"] == slug.as_str());
        agent.unwrap()["status"].as_str().unwrap().to_string()
    };
    // The list is cached too, showing it active.
    assert_eq!(in_list(get_json(&gw.url("/api/v1/agents")).await), "active");
    assert_eq!(in_list(get_json(&gw.url("/api/v1/agents")).await), "active");
    let redeploy = client()
        .post(gw.url(&format!("/api/v1/agents/{slug}/redeploy")))
        .send()
        .await
        .unwrap();
    assert!(redeploy.status().is_success());
    assert_eq!(status_of(&gw, &slug).await.0, "deploying");
    assert_eq!(
        in_list(get_json(&gw.url("/api/v1/agents")).await),
        "deploying"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, cache) = status_of(&gw, &slug).await;
        assert_ne!(status, "draft");
        if status == "active" {
            break;
        }
        assert!(Instant::now() < deadline, "never active again: {cache}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Landed: the next reads are hits again, long before the 600 s bound.
    let (_, cache) = status_of(&gw, &slug).await;
    let (_, again) = status_of(&gw, &slug).await;
    assert!(
        cache == "HIT" || again == "HIT",
        "after landing: {cache}, {again}"
    );
    let admin: Value = get_json(&gw.url("/admin/cache")).await;
    assert_eq!(admin["agents_in_motion"], serde_json::json!([]));
}

/// The budget is spent: a GET whose entry expired is answered from it,
/// marked stale, instead of a 429; nothing is sent upstream. With
/// `stale_if_limited_secs = 0` the same read is refused.
#[tokio::test]
async fn a_read_the_budget_would_refuse_is_answered_stale() {
    for stale_secs in [60, 0] {
        let sim = deploying_sim("10000/60s", 0).await;
        let gw = TestGateway::start_with(&sim.url(), |c| {
            limited(c, "3/30s");
            c.shaper.crud_max_wait_ms = 1000;
            c.cache.ttl_secs.usage = 1;
            c.cache.stale_if_limited_secs = stale_secs;
        })
        .await;
        let usage = "/api/v1/usage";
        let first = client().get(gw.url(usage)).send().await.unwrap();
        assert_eq!(first.headers()["x-cache"], "MISS");
        // Two more sends spend the budget for 30 s.
        for _ in 0..2 {
            assert_eq!(get_status(&gw.url("/api/v1/api-keys")).await, 200);
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let sent_before = seen(&sim).await.len();
        let asked = Instant::now();
        let response = client().get(gw.url(usage)).send().await.unwrap();
        assert!(asked.elapsed() < Duration::from_millis(500), "at once");
        assert_eq!(seen(&sim).await.len(), sent_before, "nothing sent");
        if stale_secs == 0 {
            assert_eq!(response.status(), 429);
            continue;
        }
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-cache"], "STALE");
        assert!(response.headers()["warning"]
            .to_str()
            .unwrap()
            .starts_with("110 "));
        let age: u64 = response.headers()["age"].to_str().unwrap().parse().unwrap();
        assert!(age >= 1);
        let metrics = get_text(&gw.url("/metrics")).await;
        assert!(
            metrics.contains(r#"cache_stale_served_total{route="usage",reason="limited"} 1"#),
            "{metrics}"
        );
    }
}
