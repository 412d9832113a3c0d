//! The shared budget's fairness across replicas: slots free now go out by
//! each replica's share of the clients waiting, not to whichever replica
//! asks first; a replica whose clients are gone leaves the others the
//! whole budget at once.

use std::time::{Duration, Instant};

use castari_gateway::cluster::budget::{Spec, DEMAND_FRESH};
use castari_gateway::cluster::{Ask, Cluster, Grant, RedisBudget, SharedBudget};
use castari_gateway::config::ClusterConfig;
use castari_gateway::types::Secret;

use super::{limited_sim, never_lost_redis, replica_config, stats, RedisServer};
use crate::binary::GatewayProcess;
use crate::support::*;

async fn connect(redis: &RedisServer, prefix: &str) -> Cluster {
    let config = ClusterConfig {
        redis_url: Some(Secret::new(redis.url())),
        prefix: prefix.into(),
        ..ClusterConfig::default()
    };
    Cluster::connect(&config).await.unwrap().unwrap()
}

fn spec(max: u32, span_ms: u64) -> Spec {
    Spec {
        name: "crud",
        max,
        window: Duration::from_millis(span_ms - 100),
        span: Duration::from_millis(span_ms),
    }
}

/// One reservation by `replica` for `clients` clients: up to `n` slots,
/// `fair` of them booked ahead when none is free.
async fn ask(
    budget: &RedisBudget,
    spec: Spec,
    replica: &str,
    (n, fair, clients): (usize, usize, usize),
    call: u32,
) -> Grant {
    let tag = format!("{replica}:crud:{call}:");
    let ask = Ask {
        n,
        fair,
        replica,
        clients,
        tag: &tag,
    };
    budget.reserve(&[spec], ask).await.unwrap()
}

/// (slots free now, slots booked ahead) of a grant.
fn split(grant: &Grant) -> (usize, usize) {
    let now = grant.slots.iter().filter(|(_, at)| *at <= grant.now_ms);
    let now = now.count();
    (now, grant.slots.len() - now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_free_now_go_by_each_replica_share_of_the_clients_waiting() {
    let redis = RedisServer::start();
    let cluster = connect(&redis, "it-share").await;
    let budget = RedisBudget::new(&cluster, "default");
    let spec = spec(10, 3_100);
    // B serves three waiting clients; it says so before A asks.
    assert_eq!(split(&ask(&budget, spec, "b", (0, 0, 3), 1).await), (0, 0));
    // A, one client of four, asking first for all ten, takes its share
    // (10 × 1/4, rounded up) and leaves the rest free for B's clients.
    let a = ask(&budget, spec, "a", (10, 1, 1), 1).await;
    assert_eq!(split(&a), (3, 0), "{a:?}");
    let b = ask(&budget, spec, "b", (10, 3, 3), 2).await;
    assert_eq!(split(&b), (7, 0), "{b:?}");
    // Nothing is free now: A books its one client's next turn.
    let a = ask(&budget, spec, "a", (5, 1, 1), 2).await;
    assert_eq!(split(&a), (0, 1), "{a:?}");

    // Alone, a replica takes what it asks for.
    let budget = RedisBudget::new(&cluster, "alone");
    let a = ask(&budget, spec, "a", (10, 1, 1), 1).await;
    assert_eq!(split(&a), (10, 0), "{a:?}");

    // A replica whose clients are gone said so: the others' shares grow.
    let budget = RedisBudget::new(&cluster, "gone");
    ask(&budget, spec, "b", (0, 0, 3), 1).await;
    ask(&budget, spec, "b", (0, 0, 0), 2).await;
    let a = ask(&budget, spec, "a", (10, 1, 1), 1).await;
    assert_eq!(split(&a), (10, 0), "{a:?}");

    // A replica that stopped asking (killed, say) counts for
    // `DEMAND_FRESH`, or one span when that is shorter; a live one with
    // clients waiting says so again twice as often.
    let short = self::spec(10, 400);
    let budget = RedisBudget::new(&cluster, "stale");
    ask(&budget, short, "b", (0, 0, 3), 1).await;
    // C waited and no more: its record of none goes stale too.
    ask(&budget, short, "c", (0, 0, 1), 1).await;
    ask(&budget, short, "c", (0, 0, 0), 2).await;
    let a = ask(&budget, short, "a", (4, 1, 1), 1).await;
    assert_eq!(split(&a), (3, 0), "{a:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = ask(&budget, short, "a", (10, 1, 1), 2).await;
    assert_eq!(split(&a), (10, 0), "{a:?}");
    let budget = RedisBudget::new(&cluster, "dead");
    ask(&budget, spec, "b", (0, 0, 3), 1).await;
    tokio::time::sleep(DEMAND_FRESH - Duration::from_millis(300)).await;
    let a = ask(&budget, spec, "a", (1, 1, 1), 1).await;
    assert_eq!(split(&a), (1, 0), "{a:?}");
    let a = ask(&budget, spec, "a", (9, 1, 1), 2).await;
    assert_eq!(split(&a), (2, 0), "B still counts: {a:?}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let a = ask(&budget, spec, "a", (10, 1, 1), 3).await;
    assert_eq!(split(&a), (7, 0), "B counts no more: {a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_whose_clients_are_gone_leaves_the_others_the_whole_budget() {
    let redis = RedisServer::start();
    let sim = limited_sim("10/3s").await;
    let file =
        |n: &str| replica_config(n, &redis.url(), "10/3s", 100, "[cache]\nenabled = false\n");
    let a = GatewayProcess::start_with_config(&sim.url(), &file("gone"));
    let b = GatewayProcess::start_with_config(&sim.url(), &file("gone"));
    let c = client();
    // One request through A; then nobody waits there.
    let first = c
        .get(a.url("/api/v1/agents"))
        .bearer_auth("a")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Nine at once through B: the nine slots left are all B's to take now.
    let started = Instant::now();
    let sends = (0..9).map(|_| {
        let request = c.get(b.url("/api/v1/agents")).bearer_auth("b").send();
        async move { request.await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(sends).await;
    let took = started.elapsed();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(
        took < Duration::from_millis(1_500),
        "B's nine took {took:?}"
    );
    // Both fall silent past the time a demand counts; the records of no
    // clients go stale, and the next reservation goes through.
    tokio::time::sleep(DEMAND_FRESH + Duration::from_millis(300)).await;
    let next = c.get(a.url("/api/v1/agents")).bearer_auth("a").send();
    assert_eq!(next.await.unwrap().status(), 200);
    let stats = stats(&sim).await;
    assert_eq!(stats["classes"]["crud"]["limited"], 0, "{stats}");
    never_lost_redis(&a).await;
    never_lost_redis(&b).await;
}
