//! Bodies stream both ways: 1 GiB up and 1 GiB down through a gateway
//! process whose resident memory grows by less than 32 MiB.
//!
//! The gateway runs as its own process so its RSS is measured alone. Set
//! `CASTARI_STREAM_TEST_BYTES` to try another size.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::binary::GatewayProcess;
use crate::support::*;

const CHUNK: usize = 64 * 1024;
const RSS_BUDGET_KIB: u64 = 32 * 1024;

fn total_bytes() -> u64 {
    std::env::var("CASTARI_STREAM_TEST_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30)
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the process's RSS every 20 ms until dropped; returns the peak.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kib(pid)));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { peak, stop }
    }

    fn peak(&self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed)
    }
}

fn block() -> Bytes {
    Bytes::from(
        (0..CHUNK)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<u8>>(),
    )
}

async fn warm_up(gw: &GatewayProcess) {
    for _ in 0..20 {
        let _ = client().get(gw.url("/api/v1/agents")).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_upload_streams_with_bounded_memory() {
    let total = total_bytes();
    let sim = sim().await;
    let gw = GatewayProcess::start(&sim.url());
    warm_up(&gw).await;
    let c = client();
    let agent: serde_json::Value = c
        .post(gw.url("/api/v1/agents"))
        .json(&serde_json::json!({"name": "Big Upload", "source_type": "local"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let slug = agent["slug"].as_str().unwrap().to_string();

    let block = block();
    let chunks = total / CHUNK as u64;
    let mut hasher = Sha256::new();
    for _ in 0..chunks {
        hasher.update(&block);
    }
    let expected = hex(&hasher.finalize());
    let head = Bytes::from_static(b"--XBOUNDARYX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"code.tar.gz\"\r\nContent-Type: application/gzip\r\n\r\n");
    let tail = Bytes::from_static(b"\r\n--XBOUNDARYX--\r\n");
    let length = head.len() as u64 + chunks * CHUNK as u64 + tail.len() as u64;
    let body = futures_util::stream::once(async move { head })
        .chain(futures_util::stream::iter(
            (0..chunks).map(move |_| block.clone()),
        ))
        .chain(futures_util::stream::once(async move { tail }))
        .map(Ok::<_, std::io::Error>);

    let baseline = rss_kib(gw.pid());
    let watch = RssWatch::start(gw.pid());
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
        .post(gw.url(&format!(
            "/api/v1/agents/{slug}/upload-code?auto_deploy=false"
        )))
        .header("content-type", "multipart/form-data; boundary=XBOUNDARYX")
        .header("content-length", length)
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .unwrap();
    let peak = watch.peak();
    assert_eq!(response.status(), 200);
    let uploaded: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        uploaded["source_hash"],
        expected.as_str(),
        "upstream got every byte"
    );
    let seen = last_seen(&sim).await;
    assert_eq!(seen.body_len, length);
    assert!(
        peak.saturating_sub(baseline) < RSS_BUDGET_KIB,
        "RSS grew from {baseline} KiB to {peak} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_download_streams_with_bounded_memory() {
    let total = total_bytes();
    let seen_auth = Arc::new(std::sync::Mutex::new(String::new()));
    let recorder = seen_auth.clone();
    let upstream = axum::Router::new().route(
        "/api/v1/files/{id}/download",
        get(move |headers: axum::http::HeaderMap| {
            let recorder = recorder.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                *recorder.lock().unwrap() = auth.to_string();
                let block = block();
                let chunks = total / CHUNK as u64;
                let stream = futures_util::stream::iter(
                    (0..chunks).map(move |_| Ok::<_, std::io::Error>(block.clone())),
                );
                (
                    [
                        ("content-type", "application/octet-stream".to_string()),
                        ("content-length", (chunks * CHUNK as u64).to_string()),
                    ],
                    axum::body::Body::from_stream(stream),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, upstream).await.unwrap() });

    let gw = GatewayProcess::start(&upstream_url);
    let baseline = rss_kib(gw.pid());
    let watch = RssWatch::start(gw.pid());
    let response = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
        .get(gw.url("/api/v1/files/file_big/download"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/octet-stream"
    );
    let mut received = 0u64;
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        received += chunk.unwrap().len() as u64;
    }
    let peak = watch.peak();
    let expected = total / CHUNK as u64 * CHUNK as u64;
    assert_eq!(received, expected);
    assert_eq!(*seen_auth.lock().unwrap(), format!("Bearer {UPSTREAM_KEY}"));
    assert!(
        peak.saturating_sub(baseline) < RSS_BUDGET_KIB,
        "RSS grew from {baseline} KiB to {peak} KiB"
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
