//! How many slot decisions per second one Redis sustains: `TASKS`
//! concurrent reservers, each reserving one slot at a time of a budget
//! through the gateway's own Redis script and client, for `SECONDS`.
//! Used by `bench/cluster.sh`.
//!
//! Usage: `cluster_slots REDIS_URL SECONDS TASKS`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use castari_gateway::cluster::budget::Spec;
use castari_gateway::cluster::{Ask, Cluster, RedisBudget, SharedBudget};
use castari_gateway::config::ClusterConfig;
use castari_gateway::types::Secret;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let Some(url) = args.next() else {
        eprintln!("usage: cluster_slots REDIS_URL SECONDS TASKS");
        std::process::exit(2);
    };
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let tasks: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(64);
    let config = ClusterConfig {
        redis_url: Some(Secret::new(url)),
        prefix: "bench-slots".into(),
        ..ClusterConfig::default()
    };
    let cluster = match Cluster::connect(&config).await {
        Ok(Some(cluster)) => cluster,
        Ok(None) => unreachable!("redis_url is set"),
        Err(error) => {
            eprintln!("cluster_slots: {error}");
            std::process::exit(1);
        }
    };
    let budget = Arc::new(RedisBudget::new(&cluster, "default"));
    // Castari's CRUD budget: decisions past the first 100 book future slots.
    let spec = Spec {
        name: "crud",
        max: 100,
        window: Duration::from_secs(60),
        span: Duration::from_millis(60_500),
    };
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (budget, done, failed) = (budget.clone(), done.clone(), failed.clone());
        handles.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < stop {
                n += 1;
                // Each task is a replica with one client waiting.
                let replica = format!("b{t}");
                let tag = format!("{replica}:{n}:");
                let ask = Ask {
                    n: 1,
                    fair: 1,
                    replica: &replica,
                    clients: 1,
                    tag: &tag,
                };
                match budget.reserve(std::slice::from_ref(&spec), ask).await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for handle in handles {
        let _ = handle.await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    println!(
        "decisions={done} failed={} seconds={elapsed:.2} per_second={:.0}",
        failed.load(Ordering::Relaxed),
        done as f64 / elapsed
    );
}
