//! The shaper's promises, with real time and short windows: a waiter let
//! in at the boundary of its wait is sent; dispatch leaves fair order only
//! to keep a deadline; only an upstream setback refuses a waiter late; an
//! answer to a slow request counts as of its send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, StatusCode};

use super::*;
use crate::config::{Rate, ShaperConfig};

/// One CRUD send per `window_ms`, no margin, CRUD waits of `wait_ms`.
fn shaper(window_ms: u64, wait_ms: u64) -> Shaper {
    let config = ShaperConfig {
        crud_limit: Rate {
            max: 1,
            window: Duration::from_millis(window_ms),
        },
        safety_margin_ms: 0,
        crud_max_wait_ms: wait_ms,
        ..ShaperConfig::default()
    };
    let metrics = ShaperMetrics::register(&mut prometheus_client::registry::Registry::default());
    Shaper::new(&config, metrics)
}

fn ticket(client: &str, max_wait_ms: Option<u64>) -> Ticket {
    Ticket {
        lane: Lane::Crud,
        client: Arc::from(client),
        agent: None,
        retry: false,
        arrived: Instant::now(),
        max_wait: max_wait_ms.map(Duration::from_millis),
    }
}

#[tokio::test]
async fn a_waiter_whose_wait_is_exactly_its_slot_is_sent() {
    let shaper = shaper(300, 300);
    assert!(!shaper.admit(ticket("a", None)).await.unwrap().queued);
    let second = {
        let shaper = shaper.clone();
        tokio::spawn(async move { shaper.admit(ticket("a", None)).await })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    // The third would wait 600 ms: refused at once.
    let asked = Instant::now();
    let third = shaper.admit(ticket("a", None)).await;
    assert!(matches!(third, Err(Refusal::WaitTooLong { .. })));
    assert!(asked.elapsed() < Duration::from_millis(50));
    let second = second.await.unwrap().unwrap();
    assert!(second.queued);
    assert!(second.waited >= Duration::from_millis(250));
}

#[tokio::test]
async fn dispatch_leaves_fair_order_only_to_keep_a_deadline() {
    let shaper = shaper(200, 10_000);
    shaper.admit(ticket("a", None)).await.unwrap();
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let spawn = |name: &'static str, wait: Option<u64>| {
        let (shaper, sent) = (shaper.clone(), sent.clone());
        tokio::spawn(async move {
            let admitted = shaper.admit(ticket(name.split('-').next().unwrap(), wait));
            let admitted = admitted.await.unwrap();
            sent.lock().unwrap().push((name, admitted.waited));
        })
    };
    // a-1 (slot 200 ms), a-2 due at 450 ms (slot 400 ms), then b, whose
    // fair turn comes before a-2 and would push it to 600 ms.
    let tasks = [
        spawn("a-1", None),
        spawn("a-2", Some(450)),
        spawn("b", None),
    ];
    for task in tasks {
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(task);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let sent = sent.lock().unwrap().clone();
    let order: Vec<&str> = sent.iter().map(|(name, _)| *name).collect();
    assert_eq!(order, ["a-1", "a-2", "b"]);
    let a2 = sent[1].1;
    assert!(a2 <= Duration::from_millis(450), "a-2 waited {a2:?}");
}

#[tokio::test]
async fn only_an_upstream_setback_refuses_a_waiter_late() {
    let shaper = shaper(200, 300);
    let first = shaper.admit(ticket("a", None)).await.unwrap();
    let waiter = {
        let shaper = shaper.clone();
        tokio::spawn(async move { shaper.admit(ticket("a", None)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    // The upstream says 429 to the first: no sends for 2 s.
    let mut headers = HeaderMap::new();
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(2));
    assert!(shaper.observe(
        Lane::Crud,
        StatusCode::TOO_MANY_REQUESTS,
        &headers,
        first.sent_at
    ));
    let started = Instant::now();
    let refused = waiter.await.unwrap();
    assert!(
        matches!(refused, Err(Refusal::TimedOut { .. })),
        "{refused:?}"
    );
    // At its deadline (300 ms) plus the grace, not at the end of the pause.
    assert!(started.elapsed() < Duration::from_millis(900));
}

#[tokio::test]
async fn an_answer_to_an_old_send_does_not_block_free_slots() {
    let shaper = shaper(200, 1000);
    let old = shaper.admit(ticket("a", None)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(250)).await;
    // The answer arrives a window after its send, saying 0 left then.
    let mut headers = HeaderMap::new();
    headers.insert("x-ratelimit-remaining", HeaderValue::from(0));
    shaper.observe(Lane::Crud, StatusCode::OK, &headers, old.sent_at);
    let next = shaper.admit(ticket("a", None)).await.unwrap();
    assert!(!next.queued, "the slot is free");
}

#[tokio::test]
async fn a_resend_pushed_past_its_deadline_by_a_429_times_out_at_once() {
    let shaper = shaper(200, 300);
    let mut first = ticket("a", None);
    let sent = shaper.admit(first.clone()).await.unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(2));
    shaper.observe(
        Lane::Crud,
        StatusCode::TOO_MANY_REQUESTS,
        &headers,
        sent.sent_at,
    );
    first.retry = true;
    let asked = Instant::now();
    let resent = shaper.admit(first).await;
    assert!(
        matches!(resent, Err(Refusal::TimedOut { .. })),
        "{resent:?}"
    );
    assert!(asked.elapsed() < Duration::from_millis(50));
}
