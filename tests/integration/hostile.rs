//! Hostile input over real sockets: bad targets, slowloris, connection floods.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::*;

#[tokio::test]
async fn dot_segments_and_encoded_separators_are_400() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    for target in [
        "/api/v1/agents/../api-keys",
        "/api/v1/agents/%2e%2e/api-keys",
        "/api/v1/agents/./x",
        "/api/v1/agents/a%2Fb",
        "/api/v1/agents/a%5Cb",
        "/api/v1/agents/a%2fb/secrets",
    ] {
        let request = format!("GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let answer = raw_exchange(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
        assert!(
            answer.contains("\"code\":\"bad_request\""),
            "{target}: {answer}"
        );
    }
    assert!(seen(&sim).await.is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn absolute_form_naming_another_host_is_400() {
    let sim = sim().await;
    let gw = TestGateway::start(&sim.url()).await;
    for host in ["evil.example", "127.0.0.2:80", "localhost:1"] {
        let request = format!(
            "GET http://{host}/api/v1/agents HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw_exchange(gw.addr, request.as_bytes(), Duration::from_secs(5)).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{host}: {answer}");
    }
    assert!(
        seen(&sim).await.is_empty(),
        "nothing was forwarded anywhere"
    );

    let ours = format!(
        "GET http://{0}/api/v1/agents HTTP/1.1\r\nHost: {0}\r\nConnection: close\r\n\r\n",
        gw.addr
    );
    let answer = raw_exchange(gw.addr, ours.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(last_seen(&sim).await.path, "/api/v1/agents");
}

#[tokio::test]
async fn slowloris_headers_are_cut_off() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.server.header_read_timeout_ms = 300).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"GET /api/v1/agents HTTP/1.1\r\nHost: gw\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut closed = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stream.write_all(b"X-Drip: 1\r\n").await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buf)).await
        {
            closed = n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408");
            if closed {
                break;
            }
        }
    }
    assert!(
        closed,
        "the connection was still open after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(seen(&sim).await.is_empty());
}

#[tokio::test]
async fn connections_over_the_cap_are_closed() {
    let sim = sim().await;
    let gw = TestGateway::start_with(&sim.url(), |c| c.server.max_connections = 2).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let _ = third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await;
    let mut buf = [0u8; 512];
    let read = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "third connection was served: {read:?}"
    );

    drop(held.pop());
    let ok = eventually(Duration::from_secs(3), || true).await;
    assert!(ok);
    let mut served = false;
    for _ in 0..50 {
        if let Ok(r) = client().get(gw.url("/healthz")).send().await {
            served = r.status() == 200;
            if served {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a slot freed up and a new connection was served");
}
