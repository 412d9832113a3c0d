//! The shaper's queue alone: what a request pays to wait for the budget.
//!
//! `cargo bench --bench queue` fills a budget, queues 10,000 requests from
//! many clients behind it, then lets the window pass and times how long the
//! dispatcher takes to hand every one of them its slot. It reports, per
//! request: the fast path (room in the budget), enqueueing (spawning the
//! waiting task included), dispatch (from the window's end to the waiter
//! running again), and the heap each queued request holds (allocator
//! counters, exact). A plain baseline in the same run does the same
//! spawn / park / wake with a bare oneshot channel and no shaper, so the
//! shaper's own share can be read off. Single-threaded runtime, so
//! wall-clock time is CPU time.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::alloc::System;
use std::sync::Arc;
use std::time::{Duration, Instant};

use castari_gateway::config::{Rate, ShaperConfig};
use castari_gateway::shaper::{Lane, Shaper, ShaperMetrics, Ticket};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::sync::{mpsc, oneshot};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const QUEUED: usize = 10_000;
const WINDOW: Duration = Duration::from_millis(400);

struct Figures {
    fast_path_us: f64,
    enqueue_us: f64,
    dispatch_us: f64,
    bytes_per_waiter: f64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("queue benchmark: {QUEUED} queued requests, single-threaded runtime");
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>14}",
        "case", "fast µs/req", "enqueue µs", "dispatch µs", "bytes/waiter"
    );
    for clients in [1usize, 100, 1_000] {
        for round in 0..3 {
            let f = runtime.block_on(shaper_run(clients));
            print_row(
                &format!("shaper, {clients} clients (run {})", round + 1),
                &f,
            );
        }
    }
    for round in 0..3 {
        let f = runtime.block_on(baseline_run());
        print_row(&format!("baseline oneshot (run {})", round + 1), &f);
    }
}

fn print_row(case: &str, f: &Figures) {
    println!(
        "{case:<28} {:>12.3} {:>12.3} {:>12.3} {:>14.0}",
        f.fast_path_us, f.enqueue_us, f.dispatch_us, f.bytes_per_waiter
    );
}

fn ticket(clients: &[Arc<str>], i: usize) -> Ticket {
    Ticket {
        lane: Lane::Crud,
        client: clients[i % clients.len()].clone(),
        agent: Some(Arc::from("bench-agent")),
        retry: false,
        arrived: Instant::now(),
        max_wait: None,
    }
}

async fn shaper_run(clients: usize) -> Figures {
    let config = ShaperConfig {
        crud_limit: Rate::new(QUEUED as u32, WINDOW),
        safety_margin_ms: 0,
        crud_queue_depth: QUEUED * 2,
        crud_max_wait_ms: 60_000,
        ..ShaperConfig::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let shaper = Shaper::new(&config, ShaperMetrics::register(&mut registry));
    let ids: Arc<Vec<Arc<str>>> = Arc::new(
        (0..clients)
            .map(|c| Arc::from(format!("key:{c:016x}")))
            .collect(),
    );

    // Fill the window on the fast path.
    let filled = Instant::now();
    for i in 0..QUEUED {
        shaper.admit(ticket(&ids, i)).await.unwrap();
    }
    let fast_path = filled.elapsed();
    let window_ends = filled + WINDOW;

    // Queue QUEUED more behind it.
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Instant>();
    let region = Region::new(GLOBAL);
    let started = Instant::now();
    for i in 0..QUEUED {
        let (shaper, ids, done) = (shaper.clone(), ids.clone(), done_tx.clone());
        tokio::spawn(async move {
            shaper.admit(ticket(&ids, i)).await.unwrap();
            let _ = done.send(Instant::now());
        });
    }
    while shaper.depth(Lane::Crud) < QUEUED {
        tokio::task::yield_now().await;
    }
    let enqueue = started.elapsed();
    let held = region.change();
    let bytes = held.bytes_allocated as f64 - held.bytes_deallocated as f64;
    assert!(
        Instant::now() < window_ends,
        "enqueueing outlasted the window"
    );

    // The window ends; every waiter gets its slot.
    let mut last = window_ends;
    for _ in 0..QUEUED {
        last = last.max(done_rx.recv().await.unwrap());
    }
    let dispatch = last.saturating_duration_since(window_ends);
    Figures {
        fast_path_us: per_request(fast_path),
        enqueue_us: per_request(enqueue),
        dispatch_us: per_request(dispatch),
        bytes_per_waiter: bytes / QUEUED as f64,
    }
}

/// The same spawn, park and wake with no shaper: one oneshot per waiter,
/// all fired by one loop at the window's end.
async fn baseline_run() -> Figures {
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Instant>();
    let region = Region::new(GLOBAL);
    let started = Instant::now();
    let mut senders = Vec::with_capacity(QUEUED);
    for _ in 0..QUEUED {
        let (tx, rx) = oneshot::channel::<()>();
        senders.push(tx);
        let done = done_tx.clone();
        tokio::spawn(async move {
            rx.await.unwrap();
            let _ = done.send(Instant::now());
        });
    }
    tokio::task::yield_now().await;
    let enqueue = started.elapsed();
    let held = region.change();
    let bytes = held.bytes_allocated as f64 - held.bytes_deallocated as f64;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let released = Instant::now();
    for tx in senders {
        let _ = tx.send(());
    }
    let mut last = released;
    for _ in 0..QUEUED {
        last = last.max(done_rx.recv().await.unwrap());
    }
    Figures {
        fast_path_us: 0.0,
        enqueue_us: per_request(enqueue),
        dispatch_us: per_request(last - released),
        bytes_per_waiter: bytes / QUEUED as f64,
    }
}

fn per_request(total: Duration) -> f64 {
    total.as_secs_f64() * 1e6 / QUEUED as f64
}
